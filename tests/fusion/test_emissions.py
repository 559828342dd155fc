"""SRTM / TanDEM-X deforestation emissions: height-AGB fit, deforestation rule, areas, the whole
workflow against the emissions sample world's truth, the CLI, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from fusion.emissions import (
    PUBLISHED_EMISSIONS,
    TOTAL_ROW,
    classify_deforestation,
    fit_height_agb,
    pixel_areas_ha,
    read_shots,
    run_emissions,
    years_between,
)
from terrain.difference import Grid, geoid_grid_available
from waveform.errors import DatumError, ModelError, NoOverlapError, SawaValueError


# --- pieces ------------------------------------------------------------------------------------
def test_fit_height_agb_exact_power_law():
    h = np.linspace(5, 45, 50)
    fit = fit_height_agb(h, 2.0 * h**1.5)
    assert fit.a == pytest.approx(2.0, rel=1e-10) and fit.b == pytest.approx(1.5, rel=1e-10)
    assert fit.correction_factor == pytest.approx(1.0, abs=1e-12)
    assert fit.predict(np.array([25.0]))[0] == pytest.approx(2.0 * 25**1.5)


def test_fit_height_agb_baskerville_gives_the_mean():
    # ln AGBD = ln(1.2 h^1.65) + e, e ~ N(0, 0.3): the median is 1.2 h^1.65 and the mean is
    # exp(0.3^2/2) = 1.046 times higher; the corrected fit must predict the mean.
    rng = np.random.default_rng(0)
    h = rng.uniform(8, 40, 20000)
    agbd = 1.2 * h**1.65 * np.exp(rng.normal(0, 0.3, h.size))
    fit = fit_height_agb(h, agbd)
    assert fit.b == pytest.approx(1.65, abs=0.02)
    assert fit.rse_log == pytest.approx(0.3, abs=0.01)
    assert fit.correction_factor == pytest.approx(math.exp(0.045), abs=0.005)
    assert np.mean(fit.predict(h)) == pytest.approx(np.mean(agbd), rel=0.01)
    ln_a, b = fit.sample(rng, 4000).T  # draws around the fit with the fitted covariance
    assert np.std(b) == pytest.approx(math.sqrt(fit.cov_log[1, 1]), rel=0.1)


def test_fit_height_agb_bad_input():
    with pytest.raises(ModelError, match="need >= 10"):
        fit_height_agb([10, 20, np.nan, -1], [100, 200, 50, 10])
    with pytest.raises(ModelError, match="rh98 has 2 values but agbd has 3"):
        fit_height_agb([10, 20], [1, 2, 3])


def test_classify_deforestation_rule():
    loss = np.zeros((8, 8))
    forest = np.ones((8, 8), bool)
    loss[1:3, 1:3] = 20.0  # 4 px patch, tall enough
    loss[5, 5] = loss[6, 6] = 20.0  # 2 px joined diagonally (8-connectivity)
    loss[1, 6] = 20.0  # single pixel
    start = np.full((8, 8), 30.0)
    start[2, 2] = 50.0  # loss 20 < 0.5 x 50: partial loss, not deforestation
    area = np.full((8, 8), 0.25)  # ha
    defo, rejected = classify_deforestation(loss, forest, area, start, min_patch_ha=0.5)
    assert defo.sum() == 3 + 2 and defo[1, 1] and not defo[2, 2] and defo[5, 5] and defo[6, 6]
    assert rejected.sum() == 1 and rejected[1, 6]
    tcl = np.zeros((8, 8), bool)
    tcl[5:7, 5:7] = True
    defo, _ = classify_deforestation(loss, forest, area, start, tree_cover_loss=tcl, min_patch_ha=0.5)
    assert defo.sum() == 2  # only the patch confirmed by tree-cover loss
    nonforest = forest.copy()
    nonforest[1:3, 1:3] = False
    defo, _ = classify_deforestation(loss, nonforest, area, None, min_patch_ha=0.0)
    assert defo.sum() == 3  # non-forest pixels never count; no start height -> no fraction rule


def _ellipsoid_band_area_m2(lat1_deg, lat2_deg, dlon_deg):
    """Exact area between two parallels on the WGS84 ellipsoid: a^2 dlon / 2 * (q(lat2) - q(lat1))."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    e = math.sqrt(e2)

    def q(lat):
        s = math.sin(math.radians(lat))
        return (1 - e2) * (s / (1 - e2 * s * s) - math.log((1 - e * s) / (1 + e * s)) / (2 * e))

    return a * a * math.radians(dlon_deg) / 2 * abs(q(lat2_deg) - q(lat1_deg))


def test_pixel_areas_match_ellipsoid_band_area():
    """The workflow's pixel areas (fusion.areas.pixel_areas_m2, in ha) against closed forms."""
    grid = Grid(Affine(0.01, 0, -62.0, 0, -0.01, -10.0), "EPSG:4326", 100, 100)
    areas = pixel_areas_ha(grid)
    assert areas.shape == (100, 100)
    assert areas.sum() == pytest.approx(_ellipsoid_band_area_m2(-11, -10, 1) / 1e4, rel=1e-9)
    assert areas[0, 0] == pytest.approx(_ellipsoid_band_area_m2(-10.01, -10, 0.01) / 1e4, rel=1e-9)
    assert areas[-1, 0] == pytest.approx(_ellipsoid_band_area_m2(-11, -10.99, 0.01) / 1e4, rel=1e-9)
    # UTM 20S at its central meridian (x = 500 km): grid metres are true metres x k0 = 0.9996, so a
    # 30 m grid pixel covers (30 / 0.9996)^2 m^2 of the ellipsoid (not 0.09 ha)
    utm = Grid(Affine(30, 0, 499_970, 0, -30, 8_900_000), "EPSG:32720", 3, 3)
    np.testing.assert_allclose(pixel_areas_ha(utm), 0.09 / 0.9996**2, rtol=1e-6)


def test_years_between_dem_dates():
    assert years_between("2000-02-16", "2013-01-01") == pytest.approx(12.876, abs=0.001)
    with pytest.raises(SawaValueError, match="not after"):
        years_between("2013-01-01", "2000-02-16")


def test_carbon_fraction_from_the_shared_factor_table(world, result):
    """Carbon = AGB x the IPCC 2006 default carbon fraction 0.47 (fusion.carbon's table row), for the
    result and for the sample world's truth."""
    import json

    manifest = json.loads(result.paths["manifest"].read_text())
    assert manifest["parameters"]["carbon_fraction"] == 0.47
    assert "Table 4.3" in manifest["parameters"]["carbon_fraction_source"]
    total = result.total
    assert total["carbon_loss_tg_c"] == pytest.approx(0.47 * total["agb_loss_tg"], rel=1e-12)
    truth = world.truth
    assert truth["carbon_fraction"] == 0.47
    assert truth["carbon_loss_mg_c"] == pytest.approx(0.47 * truth["agb_loss_mg"], rel=1e-12)


def test_unknown_ecological_zone_fails_early(world, tmp_path):
    with pytest.raises(SawaValueError, match="unknown ecological zone 'atlantis'"):
        run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path, tmp_path,
                      shots=world.shots_path, ecological_zone="atlantis")
    assert not list(tmp_path.iterdir())


def test_published_comparison_rows_are_cited():
    values = {p["name"]: p["value_tg_c_per_yr"] for p in PUBLISHED_EMISSIONS}
    assert values == {"Seed system (SRTM - TanDEM-X)": 267.51, "Baccini et al. 2017": 519.78, "Harris et al. 2012": 438.0}
    cites = {p["name"]: p["citation"] for p in PUBLISHED_EMISSIONS}
    assert "Science 358" in cites["Baccini et al. 2017"] and "Science 336" in cites["Harris et al. 2012"]


# --- the workflow on the sample world -------------------------------------------------------------
@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sawa_samples")


@pytest.fixture(scope="session")
def world(world_dir):
    from data_samples.emissions_world import load_emissions_world

    return load_emissions_world(cache_dir=world_dir)


@pytest.fixture(scope="session")
def result(world, tmp_path_factory):
    return run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path,
                         tmp_path_factory.mktemp("emissions_out"), shots=world.shots_path,
                         tree_cover_loss=world.tree_cover_loss_path)


def test_sample_world_is_deterministic(world, tmp_path):
    from data_samples.emissions_world import load_emissions_world
    from waveform.outputs import sha256_file

    again = load_emissions_world(cache_dir=tmp_path)
    assert sha256_file(again.srtm_path) == sha256_file(world.srtm_path)
    assert again.truth == world.truth


def test_coregistration_and_penetration_match_truth(world, result):
    truth = world.truth
    c = result.coregistration
    assert abs(c.dx_px - truth["expected_coregistration"]["dx_px"]) < 0.1
    assert abs(c.dy_px - truth["expected_coregistration"]["dy_px"]) < 0.1
    assert c.dz_m == pytest.approx(truth["expected_coregistration"]["dz_m"], abs=0.5)
    assert result.datum.method in ("absorbed_in_vertical_bias", "grid")
    assert result.penetration.offset_m == pytest.approx(truth["penetration_offset_m"], abs=0.3)


def test_clearing_area_within_5_percent(world, result):
    truth = world.truth
    table = result.table.set_index("region")
    for name, t in truth["regions"].items():
        assert table.loc[name, "deforested_area_ha"] == pytest.approx(t["cleared_area_ha"], rel=0.05)
        assert table.loc[name, "mean_height_loss_m"] == pytest.approx(t["mean_height_loss_m"], abs=1.5)
    assert table.loc[TOTAL_ROW, "deforested_area_ha"] == pytest.approx(truth["cleared_area_ha"], rel=0.05)


def test_emissions_within_10_percent_with_uncertainty(world, result):
    truth = world.truth
    table = result.table.set_index("region")
    for name, t in truth["regions"].items():
        assert table.loc[name, "emissions_tg_c_per_yr"] == pytest.approx(t["emissions_tg_c_per_yr"], rel=0.10)
    total = result.total
    assert total["emissions_tg_c_per_yr"] == pytest.approx(truth["emissions_tg_c_per_yr"], rel=0.10)
    assert total["emissions_tg_c_per_yr"] == pytest.approx(table.drop(TOTAL_ROW)["emissions_tg_c_per_yr"].sum())
    assert total["years"] == pytest.approx(truth["years"])
    assert 0 < total["emissions_sd_tg_c_per_yr"] < 0.2 * total["emissions_tg_c_per_yr"]
    assert total["emissions_p05_tg_c_per_yr"] < total["emissions_tg_c_per_yr"] < total["emissions_p95_tg_c_per_yr"]
    # the allometry is recovered from the GEDI-like shots: prediction at 28 m within 10% of truth
    a, b = truth["allometry"]["a"], truth["allometry"]["b"]
    assert result.allometry.predict(np.array([28.0]))[0] == pytest.approx(a * 28.0**b, rel=0.10)


def test_voids_counted_per_region(world, result):
    table = result.table.set_index("region")
    assert table.loc[TOTAL_ROW, "srtm_void_px"] == result.counts["srtm_void_px"] > 0
    # three SRTM void discs of radius 7, 9, 5 px (~490 px incl. resampling edges) and one TanDEM-X disc of radius 4
    assert 400 < result.counts["srtm_void_px"] < 700
    assert table.loc[TOTAL_ROW, "tandemx_void_px"] == result.counts["tandemx_void_px"] == pytest.approx(49, abs=5)
    assert table.loc[TOTAL_ROW, "forest_not_assessed_px"] > 0
    assert result.counts["deforested_outside_regions_px"] == 0


def test_outputs_written(world, result):
    paths = result.paths
    csv = pd.read_csv(paths["emissions_csv"])
    assert list(csv["region"]) == ["West", "North-East", "South-East", TOTAL_ROW]
    with rasterio.open(paths["height_loss_tif"]) as hl, rasterio.open(world.tandemx_path) as tdx:
        assert hl.transform == tdx.transform and hl.crs == tdx.crs
        loss = hl.read(1, masked=True)
    assert float(loss.max()) > 20  # clearings lost > 20 m of canopy
    with rasterio.open(paths["agb_loss_tif"]) as agb:
        assert agb.tags(1) or agb.tags()
        agb_arr = agb.read(1, masked=True)
    assert int((agb_arr > 0).sum()) == int(result.total["deforested_px"])
    for key in ("map_png", "bar_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    manifest = json.loads(paths["manifest"].read_text())
    assert set(manifest["outputs"]) == {"emissions_csv", "height_loss_tif", "agb_loss_tif", "map_png", "bar_png"}
    assert manifest["coregistration"]["dx_px"] == pytest.approx(result.coregistration.dx_px)
    assert "start-year forest AND height loss > 5 m" in manifest["parameters"]["deforestation_rule"]
    assert len(manifest["published_comparison"]) == 3


def test_penetration_correction_matters(world, tmp_path):
    """Without the C/X penetration correction the clearings' height loss is 3.5 m short and the
    emissions fall by about b x 3.5 / 26.5 ~ 20% (b ~ 1.55)."""
    r = run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path, tmp_path,
                      shots=world.shots_path, penetration_offset_m=0.0, n_draws=20, plots=False)
    ratio = r.total["emissions_tg_c_per_yr"] / world.truth["emissions_tg_c_per_yr"]
    assert 0.74 < ratio < 0.86
    assert r.penetration.source == "given"


def test_cli_sample_world_and_usage(world, world_dir, tmp_path):
    from fusion.cli import main

    out = tmp_path / "cli_out"
    res = CliRunner().invoke(main, ["emissions", "-o", str(out), "--draws", "20"], env={"SAWA_SAMPLE_DIR": str(world_dir)})
    assert res.exit_code == 0, res.output
    assert "sample world" in res.output and TOTAL_ROW in res.output and "Tg C/yr" in res.output
    assert (out / "emissions.csv").exists() and (out / "manifest.json").exists()
    partial = CliRunner().invoke(main, ["emissions", "--srtm", str(world.srtm_path)])
    assert partial.exit_code == 2 and "--tandemx" in partial.output


# --- bad input ---------------------------------------------------------------------------------
def test_dems_that_do_not_overlap(world, srtm_path, tmp_path):
    with pytest.raises(NoOverlapError, match="SRTM DEM .*does not overlap"):
        run_emissions(srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path, tmp_path,
                      shots=world.shots_path)


def test_regions_that_do_not_overlap(world, countries_path, tmp_path):
    import geopandas as gpd

    far = tmp_path / "far.gpkg"
    gpd.read_file(countries_path).query("ADM0_A3 == 'NOR'").to_file(far)
    with pytest.raises(NoOverlapError, match="no polygon of regions file"):
        run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, far, tmp_path, shots=world.shots_path)


def test_strict_datums_refused_without_geoid_grid(world, tmp_path):
    if geoid_grid_available("egm96", "wgs84"):
        pytest.skip("EGM96 geoid grid installed: strict handling converts instead of failing")
    with pytest.raises(DatumError, match=r"SRTM DEM .*srtm\.tif heights are egm96"):
        run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path, tmp_path,
                      shots=world.shots_path, strict_datum=True)


def test_shot_table_without_agbd(world, tmp_path):
    bad = tmp_path / "shots.csv"
    pd.DataFrame({"rh98": [10.0, 20.0]}).to_csv(bad, index=False)
    with pytest.raises(SawaValueError, match=r"shots\.csv has no agbd column"):
        read_shots(bad)
    with pytest.raises(SawaValueError, match="needs GEDI-like shots"):
        run_emissions(world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path, tmp_path)
