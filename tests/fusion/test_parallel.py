"""Task runner: a LocalCluster gives the same results, in the same order, as a serial run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.parallel import run_tasks


def _work(seed: int) -> float:
    rng = np.random.default_rng(seed)
    return float(np.sort(rng.normal(size=10_000))[5000])


def _fails(x: int) -> int:
    if x == 3:
        raise ValueError("bad item three")
    return x


def test_serial_equals_local_cluster():
    items = list(range(8))
    serial = run_tasks(_work, items, workers=1)
    assert serial == [_work(i) for i in items]
    parallel = run_tasks(_work, items, workers=2)
    assert parallel == serial


def test_error_names_item():
    with pytest.raises(ValueError, match="bad item three") as info:
        run_tasks(_fails, range(5), workers=1)
    assert any("while processing 3" in n for n in info.value.__notes__)


def test_empty():
    assert run_tasks(_work, [], workers=2) == []


def _granule_metrics(path) -> pd.DataFrame:
    from waveform.stream import stream_metrics

    frames = [f.drop(columns="geometry") for f in stream_metrics(path, prefetch=False)]
    return pd.concat(frames, ignore_index=True)


def test_granule_metrics_on_two_workers_equal_serial(tmp_path):
    """Granule-level tasks (waveform metrics of each granule) on a 2-worker LocalCluster give the
    same tables, in input order, as a serial run and as the kernels called directly."""
    from tests.reference.waveform_naive import write_synthetic_l1b
    from waveform.gedi import read_l1b
    from waveform.metrics import compute_metrics

    paths = []
    for seed in range(3):
        path = tmp_path / f"GEDI01_B_granule{seed}.h5"
        write_synthetic_l1b(path, 30 + 10 * seed, beams=("BEAM0000", "BEAM0101"), seed=seed, pool_size=32)
        paths.append(path)
    serial = run_tasks(_granule_metrics, paths, workers=1)
    parallel = run_tasks(_granule_metrics, paths, workers=2)
    assert [len(t) for t in serial] == [60, 80, 100]  # 2 beams x (30, 40, 50) shots, input order
    for s, p, path in zip(serial, parallel, paths, strict=True):
        pd.testing.assert_frame_equal(p, s)
        assert (s["granule"] == path.name).all()
        chunk = read_l1b(path)
        m = compute_metrics(chunk.batch, "a1", chunk.shots["noise_mean_corrected"].to_numpy(),
                            chunk.shots["noise_stddev_corrected"].to_numpy())
        np.testing.assert_array_equal(s["shot_number"].to_numpy(), chunk.batch.shot_number)
        np.testing.assert_allclose(s["rh98"].to_numpy(), m.rh[:, 98].astype(np.float32))
