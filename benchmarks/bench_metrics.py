"""Speed and memory of sawa's waveform engine (prints figures; not part of the test suite).

(a) kernel throughput for the full metric set (smoothing, signal bounds, modes,
    ground, RH0-100, LEE/TEE, energies, cover) on >= 100k simulated GEDI-like
    waveforms, in waveforms/s/core, next to the same computation in plain
    numpy/Python (tests/reference/waveform_naive.py, timed on a subset);
(b) raw h5py read rate of ``rxwaveform`` of a large synthetic granule in the
    real L1B layout (gzip 4, >= 1M shots, written once to /tmp) and the
    end-to-end ``sawa metrics`` rate (read + kernels + GeoParquet) on it;
(c) peak resident memory of (b), and of the same run on a quarter of the
    granule (streaming: memory must not grow with granule size);
(d) start-up of a fresh process computing metrics (numba cache hit).

Run:  python benchmarks/bench_metrics.py [--shots 1000000] [--kernel-shots 100000]
Each of (b)-(d) runs in its own child process, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Timed runs per kernel configuration in (a); the best is the figure (as timeit does: on a shared
#: virtual machine the slower runs measure the neighbours), the median is printed next to it.
REPEATS = 5

BEAMS = ("BEAM0000", "BEAM0001", "BEAM0010", "BEAM0011", "BEAM0101", "BEAM0110", "BEAM1000", "BEAM1011")


#: Peak resident memory of the calling process (kiB). /proc VmHWM belongs to the process's own
#: address space; getrusage's ru_maxrss would inherit the parent's peak across fork + exec.
PEAK_RSS = (
    "def peak_rss_kib():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
    "    import resource\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
)


def _child(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS + textwrap.dedent(code)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def kernel_throughput(n_shots: int, n_naive: int) -> None:
    import numba

    from tests.reference import waveform_naive as naive
    from waveform.algorithms import L2A_ALGORITHMS
    from waveform.metrics import compute_metrics

    t0 = time.perf_counter()
    batch, truth = naive.simulated_batch(n_shots, seed=2024)
    print(f"(a) simulated {n_shots} waveforms (mean {batch.count.mean():.0f} samples) in "
          f"{time.perf_counter() - t0:.1f} s")
    compute_metrics(batch.take(slice(0, 10)), "a1", truth.noise_mean[:10], truth.noise_std[:10])  # compile/load
    cores = numba.config.NUMBA_NUM_THREADS
    rows = []
    for name in ("a1", "a2"):
        for threads in sorted({1, cores}):
            numba.set_num_threads(threads)
            times = []
            for _ in range(REPEATS):
                t = time.perf_counter()
                compute_metrics(batch, name, truth.noise_mean, truth.noise_std)
                times.append(time.perf_counter() - t)
            rows.append((name, threads, n_shots / min(times) / threads, n_shots / np.median(times) / threads))
    numba.set_num_threads(cores)
    settings = L2A_ALGORITHMS["a1"]
    t = time.perf_counter()
    for k in range(n_naive):
        naive.metrics_one(batch.waveform(k), batch.elevation_bin0[k], batch.elevation_lastbin[k],
                          truth.noise_mean[k], truth.noise_std[k], settings)
    naive_rate = n_naive / (time.perf_counter() - t)
    print(f"    plain numpy/Python reference (a1, 1 core, {n_naive} shots): {naive_rate:,.0f} waveforms/s")
    for name, threads, rate, median_rate in rows:
        print(f"    sawa kernels {name}, {threads} thread(s): {rate:,.0f} waveforms/s/core "
              f"(x{rate / naive_rate:,.0f} the plain numpy rate; median of {REPEATS} runs {median_rate:,.0f})")


def ensure_granule(path: Path, shots: int) -> Path:
    from tests.reference.waveform_naive import write_synthetic_l1b

    per_beam = shots // len(BEAMS)
    stamp = path.with_suffix(".json")
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("per_beam") == per_beam:
        return path
    t = time.perf_counter()
    write_synthetic_l1b(path, per_beam, beams=BEAMS, seed=7, pool_size=4096)
    stamp.write_text(json.dumps({"per_beam": per_beam}))
    print(f"(b) wrote synthetic L1B granule {path} ({per_beam * len(BEAMS):,} shots, "
          f"{path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s")
    return path


def read_and_end_to_end(path: Path, out_dir: Path) -> None:
    raw = _child(f"""
        import json, time, h5py
        t = time.perf_counter(); shots = 0; values = 0
        with h5py.File({str(path)!r}, "r") as f:
            for beam in [k for k in f if k.startswith("BEAM")]:
                ds = f[beam]["rxwaveform"]; step = 14200 * 100
                for s in range(0, ds.shape[0], step):
                    values += ds[s:s + step].size
                shots += f[beam]["shot_number"].shape[0]
        dt = time.perf_counter() - t
        print(json.dumps({{"shots": shots, "seconds": dt, "bytes": values * 4, "maxrss_kib": peak_rss_kib()}}))
    """)
    runs = {}
    for label, beams in (("full", None), ("quarter", list(BEAMS[:2]))):
        runs[label] = _child(f"""
            import json, time
            from waveform.stream import write_metrics
            s = write_metrics({str(path)!r}, {str(out_dir / f"shots_{label}.parquet")!r}, beams={beams!r})
            print(json.dumps({{"shots": s["n_shots"], "seconds": s["seconds"], "maxrss_kib": peak_rss_kib()}}))
        """)
    raw_rate = raw["shots"] / raw["seconds"]
    full = runs["full"]
    e2e_rate = full["shots"] / full["seconds"]
    print(f"(b) raw h5py rxwaveform read: {raw_rate:,.0f} shots/s ({raw['bytes'] / raw['seconds'] / 2**20:,.0f} MiB/s "
          f"of float32 samples, {raw['shots']:,} shots in {raw['seconds']:.1f} s)")
    print(f"    sawa metrics end to end: {e2e_rate:,.0f} shots/s ({full['shots']:,} shots in {full['seconds']:.1f} s) "
          f"= {e2e_rate / raw_rate:.0%} of the raw read rate")
    q = runs["quarter"]
    print(f"(c) peak RSS end to end: {full['maxrss_kib'] / 2**20:.2f} GiB for {full['shots']:,} shots; "
          f"{q['maxrss_kib'] / 2**20:.2f} GiB for {q['shots']:,} shots (raw read alone: "
          f"{raw['maxrss_kib'] / 2**20:.2f} GiB)")


def startup() -> None:
    res = _child("""
        import json, time
        t = time.perf_counter()
        from tests.reference.waveform_naive import simulated_batch
        from waveform.metrics import compute_metrics
        b, s = simulated_batch(10, seed=1)
        compute_metrics(b, "a2", s.noise_mean, s.noise_std)
        print(json.dumps({"seconds": time.perf_counter() - t}))
    """)
    print(f"(d) fresh process, import + first metrics call (numba cache): {res['seconds']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=1_000_000, help="shots of the synthetic granule")
    ap.add_argument("--kernel-shots", type=int, default=100_000, help="simulated waveforms for (a)")
    ap.add_argument("--naive-shots", type=int, default=1_000, help="waveforms timed with the plain reference")
    ap.add_argument("--granule", type=Path, default=Path(tempfile.gettempdir()) / "sawa_bench_l1b.h5")
    args = ap.parse_args()
    import numba

    print(f"machine: {os.cpu_count()} CPUs, numba {numba.__version__} with {numba.config.NUMBA_NUM_THREADS} threads")
    kernel_throughput(args.kernel_shots, args.naive_shots)
    path = ensure_granule(args.granule, args.shots)
    with tempfile.TemporaryDirectory(prefix="sawa_bench_") as tmp:
        read_and_end_to_end(path, Path(tmp))
    startup()


if __name__ == "__main__":
    main()
