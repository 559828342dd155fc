"""Ragged batch invariants and atomic outputs (including a disk-full simulation)."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from waveform.batch import RaggedBatch
from waveform.errors import BatchError, OutputError
from waveform.outputs import atomic_path, build_manifest, sha256_file, write_json_atomic


def _batch():
    return RaggedBatch.from_waveforms(
        [np.arange(5), np.arange(3) + 10, np.arange(4) + 20], elevation_bin0=[10.0, 20.0, 30.0],
        elevation_lastbin=[9.4, 19.7, 29.55], shot_number=np.array([7, 8, 9], dtype=np.uint64),
    )


def test_from_waveforms_offsets_and_heights():
    b = _batch()
    assert b.start.tolist() == [0, 5, 8]
    assert b.count.tolist() == [5, 3, 4]
    assert b.waveform(1).tolist() == [10, 11, 12]
    assert np.allclose(b.sample_elevations(0), [10.0, 9.85, 9.7, 9.55, 9.4])
    assert np.allclose(b.bin_size_m(), [0.15, 0.15, 0.15])


def test_take_reorders_and_compacts():
    b = _batch()
    t = b.take(np.array([2, 0]))
    assert t.shot_number.tolist() == [9, 7]
    assert t.start.tolist() == [0, 4]
    assert t.waveform(0).tolist() == [20, 21, 22, 23]
    assert t.samples.shape[0] == 9
    assert b.take(np.array([True, False, True])).shot_number.tolist() == [7, 9]


def test_invalid_batches_name_the_shot():
    b = _batch()
    with pytest.raises(BatchError, match=r"shot 9 \(index 2\) has start=8, count=40"):
        RaggedBatch(b.samples, b.start, np.array([5, 3, 40], np.int32), b.elevation_bin0, b.elevation_lastbin,
                    b.shot_number)
    with pytest.raises(BatchError, match="'start' must be int64"):
        RaggedBatch(b.samples, b.start.astype(np.int32), b.count, b.elevation_bin0, b.elevation_lastbin, b.shot_number)
    with pytest.raises(BatchError, match="'elevation_bin0' has 2 entries"):
        RaggedBatch(b.samples, b.start, b.count, b.elevation_bin0[:2], b.elevation_lastbin, b.shot_number)


def test_atomic_write_and_manifest(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"b": 1, "a": np.float32(2.5)})
    assert json.loads(target.read_text()) == {"a": 2.5, "b": 1}
    m = build_manifest(inputs={"a": target}, parameters={"x": 1})
    assert m["inputs"]["a"]["sha256"] == sha256_file(target)
    assert m["versions"]["numpy"] == np.__version__


def test_disk_full_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old complete output")
    with pytest.raises(OutputError, match="out.bin"):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_bytes() == b"old complete output"  # the previous output survives untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary left behind


def test_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(OutputError, match="not writable"):
            write_json_atomic(folder / "x.json", {})
    finally:
        folder.chmod(0o700)


def test_output_folder_that_cannot_exist(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder"):
        write_json_atomic(blocker / "sub" / "x.json", {})
