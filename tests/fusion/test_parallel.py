"""Task runner: a LocalCluster gives the same results, in the same order, as a serial run."""

from __future__ import annotations

import numpy as np
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
