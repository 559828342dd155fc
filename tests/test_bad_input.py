"""Bad input across the whole pipeline: every kind gets a specific error naming the culprit, or a
per-shot reason code, never a crash, a raw h5py/numpy exception or a silent NaN/fill number.

This module is the one list of the kinds of bad input sawa is tested against (some are also
covered, in other forms, next to their package's tests). Errors come from ``waveform/errors.py``
(each also a builtin: ``OSError``, ``ValueError``, ``KeyError``); "names" is what the message must
contain so an analyst finds the bad input without a debugger.

=====  =========================================================  ===============================================
 #     bad input                                                  expected
=====  =========================================================  ===============================================
 1     truncated HDF5 granule                                     GranuleError (OSError); names file, "truncated"
 2     corrupted HDF5: bytes flipped in the middle of a           GranuleError; names file and BEAM/rxwaveform;
       compressed waveform chunk                                  ``write_metrics`` too (an input error, not an
                                                                  OutputError) and leaves no output
 3     corrupted HDF5: bytes flipped anywhere (sweep)             GranuleError or a subclass naming the file, or
                                                                  intact waveforms; never a raw KeyError/RuntimeError
 4     empty (0-byte) or non-HDF5 file                            GranuleError; names file, "empty"/"not an HDF5"
 5     wrong product (L2A given where L1B is needed)              WrongProductError (ValueError); names file,
                                                                  both products; no output written
 6     missing beam / not a beam name                             MissingBeamError (KeyError); names beam, file and
                                                                  the beams present
 7     missing dataset                                            MissingDatasetError (KeyError); names beam and
                                                                  dataset; other beams still read
 8     0-based rx_sample_start_index                              GranuleError; names shot number, "1-based"
 9     zero-length waveforms (rx_sample_count 0)                  reason ``empty_waveform``; neighbours unchanged;
                                                                  zero shots with per-shot groups: empty result
 10    saturated waveforms (clipped flat top at GEDI's            reason ``saturated``, NaN metrics; unclipped
       rx_clipamp, 3900 counts)                                   twins ``ok``
 11    all-noise waveforms (no signal)                            reason ``no_signal`` for every L2A group a1-a6
 12    fill values everywhere (-9999 / 3.4e38 in waveforms,       reasons ``nonfinite_samples``/``bad_geolocation``;
       geolocation, noise, DEM, tx fields)                        NaN, never a fill number in the shot table
 13    NaN/+-inf in a DEM                                         terrain reason ``nodata`` at those pixels;
                                                                  neighbours ``ok`` with the true slope
 14    NaN/+-inf in an optical covariate                          shots there dropped and counted; map nodata
                                                                  (-9999) there, no NaN anywhere in AGB or SE
 15    NaN/+-inf in AGB and SE rasters (zonal totals)             masked: totals finite and equal to the finite
                                                                  pixels' sum; missing SE reported in ``warnings``
 16    raster without CRS (DEM, AGB map)                          RasterError; names file, "no CRS"
 17    DEM not under the shots                                    NoOverlapError; names DEM and the shots' extent;
                                                                  ``annotate_terrain`` keeps rows: ``outside_dem``
 18    rasters not aligned / region not on the raster             RasterError "not on the grid"; NoOverlapError
                                                                  naming the latitude band
 19    invalid / self-intersecting polygons                       made valid and recorded in ``warnings``; totals of
                                                                  the valid shape; zero-area -> SawaValueError
                                                                  naming the id and row
 20    unknown or malformed ISO3 code                             SawaValueError naming the code (+ close matches)
 21    malformed TOML                                             ConfigError; names file and line
 22    unknown TOML key / wrong type                              ConfigError; names file, [section] and key
 23    tampered model file (edited coefficient, truncated)        ModelFileError; names file
 24    foreign / pickle model file                                ModelFileError; names file; payload never runs
 25    unwritable output directory                                OutputError; names folder; nothing written
 26    disk full during a write (ENOSPC)                          OutputError; names target; old file intact, no
                                                                  temporary left
 27    unknown stratum in L4A prediction                          reason ``unknown_stratum:NAME``, NaN AGBD; other
                                                                  shots unchanged
 28    missing predictor columns                                  ModelError naming the columns and strata
 29    too few shots per stratum to fit                           ModelError naming the stratum and counts
 30    inconsistent ragged batch (negative count)                 BatchError naming the shot
 31    slopes outside [0, 90) degrees (percent, radians)          SawaValueError naming the shot and unit
 32    longitude/latitude swapped                                 SawaValueError naming the shot index
 33    garbage geolocation (bin0 below lastbin, 1 um or 100 m     reason ``bad_geolocation``; SAWA reason
       bins, 1e308 m)                                             ``waveform`` without modelling (no blow-up)
 34    transmit pulse sigma not in ns (1e8, inf)                  SawaValueError naming the shot and the unit,
                                                                  before any model is built; NaN: GEDI default
=====  =========================================================  ===============================================

Fuzzing (hypothesis) of the public wrappers of the numba kernels: ``compute_metrics``,
``sawa_metrics`` and ``annotate_terrain`` with random ragged batches (0..700 samples, NaN/inf/
negative/huge amplitudes, any elevations and noise): only SawaError subclasses may be raised, and
every shot gets a finite result or a known, non-empty reason code (checked shot by shot); 400, 120 and
40 examples. Out-of-bounds reads: the kernels run as plain Python (``NUMBA_DISABLE_JIT=1``, where an
index past an array's end or a NaN cast to int raises) on a fixed nasty batch reaching every reason
code, and must agree with the compiled kernels. (``NUMBA_BOUNDSCHECK=1`` was not used: an IndexError
raised inside a ``prange`` worker does not reach the caller, and the checked build takes ~25 s.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomass.constants import MIN_SHOTS_PER_STRATUM
from biomass.l4a import L4AModel
from biomass.modelio import load_model, save_model
from fusion.areas import geodesic_area_m2, row_areas_m2
from fusion.config import load_config
from fusion.grid import GridSpec
from fusion.optical import fit_optical_model, predict_map
from fusion.zonal import latitude_band_total, zonal_totals
from terrain.constants import TERRAIN_REASONS
from terrain.dem import open_dem
from terrain.footprint import footprint_terrain
from terrain.rasters import write_geotiff
from terrain.sawa import (
    DECONV_REASONS,
    MAX_TX_SIGMA_NS,
    SAWA_REASONS,
    annotate_terrain,
    deconvolved_metrics,
    sawa_columns,
    sawa_metrics,
)
from waveform import errors as sawa_errors
from waveform.batch import RaggedBatch
from waveform.errors import (
    BatchError,
    ConfigError,
    GranuleError,
    MissingBeamError,
    MissingDatasetError,
    ModelError,
    ModelFileError,
    NoOverlapError,
    OutputError,
    RasterError,
    SawaError,
    SawaValueError,
    WrongProductError,
)
from waveform.gedi import read_l1b, read_l4a
from waveform.l1b_writer import gedi_shot_numbers, write_l1b
from waveform.metrics import REASON_NAMES, compute_metrics
from waveform.shot_table import read_shot_table, write_shot_table
from waveform.simulate import simulate_waveforms
from waveform.stream import write_metrics

REPO = Path(__file__).resolve().parents[1]
ORBIT = 90010
L1B_NAME = "GEDI01_B_2020001000000_O90010_T00001_02_003_01_SIM.h5"
L2A_NAME = "GEDI02_A_2020001000000_O90010_T00001_02_001_01_SIM.h5"
BEAMS = {"BEAM0101": 8, "BEAM1011": 4}
#: GEDI L2A saturation amplitude (counts): ``rx_assess/ancillary/rx_clipamp`` = 3900 in the
#: reference granule GEDI02_A_2019108080338_O01964_T05337_02_001_01 (every beam).
GEDI_CLIP_AMPLITUDE = 3900.0
#: GEDI fill values for float fields (L1B/L2A data dictionaries): -9999 and float32 max.
FILL_NEG = -9999.0
FILL_F32MAX = float(np.finfo(np.float32).max)
#: UTM zone 33N, where a grid metre is a ground metre x 0.9996 near the central meridian.
UTM = "EPSG:32633"


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def raises_naming(exc_type, *names, exact: bool = True):
    """``pytest.raises(exc_type)`` whose message contains every one of ``names`` (plain text)."""
    with pytest.raises(exc_type) as info:
        yield info
    if exact:
        assert type(info.value) is exc_type, f"expected {exc_type.__name__}, got {type(info.value).__name__}"
    assert isinstance(info.value, SawaError)
    msg = str(info.value)
    for name in names:
        assert str(name) in msg, f"{type(info.value).__name__} message {msg!r} does not name {name!r}"


def _beams(n_per_beam: dict[str, int], seed: int = 0, empty: dict[str, list[int]] | None = None):
    """Simulated waveforms + shot tables per beam (``empty``: shots given zero samples)."""
    beams, txs = {}, {}
    for b_i, (beam, n) in enumerate(n_per_beam.items()):
        sn = gedi_shot_numbers(ORBIT, beam, np.arange(n))
        rng = np.random.default_rng(seed + b_i)
        sim = simulate_waveforms(rng.uniform(200, 800, n), rng.uniform(10, 35, n), rng.uniform(0.3, 0.8, n),
                                 rng.uniform(0, 20, n), rng.uniform(0, 360, n), shot_number=sn, rng=seed + b_i)
        batch = sim.batch
        for k in (empty or {}).get(beam, []):
            waves = [np.zeros(0, np.float32) if j == k else batch.waveform(j) for j in range(n)]
            batch = RaggedBatch.from_waveforms(waves, batch.elevation_bin0, batch.elevation_lastbin, batch.shot_number)
        shots = pd.DataFrame({
            "shot_number": sn, "latitude_bin0": 0.5 + 0.0005 * np.arange(n),
            "longitude_bin0": 10.5 + 0.0005 * np.arange(n) + b_i * 0.006, "delta_time": 5e7 + np.arange(n) / 242.0,
        })
        beams[beam] = (batch, shots)
        txs[beam] = sim.tx
    return beams, txs


@pytest.fixture(scope="module")
def granule(tmp_path_factory) -> Path:
    """A small simulated L1B granule in the real layout (two beams, transmit waveforms)."""
    beams, txs = _beams(BEAMS)
    return write_l1b(tmp_path_factory.mktemp("granule") / L1B_NAME, beams, txs)


def _copy(src: Path, folder: Path, name: str | None = None) -> Path:
    dst = folder / (name or src.name)
    shutil.copy(src, dst)
    return dst


def _flip(data: bytes, offset: int, n: int) -> bytes:
    b = bytearray(data)
    for k in range(offset, min(offset + n, len(b))):
        b[k] ^= 0xFF
    return bytes(b)


def _utm_plane_dem(slope_deg: float, res: float = 30.0, n: int = 40):
    """Heights of a plane rising to the south at ``slope_deg`` in UTM 33N: ``(z, (x0, y0, res))``."""
    x0, y0 = 500000 - res * n / 2, 5_000_000.0
    y = -(np.arange(n) + 0.5) * res
    z = 3000.0 - math.tan(math.radians(slope_deg)) * y[:, None] * np.ones((1, n))
    return z, (x0, y0, res)


def _write_raster(path, z, transform, crs, nodata=None, dtype="float32"):
    with rasterio.open(path, "w", driver="GTiff", height=z.shape[0], width=z.shape[1], count=1, dtype=dtype,
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(z.astype(dtype), 1)
    return Path(path)


def _utm_to_lonlat(xs, ys):
    from pyproj import Transformer

    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(np.asarray(xs), np.asarray(ys))
    return np.asarray(lon, float), np.asarray(lat, float)


def _calibration(n_per_stratum: dict[str, int], seed: int = 3) -> pd.DataFrame:
    """AGBD from a known sqrt-sqrt model per stratum (GEDI L4A form) plus noise."""
    rng = np.random.default_rng(seed)
    truth = {"A": (-110.0, 5.0, 6.0), "B": (-95.0, 7.0, 2.5)}
    rows = []
    for s, n in n_per_stratum.items():
        rh98 = rng.uniform(3, 40, n)
        rh50 = rh98 * rng.uniform(0.3, 0.7, n)
        b0, b1, b2 = truth[s]
        t = np.clip(b0 + b1 * np.sqrt(rh50 + 100) + b2 * np.sqrt(rh98 + 100) + rng.normal(0, 1.5, n), 0.2, None)
        rows.append(pd.DataFrame({"rh50": rh50, "rh98": rh98, "agbd": t**2, "predict_stratum": s}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def l4a_model() -> L4AModel:
    cal = _calibration({"A": 60, "B": 60})
    return L4AModel(predictors=(50, 98)).fit(cal, cal["agbd"])


# =========================================================================== 1-8 granules
def test_01_truncated_granule(granule, tmp_path):
    data = granule.read_bytes()
    cut = tmp_path / granule.name
    cut.write_bytes(data[: len(data) * 6 // 10])
    with raises_naming(GranuleError, str(cut), "truncated") as info:
        read_l1b(cut)
    assert isinstance(info.value, OSError)


def test_02_bytes_flipped_in_a_waveform_chunk(granule, tmp_path):
    with h5py.File(granule, "r") as f:
        chunk = f["BEAM0101/rxwaveform"].id.get_chunk_info(0)
    bad = tmp_path / "in" / granule.name
    bad.parent.mkdir()
    bad.write_bytes(_flip(granule.read_bytes(), chunk.byte_offset + chunk.size // 2, 8))
    with raises_naming(GranuleError, str(bad), "BEAM0101/rxwaveform"):
        read_l1b(bad)
    # the other beam is intact and reads exactly as the original
    np.testing.assert_array_equal(read_l1b(bad, beams="BEAM1011").batch.samples,
                                  read_l1b(granule, beams="BEAM1011").batch.samples)
    # inside the shot-table writer the input error stays an input error (not an OutputError)
    out = tmp_path / "out"
    with raises_naming(GranuleError, str(bad), "BEAM0101/rxwaveform"):
        write_metrics(bad, out / "shots.parquet")
    assert list(out.iterdir()) == []


_SWEEP = """
import json, sys
import numpy as np
from pathlib import Path
from waveform.errors import SawaError
from waveform.gedi import read_l1b

src, work = Path(sys.argv[1]), Path(sys.argv[2])
data = src.read_bytes()
ref = read_l1b(src, with_tx=True)
out = []
for offset in range(0, len(data), int(sys.argv[3])):
    b = bytearray(data)
    for k in range(offset, min(offset + 16, len(b))):
        b[k] ^= 0xFF
    path = work / src.name
    path.write_bytes(bytes(b))
    try:
        c = read_l1b(path, with_tx=True)
        if not (np.array_equal(c.batch.samples, ref.batch.samples, equal_nan=True)
                and np.array_equal(c.tx.samples, ref.tx.samples, equal_nan=True)
                and np.array_equal(c.batch.count, ref.batch.count)):
            out.append([offset, "samples_differ", ""])
        else:
            out.append([offset, "same" if c.shots.equals(ref.shots) else "attributes_differ", ""])
    except SawaError as exc:
        out.append([offset, type(exc).__name__, str(exc)])
    except Exception as exc:  # noqa: BLE001 - what the test is looking for
        out.append([offset, "RAW " + type(exc).__name__, str(exc)])
print(json.dumps(out))
"""


def test_03_bytes_flipped_anywhere_give_granule_errors(granule, tmp_path):
    """Flip 16 bytes at every 1024th byte (metadata, B-trees, heaps, data): each read fails with a
    GranuleError naming the file, or reads the waveforms intact (every gzip chunk carries a zlib
    Adler-32 checksum, so flipped waveform bytes cannot pass unnoticed; an unchecksummed string
    attribute could). Run in a child process so that an HDF5 crash would fail this test, not the session."""
    res = subprocess.run([sys.executable, "-c", _SWEEP, str(granule), str(tmp_path), "1024"], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    outcomes = json.loads(res.stdout.strip().splitlines()[-1])
    raw = [o for o in outcomes if o[1].startswith("RAW")]
    assert raw == [], f"h5py errors escaped the readers: {raw[:5]}"
    assert [o for o in outcomes if o[1] == "samples_differ"] == []
    errors = [o for o in outcomes if o[1] not in ("same", "attributes_differ")]
    assert len(errors) >= 10 and sum(o[1] == "same" for o in outcomes) >= 10  # both outcomes occur
    for offset, kind, msg in errors:
        assert issubclass(getattr(sawa_errors, kind), GranuleError), (offset, kind)
        assert str(tmp_path / granule.name) in msg, (offset, msg)


def test_04_empty_and_non_hdf5_files(tmp_path):
    empty = tmp_path / L1B_NAME
    empty.touch()
    with raises_naming(GranuleError, str(empty), "empty (0 bytes)"):
        read_l1b(empty)
    text = tmp_path / "GEDI01_B_notes.h5"
    text.write_text("shot_number,rh98\n1,20.5\n")
    with raises_naming(GranuleError, str(text), "not an HDF5 file"):
        read_l1b(text)


def test_05_wrong_product(granule, tmp_path):
    l2a = _copy(granule, tmp_path, L2A_NAME)
    with h5py.File(l2a, "r+") as f:  # relabel the copy as an L2A granule, as NASA's METADATA does
        ident = f["METADATA/DatasetIdentification"]
        for key, value in (("shortName", "GEDI_L2A"), ("fileName", L2A_NAME)):
            ident.attrs.create(key, np.array([value], dtype=object), dtype=h5py.string_dtype("utf-8"))
    with raises_naming(WrongProductError, str(l2a), "GEDI L2A granule", "a L1B granule is needed") as info:
        read_l1b(l2a)
    assert isinstance(info.value, ValueError)
    with raises_naming(WrongProductError, str(granule), "L1B", "L4A"):
        read_l4a(granule)
    out = tmp_path / "out"
    with raises_naming(WrongProductError, str(l2a), "L1B"):
        write_metrics(l2a, out / "shots.parquet")
    assert not out.exists() or list(out.iterdir()) == []


def test_06_missing_beam(granule):
    with raises_naming(MissingBeamError, str(granule), "'BEAM0000'", "beams present: BEAM0101, BEAM1011") as info:
        read_l1b(granule, beams="BEAM0000")
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith(str(granule))  # the message, not KeyError's repr of it
    with raises_naming(MissingBeamError, "'BEAM9999' is not a GEDI beam name", "BEAM1011"):
        read_l1b(granule, beams=["BEAM0101", "BEAM9999"])


def test_07_missing_dataset(granule, tmp_path):
    bad = _copy(granule, tmp_path)
    with h5py.File(bad, "r+") as f:
        del f["BEAM1011/geolocation/elevation_bin0"]
    with raises_naming(MissingDatasetError, str(bad), "beam BEAM1011 has no dataset 'geolocation/elevation_bin0'",
                       "L1B reader needs it") as info:
        read_l1b(bad)
    assert isinstance(info.value, KeyError)
    assert len(read_l1b(bad, beams="BEAM0101")) == BEAMS["BEAM0101"]


def test_08_zero_based_start_index(granule, tmp_path):
    bad = _copy(granule, tmp_path)
    with h5py.File(bad, "r+") as f:
        f["BEAM0101/rx_sample_start_index"][3] = 0
        shot = int(f["BEAM0101/shot_number"][3])
    with raises_naming(GranuleError, str(bad), f"BEAM0101: shot {shot} has rx_sample_start_index=0", "1-based"):
        read_l1b(bad)


# =========================================================================== 9-12 waveforms
def test_09_zero_length_waveforms(tmp_path):
    beams, txs = _beams({"BEAM0101": 8}, empty={"BEAM0101": [1, 6]})
    path = write_l1b(tmp_path / L1B_NAME, beams)
    chunk = read_l1b(path)
    np.testing.assert_array_equal(chunk.shots["rx_sample_count"], [c if k not in (1, 6) else 0
                                                                   for k, c in enumerate(chunk.batch.count)])
    assert chunk.batch.count[[1, 6]].tolist() == [0, 0]
    m = compute_metrics(chunk.batch)
    names = m.reason_names()
    assert names[1] == names[6] == "empty_waveform"
    assert np.isnan(m.rh[[1, 6]]).all() and not m.quality[[1, 6]].any()
    # the empty shots do not disturb their neighbours: same metrics as a batch without them
    keep = np.array([0, 2, 3, 4, 5, 7])
    alone = compute_metrics(chunk.batch.take(keep))
    np.testing.assert_array_equal(m.reason[keep], alone.reason)
    np.testing.assert_array_equal(m.rh[keep], alone.rh)
    # zero shots (an empty beam) with L2A's per-shot setting groups is valid too: an empty result
    none = compute_metrics(chunk.batch.take(np.zeros(0, np.int64)), np.zeros(0, np.int64))
    assert len(none) == 0 and none.rh.shape == (0, 101)


def test_10_saturated_waveforms():
    """Bright bare ground (6x the usual return energy) peaks near 5600 counts; the same waveforms
    clipped at GEDI's saturation amplitude have a flat top and must not give metrics."""
    z0 = np.array([300.0, 555.5, 812.25, 1000.0])
    sim = simulate_waveforms(z0, 0.0, 0.0, [0.0, 2.0, 4.0, 6.0], 0.0, bare_ground_energy=90_000.0, rng=4)
    b = sim.batch
    assert all(b.waveform(k).max() > GEDI_CLIP_AMPLITUDE + 500 for k in range(4))
    clipped = np.minimum(b.samples, np.float32(GEDI_CLIP_AMPLITUDE))
    both = RaggedBatch(np.concatenate([b.samples, clipped]), np.concatenate([b.start, b.start + b.samples.size]),
                       np.concatenate([b.count, b.count]), np.tile(b.elevation_bin0, 2),
                       np.tile(b.elevation_lastbin, 2), np.arange(8, dtype=np.uint64))
    m = compute_metrics(both, "a1", 200.0, 3.0)
    assert list(m.reason_names()) == ["ok"] * 4 + ["saturated"] * 4
    np.testing.assert_allclose(m.ground_elevation_m[:4], z0, atol=0.3)  # unclipped: the true ground
    assert np.isnan(m.rh[4:]).all() and np.isnan(m.ground_elevation_m[4:]).all() and not m.quality[4:].any()
    # the flat top is at least 4 samples of exactly the clip value in each clipped waveform
    for k in range(4, 8):
        assert (both.waveform(k) == np.float32(GEDI_CLIP_AMPLITUDE)).sum() >= 4


@pytest.mark.parametrize("noise", ["given", "estimated"])
def test_11_all_noise_waveforms(noise):
    rng = np.random.default_rng(11)
    waves = [rng.normal(200.0, 3.0, int(c)) for c in rng.integers(600, 1400, 20)]
    batch = RaggedBatch.from_waveforms(waves, np.full(20, 900.0), [900.0 - 0.15 * (len(w) - 1) for w in waves])
    mu, sd = (np.full(20, 200.0), np.full(20, 3.0)) if noise == "given" else (None, None)
    for alg in ("a1", "a2", "a3", "a4", "a5", "a6"):
        m = compute_metrics(batch, alg, mu, sd)
        assert set(m.reason_names()) == {"no_signal"}, alg
        assert np.isnan(m.rh).all() and np.isnan(m.ground_elevation_m).all()
        assert np.isfinite(m.noise_mean).all()  # the noise itself was measured


def test_12_fill_values_everywhere(tmp_path):
    beams, _ = _beams({"BEAM0101": 7})
    b, shots = beams["BEAM0101"]
    samples = b.samples.copy()
    for k, fill in ((1, FILL_NEG), (2, FILL_F32MAX)):  # whole waveforms of fill
        samples[b.start[k]:b.start[k] + b.count[k]] = fill
    samples[b.start[3] + 100:b.start[3] + 110] = FILL_NEG  # a run of fill inside a waveform
    bin0, last = b.elevation_bin0.copy(), b.elevation_lastbin.copy()
    bin0[4] = last[4] = FILL_NEG
    bin0[5] = FILL_F32MAX
    batch = RaggedBatch(samples, b.start, b.count, bin0, last, b.shot_number)
    shots = shots.assign(
        latitude_bin0=[0.5, 0.5, 0.5, 0.5, FILL_NEG, 0.5, 0.5],
        longitude_bin0=[10.5, 10.5, 10.5, 10.5, FILL_NEG, 10.5, 10.5],
        noise_mean_corrected=[np.nan] * 6 + [FILL_NEG],  # NaN: the writer measures it; fill: L1B says unknown
        noise_stddev_corrected=[np.nan] * 6 + [FILL_F32MAX],
        digital_elevation_model=FILL_NEG, tx_egsigma=FILL_F32MAX,
    )
    path = write_l1b(tmp_path / L1B_NAME, {"BEAM0101": (batch, shots)})
    summary = write_metrics(path, tmp_path / "shots.parquet")
    table = read_shot_table(tmp_path / "shots.parquet")
    assert list(table["reason"]) == ["ok", "nonfinite_samples", "nonfinite_samples", "nonfinite_samples",
                                     "bad_geolocation", "bad_geolocation", "ok"]
    assert summary["reasons"] == {"bad_geolocation": 2, "nonfinite_samples": 3, "ok": 2}
    bad = table.iloc[1:6]
    for col in ("ground_elevation", "canopy_top_elevation", "rh50", "rh98", "cover", "energy_total", "noise_mean"):
        assert bad[col].isna().all(), col
    assert table.loc[[4], ["latitude", "longitude", "elevation_bin0"]].isna().all(axis=None)
    # shot 6: fill noise values are unknown -> estimated from the waveform, as for NaN
    assert table["noise_mean"].iloc[6] == pytest.approx(200.0, abs=2.0) and table["quality"].iloc[6]
    # never a fill value as a number, in any column
    numeric = table.drop(columns="geometry").select_dtypes("number").astype(float)
    values = numeric.to_numpy()
    assert not np.isin(values, [FILL_NEG, -999999.0]).any()
    assert not (np.abs(values[np.isfinite(values)]) >= 1e30).any()
    assert table["digital_elevation_model"].isna().all() and table["tx_egsigma"].isna().all()


# =========================================================================== 13-18 rasters
def test_13_nan_and_inf_in_a_dem(tmp_path):
    z, (x0, y0, res) = _utm_plane_dem(10.0)
    z[20:23, 20:23] = np.nan
    z[5:8, 30:33] = np.inf
    z[30, 5] = -np.inf
    dem = _write_raster(tmp_path / "dem.tif", z, Affine(res, 0, x0, 0, -res, y0), UTM)
    cols = np.array([21.5, 31.5, 5.5, 10.5, 33.5])  # NaN, +inf, -inf, clean, next to the +inf patch
    rows = np.array([21.5, 6.5, 30.5, 15.5, 6.5])
    lon, lat = _utm_to_lonlat(x0 + cols * res, y0 - rows * res)
    out = footprint_terrain(dem, lon, lat)
    assert list(out["reason"]) == ["nodata", "nodata", "nodata", "ok", "ok"]
    assert out.loc[:2, ["slope_deg", "relief_m", "dem_elevation_m"]].isna().all(axis=None)
    # ground distances near UTM's central meridian are grid distances / 0.9996
    truth = math.degrees(math.atan(0.9996 * math.tan(math.radians(10.0))))
    np.testing.assert_allclose(out["slope_deg"].iloc[3:], truth, atol=1e-3)
    assert np.isfinite(out.loc[3:, ["relief_m", "dem_elevation_m"]].to_numpy()).all()
    # relief of a plane over the 3x3 neighbourhood: two rows x 30 m x tan(10 deg)
    assert out["relief_m"].iloc[3] == pytest.approx(2 * res * math.tan(math.radians(10.0)), rel=1e-5)


def test_14_nan_and_inf_in_an_optical_covariate(tmp_path):
    from sklearn.linear_model import LinearRegression

    grid = GridSpec.geographic(0.01, (10.0, 0.0, 10.4, 0.3))  # 40 x 30 cells
    lon, lat = np.meshgrid(10.005 + 0.01 * np.arange(40), 0.295 - 0.01 * np.arange(30))
    cover = (50 + 40 * np.sin(lon * 20)).astype(np.float32)
    bad = np.zeros(cover.shape, bool)
    bad[5:8, 5:8] = bad[20:22, 30:33] = bad[25, 2] = True
    cover[5:8, 5:8], cover[20:22, 30:33], cover[25, 2] = np.nan, np.inf, -np.inf
    path = write_geotiff(tmp_path / "cover.tif", cover, Affine(0.01, 0, 10.0, 0, -0.01, 0.3), "EPSG:4326",
                         nodata=-9999.0)
    rng = np.random.default_rng(0)
    slon, slat = rng.uniform(10.0, 10.4, 600), rng.uniform(0.0, 0.3, 600)
    agbd = 3.0 * (50 + 40 * np.sin(slon * 20)) + rng.normal(0, 5.0, 600)
    model = fit_optical_model(pd.DataFrame({"longitude": slon, "latitude": slat, "agbd": agbd}), {"cover": path},
                              grid, learner=LinearRegression(), cv_block_m=5000.0)
    on_bad = bad[((0.3 - slat) / 0.01).astype(int), ((slon - 10.0) / 0.01).astype(int)]
    assert model.info["n_missing_covariate"] == int(on_bad.sum()) > 0
    assert model.info["n_train"] == 600 - int(on_bad.sum())
    res = predict_map(model, None, None, tmp_path / "agb.tif")
    assert res.n_predicted == bad.size - bad.sum()
    for p in (res.agb_path, res.se_path):
        with rasterio.open(p) as ds:
            a = ds.read(1)
            assert ds.nodata == -9999.0
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a == -9999.0, bad)
    with rasterio.open(res.agb_path) as ds:
        a = ds.read(1)
    np.testing.assert_allclose(a[~bad], 3.0 * cover[~bad], atol=2.0)  # the linear truth, away from bad pixels
    assert math.isfinite(res.agb_mean_mg_ha)


def test_15_nan_and_inf_in_zonal_rasters():
    t = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
    agb = np.full((100, 100), 100.0)
    agb[10:20, 10:20], agb[30:40, 30:40], agb[50, 50] = np.nan, np.inf, -np.inf
    se = np.full((100, 100), 10.0)
    se[60:70, 60:70], se[70, 70] = np.nan, np.inf
    poly = gpd.GeoDataFrame({"iso3": ["AAA"], "name": ["A"]}, geometry=[shapely.box(10.0, 44.0, 11.0, 45.0)], crs=4326)
    out = zonal_totals((agb, t, "EPSG:4326"), poly, se_raster=(se, t, "EPSG:4326"))
    finite = np.isfinite(agb)
    area_ha = np.broadcast_to(row_areas_m2(t, 100, "EPSG:4326")[:, None], agb.shape) / 1e4
    mapped_ha = area_ha[finite].sum()
    row = out.iloc[0]
    assert row["mapped_pixels"] == finite.sum() == 10_000 - 201
    assert row["mapped_area_ha"] == pytest.approx(mapped_ha, rel=1e-9)
    assert row["agb_pg"] == pytest.approx(100.0 * mapped_ha / 1e9, rel=1e-9)
    assert row["agb_mean_mg_ha"] == pytest.approx(100.0, rel=1e-12)
    with_se = finite & np.isfinite(se)
    assert row["agb_se_pg"] == pytest.approx(10.0 * area_ha[with_se].sum() / 1e9, rel=1e-9)
    numeric = out.select_dtypes("number").drop(columns=["bgc_pg"])  # no BGB without a zone: NaN by design
    assert np.isfinite(numeric.to_numpy(float)).all()
    missing_ha = area_ha[finite & ~np.isfinite(se)].sum()
    assert f"{missing_ha:.4g} ha with AGB but no SE" in row["warnings"]


def test_16_rasters_without_crs(tmp_path):
    z, (x0, y0, res) = _utm_plane_dem(5.0)
    path = _write_raster(tmp_path / "no_crs.tif", z, Affine(res, 0, x0, 0, -res, y0), None)
    with raises_naming(RasterError, str(path), "has no CRS"):
        open_dem(path)
    with raises_naming(RasterError, str(path), "has no CRS"):
        footprint_terrain(path, [15.0], [45.0])
    agb = _write_raster(tmp_path / "agb_no_crs.tif", np.full((10, 10), 50.0), Affine(0.1, 0, 10, 0, -0.1, 45), None)
    poly = gpd.GeoDataFrame({"iso3": ["AAA"]}, geometry=[shapely.box(10.2, 44.2, 10.8, 44.8)], crs=4326)
    with raises_naming(RasterError, f"AGB raster {agb} has no CRS"):
        zonal_totals(agb, poly)


def test_17_dem_not_under_the_shots(tmp_path):
    z, (x0, y0, res) = _utm_plane_dem(5.0)
    dem = _write_raster(tmp_path / "dem.tif", z, Affine(res, 0, x0, 0, -res, y0), UTM)
    lon, lat = np.array([30.1, 30.2]), np.array([-5.0, -5.1])  # 20 degrees away
    with raises_naming(NoOverlapError, f"DEM {dem}", "does not overlap any of the 2 shots",
                       "lon 30.1000..30.2000") as info:
        footprint_terrain(dem, lon, lat)
    assert isinstance(info.value, ValueError)
    # the shot-table hook keeps every row and says why (a chunk may simply lie off the DEM)
    sim = simulate_waveforms([300.0, 400.0], 20.0, 0.5, 0.0, 0.0, rng=1)
    table = pd.DataFrame({"shot_number": sim.batch.shot_number, "longitude": lon, "latitude": lat})
    out = annotate_terrain(table, sim.batch, dem)
    assert list(out["terrain_reason"]) == ["outside_dem"] * 2
    assert list(out["sawa_reason"]) == ["no_slope"] * 2
    assert out[sawa_columns()].isna().all(axis=None)


def test_18_rasters_not_aligned_and_regions_off_the_raster():
    t = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
    agb = np.full((100, 100), 80.0)
    shifted = Affine(0.01, 0, 10.005, 0, -0.01, 45.0)  # half a pixel east
    poly = gpd.GeoDataFrame({"iso3": ["AAA"]}, geometry=[shapely.box(10.2, 44.2, 10.8, 44.8)], crs=4326)
    with raises_naming(RasterError, "AGB standard error raster", "is not on the grid of the AGB raster"):
        zonal_totals((agb, t, "EPSG:4326"), poly, se_raster=(agb / 10, shifted, "EPSG:4326"))
    with raises_naming(NoOverlapError, "latitude band lat[60,70] does not overlap the raster", "(latitudes 44..45)"):
        latitude_band_total((agb, t, "EPSG:4326"), 60.0, 70.0)


# =========================================================================== 19-20 polygons
def test_19_invalid_and_self_intersecting_polygons():
    t = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
    agb = (np.full((100, 100), 100.0), t, "EPSG:4326")
    bowtie = shapely.Polygon([(10.1, 44.1), (10.9, 44.9), (10.9, 44.1), (10.1, 44.9)])
    assert not bowtie.is_valid
    fixed = shapely.make_valid(bowtie)
    polys = gpd.GeoDataFrame({"iso3": ["BOW", "FIX"]}, geometry=[bowtie, fixed], crs=4326)
    out = zonal_totals(agb, polys)
    bow, fix = out.iloc[0], out.iloc[1]
    assert "invalid geometry (Self-intersection" in bow["warnings"] and "made valid" in bow["warnings"]
    assert fix["warnings"] == ""
    area_ha = geodesic_area_m2(fixed, "EPSG:4326") / 1e4
    assert bow["polygon_area_ha"] == pytest.approx(area_ha, rel=1e-12)
    for col in ("agb_pg", "mapped_area_ha", "agc_pg"):
        assert bow[col] == pytest.approx(fix[col], rel=1e-12), col
    assert bow["agb_pg"] == pytest.approx(100.0 * area_ha / 1e9, rel=1e-3)
    # an invalid ring with no area at all: nothing to sum, an error naming the polygon and row
    flat = shapely.Polygon([(10.1, 44.1), (10.5, 44.5), (10.9, 44.9), (10.1, 44.1)])
    polys = gpd.GeoDataFrame({"iso3": ["AAA", "ZZZ"]}, geometry=[fixed, flat], crs=4326)
    with raises_naming(SawaValueError, "polygon 'ZZZ' (row 1) is invalid", "no area once made valid"):
        zonal_totals(agb, polys)


def test_20_unknown_or_malformed_iso3():
    agb = (np.full((100, 100), 100.0), Affine(0.01, 0, 10.0, 0, -0.01, 45.0), "EPSG:4326")
    polys = gpd.GeoDataFrame({"iso3": ["FRA", "ITA"], "name": ["France", "Italy"]},
                             geometry=[shapely.box(10.1, 44.1, 10.4, 44.4), shapely.box(10.5, 44.5, 10.9, 44.9)],
                             crs=4326)
    with raises_naming(SawaValueError, "unknown iso3 value(s) ['FRX']", "'FRX': ['FRA']"):
        zonal_totals(agb, polys, ids=["ITA", "FRX"])
    assert list(zonal_totals(agb, polys, ids=["ITA"])["iso3"]) == ["ITA"]
    with raises_naming(SawaValueError, "['France']", "not ISO 3166-1 alpha-3"):
        zonal_totals(agb, polys.assign(iso3=["France", "ITA"]))


# =========================================================================== 21-22 configuration
def test_21_malformed_toml(tmp_path):
    path = tmp_path / "audit.toml"
    path.write_text('[grid]\nresolution_deg = 0.01\n\n[run]\noutput = "unterminated\n')
    with raises_naming(ConfigError, f"config file {path} is not valid TOML", "line 5") as info:
        load_config(path)
    assert isinstance(info.value, ValueError)
    path.write_bytes(b'[run]\noutput = "\xff\xfe"\n')
    with raises_naming(ConfigError, f"config file {path} is not UTF-8 text"):
        load_config(path)


@pytest.mark.parametrize(("text", "names"), [
    ('[biomass]\npredictor = ["rh98"]\n', ["unknown key 'predictor' in [biomass]", "predictors"]),
    ('[run]\nworkers = "four"\n', ["[run] workers: expected an integer, got str 'four'"]),
    ("[fusion]\nblock_px = true\n", ["[fusion] block_px: expected an integer, got bool True"]),
    ('[inputs]\noptical = ["ndvi.tif"]\n', ["[inputs] optical: expected a table name = path, got list"]),
    ('[waveform]\nalgorithm = "A1 "\n', ["[waveform] algorithm = 'A1 ' is not one of a1, a2"]),
    ("[carbon]\ncarbon_fraction = 0.47\n", ["unknown key 'carbon_fraction' in [carbon]", "[carbon] factors"]),
    ("grid = 0.01\n", ["[grid] must be a table, got float"]),
])
def test_22_unknown_toml_key_or_wrong_type(tmp_path, text, names):
    path = tmp_path / "audit.toml"
    path.write_text(text)
    with raises_naming(ConfigError, *names, f"{path}: "):
        load_config(path)


# =========================================================================== 23-24 model files
def test_23_tampered_model_files(tmp_path, l4a_model):
    path = save_model(l4a_model, tmp_path / "model.json")
    doc = json.loads(path.read_text())
    stratum = doc["payload"]["table"]["strata"][0]
    stratum["par"][1] = stratum["par"][1] * 1.01  # one coefficient nudged by 1 %
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc, indent=1, sort_keys=True))
    with raises_naming(ModelFileError, str(edited), "modified after it was written") as info:
        load_model(edited)
    assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
    cut = tmp_path / "cut.json"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with raises_naming(ModelFileError, str(cut), "is not valid JSON"):
        load_model(cut)
    back = load_model(path)  # the untouched file still loads and predicts the same
    cal = _calibration({"A": 5, "B": 5}, seed=9)
    np.testing.assert_array_equal(back.predict(cal), l4a_model.predict(cal))


class _Payload:
    """Unpickling this would create ``marker``: proof that a loader executed the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_24_foreign_and_pickle_model_files(tmp_path):
    marker = tmp_path / "pickle_was_executed"
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    with raises_naming(ModelFileError, str(pkl), "never loads pickle/joblib files"):
        load_model(pkl)
    renamed = _copy(pkl, tmp_path, "model.json")  # a pickle under a sawa name is still refused
    with raises_naming(ModelFileError, str(renamed), "neither a sawa JSON model nor a skops file"):
        load_model(renamed)
    zipped = tmp_path / "model.skops"  # a zip holding a pickle (as torch/joblib archives do)
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Payload(marker)))
    with raises_naming(ModelFileError, str(zipped), "not a readable skops model file"):
        load_model(zipped)
    geojson = tmp_path / "regions.json"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with raises_naming(ModelFileError, str(geojson), "not a sawa model file"):
        load_model(geojson)
    assert not marker.exists()


# =========================================================================== 25-26 outputs
def _writers(tmp_path, l4a_model):
    """name -> (file name, write(path)) for every kind of sawa output file."""
    beams, txs = _beams({"BEAM0101": 3})

    def shot_table(path):
        frame = read_shot_table(tmp_path / "_shots_src.parquet")
        return write_shot_table([frame.iloc[:2], frame.iloc[2:]], path)

    if not (tmp_path / "_shots_src.parquet").exists():
        src = write_l1b(tmp_path / "_src" / L1B_NAME, beams, txs)
        write_metrics(src, tmp_path / "_shots_src.parquet")
    return {
        "model_json": ("model.json", lambda p: save_model(l4a_model, p)),
        "l1b_hdf5": (L1B_NAME, lambda p: write_l1b(p, beams, txs)),
        "shot_table": ("shots.parquet", shot_table),
        "geotiff": ("agb.tif", lambda p: write_geotiff(p, np.full((64, 64), 7.0, np.float32),
                                                        Affine(0.01, 0, 10, 0, -0.01, 45), "EPSG:4326")),
    }


@pytest.mark.parametrize("writer", ["model_json", "l1b_hdf5", "shot_table", "geotiff"])
def test_25_unwritable_output_directory(tmp_path, l4a_model, monkeypatch, writer):
    name, write = _writers(tmp_path, l4a_model)[writer]
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):  # a read-only folder (chmod is not enforced for root)
        if Path(path) == locked and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with raises_naming(OutputError, f"output folder {locked} is not writable", f"writing {name}") as info:
        write(locked / name)
    assert isinstance(info.value, OSError)
    assert list(locked.iterdir()) == []
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with raises_naming(OutputError, f"cannot create output folder {blocker / 'sub'}"):
        write(blocker / "sub" / name)


class _DiskFull:
    """Fails a write with ENOSPC after ``after`` successful calls, noting the folder's files then."""

    def __init__(self, folder: Path, after: int):
        self.folder, self.after, self.calls, self.seen = folder, after, 0, None

    def fail_now(self) -> bool:
        self.calls += 1
        if self.calls > self.after:
            self.seen = sorted(p.name for p in self.folder.iterdir())
            return True
        return False

    def error(self) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["model_json", "l1b_hdf5", "shot_table", "geotiff"])
def test_26_disk_full_during_a_write(tmp_path, l4a_model, monkeypatch, writer):
    name, write = _writers(tmp_path, l4a_model)[writer]
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / name
    write(target)  # a complete previous output
    old = target.read_bytes()
    full = _DiskFull(folder, after={"model_json": 0, "l1b_hdf5": 12, "shot_table": 1, "geotiff": 0}[writer])
    if writer == "model_json":
        import waveform.outputs as outputs

        class HalfWrites:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(data[: len(data) // 2])  # half of it reached the disk
                if full.fail_now():
                    raise full.error()

            def __getattr__(self, attr):
                return getattr(self.fh, attr)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        monkeypatch.setattr(outputs, "open", lambda *a, **k: HalfWrites(open(*a, **k)), raising=False)
    elif writer == "l1b_hdf5":
        import waveform.l1b_writer as lw

        real = lw._write

        def write_ds(*args, **kwargs):
            if full.fail_now():
                raise full.error()
            return real(*args, **kwargs)

        monkeypatch.setattr(lw, "_write", write_ds)
    elif writer == "shot_table":
        import pyarrow.parquet as pq

        real = pq.ParquetWriter.write_table

        def write_table(self, *args, **kwargs):
            if full.fail_now():
                raise full.error()
            return real(self, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    else:
        real = rasterio.io.DatasetWriter.write

        def write_band(self, *args, **kwargs):
            real(self, *args, **kwargs)
            if full.fail_now():
                raise full.error()

        monkeypatch.setattr(rasterio.io.DatasetWriter, "write", write_band)
    with raises_naming(OutputError, f"writing {target} failed", "No space left on device"):
        write(target)
    assert full.seen is not None and len(full.seen) == 2, full.seen  # the half-written temporary existed
    assert target.read_bytes() == old  # the previous output is intact
    assert sorted(p.name for p in folder.iterdir()) == [name]  # and no temporary is left behind


# =========================================================================== 27-29 biomass models
def test_27_unknown_stratum(l4a_model):
    cal = _calibration({"A": 4, "B": 4}, seed=5)
    shots = pd.concat([cal, cal.iloc[[0, 5]].assign(predict_stratum=["C_Mars", "EBT_SAs"])], ignore_index=True)
    out = l4a_model.predict_frame(shots)
    assert list(out["agbd_reason"].iloc[8:]) == ["unknown_stratum:C_Mars", "unknown_stratum:EBT_SAs"]
    assert out[["agbd", "agbd_se"]].iloc[8:].isna().all(axis=None)
    np.testing.assert_array_equal(out["agbd"].iloc[:8], l4a_model.predict(cal))  # the others as if alone
    assert (out["agbd_reason"].iloc[:8] == "").all()


def test_28_missing_predictor_columns(l4a_model):
    cal = _calibration({"A": 3, "B": 2}, seed=6)
    with raises_naming(ModelError, "lacks RH predictor columns: rh50 needed by A (3 shots), B (2 shots)"):
        l4a_model.predict_frame(cal.drop(columns="rh50"))
    sawa = L4AModel(predictors=(98,), rh_suffix="_sawa").fit(
        _calibration({"A": 30}).rename(columns={"rh98": "rh98_sawa"}), _calibration({"A": 30})["agbd"])
    with raises_naming(ModelError, "rh98_sawa needed by A (3 shots)", "rh_suffix='_sawa'"):
        sawa.predict_frame(cal[cal.predict_stratum == "A"])


def test_29_too_few_shots_per_stratum():
    cal = _calibration({"A": 40, "B": 2})
    with raises_naming(ModelError, "stratum 'B' has 2 calibration shots",
                       f"at least {MIN_SHOTS_PER_STRATUM} are needed to fit 3 parameters"):
        L4AModel(predictors=(50, 98)).fit(cal, cal["agbd"])
    # min_shots_per_stratum lower than the parameter count still needs npar + 1 shots
    with raises_naming(ModelError, "stratum 'B' has 2 calibration shots; at least 4 are needed"):
        L4AModel(predictors=(50, 98), min_shots_per_stratum=1).fit(cal, cal["agbd"])


# =========================================================================== 30-32 arguments
def test_30_inconsistent_ragged_batch():
    b = RaggedBatch.from_waveforms([np.ones(5), np.ones(3)], [10.0, 10.0], [9.4, 9.7],
                                   np.array([70, 71], np.uint64), source="G.h5:BEAM0101")
    with raises_naming(BatchError, "(G.h5:BEAM0101)", "shot 71 (index 1) has start=5, count=-3"):
        RaggedBatch(b.samples, b.start, np.array([5, -3], np.int32), b.elevation_bin0, b.elevation_lastbin,
                    b.shot_number, source=b.source)
    with raises_naming(SawaValueError, "compute_metrics needs a RaggedBatch, got ndarray"):
        compute_metrics(b.samples)


@pytest.mark.parametrize("bad_slope", [120.0, -3.0])
def test_31_slopes_outside_degrees(bad_slope):
    sim = simulate_waveforms([300.0, 310.0], 20.0, 0.5, [5.0, 10.0], 0.0, shot_number=[4401, 4402], rng=2)
    with raises_naming(SawaValueError, f"slope {bad_slope!r} deg for shot 4402", "outside [0, 90) degrees",
                       "not percent or radians"):
        sawa_metrics(sim.batch, [5.0, bad_slope])


def test_32_longitude_latitude_swapped(tmp_path):
    z, (x0, y0, res) = _utm_plane_dem(5.0)
    dem = _write_raster(tmp_path / "dem.tif", z, Affine(res, 0, x0, 0, -res, y0), UTM)
    lon, lat = _utm_to_lonlat([x0 + 300.0, x0 + 600.0], [y0 - 300.0, y0 - 600.0])
    sim = simulate_waveforms([300.0, 310.0], 20.0, 0.5, 5.0, 0.0, rng=2)
    table = pd.DataFrame({"shot_number": sim.batch.shot_number, "longitude": lat, "latitude": [lon[0], 100.0]})
    with raises_naming(SawaValueError, "latitude 100.0 of shot index 1 is outside -90..90 degrees", "swapped"):
        annotate_terrain(table, sim.batch, dem)


def test_33_garbage_geolocation():
    sim = simulate_waveforms([300.0] * 6, 25.0, 0.6, 20.0, 0.0, rng=8)
    b = sim.batch
    top = b.elevation_bin0.copy()
    span = (b.count - 1).astype(float)
    bin0 = top.copy()
    last = top - 0.15 * span  # shot 0: sane
    last[1] = top[1] + 0.15 * span[1]  # bin0 below lastbin (time runs downwards)
    last[2] = top[2] - 1e-6  # 1 um bins
    last[3] = top[3] - 100.0 * span[3]  # 100 m bins
    bin0[4], last[4] = 1e308, 1e308 - 1e300  # overflowing heights
    last[5] = top[5]  # no vertical extent
    bad = RaggedBatch(b.samples, b.start, b.count, bin0, last, b.shot_number)
    m = compute_metrics(bad, "a1", 200.0, 3.0)
    assert list(m.reason_names()) == ["ok"] + ["bad_geolocation"] * 5
    assert np.isnan(m.rh[1:]).all() and np.isnan(m.ground_elevation_m[1:]).all()
    out = sawa_metrics(bad, np.full(6, 20.0), noise_mean=200.0, noise_std=3.0)
    assert list(out["sawa_reason"]) == ["ok"] + ["waveform"] * 5
    assert out[sawa_columns()].iloc[1:].isna().all(axis=None)



def test_34_transmit_pulse_sigma_not_in_ns():
    """A pulse sigma of 1e8 (seconds taken for ns, or garbage) is an error naming the shot, before any
    bare-ground model of 10^9 samples is built (the fuzz test below found the memory blow-up);
    a missing one (NaN, e.g. an L1B fill) falls back to the GEDI default."""
    sim = simulate_waveforms([300.0] * 3, 25.0, 0.6, 20.0, 20.0, rng=9)
    tx = np.array([6.6, 1e8, np.nan])
    for fn in (sawa_metrics, deconvolved_metrics):
        with raises_naming(SawaValueError, "transmit pulse sigma 100000000.0 ns",
                           f"shot {int(sim.batch.shot_number[1])}", "tx_egsigma"):
            fn(sim.batch, np.full(3, 20.0), 25.0, tx, noise_mean=200.0, noise_std=3.0)
    tx[1] = np.inf
    with raises_naming(SawaValueError, "transmit pulse sigma inf ns"):
        sawa_metrics(sim.batch, np.full(3, 20.0), 25.0, tx, noise_mean=200.0, noise_std=3.0)
    tx[1] = np.nan
    out = sawa_metrics(sim.batch, np.full(3, 20.0), 25.0, tx, noise_mean=200.0, noise_std=3.0)
    default = sawa_metrics(sim.batch, np.full(3, 20.0), 25.0, None, noise_mean=200.0, noise_std=3.0)
    cols = sawa_columns()
    np.testing.assert_allclose(out[cols].to_numpy(float)[1:], default[cols].to_numpy(float)[1:])

# =========================================================================== fuzzing
_SPECIAL = [np.nan, np.inf, -np.inf, FILL_NEG, FILL_F32MAX, -FILL_F32MAX, 0.0, -1.0, 1e-30, 1e30]
_amplitude = st.one_of(st.floats(-1e4, 1e4), st.sampled_from(_SPECIAL), st.floats(width=32))
_elevation = st.one_of(st.floats(-500.0, 9000.0), st.sampled_from([np.nan, np.inf, -np.inf, FILL_NEG, 0.0, 1e308]),
                       st.floats())


@st.composite
def ragged_batches(draw, max_shots: int = 8):
    """Random ragged batches: 0..max_shots shots of 0..700 samples; noise, returns anywhere (also off the
    window), flat or spiky waveforms, special values; any elevations and noise statistics."""
    n = draw(st.integers(0, max_shots))
    waves, bin0, last = [], [], []
    for _ in range(n):
        count = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 17, 64, 65] + [200, 400, 700] * 3))
        rng = np.random.default_rng(draw(st.integers(0, 2**31)))
        kind = draw(st.sampled_from(["values", "return", "return", "return", "flat", "spiky"]))
        x = np.arange(count)
        if kind == "values":
            head = [draw(_amplitude) for _ in range(min(count, 12))]
            w = np.concatenate([head, rng.normal(200.0, 3.0, count - len(head))])
        elif kind == "return":
            w = (200.0 + draw(st.floats(-500.0, 5000.0))
                 * np.exp(-0.5 * ((x - draw(st.floats(-50.0, count + 50.0))) / draw(st.floats(0.1, 100.0))) ** 2)
                 + rng.normal(0.0, draw(st.floats(0.0, 10.0)), count))
        elif kind == "flat":
            w = np.full(count, draw(_amplitude))
        else:
            w = rng.normal(200.0, 3.0, count)
            for _ in range(draw(st.integers(0, 3))):
                if count:
                    w[draw(st.integers(0, count - 1))] = draw(_amplitude)
        with np.errstate(over="ignore", invalid="ignore"):
            waves.append(np.asarray(w, np.float64).astype(np.float32))
        if draw(st.integers(0, 3)) < 3:  # most shots: a sane window (0.15 m bins), so deep code paths run
            bin0.append(draw(st.floats(-500.0, 9000.0)))
            last.append(bin0[-1] - 0.15 * (max(count, 2) - 1))
        else:
            bin0.append(draw(_elevation))
            last.append(draw(st.one_of(_elevation, st.just(bin0[-1]), st.just(bin0[-1] - 1e-6),
                                       st.just(bin0[-1] + 10.0))))
    noise = draw(st.sampled_from(["none", "given", "any"]))
    if noise == "none":
        mu = sd = None
    elif noise == "given":
        mu, sd = np.full(n, 200.0), np.full(n, 3.0)
    else:
        mu = np.array([draw(st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, FILL_NEG])))
                       for _ in range(n)])
        sd = np.array([draw(st.one_of(st.floats(-5.0, 50.0), st.sampled_from([np.nan, np.inf, 0.0, -3.0])))
                       for _ in range(n)])
    algorithm = draw(st.one_of(st.sampled_from(["a1", "a2", "a3", "a4", "a5", "a6"]),
                               st.lists(st.integers(1, 6), min_size=n, max_size=n).map(np.array)))
    batch = RaggedBatch.from_waveforms(waves, np.array(bin0, float), np.array(last, float),
                                       np.arange(1000, 1000 + n, dtype=np.uint64))
    return batch, mu, sd, algorithm


_fuzz = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much])


def _check_metrics_shot_by_shot(m, n: int) -> None:
    assert len(m) == n
    for k in range(n):
        code = int(m.reason[k])
        if code == 0:
            values = np.concatenate([m.rh[k], [
                m.ground_elevation_m[k], m.ground_index[k], m.toploc[k], m.botloc[k], m.canopy_top_elevation_m[k],
                m.waveform_extent_m[k], m.lee_m[k], m.tee_m[k], m.energy_total[k], m.energy_signal[k], m.rv[k],
                m.rg[k], m.cover[k], m.noise_mean[k], m.noise_std[k], m.bin_size_m[k]]])
            assert np.isfinite(values).all(), f"shot {k}: reason ok but non-finite metrics {values}"
            assert m.quality[k] and 0.0 <= m.cover[k] <= 1.0
            assert np.all(np.diff(m.rh[k]) >= 0)
        else:
            assert REASON_NAMES.get(code), f"shot {k}: unknown reason code {code}"
            assert not m.quality[k]
            assert np.isnan(m.rh[k]).all() and np.isnan(m.cover[k]), f"shot {k}: {REASON_NAMES[code]} with RH"


@settings(_fuzz, max_examples=400)
@given(ragged_batches())
def test_fuzz_compute_metrics(args):
    batch, mu, sd, algorithm = args
    # every argument drawn is well-formed (only the data are bad): no exception at all, not even a SawaError
    m = compute_metrics(batch, algorithm, mu, sd)
    _check_metrics_shot_by_shot(m, batch.n_shots)


_slope = st.one_of(st.floats(0.0, 89.9), st.sampled_from([np.nan, 0.0, 45.0, 85.0]))


@settings(_fuzz, max_examples=120)
@given(ragged_batches(max_shots=5), st.data())
def test_fuzz_sawa_metrics(args, data):
    batch, mu, sd, algorithm = args
    n = batch.n_shots
    slope = np.array([data.draw(_slope) for _ in range(n)])
    if n and data.draw(st.booleans()):  # half of the examples: one slope drawn from all floats
        slope[data.draw(st.integers(0, n - 1))] = data.draw(st.floats())
    tx_sigma = data.draw(st.one_of(st.none(), st.floats()))
    try:
        out = sawa_metrics(batch, slope, 25.0, tx_sigma, noise_mean=mu, noise_std=sd, algorithm=algorithm)
    except SawaError as exc:
        finite = slope[np.isfinite(slope)]
        bad_slope = ((finite < 0) | (finite >= 90)).any()
        bad_pulse = tx_sigma is not None and tx_sigma > MAX_TX_SIGMA_NS  # a pulse sigma in no unit of ns
        assert bad_slope or bad_pulse, exc  # the only bad arguments drawn here
        return
    assert len(out) == n
    values = out[sawa_columns()].to_numpy(float)
    for k in range(n):
        reason = out["sawa_reason"].iloc[k]
        assert reason in SAWA_REASONS, reason
        if reason in ("ok", "weak_ground"):
            assert np.isfinite(values[k]).all(), f"shot {k}: {reason} with {values[k]}"
        else:
            assert np.isnan(values[k]).all(), f"shot {k}: {reason} with {values[k]}"


@pytest.fixture(scope="module")
def fuzz_dem(tmp_path_factory) -> Path:
    n = 40
    z = 500.0 + 100.0 * np.sin(np.arange(n)[:, None] / 5.0) + 3.0 * np.arange(n)[None, :]
    z[10:13, 10:13] = -9999.0
    z[20, 20] = np.inf
    return _write_raster(tmp_path_factory.mktemp("fuzz_dem") / "dem.tif", z, Affine(0.0003, 0, 10.0, 0, -0.0003, 1.0),
                         "EPSG:4326", nodata=-9999.0)


_lon = st.one_of(st.floats(10.0, 10.012), st.floats(-200.0, 200.0), st.sampled_from([np.nan, np.inf]))
_lat = st.one_of(st.floats(0.988, 1.0), st.floats(-95.0, 95.0), st.sampled_from([np.nan]))


@settings(_fuzz, max_examples=40)
@given(ragged_batches(max_shots=4), st.data())
def test_fuzz_annotate_terrain(fuzz_dem, args, data):
    batch, _, _, _ = args
    n = batch.n_shots
    table = pd.DataFrame({"shot_number": batch.shot_number, "longitude": [data.draw(_lon) for _ in range(n)],
                          "latitude": [data.draw(_lat) for _ in range(n)]})
    try:
        out = annotate_terrain(table, batch, fuzz_dem, deconvolve=data.draw(st.booleans()))
    except SawaError:
        lat = table["latitude"].to_numpy()
        assert (np.abs(lat[np.isfinite(lat)]) > 90).any()  # lon/lat swapped is the only error drawn here
        return
    sawa = out[sawa_columns()].to_numpy(float)
    for k in range(n):
        terrain = out["terrain_reason"].iloc[k]
        assert terrain in TERRAIN_REASONS
        assert np.isfinite(out["slope_deg"].iloc[k]) == (terrain == "ok")
        assert out["sawa_reason"].iloc[k] in SAWA_REASONS
        assert np.isfinite(sawa[k]).all() == (out["sawa_reason"].iloc[k] in ("ok", "weak_ground"))
        if "deconv_reason" in out:
            reason = out["deconv_reason"].iloc[k]
            assert reason in DECONV_REASONS
            deconv = out[[c for c in out.columns if c.endswith("_deconv")]].iloc[k].to_numpy(float)
            assert np.isfinite(deconv).all() == (reason in ("ok", "flat")), (reason, deconv)


_PLAIN_PYTHON = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from tests.test_bad_input import nasty_batch
from waveform.metrics import compute_metrics
batch, mu, sd, groups = nasty_batch(int(sys.argv[1]))
out = {}
for name, alg in (("a1", "a1"), ("a2", "a2"), ("a5", "a5"), ("groups", groups)):
    for noise in ("estimated", "given"):
        m = compute_metrics(batch, alg, *((mu, sd) if noise == "given" else (None, None)))
        out[name + "/" + noise] = {"reason": m.reason.tolist(), "rh": np.nan_to_num(m.rh, nan=-1.0).tolist(),
                                   "ground": np.nan_to_num(m.ground_elevation_m, nan=-1.0).tolist()}
print(json.dumps(out))
"""


def nasty_batch(n_shots: int, seed: int = 20190418):
    """A fixed batch of the nastiest shots (used by the plain-Python kernel run below)."""
    rng = np.random.default_rng(seed)
    special = np.array(_SPECIAL)
    waves, bin0, last = [], [], []
    for k in range(n_shots):
        c = int(rng.choice([0, 1, 2, 3, 4, 5, 17, 64, 65, 150, 150, 150, 300, 300]))
        x = np.arange(c)
        kind = k % 5
        if kind == 0:  # noise with special values sprinkled in
            w = rng.normal(200, 3, c)
            if c:
                w[rng.integers(0, c, 3)] = rng.choice(special, 3)
        elif kind == 1:  # a return anywhere (also outside the window), of any sign and size
            w = (200 + rng.choice([-500.0, 50.0, 900.0, 1e6]) * np.exp(-0.5 * ((x - rng.uniform(-20, c + 20))
                                                                            / rng.uniform(0.3, 40)) ** 2)
                 + rng.normal(0, 3, c))
        elif kind == 2:  # flat
            w = np.full(c, rng.choice(special[3:]))
        elif kind == 3:  # clipped
            w = np.minimum(200 + 3000 * np.exp(-0.5 * ((x - c / 2) / 6.0) ** 2) + rng.normal(0, 3, c), 1500.0)
        else:  # a return on the first or last sample
            g = 0.0 if rng.random() < 0.5 else c - 1.0
            w = 200 + 800 * np.exp(-0.5 * ((x - g) / 5.0) ** 2) + rng.normal(0, 3, c)
        with np.errstate(over="ignore", invalid="ignore"):
            waves.append(np.asarray(w, np.float64).astype(np.float32))
        e0 = rng.choice([500.0] * 6 + [np.nan, 1e308, FILL_NEG, 0.0])
        bin0.append(e0)
        last.append(rng.choice([e0 - 0.15 * max(c - 1, 1)] * 6 + [e0, e0 + 3.0, np.nan]))
    batch = RaggedBatch.from_waveforms(waves, np.array(bin0), np.array(last))
    mu = rng.choice([np.nan, 200.0, 200.0, FILL_NEG], n_shots)
    sd = rng.choice([np.nan, 3.0, 3.0, 0.0, -1.0], n_shots)
    return batch, mu, sd, rng.integers(1, 7, n_shots)


def test_kernels_as_plain_python_read_in_bounds_and_agree():
    """The numba kernels run as plain Python (NUMBA_DISABLE_JIT=1): any index past an array's end
    raises IndexError there (and a NaN cast to int a ValueError), so a clean run over the nastiest
    shots shows no out-of-bounds read; the compiled kernels must give the same reasons and values."""
    n = 80
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", _PLAIN_PYTHON, str(n), str(REPO)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    plain = json.loads(res.stdout.strip().splitlines()[-1])
    batch, mu, sd, groups = nasty_batch(n)
    seen = set()
    for key, ref in plain.items():
        name, noise = key.split("/")
        alg = groups if name == "groups" else name
        m = compute_metrics(batch, alg, *((mu, sd) if noise == "given" else (None, None)))
        _check_metrics_shot_by_shot(m, n)
        np.testing.assert_array_equal(m.reason, ref["reason"], err_msg=key)
        np.testing.assert_allclose(np.nan_to_num(m.rh, nan=-1.0), ref["rh"], atol=1e-9, err_msg=key)
        np.testing.assert_allclose(np.nan_to_num(m.ground_elevation_m, nan=-1.0), ref["ground"], atol=1e-9)
        seen |= set(m.reason_names())
    # the batch reaches every reason, so every code path ran in plain Python
    assert seen >= {"ok", "empty_waveform", "too_short", "nonfinite_samples", "bad_geolocation", "bad_noise",
                    "no_signal", "no_mode", "saturated"}, seen
