"""Waveform simulator truths and the L1B writer round trip.

Checks against analytic results (Gaussian ground return of width
sqrt(sigma_pulse^2 + (sigma_fp tan slope)^2)), an independent brute-force
integration over a 2-D grid of sub-footprint cells, energy ratios (cover), and a
write -> read round trip through the real-layout reader.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter1d

from waveform.constants import SAMPLE_RANGE_M
from waveform.errors import SawaValueError
from waveform.gedi import open_granule, read_l1b
from waveform.l1b_writer import BEAM_NUMBER_CHANNEL, gedi_shot_numbers, write_l1b
from waveform.simulate import (
    RH_COLUMNS,
    TRUTH_COLUMNS,
    bare_ground_waveform,
    footprint_sigma_m,
    noise_free_waveform,
    ns_to_m,
    pulse_sigma_ns_default,
    return_sigma_m,
    simulate_waveforms,
)

SIGMA_FP = 25.0 / 4.0  # 1/e^2 diameter 25 m
SIGMA_PULSE_M = 15.6 / (2 * math.sqrt(2 * math.log(2))) * 0.299792458 / 2  # 15.6 ns FWHM, c/2 per ns


def _moments(batch, k, offset):
    w = batch.waveform(k).astype(np.float64) - offset
    z = batch.sample_elevations(k)
    m = (w * z).sum() / w.sum()
    return m, math.sqrt((w * (z - m) ** 2).sum() / w.sum()), w.sum()


# --------------------------------------------------------------------------- constants and conventions
def test_footprint_and_pulse_constants():
    assert footprint_sigma_m(25.0) == pytest.approx(6.25)
    assert footprint_sigma_m(25.0, "fwhm") == pytest.approx(25.0 / 2.354820045)
    assert pulse_sigma_ns_default() == pytest.approx(6.6247, abs=1e-4)
    assert float(ns_to_m(pulse_sigma_ns_default())) == pytest.approx(SIGMA_PULSE_M, rel=1e-9)
    assert float(return_sigma_m(45.0, 6.25, 1.0)) == pytest.approx(math.sqrt(1 + 6.25**2))
    with pytest.raises(SawaValueError, match="convention"):
        footprint_sigma_m(25.0, "radius")


# --------------------------------------------------------------------------- flat ground
def test_flat_ground_peak_at_true_elevation_within_one_sample():
    rng = np.random.default_rng(5)
    z0 = rng.uniform(100.0, 2000.0, 200)  # arbitrary sub-sample phases
    shots = bare_ground_waveform(z0, 0.0, 0.0, rng=11)  # with noise (sd 3 counts)
    clean = noise_free_waveform(shots)
    for k in range(len(shots)):
        z = shots.batch.sample_elevations(k)
        s, c = int(shots.batch.start[k]), int(shots.batch.count[k])
        assert abs(z[np.argmax(clean[s : s + c])] - z0[k]) <= SAMPLE_RANGE_M / 2 + 1e-9
        smooth = gaussian_filter1d(shots.batch.waveform(k).astype(np.float64), 2.0)
        assert abs(z[np.argmax(smooth)] - z0[k]) <= SAMPLE_RANGE_M
    np.testing.assert_array_equal(shots.truth["ground_elevation_m"], z0)


def test_flat_ground_under_canopy_lowest_mode_at_true_elevation():
    z0 = np.array([250.0, 812.37, 1500.05])
    shots = simulate_waveforms(z0, 30.0, 0.6, 0.0, 0.0, rng=3)
    for k in range(3):
        w = gaussian_filter1d(shots.batch.waveform(k).astype(np.float64), 2.0)
        z = shots.batch.sample_elevations(k)
        peaks = np.flatnonzero((w[1:-1] > w[:-2]) & (w[1:-1] >= w[2:]) & (w[1:-1] > 200.0 + 30.0)) + 1
        assert abs(z[peaks.max()] - z0[k]) <= SAMPLE_RANGE_M  # the lowest mode


# --------------------------------------------------------------------------- slope broadening
@pytest.mark.parametrize("slope_deg", [0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
def test_ground_return_width_on_slope_matches_footprint_geometry(slope_deg):
    expected = math.sqrt(SIGMA_PULSE_M**2 + (SIGMA_FP * math.tan(math.radians(slope_deg))) ** 2)
    shots = bare_ground_waveform([731.4], slope_deg, 123.0, noise_sd=0.0, rng=0)
    mean, sd, energy = _moments(shots.batch, 0, 200.0)
    assert sd == pytest.approx(expected, rel=1e-3)
    assert mean == pytest.approx(731.4, abs=1e-3)
    assert energy == pytest.approx(15_000.0, rel=1e-4)
    assert shots.truth["return_sigma_m"].iloc[0] == pytest.approx(expected, rel=1e-12)
    # with noise: a least-squares Gaussian fit recovers the width within 3 %
    noisy = bare_ground_waveform([731.4] * 5, slope_deg, 123.0, rng=7)
    for k in range(5):
        w = noisy.batch.waveform(k).astype(np.float64) - 200.0
        z = noisy.batch.sample_elevations(k) - 731.4
        from scipy.optimize import curve_fit

        (amp, mu, sig), _ = curve_fit(lambda x, a, m, s: a * np.exp(-0.5 * ((x - m) / s) ** 2), z, w,
                                      p0=[w.max(), 0.0, 2.0])
        assert abs(sig) == pytest.approx(expected, rel=0.03)
        assert abs(mu) < 0.1


def _brute_force_waveform(z0, height, cover, slope_deg, aspect_deg, sample_z, e0=15_000.0, rho=1.5,
                          cell_m=0.5, layer_m=0.05):
    """Independent reference: a 2-D grid of sub-footprint cells (+-4 sigma_fp), each a column with the
    ground on the tilted plane and an ellipsoid-crown layer [H/2, H] above it, then the Gaussian pulse."""
    g = np.arange(-4 * SIGMA_FP, 4 * SIGMA_FP + cell_m / 2, cell_m)
    dx, dy = np.meshgrid(g, g)
    w = np.exp(-(dx**2 + dy**2) / (2 * SIGMA_FP**2))
    w /= w.sum()
    t, a = math.radians(slope_deg), math.radians(aspect_deg)
    zg = z0 - math.tan(t) * (dx * math.sin(a) + dy * math.cos(a))  # aspect = downslope direction
    heights, masses = [0.0], [1.0 - cover]
    if cover > 0:
        depth = 0.5 * height
        edges = np.arange(height - depth, height + layer_m / 2, layer_m)
        s = np.clip((height - edges) / depth, 0, 1)
        pgap = (1 - cover) ** (3 * s**2 - 2 * s**3)
        heights += list(0.5 * (edges[1:] + edges[:-1]))
        masses += list(rho * (pgap[1:] - pgap[:-1]))
    all_z = (zg.reshape(-1, 1) + np.array(heights)[None, :]).ravel()
    all_m = (w.reshape(-1, 1) * np.array(masses)[None, :]).ravel()
    fine = 0.01
    lo = all_z.min() - 1.0
    hist = np.bincount(np.floor((all_z - lo) / fine).astype(np.int64), weights=all_m)
    zc = lo + (np.arange(hist.size) + 0.5) * fine
    keep = hist > 0
    hist, zc = hist[keep], zc[keep]
    out = np.zeros(sample_z.size)
    for i in range(0, zc.size, 2000):
        out += (hist[None, i : i + 2000] * np.exp(-0.5 * ((sample_z[:, None] - zc[None, i : i + 2000]) / SIGMA_PULSE_M) ** 2)).sum(1)
    return e0 * out * SAMPLE_RANGE_M / (math.sqrt(2 * math.pi) * SIGMA_PULSE_M)


@pytest.mark.parametrize("height,cover,slope,aspect", [(0.0, 0.0, 30.0, 45.0), (25.0, 0.7, 0.0, 0.0),
                                                       (25.0, 0.7, 35.0, 120.0), (40.0, 0.9, 50.0, 200.0)])
def test_simulator_equals_brute_force_footprint_integration(height, cover, slope, aspect):
    shots = simulate_waveforms(300.0, height, cover, slope, aspect, noise_sd=0.0, offset=0.0, rng=0)
    sim = shots.batch.waveform(0).astype(np.float64)
    ref = _brute_force_waveform(300.0, height, cover, slope, aspect, shots.batch.sample_elevations(0))
    assert np.abs(sim - ref).max() < 0.005 * ref.max()
    assert sim.sum() == pytest.approx(ref.sum(), rel=1e-4)


def test_canopy_follows_terrain_and_is_broadened_on_slopes():
    flat = simulate_waveforms(500.0, 30.0, 0.8, 0.0, 0.0, noise_sd=0.0, rng=0)
    steep = simulate_waveforms(500.0, 30.0, 0.8, 40.0, 0.0, noise_sd=0.0, rng=0)
    z_f, z_s = flat.batch.sample_elevations(0), steep.batch.sample_elevations(0)
    w_f = flat.batch.waveform(0).astype(np.float64) - 200
    w_s = steep.batch.waveform(0).astype(np.float64) - 200
    above_f, above_s = z_f > 510.0, z_s > 510.0  # canopy part (crowns start at 15 m)
    sd = [math.sqrt(np.average((z[m] - np.average(z[m], weights=w[m])) ** 2, weights=w[m]))
          for z, w, m in ((z_f, w_f, above_f), (z_s, w_s, above_s))]
    assert sd[1] > sd[0] + 2.0
    # convolving with an extra Gaussian adds variances: sd_s^2 ~ sd_f^2 + (sigma_fp tan 40)^2 (truncation aside)
    assert sd[1] ** 2 == pytest.approx(sd[0] ** 2 + (SIGMA_FP * math.tan(math.radians(40))) ** 2, rel=0.1)


# --------------------------------------------------------------------------- cover and energies
@pytest.mark.parametrize("slope", [0.0, 30.0])
def test_cover_retrieved_from_energy_ratio(slope):
    covers = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.95])
    shots = simulate_waveforms(1000.0, 35.0, covers, slope, 90.0, rng=1)
    for k, c in enumerate(covers):
        z = shots.batch.sample_elevations(k)
        w = shots.batch.waveform(k).astype(np.float64) - 200.0
        e_total = w.sum()
        e_ground = 2.0 * w[z < 1000.0].sum()  # the ground return is symmetric about z0
        e_canopy = e_total - e_ground
        retrieved = 1.0 / (1.0 + 1.5 * e_ground / e_canopy)
        assert retrieved == pytest.approx(c, abs=0.02)
    assert shots.truth["canopy_energy"].to_numpy() == pytest.approx(15_000 * 1.5 * covers)
    assert shots.truth["ground_energy"].to_numpy() == pytest.approx(15_000 * (1 - covers))


# --------------------------------------------------------------------------- RH truth
def test_truth_rh_monotonic_bounded_and_flat_equivalent():
    heights = np.array([0.0, 5.0, 20.0, 45.0, 30.0])
    covers = np.array([0.0, 0.3, 0.8, 0.95, 0.5])
    slopes = np.array([40.0, 10.0, 0.0, 25.0, 50.0])
    shots = simulate_waveforms(400.0, heights, covers, slopes, 10.0, rng=2)
    rh = shots.truth[RH_COLUMNS].to_numpy()
    assert np.all(np.diff(rh, axis=1) >= 0)
    np.testing.assert_allclose(rh[:, 0], -3 * SIGMA_PULSE_M, atol=1e-9)
    np.testing.assert_allclose(rh[:, 100], heights + 3 * SIGMA_PULSE_M, atol=1e-9)
    assert rh[0, 50] == pytest.approx(0.0, abs=0.01)  # bare ground: symmetric about the ground
    # the truth ignores the slope: same canopy on flat ground gives the same RH
    flat = simulate_waveforms(400.0, heights, covers, 0.0, 0.0, rng=99)
    np.testing.assert_array_equal(flat.truth[RH_COLUMNS].to_numpy(), rh)
    assert list(shots.truth.columns) == TRUTH_COLUMNS


def test_truth_rh_equals_rh_of_noise_free_flat_waveform():
    """RH from a cumulative sum over the digitised noise-free flat waveform agrees with the truth."""
    heights = np.array([12.0, 28.0, 44.0])
    covers = np.array([0.4, 0.75, 0.92])
    shots = simulate_waveforms(100.0, heights, covers, 0.0, 0.0, noise_sd=0.0, offset=0.0, rng=0)
    for k in range(3):
        z = shots.batch.sample_elevations(k)[::-1] - 100.0  # ascending heights above ground
        w = shots.batch.waveform(k).astype(np.float64)[::-1]
        inside = (z >= -3 * SIGMA_PULSE_M) & (z <= heights[k] + 3 * SIGMA_PULSE_M)
        cum = np.cumsum(w[inside])
        cum /= cum[-1]
        zi = z[inside]
        for p in (10, 25, 50, 75, 90, 98):
            rh_wave = zi[np.searchsorted(cum, p / 100.0)]
            assert rh_wave == pytest.approx(shots.truth[f"rh{p}"].iloc[k], abs=2 * SAMPLE_RANGE_M)


# --------------------------------------------------------------------------- determinism, inputs, speed
def test_same_seed_same_waveforms_other_seed_differs():
    args = (np.linspace(0, 100, 20), 25.0, 0.6, np.linspace(0, 45, 20), 0.0)
    a, b, c = simulate_waveforms(*args, rng=42), simulate_waveforms(*args, rng=42), simulate_waveforms(*args, rng=43)
    np.testing.assert_array_equal(a.batch.samples, b.batch.samples)
    np.testing.assert_array_equal(a.tx.samples, b.tx.samples)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.batch.samples, c.batch.samples)
    np.testing.assert_array_equal(a.batch.count, c.batch.count)


def test_window_like_real_l1b_and_quantum():
    shots = simulate_waveforms([300.0, 300.0], [40.0, 0.0], [0.9, 0.0], [45.0, 0.0], 0.0, quantum_counts=1 / 64, rng=0)
    assert shots.batch.samples.dtype == np.float32
    assert np.all((shots.batch.count >= 600) & (shots.batch.count <= 1417))
    np.testing.assert_allclose(shots.batch.bin_size_m(), SAMPLE_RANGE_M, rtol=1e-12)
    np.testing.assert_array_equal(shots.batch.samples * 64, np.round(shots.batch.samples * 64))
    top = shots.truth["canopy_top_elevation_m"].to_numpy() + 3 * shots.truth["return_sigma_m"].to_numpy()
    np.testing.assert_allclose(shots.batch.elevation_bin0 - top, 100 * SAMPLE_RANGE_M)
    noise = shots.batch.waveform(0)[:80].astype(np.float64)  # above the canopy: offset + noise only
    assert noise.mean() == pytest.approx(200.0, abs=1.5) and noise.std() == pytest.approx(3.0, rel=0.3)


@pytest.mark.parametrize("kwargs,match", [
    ({"cover": 1.0}, "cover"), ({"cover": 0.5, "canopy_height_m": 0.0}, "canopy_height_m = 0"),
    ({"slope_deg": 90.0}, "slope_deg"), ({"canopy_height_m": -1.0}, "canopy_height_m"),
    ({"ground_elevation_m": np.nan}, "finite"),
])
def test_bad_inputs_name_the_shot(kwargs, match):
    args = {"ground_elevation_m": 10.0, "canopy_height_m": 20.0, "cover": 0.5, "slope_deg": 5.0}
    args.update(kwargs)
    with pytest.raises(SawaValueError, match=match):
        simulate_waveforms(**args, shot_number=[777])
    with pytest.raises(SawaValueError, match="shot 777"):
        simulate_waveforms(**args, shot_number=[777])


def test_mismatched_lengths_and_crown_shape():
    with pytest.raises(SawaValueError, match="different lengths"):
        simulate_waveforms([1.0, 2.0], [10.0, 10.0, 10.0], 0.5, 0.0)
    with pytest.raises(SawaValueError, match="crown shape"):
        simulate_waveforms(1.0, 10.0, 0.5, 0.0, crown_shape="umbrella")


# --------------------------------------------------------------------------- L1B writer round trip
def _sim_beams(n_per_beam=(40, 0, 25)):
    beams, txs = {}, {}
    for b_i, (beam, n) in enumerate(zip(["BEAM0001", "BEAM0110", "BEAM1011"], n_per_beam, strict=True)):
        sn = gedi_shot_numbers(90010, beam, np.arange(n) * 3 + 5)
        rng = np.random.default_rng(b_i)
        sim = simulate_waveforms(rng.uniform(0, 800, n), rng.uniform(0, 40, n) * (np.arange(n) % 4 > 0),
                                 rng.uniform(0, 0.9, n) * (np.arange(n) % 4 > 0), rng.uniform(0, 50, n),
                                 rng.uniform(0, 360, n), shot_number=sn, rng=b_i)
        shots = pd.DataFrame({
            "shot_number": sn,
            "latitude_bin0": rng.uniform(-1, 1, n), "longitude_bin0": rng.uniform(10, 11, n),
            "delta_time": 5e7 + np.arange(n) / 242.0,
            "digital_elevation_model": rng.uniform(0, 800, n),
            "tx_egsigma": sim.tx_params["tx_egsigma"], "tx_egamplitude": sim.tx_params["tx_egamplitude"],
            "tx_gloc": sim.tx_params["tx_gloc"],
        })
        beams[beam] = (sim.batch, shots)
        txs[beam] = sim.tx
    return beams, txs


@pytest.fixture(scope="module")
def written_l1b(tmp_path_factory):
    beams, txs = _sim_beams()
    path = tmp_path_factory.mktemp("l1b") / "GEDI01_B_2020001000000_O90010_T00001_02_003_01_SIM.h5"
    write_l1b(path, beams, txs)
    return path, beams, txs


def test_write_read_round_trip_is_exact(written_l1b):
    path, beams, txs = written_l1b
    with open_granule(path) as g:
        assert g.product == "L1B" and g.beams == sorted(beams)
    chunk = read_l1b(path, with_tx=True)
    order = sorted(beams)
    exp_samples = np.concatenate([beams[b][0].samples for b in order])
    np.testing.assert_array_equal(chunk.batch.samples, exp_samples)
    for name in ("count", "elevation_bin0", "elevation_lastbin", "shot_number"):
        np.testing.assert_array_equal(getattr(chunk.batch, name), np.concatenate([getattr(beams[b][0], name) for b in order]))
    np.testing.assert_array_equal(chunk.tx.samples, np.concatenate([txs[b].samples for b in order]))
    expected_beams = np.concatenate([[b] * beams[b][0].n_shots for b in order])
    np.testing.assert_array_equal(chunk.shots["beam"].to_numpy(), expected_beams)
    shots = chunk.shots
    exp = pd.concat([beams[b][1] for b in order], ignore_index=True)
    for col in ("latitude_bin0", "longitude_bin0", "delta_time"):
        np.testing.assert_array_equal(shots[col].to_numpy(), exp[col].to_numpy())
    np.testing.assert_array_equal(shots["latitude_lastbin"].to_numpy(), exp["latitude_bin0"].to_numpy())
    np.testing.assert_array_equal(shots["digital_elevation_model"].to_numpy(),
                                  exp["digital_elevation_model"].to_numpy().astype(np.float32))
    np.testing.assert_array_equal(shots["tx_egsigma"].to_numpy(), exp["tx_egsigma"].to_numpy())
    assert set(shots.loc[shots.beam == "BEAM0001", "power"]) == {"coverage"}
    assert set(shots.loc[shots.beam == "BEAM1011", "power"]) == {"full"}
    # default noise statistics: from the top 64 samples (offset 200, sd 3)
    assert shots["noise_mean_corrected"].to_numpy() == pytest.approx(200.0, abs=1.5)
    assert shots["noise_stddev_corrected"].median() == pytest.approx(3.0, rel=0.15)


def test_written_layout_is_the_real_l1b_layout(written_l1b, l1b_path):
    path, beams, _ = written_l1b
    with h5py.File(path, "r") as ours, h5py.File(l1b_path, "r") as real:
        g = ours["BEAM1011"]
        assert g["rx_sample_start_index"][0] == 1  # 1-based
        starts, counts = g["rx_sample_start_index"][:], g["rx_sample_count"][:]
        np.testing.assert_array_equal(starts[1:], starts[:-1] + counts[:-1])
        assert g["beam"][0] == 11 and g["channel"][0] == BEAM_NUMBER_CHANNEL["BEAM1011"][1]
        np.testing.assert_array_equal(g["geolocation/shot_number"][:], g["shot_number"][:])
        assert ours["BEAM0110/rxwaveform"].shape == (0,)  # an empty beam is valid
        real_beam = real["BEAM1011"]
        for name in ("rxwaveform", "rx_sample_start_index", "rx_sample_count", "shot_number", "beam", "channel",
                     "delta_time", "noise_mean_corrected", "noise_stddev_corrected", "stale_return_flag",
                     "rx_energy", "txwaveform", "tx_sample_start_index", "tx_sample_count", "tx_egsigma",
                     "tx_egamplitude", "tx_gloc", "master_int", "master_frac",
                     "geolocation/latitude_bin0", "geolocation/longitude_bin0", "geolocation/latitude_lastbin",
                     "geolocation/longitude_lastbin", "geolocation/elevation_bin0", "geolocation/elevation_lastbin",
                     "geolocation/degrade", "geolocation/digital_elevation_model", "geolocation/delta_time",
                     "geolocation/shot_number"):
            assert g[name].dtype == real_beam[name].dtype, name
        for key in ("shortName", "fileName", "PGEVersion", "VersionID", "creationDate"):
            assert ours["METADATA/DatasetIdentification"].attrs[key].dtype == real["METADATA/DatasetIdentification"].attrs[key].dtype
        assert ours["METADATA/DatasetIdentification"].attrs["fileName"][0] == path.name
        assert ours["BEAM0001"].attrs["description"][0] == "Coverage beam"


def test_writer_is_byte_reproducible_and_atomic(tmp_path):
    beams, txs = _sim_beams((5, 3, 4))
    a, b = tmp_path / "a" / "G.h5", tmp_path / "b" / "G.h5"
    write_l1b(a, beams, txs)
    write_l1b(b, beams, txs)
    assert a.read_bytes() == b.read_bytes()
    bad = dict(beams)
    bad["BEAM1011"] = (beams["BEAM1011"][0], beams["BEAM1011"][1].iloc[:2])
    with pytest.raises(SawaValueError, match="BEAM1011"):
        write_l1b(tmp_path / "c.h5", bad)
    assert not (tmp_path / "c.h5").exists() and list(tmp_path.glob(".c.h5*")) == []
    with pytest.raises(SawaValueError, match="BEAM0111"):
        write_l1b(tmp_path / "d.h5", {"BEAM0111": beams["BEAM1011"]})


def test_shot_numbers_are_gedi_like():
    sn = gedi_shot_numbers(1964, "BEAM0101", np.array([0, 108370]))
    assert sn.dtype == np.uint64
    assert str(int(sn[0])).startswith("196405")  # orbit then beam number, as 19640513500108370
    assert int(sn[1] - sn[0]) == 108370
