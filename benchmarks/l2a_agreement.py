"""Print how close sawa comes to NASA's GEDI L2A on the real reference shots.

1. End result: median and MAD of (sawa - L2A) for ground elevation, RH50 and
   RH98, per beam and overall, each shot processed with the setting group L2A
   selected for it, on shots with L2A quality_flag == 1.
2. Every step, for all six setting groups, against the intermediate values L2A
   stores per shot in BEAMxxxx/rx_processing_aN: share of shots where sawa's
   signal start (toploc), signal end (botloc), modes (rx_modelocs), ground
   (zcross) and cumulative-energy percentiles (rx_cumulative) are identical
   to the quarter sample, and the largest RH difference.

Run:  python benchmarks/l2a_agreement.py [--l1b L1B.h5 --l2a L2A.h5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
REF = REPO.parent / "shared" / "reference" / "gedi"
L1B = REF / "GEDI01_B_2019108080338_O01964_T05337_02_003_01_sub.h5"
L2A = REF / "GEDI02_A_2019108080338_O01964_T05337_02_001_01_sub.h5"

#: Hancock's gediMetric on such shots (issue 4): median ground +0.11 m, RH98 +0.39 m.
GEDIMETRIC = {"ground": 0.11, "rh98": 0.39}


def per_step_table(l1b_path: Path, l2a_path: Path) -> pd.DataFrame:
    from waveform.gedi import read_l1b
    from waveform.metrics import compute_metrics

    chunk = read_l1b(l1b_path)
    shots = chunk.shots
    beams = list(shots["beam"].unique())
    rows = []
    with h5py.File(l2a_path, "r") as f:
        index = {}
        for beam in beams:
            pos = {s: i for i, s in enumerate(f[beam]["shot_number"][:])}
            index[beam] = np.array([pos[s] for s in shots["shot_number"][shots["beam"] == beam]])

        def get(name):
            return np.concatenate([f[b][name][:][index[b]] for b in beams])

        for a in range(1, 7):
            m = compute_metrics(chunk.batch, a, shots["noise_mean_corrected"].to_numpy(),
                                shots["noise_stddev_corrected"].to_numpy())
            p = f"rx_processing_a{a}/"
            nm, ml = get(p + "rx_nummodes"), get(p + "rx_modelocs")
            modes = np.mean([m.n_modes[i] == nm[i] and np.array_equal(m.mode_locations[i, : nm[i]], ml[i, : nm[i]])
                             for i in range(len(nm))])
            loc = m.ground_index[:, None] - m.rh / m.bin_size_m[:, None]
            zc = get(p + "zcross")
            rh = get(f"geolocation/rh_a{a}") / 100.0
            rows.append({
                "group": f"a{a}",
                "toploc_exact": np.mean(m.toploc == get(p + "toploc")),
                "botloc_exact": np.mean(m.botloc == get(p + "botloc")),
                "modes_exact": modes,
                "ground_exact": np.mean(m.ground_index == zc),
                "ground_max_diff_samples": np.max(np.abs(m.ground_index - zc)),
                "rx_cumulative_exact": np.mean(np.abs(loc - get(p + "rx_cumulative")) < 1e-6),
                "rh_max_abs_diff_m": np.max(np.abs(m.rh - rh)),
            })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--l1b", type=Path, default=L1B)
    ap.add_argument("--l2a", type=Path, default=L2A)
    args = ap.parse_args()
    from waveform.stream import l2a_agreement

    table = l2a_agreement(args.l1b, args.l2a)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"sawa - L2A (m), L2A selected group per shot, quality_flag == 1\n  L1B {args.l1b.name}\n  L2A {args.l2a.name}")
    print(table.round(4).to_string(index=False))
    overall = table.set_index("beam").loc["all"]
    print(f"\noverall median |difference|: ground {abs(overall['ground_median_m']):.4f} m "
          f"(goal <= 0.2, gediMetric ~{GEDIMETRIC['ground']}), RH98 {abs(overall['rh98_median_m']):.4f} m "
          f"(goal <= 0.3, gediMetric ~{GEDIMETRIC['rh98']})")
    print("\nper step, all six setting groups (share of shots identical to the quarter sample):")
    print(per_step_table(args.l1b, args.l2a).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
