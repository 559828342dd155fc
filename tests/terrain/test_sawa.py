"""SAWA against analytic and simulated truth: bare ground gives zero, the bare-ground model's quantiles
match the Gaussian CDF, measured pulses match Gaussian ones, deconvolution restores flat-ground RH,
the edge-extent fit, shot-table annotation with a DEM, the slope study, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from terrain.sawa import (
    annotate_terrain,
    apply_edge_extent,
    deconvolved_metrics,
    fit_edge_extent,
    physical_height_correction,
    sawa_columns,
    sawa_metrics,
    terrain_deconvolve,
)
from terrain.study import SlopeStudyConfig, run_slope_study
from tests.reference.terrain_naive import box_cascade_sigma, gaussian_quantile_above_end
from waveform.errors import SawaValueError
from waveform.metrics import compute_metrics
from waveform.simulate import bare_ground_waveform, simulate_waveforms

PCT = (10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 98)


@pytest.fixture(scope="module")
def stands():
    """40 stands (5-50 m, cover 0.3-0.9) simulated on flat ground and on 35-degree slopes."""
    rng = np.random.default_rng(11)
    n = 40
    h = rng.uniform(5, 50, n)
    cover = rng.uniform(0.3, 0.9, n)
    aspect = rng.uniform(0, 360, n)
    flat = simulate_waveforms(400.0, h, cover, 0.0, aspect, rng=1)
    slope = simulate_waveforms(400.0, h, cover, 35.0, aspect, rng=2)
    return flat, slope


def test_sawa_of_bare_ground_is_zero_at_every_slope():
    for s in (0.0, 15.0, 30.0, 45.0):
        sim = bare_ground_waveform(np.full(30, 300.0), s, 0.0, rng=int(s))
        out = sawa_metrics(sim.batch, np.full(30, s), tx_sigma_ns=sim.tx_params["tx_egsigma"].to_numpy())
        assert list(out.columns) == ["shot_number", *sawa_columns(PCT), "sawa_reason"]
        assert (out["sawa_reason"] == "ok").all()
        values = out[sawa_columns(PCT)].to_numpy()
        assert np.abs(values.mean(axis=0)).max() < 0.1  # the model is the waveform: H_p = Hg_p
        assert np.abs(values).max() < 0.6


def test_bare_ground_model_quantiles_follow_the_gaussian_cdf():
    # noise-free bare ground at 20 deg: the model is a Gaussian of sigma^2 = pulse^2 + (s_fp tan 20)^2 samples,
    # smoothed by L2A a1's 6.5 ns cascade; its end/start sit where it crosses the back/front thresholds
    s = 20.0
    sim = bare_ground_waveform(np.full(3, 300.0), s, 0.0, noise_sd=0.0, rng=0)
    m = compute_metrics(sim.batch, "a1", 200.0, 3.0)
    out = sawa_metrics(sim.batch, np.full(3, s), metrics=m, details=True)
    b = m.bin_size_m[0]
    sigma_g = math.hypot(6.62, 6.25 * math.tan(math.radians(s)) / b)
    sigma = math.hypot(sigma_g, box_cascade_sigma((10, 10, 10, 10)))
    peak = out["model_energy"][0] / (math.sqrt(2 * math.pi) * sigma)
    end = math.sqrt(2 * math.log(peak / 18.0))  # back threshold 6 sd
    start = math.sqrt(2 * math.log(peak / 9.0))  # front threshold 3 sd
    for p in (10, 25, 50, 75, 98):
        expected = gaussian_quantile_above_end(p / 100, sigma, end, start) * b
        assert out[f"hg{p}_m"][0] == pytest.approx(expected, abs=0.08)
    assert out["ground_sigma_m"][0] == pytest.approx(math.hypot(0.9925, 6.25 * math.tan(math.radians(s))), rel=1e-3)
    assert out["model_energy"][0] == pytest.approx(m.rg[0], rel=0.03)  # matched to the waveform's ground energy


def test_measured_transmit_pulse_gives_the_gaussian_result():
    sim = bare_ground_waveform(np.full(20, 300.0), 25.0, 0.0, rng=3)
    gauss = sawa_metrics(sim.batch, np.full(20, 25.0), tx_sigma_ns=sim.tx_params["tx_egsigma"].to_numpy())
    measured = sawa_metrics(sim.batch, np.full(20, 25.0), tx=sim.tx)
    cols = sawa_columns(PCT)
    assert np.abs(gauss[cols].to_numpy() - measured[cols].to_numpy()).max() < 0.15


def test_flat_sawa_is_raw_rh_minus_bare_ground_rh(stands):
    # on flat ground both ends are the same point of the ground return, so RH_sawa = RH_raw - RH_ground(p)
    flat, _ = stands
    m = compute_metrics(flat.batch, "a1")
    out = sawa_metrics(flat.batch, np.zeros(len(flat)), metrics=m, details=True)
    h50 = m.rh[:, 50] + (m.botloc - m.ground_index) * m.bin_size_m
    np.testing.assert_allclose(out["h50_m"], h50, atol=1e-9)
    np.testing.assert_allclose(out["rh50_sawa"], out["h50_m"] - out["hg50_m"], atol=1e-9)


def test_terrain_deconvolution_restores_the_flat_twin(stands):
    flat, slope = stands
    mf = compute_metrics(flat.batch, "a1")
    ms = compute_metrics(slope.batch, "a1")
    dec = deconvolved_metrics(slope.batch, np.full(len(slope), 35.0), metrics=ms)
    assert (dec["deconv_reason"] == "ok").all() and (dec["deconv_iterations"] > 100).all()
    for p in (25, 50, 75, 98):
        raw_err = ms.rh[:, p] - mf.rh[:, p]
        dec_err = dec[f"rh{p}_deconv"].to_numpy() - mf.rh[:, p]
        # terrain-induced error: deconvolution removes most of it
        assert np.sqrt(np.nanmean(dec_err**2)) < 0.5 * np.sqrt(np.nanmean(raw_err**2))
        assert abs(np.nanmean(dec_err)) < 0.7
    # on flat ground nothing happens
    same = deconvolved_metrics(flat.batch, np.zeros(len(flat)), metrics=mf)
    assert (same["deconv_reason"] == "flat").all()
    np.testing.assert_array_equal(same["rh50_deconv"].to_numpy(), mf.rh[:, 50])


def test_deconvolution_narrows_a_bare_ground_return_to_the_pulse():
    sim = bare_ground_waveform(np.full(2, 300.0), 30.0, 0.0, noise_sd=0.0, rng=0)
    m = compute_metrics(sim.batch, "a1", 200.0, 3.0)
    dec, its, ts = terrain_deconvolve(sim.batch, np.full(2, 30.0), metrics=m, iterations=600)
    w = dec.waveform(0).astype(np.float64) - 200.0
    i = np.arange(w.size)
    var = np.sum(w * (i - np.sum(w * i) / w.sum()) ** 2) / w.sum()
    assert ts[0] == pytest.approx(6.25 * math.tan(math.radians(30)) / m.bin_size_m[0])
    before = math.hypot(6.62, ts[0])
    assert before > 20 and math.sqrt(var) < 9.0  # 25 samples of terrain spread removed, ~pulse width left
    assert w.sum() == pytest.approx((sim.batch.waveform(0).astype(np.float64) - 200.0).sum(), rel=1e-3)


def test_edge_extent_fit_recovers_known_coefficients():
    rng = np.random.default_rng(5)
    metric, lee, tee, ti = rng.uniform(5, 40, 200), rng.uniform(1, 10, 200), rng.uniform(1, 15, 200), \
        rng.uniform(0, 20, 200)
    target = 1.5 + 0.9 * metric - 0.2 * lee - 0.6 * tee - 0.1 * ti
    model = fit_edge_extent(target, metric, lee, tee, ti, features=("metric", "lee_m", "tee_m", "relief_m"))
    np.testing.assert_allclose(model.coefficients, (1.5, 0.9, -0.2, -0.6, -0.1), atol=1e-9)
    assert model.rmse_m < 1e-9 and model.n == 200
    np.testing.assert_allclose(apply_edge_extent(model, metric, lee, tee, ti), target, atol=1e-9)
    lefsky2005 = fit_edge_extent(target, metric, lee, tee, ti, features=("metric", "relief_m"))
    assert lefsky2005.rmse_m > 0.5  # without the edges the model cannot fit this target
    assert physical_height_correction(30.0, 45.0, 25.0) == pytest.approx(5.0)
    with pytest.raises(SawaValueError, match="unknown edge-extent"):
        fit_edge_extent(target, metric, lee, tee, features=("metric", "slope"))
    with pytest.raises(SawaValueError, match="complete rows"):
        fit_edge_extent(target[:3], metric[:3], lee[:3], tee[:3])


def test_bad_input_is_explained():
    sim = bare_ground_waveform(np.full(3, 300.0), 10.0, 0.0, rng=0, shot_number=np.array([7, 8, 9]))
    with pytest.raises(SawaValueError, match=r"slope 95.0 deg for shot 8 .*degrees"):
        sawa_metrics(sim.batch, np.array([10.0, 95.0, 10.0]))
    with pytest.raises(SawaValueError, match="slope -3.0"):
        deconvolved_metrics(sim.batch, np.array([-3.0, 1.0, 1.0]))
    with pytest.raises(SawaValueError, match="one value per shot"):
        sawa_metrics(sim.batch, np.array([10.0, 10.0]))
    with pytest.raises(SawaValueError, match="percentiles"):
        sawa_metrics(sim.batch, 10.0, percentiles=(50, 100))
    with pytest.raises(SawaValueError, match="RaggedBatch"):
        sawa_metrics(np.zeros(3), 10.0)
    out = sawa_metrics(sim.batch, np.array([10.0, np.nan, 10.0]))
    assert out["sawa_reason"].tolist() == ["ok", "no_slope", "ok"]
    assert out.loc[1, sawa_columns(PCT)].isna().all() and len(out) == 3


def test_annotate_terrain_with_a_dem_under_the_shots(tmp_path, stands):
    _, slope = stands
    n = len(slope)
    # a 35-degree plane (UTM 33N, 10 m pixels) and the shots on it
    res, size = 10.0, 200
    x = (np.arange(size) + 0.5) * res
    y = -(np.arange(size) + 0.5) * res
    g = math.tan(math.radians(35.0))
    z = 3000.0 - g * (x[None, :] * math.sin(math.radians(80)) + y[:, None] * math.cos(math.radians(80)))
    x0, y0 = 500000.0 - 1000.0, 5_000_000.0
    dem_path = tmp_path / "plane.tif"
    with rasterio.open(dem_path, "w", driver="GTiff", height=size, width=size, count=1, dtype="float64",
                       crs="EPSG:32633", transform=Affine(res, 0, x0, 0, -res, y0), nodata=-9999.0) as dst:
        dst.write(z, 1)
    from pyproj import Transformer

    rng = np.random.default_rng(0)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(
        x0 + rng.uniform(100, 1900, n), y0 - rng.uniform(100, 1900, n))
    lon = np.asarray(lon)
    lon[0] = 0.0  # one shot far off the DEM
    frame = pd.DataFrame({"shot_number": slope.batch.shot_number, "longitude": lon, "latitude": np.asarray(lat),
                          "tx_egsigma": slope.tx_params["tx_egsigma"].to_numpy()})
    out = annotate_terrain(frame, slope.batch, dem_path)
    assert len(out) == n and out["terrain_reason"].iloc[0] == "outside_dem"
    assert out["sawa_reason"].iloc[0] == "no_slope" and np.isnan(out["rh50_sawa"].iloc[0])
    ok = out["terrain_reason"] == "ok"
    assert ok.sum() == n - 1
    assert np.abs(out.loc[ok, "slope_deg"] - 35.0).max() < 0.02  # 0.9996 scale factor: 35 -> 34.99
    assert np.abs(out.loc[ok, "aspect_deg"] - 80.0).max() < 0.05
    for c in ("rh50_sawa", "rh98_sawa", "rh50_deconv", "relief_m", "dem_elevation_m"):
        assert np.isfinite(out.loc[ok, c]).all()
    with pytest.raises(SawaValueError, match="same order"):
        annotate_terrain(frame.iloc[::-1].reset_index(drop=True), slope.batch, dem_path)


def test_slope_study_small_run(tmp_path):
    cfg = SlopeStudyConfig(slope_edges_deg=(0.0, 10.0, 20.0, 30.0, 40.0), stands_per_bin=16, seed=3)
    result = run_slope_study(tmp_path, cfg)
    table = pd.read_csv(tmp_path / "slope_study.csv")
    assert list(table.columns[:7]) == ["metric", "slope_deg", "n", "bias_raw_m", "bias_sawa_m", "rmse_raw_m",
                                       "rmse_sawa_m"]
    assert {"bias_edge_m", "rmse_edge_m", "bias_deconv_m", "rmse_deconv_m"} <= set(table.columns)
    assert len(table) == 4 * 4 and (table["n"] == 16).all()
    assert set(table["metric"]) == {"RH25", "RH50", "RH75", "RH98"}
    for name in ("slope_study.png", "slope_study_agb.png", "slope_study_agb.csv", "manifest.json",
                 "slope_study_stands.parquet"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "slope_study_summary.json").read_text())
    # truth: the stands' terrain-induced RH50 error on >= 20 deg is mostly removed by deconvolution
    rh50 = summary["metrics"]["RH50"]
    assert rh50["deconv"]["rmse_steep_m"] < 0.5 * rh50["raw"]["rmse_steep_m"]
    # on the flat bin the errors of all metrics are small (two noisy simulations of the same stand)
    flat = table[table["slope_deg"] == 0.0]
    assert (flat[["rmse_raw_m", "rmse_deconv_m"]] < 1.5).all().all()
    # errors recomputed from the per-stand file
    stands = pd.read_parquet(tmp_path / "slope_study_stands.parquet")
    sel = stands["bin"] == 2
    err = stands.loc[sel, "raw50_slope"] - stands.loc[sel, "raw50_flat"]
    row = table[(table["metric"] == "RH50") & (table["slope_deg"] == 20.0)].iloc[0]
    assert row["bias_raw_m"] == pytest.approx(err.mean(), abs=1e-3)
    assert len(result.agb) == 4 and (result.agb["n"] == 16).all()


def test_cli_study_slope(tmp_path):
    from fusion.cli import main

    out = tmp_path / "study"
    result = CliRunner().invoke(main, ["study", "slope", "-o", str(out), "--stands-per-bin", "4", "--max-slope", "10"])
    assert result.exit_code == 0, result.output
    assert "8 stands" in result.output and (out / "slope_study.csv").exists()


@pytest.fixture(scope="module")
def world():
    from data_samples import load_sample_world

    return load_sample_world()


def test_sample_world_terrain_under_its_shots(world):
    # the world's DEM is an analytic surface: the truth table carries the exact slope at every shot
    from terrain.footprint import footprint_terrain

    truth = world.read_truth()
    out = footprint_terrain(world.dem_path, truth["lon"].to_numpy(), truth["lat"].to_numpy())
    assert (out["reason"] == "ok").all() and out.attrs["vertical_datum"] == "WGS84_ellipsoid"
    err = out["slope_deg"].to_numpy() - truth["slope_deg"].to_numpy()
    assert np.abs(err).max() < 0.5 and abs(err.mean()) < 0.1
    # aspect: an error of ~0.05 deg of gradient turns the azimuth by ~0.05 / slope radians
    steep = truth["slope_deg"].to_numpy() > 10
    aerr = (out["aspect_deg"].to_numpy() - truth["aspect_deg"].to_numpy() + 180) % 360 - 180
    assert np.abs(aerr[steep]).max() < 2.0


def test_sample_world_granule_through_annotate_terrain(world):
    # a simulated granule and its DEM, as `sawa metrics GRANULE --dem DEM` runs them (one chunk)
    from terrain.dem import compare_with_gedi, open_dem
    from waveform.stream import stream_metrics

    truth = world.read_truth().set_index("shot_number")
    steep_truth = truth.index[(truth["slope_deg"] > 20) & (truth["canopy_height_m"] > 0)]
    with open_dem(world.dem_path) as dem:
        f = None
        for frame in stream_metrics(world.granule_paths[1], beams=["BEAM0000"], chunk_shots=200,
                                    on_chunk=lambda c, fr: annotate_terrain(fr, c.batch, dem, tx=c.tx)):
            if np.isin(frame["shot_number"].to_numpy(), steep_truth).sum() >= 30:
                f = frame
                break
        assert f is not None
        check = compare_with_gedi(f["dem_elevation_m"], f["ground_elevation"], dem.vertical_datum)
    assert check.verdict == "consistent"
    t = truth.loc[f["shot_number"].to_numpy()]
    assert (f["terrain_reason"] == "ok").all()
    assert np.abs(f["slope_deg"].to_numpy() - t["slope_deg"].to_numpy()).max() < 0.5
    steep = (t["slope_deg"].to_numpy() > 20) & (t["canopy_height_m"].to_numpy() > 0)
    assert steep.sum() >= 20
    raw = np.abs(f["rh50"].to_numpy() - t["rh50"].to_numpy())[steep]
    dec = np.abs(f["rh50_deconv"].to_numpy() - t["rh50"].to_numpy())[steep]
    assert np.nanmedian(dec) < 0.5 * np.nanmedian(raw)


def test_per_shot_footprint_sizes():
    # a 70 m (GLAS-like) and a 25 m footprint on the same slope: each shot gets its own bare-ground model
    sims = [bare_ground_waveform(np.full(4, 300.0), 20.0, 0.0, footprint_diameter_m=d, rng=i)
            for i, d in enumerate((25.0, 70.0))]
    from waveform.batch import RaggedBatch

    waves = [s.batch.waveform(k) for s in sims for k in range(4)]
    batch = RaggedBatch.from_waveforms(waves, np.concatenate([s.batch.elevation_bin0 for s in sims]),
                                       np.concatenate([s.batch.elevation_lastbin for s in sims]))
    diam = np.repeat([25.0, 70.0], 4)
    out = sawa_metrics(batch, np.full(8, 20.0), footprint_diameter_m=diam, details=True)
    values = out[sawa_columns(PCT)].to_numpy()
    assert np.abs(values[:4].mean(axis=0)).max() < 0.3 and np.abs(values[4:].mean(axis=0)).max() < 0.3
    assert np.abs(values).max() < 1.0  # the 70 m return is 6.4 m wide: noisier quantiles
    np.testing.assert_allclose(out["terrain_sigma_m"], diam / 4 * math.tan(math.radians(20.0)))
    with pytest.raises(SawaValueError, match="footprint_diameter_m must be > 0"):
        sawa_metrics(batch, 20.0, footprint_diameter_m=np.r_[diam[:7], 0.0])


def test_slopes_beyond_the_correction_limit_get_a_reason_not_a_huge_model():
    """Near-vertical DEM slopes: per-shot reason, neighbours unchanged, no giant bare-ground model."""
    from terrain.constants import MAX_CORRECTION_SLOPE_DEG
    from terrain.sawa import deconvolved_metrics, sawa_metrics
    from waveform.simulate import simulate_waveforms

    sim = simulate_waveforms(300.0, [20.0, 20.0, 20.0], [0.6, 0.6, 0.6], [10.0, 10.0, 10.0], rng=3)
    steep = [10.0, 89.9, MAX_CORRECTION_SLOPE_DEG + 1.0]
    sw = sawa_metrics(sim.batch, steep, tx=sim.tx)
    dc = deconvolved_metrics(sim.batch, steep)
    assert list(sw["sawa_reason"]) == ["ok", "slope_too_steep", "slope_too_steep"]
    assert list(dc["deconv_reason"]) == ["ok", "slope_too_steep", "slope_too_steep"]
    ref_sw = sawa_metrics(sim.batch.take(slice(0, 1)), [10.0], tx=sim.tx.take(slice(0, 1)))
    assert sw["rh50_sawa"].iloc[0] == ref_sw["rh50_sawa"].iloc[0]
    assert np.isnan(sw["rh50_sawa"].iloc[1]) and np.isnan(dc["rh50_deconv"].iloc[2])


def test_an_l2a_settings_table_reaches_every_metric_of_the_corrections():
    """settings={number: AlgorithmSettings} (an L2A granule's own groups) is used for forest, model and deconvolved
    metrics: naming group 1 with a table whose group 1 is `custom` equals passing `custom` itself."""
    import dataclasses

    from terrain.sawa import deconvolved_metrics, sawa_metrics
    from waveform.algorithms import L2A_ALGORITHMS
    from waveform.simulate import simulate_waveforms

    sim = simulate_waveforms(300.0, [12.0, 25.0, 35.0], [0.5, 0.7, 0.9], [15.0, 25.0, 35.0], rng=5)
    custom = dataclasses.replace(L2A_ALGORITHMS["a1"], back_threshold_k=9.0, boxes_locs=(5, 5, 5),
                                 boxes_zcross=(5, 5, 5))
    slopes = [15.0, 25.0, 35.0]
    by_table = sawa_metrics(sim.batch, slopes, tx=sim.tx, algorithm="a1", settings={1: custom})
    direct = sawa_metrics(sim.batch, slopes, tx=sim.tx, algorithm=custom)
    default = sawa_metrics(sim.batch, slopes, tx=sim.tx, algorithm="a1")
    pd.testing.assert_frame_equal(by_table, direct)
    assert not np.allclose(by_table["rh50_sawa"], default["rh50_sawa"], equal_nan=True)
    dc_table = deconvolved_metrics(sim.batch, slopes, algorithm="a1", settings={1: custom})
    dc_direct = deconvolved_metrics(sim.batch, slopes, algorithm=custom)
    pd.testing.assert_frame_equal(dc_table, dc_direct)
