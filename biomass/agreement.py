"""Agreement of sawa's L4A-form prediction with the values NASA wrote in an L4A granule.

The granule holds no RH, only the transformed predictors ``xvar`` (for the
selected algorithm and, in ``agbd_prediction/``, for each setting group aN).
:func:`l4a_agreement` inverts them to RH in metres (x**2 - ``predictor_offset``),
puts them in a shot table, predicts through :func:`biomass.shots.predict_shots`
with the granule's own model table, and reports per output the number of shots
compared (``agbd >= 0`` in the granule), the maximum absolute and relative
difference, and shots whose NaN/fill pattern differs.

Run ``python -m biomass.agreement GRANULE.h5`` to print the table.
"""

from __future__ import annotations

import os
import sys

import h5py
import numpy as np
import pandas as pd

from .l4a import L4AModel, inverse_x
from .model_data import read_model_table
from .shots import predict_shots

COMPARED = ("agbd", "agbd_se", "agbd_t", "agbd_t_se", "agbd_pi_lower", "agbd_pi_upper")
_FILL = -9999.0


def rh_table_from_xvar(table, strata: np.ndarray, xvar: np.ndarray) -> pd.DataFrame:
    """Shot table with the RH columns (m) each shot's stratum model in ``table`` needs, rebuilt from L4A ``xvar``."""
    shots = pd.DataFrame({"predict_stratum": strata})
    for name in sorted(set(strata) - {""}):
        if name not in table.strata:
            continue
        model = table.strata[name]
        rows = np.asarray(strata == name)
        for j, idx in enumerate(model.rh_index):
            col = f"rh{idx}"
            if col not in shots:
                shots[col] = np.nan
            shots.loc[rows, col] = inverse_x(xvar[rows, j], model.x_transform, table.predictor_offset_m)
    return shots


def l4a_agreement(path: str | os.PathLike, algorithms=("selected", 1, 2, 3, 4, 5, 6, 10)) -> pd.DataFrame:
    """Max abs/rel differences between sawa and the granule, per algorithm and output column."""
    table = read_model_table(path)
    model = L4AModel.from_model_table(table)
    rows = []
    with h5py.File(path, "r") as f:
        beams = sorted(k for k in f if k.startswith("BEAM"))
        for alg in algorithms:
            preds, refs = [], []
            for beam in beams:
                g = f[beam]
                strata = np.array([s.decode() if isinstance(s, bytes) else str(s)
                                   for s in g["predict_stratum"][:]], dtype=object)
                if alg == "selected":
                    src, suffix = g, ""
                else:
                    src, suffix = g["agbd_prediction"], f"_a{alg}"
                xvar = src[f"xvar{suffix}"][:].astype(np.float64).reshape(len(strata), -1)
                xvar[xvar == _FILL] = np.nan
                refs.append(pd.DataFrame({c: src[f"{c}{suffix}"][:].astype(np.float64) for c in COMPARED}))
                preds.append(predict_shots(rh_table_from_xvar(table, strata, xvar), model))
            pred = pd.concat(preds, ignore_index=True)
            ref = pd.concat(refs, ignore_index=True)
            ok = ref["agbd"].to_numpy() >= 0
            for col in COMPARED:
                a = pred[col].to_numpy(dtype=float)[ok]
                b = ref[col].to_numpy(dtype=float)[ok]
                b = np.where(b == _FILL, np.nan, b)
                both = np.isfinite(a) & np.isfinite(b)
                diff = np.abs(a[both] - b[both])
                rel = diff / np.abs(b[both])
                rows.append({
                    "algorithm": str(alg), "column": col, "n_compared": int(both.sum()),
                    "n_nan_mismatch": int((np.isfinite(a) != np.isfinite(b)).sum()),
                    "max_abs_diff": float(diff.max()) if diff.size else np.nan,
                    "max_rel_diff": float(rel.max()) if rel.size else np.nan,
                })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m biomass.agreement GEDI04_A_....h5", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(l4a_agreement(argv[0]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
