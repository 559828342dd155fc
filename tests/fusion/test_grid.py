"""Hybrid-inference gridding: naive oracle, coverage on a simulated population, streaming, GeoTIFF, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from click.testing import CliRunner

from fusion.grid import (
    EASE2_GLOBAL_1KM_RES_M,
    GRID_BANDS,
    GRID_NODATA,
    GridSpec,
    grid_footprints,
    grid_shot_table,
    shot_table_bounds,
    stack_strata,
)
from tests.reference.fusion_naive import naive_grid
from waveform.errors import NoOverlapError, SawaFileError, SawaValueError

FIELDS = ("mean", "se", "var_model", "var_sampling", "n_shots", "n_tracks")


@pytest.fixture(scope="module")
def footprints():
    rng = np.random.default_rng(7)
    n = 2500
    lon = rng.uniform(10.0, 10.1, n)
    lat = rng.uniform(-1.0, -0.95, n)
    agbd = rng.gamma(2.0, 60.0, n)
    agbd[:5] = np.nan  # fill values
    se = rng.uniform(5.0, 25.0, n)
    track = rng.integers(0, 9, n)
    jac = np.column_stack([np.ones(n), rng.normal(3.0, 1.0, n), rng.normal(size=n)])
    a = rng.normal(size=(3, 3))
    vcov = a @ a.T + 0.1 * np.eye(3)
    lon[5:10] = 11.0  # outside the grid
    return {"lon": lon, "lat": lat, "agbd": agbd, "se": se, "track": track, "jac": jac, "vcov": vcov}


GRID = GridSpec.geographic(0.01, (10.0, -1.0, 10.1, -0.95))


@pytest.mark.parametrize("mode", ["srs", "srs_se", "tracks", "tracks_se", "tracks_gradient", "min_tracks_3"])
def test_matches_naive_per_cell_oracle(footprints, mode):
    f = footprints
    kw = {}
    if "se" in mode:
        kw["agbd_se"] = f["se"]
    if mode.startswith(("tracks", "min_tracks")):
        kw["track_id"] = f["track"]
    if "gradient" in mode:
        kw.update(jacobians=f["jac"], vcov=f["vcov"])
    if mode == "min_tracks_3":
        kw["min_tracks"] = 3
    res = grid_footprints(f["lon"], f["lat"], f["agbd"], grid=GRID, min_shots=20, **kw)
    ref = naive_grid(f["lon"], f["lat"], f["agbd"], GRID.transform, GRID.width, GRID.height, min_shots=20, **kw)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(res, name), ref[name], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=name)
    assert res.counts == {"read": 2500, "used": 2490, "outside_grid": 5, "nan_dropped": 5}
    assert np.isfinite(res.mean).sum() > 40


def test_srs_variance_is_s2_over_n_in_a_hand_case():
    # one cell, 4 shots 10, 20, 30, 40: mean 25, s^2 = 500/3, V = s^2/4; se mean 5 -> V_mod = 25
    g = GridSpec.from_bounds((0, 0, 10, 10), 10.0, "EPSG:6933")
    res = grid_footprints([1, 2, 3, 4], [5, 5, 5, 5], [10, 20, 30, 40], agbd_se=[4, 6, 4, 6], grid=g,
                          projected=True)
    assert res.mean[0, 0] == pytest.approx(25.0)
    assert res.var_sampling[0, 0] == pytest.approx(500 / 3 / 4)
    assert res.var_model[0, 0] == pytest.approx(25.0)
    assert res.se[0, 0] == pytest.approx(np.sqrt(500 / 12 + 25))


def test_cluster_variance_hand_case():
    # two tracks: A = {10, 20} (S=30), B = {40} (S=40); n=3, mu=70/3, m=2
    # V = m/((m-1) n^2) * [(30 - 2 mu)^2 + (40 - mu)^2]
    g = GridSpec.from_bounds((0, 0, 10, 10), 10.0, "EPSG:6933")
    res = grid_footprints([1, 2, 3], [5, 5, 5], [10, 20, 40], track_id=["A", "A", "B"], grid=g, projected=True,
                          min_shots=1)
    mu = 70 / 3
    expected = 2 / 9 * ((30 - 2 * mu) ** 2 + (40 - mu) ** 2)
    assert res.mean[0, 0] == pytest.approx(mu)
    assert res.var_sampling[0, 0] == pytest.approx(expected)
    assert res.n_tracks[0, 0] == 2
    # one track only: mean with min_tracks=1 but no SE; nodata with the default min_tracks=2
    one = grid_footprints([1, 2], [5, 5], [10, 20], track_id=["A", "A"], grid=g, projected=True, min_shots=1,
                          min_tracks=1)
    assert one.mean[0, 0] == pytest.approx(15.0) and np.isnan(one.se[0, 0])
    default = grid_footprints([1, 2], [5, 5], [10, 20], track_id=["A", "A"], grid=g, projected=True, min_shots=1)
    assert np.isnan(default.mean[0, 0]) and default.n_shots[0, 0] == 2 and default.n_tracks[0, 0] == 1


def _simulate_cells(rng, n_cells=50, lines=100, per_line=25):
    """A fixed population per cell: footprints on ``lines`` potential tracks, AGB = 20 + 8 x + e."""
    line_eff = np.cumsum(rng.normal(0, 1.5, (n_cells, lines)), axis=1)
    line_eff -= line_eff.mean(axis=1, keepdims=True)
    x = 20 + rng.normal(0, 5, (n_cells, 1, 1)) + line_eff[:, :, None] + rng.normal(0, 4, (n_cells, lines, per_line))
    x = np.clip(x, 0, None)
    y = 20.0 + 8.0 * x + rng.normal(0, 40, x.shape)
    return x, y.reshape(n_cells, -1).mean(axis=1)


def _replicate(rng, x, beta_hat, m_tracks, keep_p=0.7):
    n_cells, lines, per_line = x.shape
    xs, ys, vals, tracks, jac = [], [], [], [], []
    for c in range(n_cells):
        sel = rng.choice(lines, m_tracks, replace=False)
        keep = rng.random((m_tracks, per_line)) < keep_p  # unequal cluster sizes
        li, pi = np.nonzero(keep)
        xv = x[c, sel[li], pi]
        vals.append(beta_hat[0] + beta_hat[1] * xv)
        jac.append(np.column_stack([np.ones_like(xv), xv]))
        tracks.append(c * 1000 + sel[li])
        xs.append(c * 1000.0 + (sel[li] + 0.5) * 10.0)
        ys.append(1000.0 - (pi + 0.5) * 40.0)
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(vals), np.concatenate(tracks),
            np.concatenate(jac))


@pytest.mark.parametrize("vcov_scale", [1.0, 30.0])
def test_coverage_of_95_percent_interval_on_simulated_population(vcov_scale):
    """Hybrid inference: sample 16 of 100 tracks per cell, beta_hat ~ N(beta, C); truth = population mean.

    ``vcov_scale`` 1: sampling variance dominates (V_model ~9 % of the total); 30: model variance
    dominates (~73 %), where ignoring it (sampling-only SE) must under-cover.
    """
    rng = np.random.default_rng(2019)
    x, mu_true = _simulate_cells(rng)
    beta = np.array([20.0, 8.0])
    vcov = vcov_scale * np.array([[40.0, -1.5], [-1.5, 0.08]])
    chol = np.linalg.cholesky(vcov)
    grid = GridSpec("EPSG:6933", (1000.0, 0, 0, 0, -1000.0, 1000.0), x.shape[0], 1)
    z, z_sampling_only = [], []
    for _ in range(300):
        b = beta + chol @ rng.standard_normal(2)
        px, py, vals, tracks, jac = _replicate(rng, x, b, m_tracks=16)
        res = grid_footprints(px, py, vals, track_id=tracks, grid=grid, jacobians=jac, vcov=vcov, projected=True)
        z.append((res.mean[0] - mu_true) / res.se[0])
        z_sampling_only.append((res.mean[0] - mu_true) / np.sqrt(res.var_sampling[0]))
    z = np.concatenate(z)
    coverage = np.mean(np.abs(z) <= 1.959964)
    assert 0.93 <= coverage <= 0.97, coverage
    assert abs(np.mean(z)) < 0.1  # unbiased mean
    assert 0.9 < np.std(z) < 1.1
    if vcov_scale > 1:
        assert np.mean(np.abs(np.concatenate(z_sampling_only)) <= 1.959964) < 0.8


def test_model_variance_gradient_form_matches_monte_carlo_and_se_bound_exceeds_it():
    rng = np.random.default_rng(3)
    n = 200
    x = rng.uniform(5, 40, n)
    beta = np.array([1.2, 0.9])
    vcov = np.array([[0.02, -0.0005], [-0.0005, 0.0001]])
    # non-linear model AGB = exp(b0) * x^b1: gradient (AGB, AGB ln x)
    pred = np.exp(beta[0]) * x ** beta[1]
    jac = np.column_stack([pred, pred * np.log(x)])
    g = GridSpec.from_bounds((0, 0, 10, 10), 10.0, "EPSG:6933")
    px, py = np.full(n, 5.0), np.full(n, 5.0)
    res = grid_footprints(px, py, pred, grid=g, jacobians=jac, vcov=vcov, projected=True)
    draws = rng.multivariate_normal(beta, vcov, size=20000)
    means = np.exp(draws[:, :1]) * (x[None, :] ** draws[:, 1:2])
    mc_var = means.mean(axis=1).var()
    assert res.var_model[0, 0] == pytest.approx(mc_var, rel=0.05)
    se_i = np.sqrt(np.einsum("ip,pq,iq->i", jac, vcov, jac))
    bound = grid_footprints(px, py, pred, agbd_se=se_i, grid=g, projected=True)
    assert bound.var_model[0, 0] >= res.var_model[0, 0] - 1e-12
    assert bound.var_model[0, 0] == pytest.approx(se_i.mean() ** 2)


def test_stack_strata_block_diagonal():
    jac = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    stratum = np.array([0, 1, 0])
    v0, v1 = np.eye(2), 2 * np.eye(2)
    big_j, big_v = stack_strata(jac, stratum, [v0, v1])
    assert big_j.tolist() == [[1, 2, 0, 0], [0, 0, 1, 3], [1, 4, 0, 0]]
    assert np.array_equal(big_v, np.diag([1.0, 1.0, 2.0, 2.0]))
    # V_mod = sum over strata of gbar_s' V_s gbar_s, gbar_s = (1/n) sum_{i in s} g_i
    g = GridSpec.from_bounds((0, 0, 10, 10), 10.0, "EPSG:6933")
    res = grid_footprints([1, 2, 3], [5, 5, 5], [1.0, 2.0, 3.0], grid=g, jacobians=big_j, vcov=big_v,
                          projected=True, min_shots=1)
    g0, g1 = np.array([2.0, 6.0]) / 3, np.array([1.0, 3.0]) / 3
    assert res.var_model[0, 0] == pytest.approx(g0 @ v0 @ g0 + g1 @ v1 @ g1)


def test_gridspec_snapping_and_l4b_lattice():
    g = GridSpec.geographic(0.01, (10.003, -0.996, 10.051, -0.951))
    assert g.bounds == pytest.approx((10.0, -1.0, 10.06, -0.95))
    assert (g.width, g.height) == (6, 5)
    assert g.transform.f == -0.95  # decimal resolution without float drift
    l4b = GridSpec.gedi_l4b((10.0, -1.0, 10.3, -0.8))
    assert l4b.crs.to_epsg() == 6933 and l4b.res[0] == EASE2_GLOBAL_1KM_RES_M
    # the global L4B grid's upper-left corner (-17367530.445 m, 7314540.831 m) is on the same lattice
    for edge in (l4b.transform.c, l4b.transform.f):
        k = edge / EASE2_GLOBAL_1KM_RES_M
        assert abs(k - round(k)) < 1e-9
    assert abs(-17367530.44516138 / EASE2_GLOBAL_1KM_RES_M + 17352) < 1e-9
    assert abs(7314540.830638504 / EASE2_GLOBAL_1KM_RES_M - 7308) < 1e-9
    # half-open cells: the west/north edges belong to the grid, the east/south edges do not
    assert g.cell_index(np.array([10.0, 10.06, 10.0]), np.array([-0.95, -0.96, -1.0])).tolist() == [0, -1, -1]
    with pytest.raises(SawaValueError, match="empty"):
        GridSpec.geographic(0.01, (10.1, -1.0, 10.0, -0.9))


def test_equal_area_grid_projects_footprints():
    lon, lat = np.array([10.1234]), np.array([-0.9])
    g = GridSpec.equal_area(1000.0, (10.0, -1.0, 10.3, -0.8))
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:6933", always_xy=True).transform(lon, lat)
    col = int((x[0] - g.transform.c) // 1000.0)
    row = int((g.transform.f - y[0]) // 1000.0)
    assert g.cell_index_lonlat(lon, lat)[0] == row * g.width + col


def _write_shot_table(path, f, row_group_size):
    table = pa.table({
        "longitude": f["lon"], "latitude": f["lat"], "agbd": f["agbd"], "agbd_se": f["se"],
        "granule": np.where(f["track"] % 2 == 0, "G1.h5", "G2.h5"), "beam": (f["track"] // 2).astype(str),
        "quality": np.arange(f["lon"].size) % 10 != 0,
    })
    pq.write_table(table, path, row_group_size=row_group_size)


def test_streaming_shot_table_equals_in_memory(tmp_path, footprints):
    f = footprints
    path = tmp_path / "shots.parquet"
    _write_shot_table(path, f, row_group_size=300)
    res = grid_shot_table(path, GRID, batch_rows=250, min_shots=10)
    q = np.arange(f["lon"].size) % 10 != 0
    track = np.char.add(np.where(f["track"] % 2 == 0, "G1.h5|", "G2.h5|"), (f["track"] // 2).astype(str))
    ref = grid_footprints(f["lon"][q], f["lat"][q], f["agbd"][q], agbd_se=f["se"][q], track_id=track[q],
                          grid=GRID, min_shots=10)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-9, equal_nan=True, err_msg=name)
    assert res.counts["quality_dropped"] == 250 and res.counts["read"] == 2500
    assert shot_table_bounds(path) == pytest.approx((f["lon"].min(), f["lat"].min(), f["lon"].max(),
                                                     f["lat"].max()))
    with pytest.raises(SawaValueError, match="agbd_x"):
        grid_shot_table(path, GRID, agbd_column="agbd_x")
    with pytest.raises(SawaFileError):
        grid_shot_table(tmp_path / "absent.parquet", GRID)


def test_write_geotiff_bands_and_nodata(tmp_path, footprints):
    f = footprints
    res = grid_footprints(f["lon"], f["lat"], f["agbd"], agbd_se=f["se"], track_id=f["track"], grid=GRID)
    out = res.write(tmp_path / "g.tif")
    with rasterio.open(out) as ds:
        assert ds.count == 6 and ds.descriptions == GRID_BANDS
        assert ds.nodata == GRID_NODATA and ds.crs.to_epsg() == 4326
        assert ds.transform.almost_equals(GRID.transform)
        mean = ds.read(1, masked=True)
        np.testing.assert_allclose(mean.filled(np.nan), res.mean, rtol=1e-6, equal_nan=True)
        assert ds.read(3).sum() == res.counts["used"]
        assert "se_bound" in ds.tags()["MODEL_VARIANCE"]


def test_large_grid_is_tiled_with_overviews(tmp_path):
    g = GridSpec.geographic(0.0001, (10.0, -1.0, 10.11, -0.89))  # 1100 x 1100
    rng = np.random.default_rng(0)
    res = grid_footprints(rng.uniform(10, 10.11, 5000), rng.uniform(-1, -0.89, 5000), rng.gamma(2, 50, 5000),
                          grid=g, min_shots=1)
    with rasterio.open(res.write(tmp_path / "big.tif")) as ds:
        assert ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) == [2, 4]  # factors while the overview side >= 256 px


def test_errors_name_the_problem(footprints):
    f = footprints
    with pytest.raises(NoOverlapError, match="no footprint"):
        grid_footprints(f["lon"] + 50, f["lat"], f["agbd"], grid=GRID)
    with pytest.raises(SawaValueError, match="together"):
        grid_footprints(f["lon"], f["lat"], f["agbd"], grid=GRID, jacobians=f["jac"])
    with pytest.raises(SawaValueError, match="needs track ids"):
        grid_footprints(f["lon"], f["lat"], f["agbd"], grid=GRID, min_tracks=2)
    bad = f["se"].copy()
    bad[100] = -1
    with pytest.raises(SawaValueError, match="footprint 100"):
        grid_footprints(f["lon"], f["lat"], f["agbd"], agbd_se=bad, grid=GRID)
    with pytest.raises(SawaValueError, match="north-up"):
        GridSpec("EPSG:4326", (0.01, 0, 10, 0, 0.01, -1), 10, 10)


def test_sample_world_grid_is_close_to_true_cell_means():
    from data_samples import load_sample_world
    from fusion.align import align_to_grid

    world = load_sample_world()
    t = pd.read_parquet(world.truth_path, columns=["lon", "lat", "agb_mg_ha", "granule", "beam"])
    g = GridSpec.geographic(0.02, (10.0, -1.0, 10.3, -0.8))
    res = grid_footprints(t.lon, t.lat, t.agb_mg_ha, track_id=(t.granule + "|" + t.beam).to_numpy(), grid=g)
    with align_to_grid([world.agb_path], g, "average") as stack:
        true_mean = stack.read()[0]
    ok = np.isfinite(res.mean)
    assert ok.sum() >= 50
    err = res.mean[ok] - true_mean[ok]
    # footprints sample the true AGB field: unbiased on average, errors of the size of the SE
    assert abs(err.mean()) < 3 * err.std() / np.sqrt(ok.sum())
    assert np.sqrt(np.mean(err**2)) < 1.5 * np.sqrt(np.mean(res.se[ok] ** 2))


def test_cli_grid(tmp_path, footprints):
    from fusion.cli import main

    path = tmp_path / "shots.parquet"
    _write_shot_table(path, footprints, row_group_size=1000)
    runner = CliRunner()
    out = tmp_path / "g.tif"
    r = runner.invoke(main, ["grid", str(path), "--res", "0.01", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "estimated" in r.output and out.exists()
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.res == pytest.approx((0.01, 0.01))
    out2 = tmp_path / "ea.tif"
    r = runner.invoke(main, ["grid", str(path), "--equal-area", "1000", "--se-column", "none", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    with rasterio.open(out2) as ds:
        assert ds.crs.to_epsg() == 6933 and ds.res == pytest.approx((1000.0, 1000.0))
    r = runner.invoke(main, ["grid", str(path), "-o", str(out2)])
    assert r.exit_code != 0 and "exactly one of" in r.output
