"""Zonal totals: constant-AGB rasters against geodesic areas, a brute-force per-pixel oracle for
sums and both SE assumptions, nodata, carbon per zone, latitude bands, Natural Earth countries,
bad polygons and bad rasters."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from fusion.areas import band_area_m2, geodesic_area_m2, row_areas_m2
from fusion.zonal import RasterArray, latitude_band_total, load_countries, zonal_totals
from terrain.rasters import write_geotiff
from waveform.errors import RasterError, SawaValueError

RES = 0.01
T_GEO = Affine(RES, 0, 10.0, 0, -RES, 45.0)          # 10-12 E, 43-45 N
SHAPE = (200, 200)


def _polys() -> gpd.GeoDataFrame:
    a = shapely.box(10.123, 43.2, 11.05, 44.61)
    ang = np.linspace(0, 2 * np.pi, 17, endpoint=False)
    b = shapely.Polygon(np.column_stack([11.4 + 0.4 * np.cos(ang), 44.0 + 0.3 * np.sin(ang) * (1 + 0.3 * np.cos(2 * ang))]))
    return gpd.GeoDataFrame({"iso3": ["AAA", "BBB"], "name": ["Aland", "Bland"]}, geometry=[a, b], crs=4326)


@pytest.fixture(scope="module")
def constant_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("zonal") / "agb100.tif"
    write_geotiff(path, np.full(SHAPE, 100.0, dtype=np.float32), T_GEO, "EPSG:4326", nodata=-9999.0)
    return path


def test_constant_agb_equals_agb_times_geodesic_area(constant_tif):
    out = zonal_totals(constant_tif, _polys())
    for i, poly in enumerate(_polys().geometry):
        area_ha = geodesic_area_m2(poly, "EPSG:4326") / 1e4
        assert out["polygon_area_ha"].iloc[i] == pytest.approx(area_ha, rel=1e-12)
        assert out["agb_pg"].iloc[i] == pytest.approx(100.0 * area_ha / 1e9, rel=1e-4)
        assert out["agb_mean_mg_ha"].iloc[i] == pytest.approx(100.0, rel=1e-12)
        assert out["coverage_fraction"].iloc[i] == pytest.approx(1.0, abs=1e-4)
    assert list(out["iso3"]) == ["AAA", "BBB"] and list(out["name"]) == ["Aland", "Bland"]
    assert (out["warnings"] == "").all()
    # without a zone: IPCC default carbon fraction, above-ground only
    np.testing.assert_allclose(out["carbon_pg"], 0.47 * out["agb_pg"])
    assert (out["carbon_pools"] == "AGB").all()


def _oracle(agb, se, poly):
    """Brute force: shapely coverage of every pixel x closed-form row area."""
    area_row = row_areas_m2(T_GEO, SHAPE[0], "EPSG:4326") / 1e4
    tot = se_sum = var = var_c2 = mapped = 0.0
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            x0, y1 = T_GEO.c + c * RES, T_GEO.f - r * RES
            cov = shapely.box(x0, y1 - RES, x0 + RES, y1).intersection(poly).area / RES**2
            if cov <= 0 or not np.isfinite(agb[r, c]):
                continue
            a = area_row[r]
            tot += cov * a * agb[r, c]
            se_sum += cov * a * se[r, c]
            var += cov * a * a * se[r, c] ** 2
            var_c2 += (cov * a * se[r, c]) ** 2
            mapped += cov * a
    return tot / 1e9, se_sum / 1e9, np.sqrt(var) / 1e9, np.sqrt(var_c2) / 1e9, mapped


def test_sums_and_both_se_assumptions_match_a_per_pixel_oracle():
    rng = np.random.default_rng(11)
    agb = rng.gamma(2.0, 60.0, size=SHAPE).astype(np.float32)
    se = (0.2 * agb + rng.uniform(1, 5, size=SHAPE)).astype(np.float32)
    agb[50:60, 30:90] = np.nan                      # a nodata patch inside polygon AAA
    poly = _polys()
    out = zonal_totals((agb, T_GEO, "EPSG:4326"), poly, se_raster=(se, T_GEO, "EPSG:4326"))
    for i in range(2):
        tot, se_sum, se_ind, se_ind_c2, mapped = _oracle(agb.astype(float), se.astype(float), poly.geometry.iloc[i])
        row = out.iloc[i]
        assert row["agb_pg"] == pytest.approx(tot, rel=1e-9)
        assert row["agb_se_pg"] == pytest.approx(se_sum, rel=1e-9)
        # independent errors: partial pixels weighted by c (not c^2), an upper bound of the c^2 sum
        assert row["agb_se_independent_pg"] == pytest.approx(se_ind, rel=1e-9)
        assert se_ind_c2 <= row["agb_se_independent_pg"] <= 1.01 * se_ind_c2
        assert row["mapped_area_ha"] == pytest.approx(mapped, rel=1e-9)
        assert row["agb_mean_mg_ha"] == pytest.approx(tot * 1e9 / mapped, rel=1e-9)
    assert out["mapped_area_ha"].iloc[0] < out["raster_area_ha"].iloc[0]   # the nodata patch


def test_file_and_array_inputs_agree(constant_tif):
    a = zonal_totals(constant_tif, _polys())
    b = zonal_totals(RasterArray(np.full(SHAPE, 100.0), T_GEO, "EPSG:4326"), _polys())
    pd.testing.assert_frame_equal(a.drop(columns="zone"), b.drop(columns="zone"))


def test_carbon_with_a_zone_name_and_a_zone_raster():
    agb = np.full(SHAPE, 100.0)
    se = np.full(SHAPE, 10.0)
    poly = _polys()
    one = zonal_totals((agb, T_GEO, "EPSG:4326"), poly, se_raster=(se, T_GEO, "EPSG:4326"), zone="tropical moist forest")
    np.testing.assert_allclose(one["agc_pg"], 0.47 * one["agb_pg"])
    np.testing.assert_allclose(one["bgc_pg"], 0.47 * 0.20 * one["agb_pg"])
    np.testing.assert_allclose(one["carbon_pg"], 0.47 * 1.20 * one["agb_pg"])
    np.testing.assert_allclose(one["carbon_se_pg"], 0.47 * 1.20 * one["agb_se_pg"])
    assert (one["carbon_pools"] == "AGB+BGB").all()
    # GEZ code raster: west half tropical rain forest (R 0.37), east half boreal (R 0.24 > 75)
    codes = np.where(np.arange(SHAPE[1])[None, :] < 100, 11, 41) * np.ones(SHAPE, dtype=np.int16)
    west = gpd.GeoDataFrame({"iso3": ["WWW", "EEE"]}, geometry=[shapely.box(10.2, 43.5, 10.9, 44.5),
                                                                 shapely.box(11.2, 43.5, 11.9, 44.5)], crs=4326)
    two = zonal_totals((agb, T_GEO, "EPSG:4326"), west, zone=RasterArray(codes, T_GEO, "EPSG:4326"), name_col=None)
    np.testing.assert_allclose(two["carbon_pg"], two["agb_pg"] * 0.47 * np.array([1.37, 1.24]))
    # per-polygon zone names
    west["gez"] = ["tropical rain forest", "boreal coniferous forest"]
    three = zonal_totals((agb, T_GEO, "EPSG:4326"), west, zone_col="gez", name_col=None)
    np.testing.assert_allclose(three["carbon_pg"], two["carbon_pg"], rtol=1e-12)
    assert list(three["zone"]) == ["tropical rain forest", "boreal coniferous forest"]


def test_ease_grid_constant_agb():
    res = 1000.895023
    t = Affine(res, 0, 900_000.0, 0, -res, 5_300_000.0)          # around 9-12 E, 43-45 N
    grid = RasterArray(np.full((300, 400), 80.0, dtype=np.float32), t, "EPSG:6933", nodata=-9999.0)
    out = zonal_totals(grid, _polys())
    for i, poly in enumerate(_polys().geometry):
        assert out["coverage_fraction"].iloc[i] == pytest.approx(1.0, abs=1e-4)
        assert out["agb_pg"].iloc[i] == pytest.approx(80.0 * geodesic_area_m2(poly, 4326) / 1e4 / 1e9, rel=1e-4)


def test_latitude_band_total_on_a_global_grid():
    g = RasterArray(np.full((180, 360), 10.0), Affine(1, 0, -180, 0, -1, 90), "EPSG:4326")
    band = latitude_band_total(g)                    # GEDI band 51.6 S - 51.6 N
    expected_pg = 10.0 * band_area_m2(-51.6, 51.6, 360.0) / 1e4 / 1e9
    # 1-degree rows cut at +-51.6 deg: exactextract splits partial rows linearly in latitude,
    # which is exact to second order; 4e-5 relative here
    assert band["agb_pg"] == pytest.approx(expected_pg, rel=1e-4)
    assert band["region"] == "lat[-51.6,51.6]"
    aligned = latitude_band_total(g, -50.0, 50.0)
    assert aligned["agb_pg"] == pytest.approx(10.0 * band_area_m2(-50, 50, 360) / 1e13, rel=1e-9)


@pytest.fixture(scope="module")
def countries(countries_path):
    return load_countries(countries_path)


def test_natural_earth_codes(countries):
    assert len(countries) == 177
    assert countries["iso3"].str.match(r"^[A-Z]{3}$").all() and countries["iso3"].is_unique
    codes = dict(zip(countries["iso3"], countries["iso3_source"], strict=True))
    assert codes["FRA"] == "ISO_A3_EH" and codes["NOR"] == "ADM0_A3"
    assert "not ISO" in codes["SOL"] and codes["BRA"] == "ISO_A3"


def test_natural_earth_countries_pixel_area_equals_geodesic_area(countries):
    grid = RasterArray(np.ones((720, 1440), dtype=np.float32), Affine(0.25, 0, -180, 0, -0.25, 90), "EPSG:4326")
    out = zonal_totals(grid, countries)
    err = (out["raster_area_ha"] / out["polygon_area_ha"] - 1).abs()
    assert err.max() < 1e-3                     # the 0.1 %, for all 177 countries
    assert err.median() < 1e-5
    big = out[out["polygon_area_ha"] > 1e8]
    assert (err[big.index] < 5e-5).all()        # worst: Antarctica (3e-5), touching the pole
    usa = out.set_index("iso3").loc["USA"]
    assert usa["polygon_area_ha"] == pytest.approx(9.51e8, rel=0.01)   # NE 110m USA incl. Alaska


def test_selection_and_id_errors(constant_tif):
    sel = zonal_totals(constant_tif, _polys(), ids=["BBB"])
    assert list(sel["iso3"]) == ["BBB"]
    with pytest.raises(SawaValueError, match=r"unknown iso3 value\(s\) \['XYZ'\]"):
        zonal_totals(constant_tif, _polys(), ids=["AAA", "XYZ"])
    bad = _polys().assign(iso3=["AAA", "-99"])
    with pytest.raises(SawaValueError, match="not ISO 3166-1 alpha-3.*load_countries"):
        zonal_totals(constant_tif, bad)
    with pytest.raises(SawaValueError, match="no id column 'code'"):
        zonal_totals(constant_tif, _polys(), id_col="code")


def test_invalid_and_duplicated_polygons_are_fixed_and_recorded(constant_tif):
    bowtie = shapely.Polygon([(10.2, 43.2), (11.2, 44.2), (11.2, 43.2), (10.2, 44.2)])
    assert not bowtie.is_valid
    gdf = gpd.GeoDataFrame({"iso3": ["BOW", "DUP", "DUP"]},
                           geometry=[bowtie, shapely.box(10.1, 43.1, 10.3, 43.3), shapely.box(10.5, 43.1, 10.7, 43.3)], crs=4326)
    out = zonal_totals(constant_tif, gdf, name_col=None).set_index("iso3")
    assert "made valid" in out.loc["BOW", "warnings"]
    fixed_area = geodesic_area_m2(shapely.make_valid(bowtie), 4326) / 1e4
    assert out.loc["BOW", "agb_pg"] == pytest.approx(100 * fixed_area / 1e9, rel=1e-4)
    assert "2 polygons with this id dissolved" in out.loc["DUP", "warnings"]
    two = sum(geodesic_area_m2(g, 4326) for g in gdf.geometry[1:]) / 1e4
    assert out.loc["DUP", "agb_pg"] == pytest.approx(100 * two / 1e9, rel=1e-4)


def test_partial_and_no_overlap_are_reported(constant_tif):
    gdf = gpd.GeoDataFrame({"iso3": ["OUT", "HAL"]},
                           geometry=[shapely.box(50, 0, 51, 1), shapely.box(11.5, 44.0, 12.5, 44.5)], crs=4326)
    out = zonal_totals(constant_tif, gdf, name_col=None).set_index("iso3")
    assert out.loc["OUT", "agb_pg"] == 0 and "does not overlap" in out.loc["OUT", "warnings"]
    assert np.isnan(out.loc["OUT", "agb_mean_mg_ha"])
    assert out.loc["HAL", "coverage_fraction"] == pytest.approx(0.5, abs=0.01)
    assert "raster covers 50" in out.loc["HAL", "warnings"]


def test_bad_rasters_raise(constant_tif, tmp_path):
    with pytest.raises(RasterError, match="not on the grid"):
        zonal_totals(constant_tif, _polys(), se_raster=(np.ones((10, 10)), T_GEO, "EPSG:4326"))
    neg = np.full(SHAPE, 10.0)
    neg[100, 20] = -5
    with pytest.raises(RasterError, match=r"negative value -5 Mg/ha at pixel \(row 100, col 20\)"):
        zonal_totals((neg, T_GEO, "EPSG:4326"), _polys())
    with pytest.raises(RasterError, match="has no CRS"):
        zonal_totals((neg, T_GEO, None), _polys())
    with pytest.raises(OSError, match="does not exist"):
        zonal_totals(tmp_path / "nope.tif", _polys())
    with pytest.raises(SawaValueError, match="no root-to-shoot ratio for zone 'tropical desert'"):
        zonal_totals(constant_tif, _polys(), zone="tropical desert")
    with pytest.raises(SawaValueError, match="forest_type"):
        zonal_totals(constant_tif, _polys(), zone="temperate oceanic forest")
    zones = np.full(SHAPE, np.nan)
    with pytest.raises(RasterError, match="no ecological zone code at pixel"):
        zonal_totals((np.full(SHAPE, 10.0), T_GEO, "EPSG:4326"), _polys(), zone=(zones, T_GEO, "EPSG:4326"))
