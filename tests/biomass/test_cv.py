"""Spatial block CV: blocks, folds, metrics, slope bins; metric-set comparison on simulated truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biomass.cv import (
    RANDOM_SCHEME,
    SPATIAL_SCHEME,
    compare_metric_sets,
    regression_metrics,
    slope_bin_labels,
    spatial_block_cv,
    spatial_block_ids,
)
from biomass.l4a import L4AModel
from biomass.learners import RandomForestAGB
from tests.reference.biomass_naive import simulate_slope_shots
from waveform.errors import ModelError, SawaValueError

DEG_PER_KM_LAT = 1.0 / 111.32


def test_blocks_on_a_regular_grid():
    # 10 x 10 points, 1 km apart, centred on (0, 45): 5 km blocks split them 2 x 2 (x, y in -4.5..4.5 km)
    lat0, lon0 = 45.0, 0.0
    k = np.arange(10) - 4.5
    gx, gy = np.meshgrid(k, k)
    lat = lat0 + gy.ravel() * DEG_PER_KM_LAT
    lon = lon0 + gx.ravel() * DEG_PER_KM_LAT / np.cos(np.radians(lat0))
    ids = spatial_block_ids(lon, lat, 5.0)
    assert len(np.unique(ids)) == 4
    assert np.all(np.bincount(ids) == 25)
    assert len(np.unique(spatial_block_ids(lon, lat, 1.0))) == 100
    with pytest.raises(SawaValueError, match="positive"):
        spatial_block_ids(lon, lat, 0.0)
    lat_bad = lat.copy()
    lat_bad[3] = np.nan
    with pytest.raises(SawaValueError, match="first at position 3"):
        spatial_block_ids(lon, lat_bad, 5.0)


def test_metrics_and_bins_analytic():
    m = regression_metrics([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert m["n"] == 3 and m["bias"] == 1.0 and m["rmse"] == 1.0
    assert m["r2"] == pytest.approx(1 - 3 / 2)
    assert m["rmse_pct"] == pytest.approx(50.0)
    assert list(slope_bin_labels([0.0, 4.99, 5.0, 31.2, np.nan])) == ["0-5", "0-5", "5-10", "30-35", "unknown"]


@pytest.fixture(scope="module")
def shots():
    return simulate_slope_shots(n=900, seed=7)


def test_spatial_cv_holds_out_whole_blocks(shots):
    est = L4AModel(predictors=(98,), rh_suffix="_sawa")
    res = spatial_block_cv(est, shots, shots["agb_mg_ha"], shots["lon"], shots["lat"],
                           slope_deg=shots["slope_deg"], block_km=5.0, n_splits=5)
    sp = res.predictions[res.predictions.scheme == SPATIAL_SCHEME]
    assert (sp.groupby("block")["fold"].nunique() == 1).all()  # a block is never split across folds
    assert sp["y_pred"].notna().all() and (sp["fold"] >= 0).all()
    summ = res.summary
    assert set(summ["scheme"]) == {SPATIAL_SCHEME, RANDOM_SCHEME}
    overall = summ[(summ.scheme == SPATIAL_SCHEME) & (summ.slope_bin == "all")].iloc[0]
    assert overall["n"] == len(shots) and overall["n_unpredicted"] == 0
    ref = regression_metrics(sp["y_true"], sp["y_pred"])
    assert overall["rmse"] == pytest.approx(ref["rmse"]) and overall["r2"] == pytest.approx(ref["r2"])
    bins = summ[(summ.scheme == SPATIAL_SCHEME) & (summ.slope_bin != "all")]
    assert bins["n"].sum() == len(shots)
    with pytest.raises(ModelError, match="4 spatial blocks of 100 km cannot make 5 folds"):
        spatial_block_cv(est, shots, shots["agb_mg_ha"], shots["lon"], shots["lat"], block_km=100.0)


def test_random_split_flatters_autocorrelated_data():
    """Neighbours share a local offset: random CV sees them, spatial CV does not."""
    rng = np.random.default_rng(2)
    n = 800
    lat = 10 + rng.uniform(0, 0.3, n)
    lon = 30 + rng.uniform(0, 0.3, n)
    cell = (np.floor((lat - 10) / 0.05) * 100 + np.floor((lon - 30) / 0.05)).astype(int)  # ~5.5 km cells
    offsets = rng.normal(0, 40, cell.max() + 1)
    x = rng.uniform(0, 1, n)
    y = 100 + 50 * x + offsets[cell]
    X = pd.DataFrame({"x": x, "lat": lat, "lon": lon})
    est = RandomForestAGB(feature_columns=["x", "lat", "lon"], n_estimators=30, min_samples_leaf=2)
    res = spatial_block_cv(est, X, y, lon, lat, block_km=12.0, n_splits=4)
    s = res.summary.set_index(["scheme", "slope_bin"])
    assert s.loc[(RANDOM_SCHEME, "all"), "rmse"] < 0.8 * s.loc[(SPATIAL_SCHEME, "all"), "rmse"]
    assert s.loc[(SPATIAL_SCHEME, "unknown"), "n"] == n  # no slope given: one "unknown" bin


def test_compare_metric_sets_sawa_beats_raw_on_steep_slopes(shots, tmp_path):
    cmp = compare_metric_sets(
        shots, "agb_mg_ha", {"raw": ["rh50", "rh98"], "sawa": ["rh50_sawa", "rh98_sawa"]},
        learner="l4a-form", learner_params={"min_shots_per_stratum": 5}, block_km=5.0, n_splits=5,
        plot_path=tmp_path / "rmse_by_slope.png", table_path=tmp_path / "rmse_by_slope.csv",
    )
    t = cmp.table[cmp.table.scheme == SPATIAL_SCHEME].set_index(["metric_set", "slope_bin"])
    for b in ("30-35", "35-40", "40-45"):
        assert t.loc[("sawa", b), "rmse"] < 0.6 * t.loc[("raw", b), "rmse"], b
    # raw metrics overestimate on steep slopes (positive bias grows with slope)
    assert t.loc[("raw", "40-45"), "bias"] > t.loc[("raw", "10-15"), "bias"]
    assert cmp.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(cmp.table_path)
    assert {"metric_set", "scheme", "slope_bin", "n", "rmse", "r2", "bias"} <= set(csv.columns)
    assert set(csv["metric_set"]) == {"raw", "sawa"}


def test_compare_metric_sets_random_forest_and_bad_input(shots):
    cmp = compare_metric_sets(shots, sets={"sawa": ["rh50_sawa", "rh98_sawa"]}, learner="random-forest",
                              learner_params={"n_estimators": 20}, n_splits=3, random_comparison=False)
    assert set(cmp.table["scheme"]) == {SPATIAL_SCHEME}
    bad = shots.copy()
    bad.loc[5, "rh98_sawa"] = np.nan
    with pytest.raises(ModelError, match=r"feature set 'sawa': shots with missing values in rh98_sawa \(1\)"):
        compare_metric_sets(bad, sets={"sawa": ["rh98_sawa"]}, learner="l4a-form")
    with pytest.raises(ModelError, match="lacks columns rh98_x"):
        compare_metric_sets(shots, sets={"x": ["rh98_x"]})
