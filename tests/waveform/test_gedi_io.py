"""GEDI readers on the real reference granules, checked against plain h5py and the MANIFEST."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from waveform.errors import (
    GranuleError,
    MissingBeamError,
    MissingDatasetError,
    SawaFileError,
    WrongProductError,
)
from waveform.gedi import (
    concat_chunks,
    iter_l1b,
    join_products,
    open_granule,
    read_l1b,
    read_l2a,
    read_l2a_processing,
    read_l2a_settings,
    read_l2b,
    read_l4a,
)

# Shot counts per beam, from ../shared/reference/MANIFEST.md
L1B_SHOTS = {"BEAM0001": 16, "BEAM0010": 37, "BEAM0011": 59, "BEAM0101": 73, "BEAM0110": 61, "BEAM1000": 38, "BEAM1011": 16}
L4A_SHOTS = {"BEAM0000": 34, "BEAM0001": 34, "BEAM0010": 11, "BEAM0011": 10, "BEAM0101": 84, "BEAM0110": 103,
             "BEAM1000": 73, "BEAM1011": 112}


def test_identifies_products_and_versions(l1b_path, l2a_path, l2b_path, l4a_path):
    for path, product, version in [(l1b_path, "L1B", "001"), (l2a_path, "L2A", "001"),
                                   (l2b_path, "L2B", "001"), (l4a_path, "L4A", "002")]:
        with open_granule(path) as g:
            assert (g.product, g.version) == (product, version)
    with open_granule(l1b_path) as g:
        assert g.beams == sorted(L1B_SHOTS)
        assert g.file_name == "GEDI01_B_2019108080338_O01964_T05337_02_003_01.h5"


def test_l1b_shot_counts_and_waveforms_equal_h5py(l1b_path):
    chunk = read_l1b(l1b_path)
    assert chunk.shots.groupby("beam").size().to_dict() == L1B_SHOTS
    assert len(chunk) == 300
    assert chunk.shots["shot_number"].dtype == np.uint64
    with h5py.File(l1b_path, "r") as f:
        for beam in L1B_SHOTS:
            b = f[beam]
            start1 = b["rx_sample_start_index"][:]
            count = b["rx_sample_count"][:]
            rx = b["rxwaveform"][:]
            rows = np.flatnonzero(chunk.shots["beam"].to_numpy() == beam)
            assert np.array_equal(chunk.batch.count[rows], count)
            assert np.array_equal(chunk.batch.shot_number[rows], b["shot_number"][:])
            for j in (0, len(rows) // 2, len(rows) - 1):
                k = rows[j]
                expected = rx[start1[j] - 1 : start1[j] - 1 + count[j]]  # 1-based index in the file
                assert np.array_equal(chunk.batch.waveform(k), expected)
            assert np.array_equal(chunk.shots["elevation_bin0"].to_numpy()[rows], b["geolocation/elevation_bin0"][:])
            assert np.allclose(chunk.shots["noise_stddev_corrected"].to_numpy()[rows], b["noise_stddev_corrected"][:])
    # first shot of BEAM0101 from the MANIFEST/h5 listing
    first = chunk.shots[chunk.shots.beam == "BEAM0101"].iloc[0]
    assert int(first.shot_number) == 19640513500108370
    assert first.power == "full"
    assert chunk.shots[chunk.shots.beam == "BEAM0001"].iloc[0].power == "coverage"
    assert chunk.batch.count.min() >= 749 and chunk.batch.count.max() <= 1417


def test_sample_elevations_follow_bin0_and_lastbin(l1b_path):
    chunk = read_l1b(l1b_path, beams="BEAM0101")
    z = chunk.batch.sample_elevations(0)
    assert z[0] == pytest.approx(848.5348980156705)
    assert z[-1] == pytest.approx(732.7162895658985)
    # 1 ns sampling = 0.15 m of range; off-nadir pointing makes it slightly less vertically
    assert 0.145 < chunk.batch.bin_size_m()[0] < 0.1505


def test_chunked_stream_equals_whole_read(l1b_path):
    whole = read_l1b(l1b_path, with_tx=True)
    chunks = list(iter_l1b(l1b_path, chunk_shots=10, with_tx=True))
    assert max(len(c) for c in chunks) == 10
    joined = concat_chunks(chunks)
    assert np.array_equal(joined.batch.shot_number, whole.batch.shot_number)
    for k in range(len(whole)):
        assert np.array_equal(joined.batch.waveform(k), whole.batch.waveform(k))
        assert np.array_equal(joined.tx.waveform(k), whole.tx.waveform(k))
    assert np.all(whole.tx.count == 128)


def test_l2a_values_and_join(l1b_path, l2a_path):
    l2a = read_l2a(l2a_path)
    assert len(l2a) == 301
    assert l2a.groupby("beam").size()["BEAM0011"] == 60
    with h5py.File(l2a_path, "r") as f:
        rh = f["BEAM0101/rh"][:]
        elev = f["BEAM0101/elev_lowestmode"][:]
    sub = l2a[l2a.beam == "BEAM0101"]
    assert np.allclose(sub[[f"rh{i}" for i in range(101)]].to_numpy(), rh)
    assert sub["elev_lowestmode"].iloc[0] == pytest.approx(799.3906, abs=1e-3)
    assert np.allclose(sub["elev_lowestmode"].to_numpy(), elev)
    l1b = read_l1b(l1b_path).shots
    joined = join_products(l1b, l2a, suffixes=("", "_l2a"))
    assert len(joined) == 300
    assert joined.attrs["unmatched"] == {"left": 0, "right": 1}
    assert np.allclose(joined["digital_elevation_model"], joined["digital_elevation_model_l2a"])


def test_l2a_settings_and_processing(l2a_path):
    settings = read_l2a_settings(l2a_path, "BEAM0101")
    assert sorted(settings) == [1, 2, 3, 4, 5, 6]
    assert settings[1]["rx_smoothing_width_locs"] == 6.5
    assert settings[2]["rx_smoothing_width_zcross"] == 3.5
    proc = read_l2a_processing(l2a_path, "BEAM0101", 1)
    assert len(proc) == 73
    assert proc["botloc"].iloc[0] == pytest.approx(366.5)
    assert proc.attrs["arrays"]["rx_modelocs"].shape == (73, 20)


def test_l2b_and_l4a(l2b_path, l4a_path):
    l2b = read_l2b(l2b_path)
    assert len(l2b) == 301
    assert l2b["cover"].between(0, 1).sum() > 250
    l4a = read_l4a(l4a_path)
    assert l4a.groupby("beam").size().to_dict() == L4A_SHOTS
    assert (l4a["agbd"] >= 0).sum() == 438  # MANIFEST: 438 shots have agbd >= 0, the rest is fill (-9999 -> NaN)
    assert l4a["agbd"].isna().sum() == 461 - 438
    assert (l4a["predict_stratum"] == "GSW_NAs").sum() == 440
    first = l4a[l4a.beam == "BEAM0101"].iloc[0]
    assert first.agbd == pytest.approx(30.714327, rel=1e-6)
    assert first.shot_number == 65150500200000001
    assert {"xvar0", "xvar3", "pft_class", "region_class"} <= set(l4a.columns)


# ------------------------------------------------------------------ bad input
def test_missing_file(tmp_path):
    with pytest.raises(SawaFileError, match="does not exist"):
        read_l1b(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError.__mro__[1]):  # OSError: builtin callers still catch it
        read_l1b(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    bad = tmp_path / "GEDI01_B_fake.h5"
    bad.write_text("not an hdf5 file at all")
    with pytest.raises(GranuleError, match="not an HDF5 file"):
        read_l1b(bad)


def test_truncated_hdf5(tmp_path, l1b_path):
    data = l1b_path.read_bytes()
    cut = tmp_path / l1b_path.name
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(GranuleError, match=str(cut.name)):
        read_l1b(cut)


def test_wrong_product(l2a_path):
    with pytest.raises(WrongProductError, match="L2A granule, but a L1B granule is needed"):
        read_l1b(l2a_path)
    with pytest.raises(ValueError):  # builtin base
        read_l4a(l2a_path)


def test_missing_beam(l1b_path):
    with pytest.raises(MissingBeamError, match="BEAM0000"):
        read_l1b(l1b_path, beams="BEAM0000")
    with pytest.raises(KeyError):
        read_l1b(l1b_path, beams="BEAM9999")


def test_missing_dataset_and_empty_beam(tmp_path, l1b_path):
    copy = tmp_path / l1b_path.name
    shutil.copy(l1b_path, copy)
    with h5py.File(copy, "r+") as f:
        del f["BEAM0001/rx_sample_count"]
        # an empty beam: every per-shot dataset with zero rows
        src = f["BEAM1011"]
        empty = f.create_group("BEAM0000")
        empty.attrs["description"] = "Coverage beam"

        def copy_empty(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.shape[0] == 16:
                empty.create_dataset(name, shape=(0,), dtype=obj.dtype)
            elif isinstance(obj, h5py.Dataset) and obj.ndim == 1:
                empty.create_dataset(name, data=obj[:0] if name in ("rxwaveform", "txwaveform") else obj[:])

        src.visititems(copy_empty)
    with pytest.raises(MissingDatasetError, match=r"BEAM0001 has no dataset 'rx_sample_count'"):
        read_l1b(copy)
    chunk = read_l1b(copy, beams="BEAM0000")
    assert len(chunk) == 0
    assert chunk.shots.empty


def test_bad_start_index_named(tmp_path, l1b_path):
    copy = tmp_path / l1b_path.name
    shutil.copy(l1b_path, copy)
    with h5py.File(copy, "r+") as f:
        f["BEAM0101/rx_sample_start_index"][5] = 10**9
        bad_shot = int(f["BEAM0101/shot_number"][5])
    with pytest.raises(GranuleError, match=f"BEAM0101: shot {bad_shot} needs rxwaveform samples 1000000000"):
        read_l1b(copy, beams="BEAM0101")
