"""Optical fusion: fit on footprints, block-wise prediction, SE layer, memory bound, sample world, CLI."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyproj import Transformer

from fusion.align import align_to_grid
from fusion.grid import GRID_NODATA, GridSpec
from fusion.optical import ResidualSE, fit_optical_model, predict_map
from terrain.rasters import write_geotiff
from waveform.errors import ModelError, NoOverlapError

UTM = "EPSG:32732"
TARGET = GridSpec.geographic(0.001, (10.0, -1.0, 10.12, -0.92))  # 120 x 80 cells


def _cover(lon, lat):
    """Tree-cover-like field (%), smooth in space."""
    return 50 + 40 * np.sin(lon * 150.0) * np.cos(lat * 110.0)


def _index(lon, lat):
    """NDVI-like field."""
    return 0.5 + 0.3 * np.cos((lon + lat) * 90.0)


def _true_agb(lon, lat):
    return 3.0 * _cover(lon, lat) + 300.0 * _index(lon, lat) ** 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("optical")
    # cover: UTM 32S at 40 m
    fwd = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    inv = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    x0, y0 = fwd.transform(9.995, -0.915)
    x1, y1 = fwd.transform(10.125, -1.005)
    x0, top = np.floor(x0 / 40) * 40, np.ceil(y0 / 40) * 40
    w, h = int((x1 - x0) / 40) + 1, int((top - y1) / 40) + 1
    cx, cy = np.meshgrid(x0 + 20 + 40 * np.arange(w), top - 20 - 40 * np.arange(h))
    lon, lat = inv.transform(cx, cy)
    cover = write_geotiff(d / "cover_utm.tif", _cover(lon, lat).astype(np.float32), Affine(40, 0, x0, 0, -40, top),
                          UTM, nodata=-9999.0)
    # index: geographic 0.0005 deg, with a nodata hole
    glon, glat = np.meshgrid(10.0 + 0.00025 + 0.0005 * np.arange(240), -0.92 - 0.00025 - 0.0005 * np.arange(160))
    idx = _index(glon, glat).astype(np.float32)
    idx[40:60, 100:140] = -9999.0  # 10 x 20 target cells without index
    index = write_geotiff(d / "index_geo.tif", idx, Affine(0.0005, 0, 10.0, 0, -0.0005, -0.92), "EPSG:4326",
                          nodata=-9999.0)
    rng = np.random.default_rng(11)
    n = 3000
    slon, slat = rng.uniform(10.0, 10.12, n), rng.uniform(-1.0, -0.92, n)
    agbd = _true_agb(slon, slat) + rng.normal(0, 15.0, n)
    quality = np.ones(n, dtype=bool)
    quality[:100] = False
    shots = pd.DataFrame({"longitude": slon, "latitude": slat, "agbd": agbd, "quality": quality})
    shots_path = d / "shots.parquet"
    shots.to_parquet(shots_path)
    return {"dir": d, "covariates": {"cover": cover, "index": index}, "shots": shots, "shots_path": shots_path}


@pytest.fixture(scope="module")
def fitted(world):
    return fit_optical_model(world["shots"], world["covariates"], TARGET, learner="random-forest")


def test_fit_counts_and_spatial_cv(fitted):
    info = fitted.info
    assert info["n_shots"] == 3000 and info["n_quality_dropped"] == 100
    # footprints in the index hole (0.02 x 0.02 deg of 0.12 x 0.08) lack a covariate
    assert 0.02 < info["n_missing_covariate"] / 2900 < 0.07
    assert info["n_train"] == 2900 - info["n_missing_covariate"]
    assert fitted.covariate_names == ["cover", "index"]
    assert fitted.resampling == {"cover": "average", "index": "average"}
    assert info["cv_r2"] > 0.85 and info["cv_blocks"] >= 20


def test_map_recovers_true_agb_with_nodata_and_se(fitted, world, tmp_path):
    res = predict_map(fitted, world["covariates"], TARGET, tmp_path / "agb.tif", block_px=48)
    assert res.se_path == tmp_path / "agb_se.tif"
    with rasterio.open(res.agb_path) as ds, rasterio.open(res.se_path) as ds_se:
        agb = ds.read(1, masked=True)
        se = ds_se.read(1, masked=True)
        assert ds.crs.to_epsg() == 4326 and ds.nodata == GRID_NODATA and ds.tags()["UNITS"] == "Mg/ha"
    assert agb.mask[20:30, 50:70].all() and se.mask[20:30, 50:70].all()  # the index hole
    assert (~agb.mask).sum() == res.n_predicted == 120 * 80 - 200
    t = TARGET.transform
    lon, lat = np.meshgrid(t.c + t.a * (np.arange(120) + 0.5), t.f + t.e * (np.arange(80) + 0.5))
    truth = _true_agb(lon, lat)
    ok = ~agb.mask
    r2 = 1 - np.sum((agb[ok] - truth[ok]) ** 2) / np.sum((truth[ok] - truth[ok].mean()) ** 2)
    assert r2 > 0.97, r2  # measured 0.996
    assert (se[ok] > 5).all() and (se[ok] < 60).all()  # label noise sd 15 + model error


def test_prediction_does_not_depend_on_block_size(fitted, world, tmp_path):
    a = predict_map(fitted, None, None, tmp_path / "a.tif", block_px=17)
    b = predict_map(fitted, None, None, tmp_path / "b.tif", block_px=512)
    with rasterio.open(a.agb_path) as da, rasterio.open(b.agb_path) as db:
        np.testing.assert_array_equal(da.read(1), db.read(1))


def test_dask_block_prediction_equals_serial(fitted, tmp_path):
    """Raster blocks as tasks on a 2-worker LocalCluster give the same pixels as the serial loop."""
    a = predict_map(fitted, None, None, tmp_path / "serial.tif", block_px=32)
    b = predict_map(fitted, None, None, tmp_path / "dask.tif", block_px=32, workers=2)
    assert b.n_predicted == a.n_predicted and b.agb_mean_mg_ha == a.agb_mean_mg_ha
    for x, y in ((a.agb_path, b.agb_path), (a.se_path, b.se_path)):
        with rasterio.open(x) as dx, rasterio.open(y) as dy:
            np.testing.assert_array_equal(dx.read(1), dy.read(1))


def test_multiband_source_is_one_covariate_of_several_layers(world, tmp_path):
    """A 2-band file (cover, index on one grid) fitted under one name: prediction takes it by that name and
    gives the pixels of the same data given as two single-band files."""
    with rasterio.open(world["covariates"]["index"]) as src:
        idx = src.read(1)
        profile = src.profile
    glon, glat = np.meshgrid(10.0 + 0.00025 + 0.0005 * np.arange(idx.shape[1]),
                             -0.92 - 0.00025 - 0.0005 * np.arange(idx.shape[0]))
    cover_on_index_grid = np.where(idx == -9999.0, -9999.0, _cover(glon, glat)).astype(np.float32)
    profile.update(count=2)
    stack_path = tmp_path / "stack.tif"
    with rasterio.open(stack_path, "w", **profile) as dst:
        dst.write(np.stack([cover_on_index_grid, idx]))
    single = {"cover": write_geotiff(tmp_path / "c.tif", cover_on_index_grid, profile["transform"], profile["crs"],
                                     nodata=-9999.0),
              "index": world["covariates"]["index"]}
    m2 = fit_optical_model(world["shots"], {"stack": stack_path}, TARGET, learner="random-forest")
    m1 = fit_optical_model(world["shots"], single, TARGET, learner="random-forest")
    assert len(m2.covariate_names) == 2 and list(m2.sources) == ["stack"]
    a = predict_map(m2, None, None, tmp_path / "a.tif")
    b = predict_map(m2, {"stack": stack_path}, None, tmp_path / "b.tif")
    c = predict_map(m1, None, None, tmp_path / "c_map.tif")
    with rasterio.open(a.agb_path) as da, rasterio.open(b.agb_path) as db, rasterio.open(c.agb_path) as dc:
        np.testing.assert_array_equal(da.read(1), db.read(1))
        np.testing.assert_array_equal(da.read(1), dc.read(1))
    with pytest.raises(ModelError, match="stack"):
        predict_map(m2, single, None, tmp_path / "d.tif")


def test_residual_se_is_binned_rms():
    pred = np.repeat([10.0, 100.0], 100)
    obs = pred + np.tile([-3.0, 3.0], 100) * np.repeat([1.0, 10.0], 100)
    se = ResidualSE.from_cv(pred, obs, n_bins=2)
    np.testing.assert_allclose(se.rmse_mg_ha, [3.0, 30.0])
    assert se(np.array([10.0, 55.0, 100.0, 500.0])).tolist() == pytest.approx([3.0, 16.5, 30.0, 30.0])


def test_blockwise_memory_is_bounded(world, tmp_path):
    """A 2000 x 2000 map in 256-px blocks: Python-side peak << the full covariate stack."""
    from sklearn.linear_model import LinearRegression

    model = fit_optical_model(world["shots"], world["covariates"], TARGET, learner=LinearRegression())
    big = GridSpec.geographic(0.00004, (10.0, -1.0, 10.08, -0.92))  # 2000 x 2000
    full_stack_bytes = 2 * big.width * big.height * 4
    tracemalloc.start()
    try:
        res = predict_map(model, None, big, tmp_path / "big.tif", block_px=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.n_predicted > 3_000_000
    assert peak < full_stack_bytes / 4, (peak, full_stack_bytes)


def test_mismatched_covariates_and_no_overlap(fitted, world, tmp_path):
    with pytest.raises(ModelError, match="missing"):
        predict_map(fitted, {"cover": world["covariates"]["cover"]}, TARGET, tmp_path / "x.tif")
    far = GridSpec.geographic(0.001, (30.0, 5.0, 30.1, 5.1))
    with pytest.raises(NoOverlapError):
        fit_optical_model(world["shots"], world["covariates"], far)


def test_sample_world_fusion_recovers_agb():
    """Train on the true footprint AGB of the simulated shots; compare with the area-averaged truth."""
    from data_samples import load_sample_world

    world = load_sample_world()
    truth = pd.read_parquet(world.truth_path, columns=["lon", "lat", "agb_mg_ha"])
    shots = pd.DataFrame({"longitude": truth.lon, "latitude": truth.lat, "agbd": truth.agb_mg_ha})
    grid = GridSpec.like(world.optical_paths["ndvi"])  # 0.001 deg; carbon_agb is UTM 100 m
    model = fit_optical_model(shots, dict(world.optical_paths), grid)
    assert model.resampling["carbon_agb"] == "average"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = predict_map(model, None, None, f"{d}/agb.tif", block_px=128)
        with rasterio.open(res.agb_path) as ds:
            pred = ds.read(1, masked=True).filled(np.nan)
    with align_to_grid([world.agb_path], grid, "average") as stack:
        true = stack.read()[0]
    ok = np.isfinite(pred) & np.isfinite(true)
    r2 = 1 - np.sum((pred[ok] - true[ok]) ** 2) / np.sum((true[ok] - true[ok].mean()) ** 2)
    assert r2 > 0.93, r2  # measured 0.957 (random forest, seed 0)
    assert abs(np.mean(pred[ok] - true[ok])) < 5.0


def test_cli_map(world, tmp_path):
    from fusion.cli import main

    cov = world["covariates"]
    out = tmp_path / "agb.tif"
    r = CliRunner().invoke(main, [
        "map", str(world["shots_path"]), "--optical", f"cover={cov['cover']}", "--optical", str(cov["index"]),
        "--res", "0.002", "--bounds", "10.0", "-1.0", "10.12", "-0.92", "--learner", "gradient-boosting",
        "--resampling", "cover=bilinear", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "spatial 5-fold CV" in r.output and "cover (bilinear)" in r.output
    with rasterio.open(out) as ds, rasterio.open(tmp_path / "agb_se.tif") as ds_se:
        assert ds.shape == (40, 60) and ds_se.shape == (40, 60)
        assert ds.tags()["COVARIATES"] == "cover,index_geo"
