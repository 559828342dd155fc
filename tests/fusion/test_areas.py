"""Pixel areas on the ellipsoid: closed form vs independent pyproj.Geod polygons, equal-area and
other projected grids, polygon areas from summed pixel areas with exact coverage, bad grids."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.windows import Window

from fusion.areas import (
    area_kind,
    band_area_m2,
    ellipsoid_area_m2,
    geodesic_area_m2,
    pixel_areas_m2,
    row_areas_m2,
)
from fusion.zonal import RasterArray, zonal_totals
from waveform.errors import RasterError, SawaValueError

WGS84 = Geod(ellps="WGS84")


def geod_pixel_area_m2(crs, transform: Affine, row: int, col: int, n: int = 512) -> float:
    """Independent reference: the pixel outline (each side cut into n pieces, straight in the
    grid's CRS) taken to lon/lat and measured by pyproj.Geod (Karney's algorithm)."""
    crs = CRS.from_user_input(crs)
    s = np.arange(n) / n
    cols = np.concatenate([col + s, np.full(n, col + 1.0), col + 1.0 - s, np.full(n, float(col))])
    rows = np.concatenate([np.full(n, float(row)), row + s, np.full(n, row + 1.0), row + 1.0 - s])
    x = transform.c + transform.a * cols + transform.b * rows
    y = transform.f + transform.d * cols + transform.e * rows
    if crs.is_geographic:
        lon, lat = x, y
    else:
        lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    area, _ = crs.get_geod().polygon_area_perimeter(lon, lat)
    return abs(area)


@pytest.mark.parametrize("size_deg", [1.0, 0.01, 1.0 / 3600.0])
@pytest.mark.parametrize("lat", [-75.0, -30.0, 0.0, 45.0, 80.0])
def test_geographic_rows_match_geod(size_deg, lat):
    t = Affine(size_deg, 0, 10.0, 0, -size_deg, lat + size_deg)
    ours = row_areas_m2(t, 1, "EPSG:4326")[0]
    ref = geod_pixel_area_m2("EPSG:4326", t, 0, 0)
    assert ours == pytest.approx(ref, rel=1e-8)


def test_global_grid_sums_to_the_ellipsoid_area():
    # WGS 84 surface area = 4 pi R_q^2, authalic radius R_q = 6 371 007.181 m (510 065 621.7 km^2)
    areas = pixel_areas_m2(Affine(1, 0, -180, 0, -1, 90), (180, 360), "EPSG:4326")
    assert areas.sum() == pytest.approx(4 * np.pi * 6371007.1809**2, rel=1e-10)
    assert ellipsoid_area_m2("EPSG:4326") == pytest.approx(510_065_621.7e6, rel=1e-9)
    # every pixel of a row has the same area; rows are symmetric about the equator
    assert np.all(areas == areas[:, :1])
    assert areas[0, 0] == pytest.approx(areas[-1, 0], rel=1e-12)


def test_band_area_closed_form_vs_geod_strips():
    band = shapely.box(-180.0, -51.6, 180.0, 51.6)
    assert geodesic_area_m2(band, "EPSG:4326") == pytest.approx(band_area_m2(-51.6, 51.6, 360.0), rel=1e-7)


def test_window_of_a_geographic_grid():
    t = Affine(0.5, 0, -10, 0, -0.5, 60)
    full = np.array(pixel_areas_m2(t, (40, 30), "EPSG:4326"))
    part = pixel_areas_m2(t, (40, 30), "EPSG:4326", window=Window(5, 12, 7, 9))
    np.testing.assert_array_equal(part, full[12:21, 5:12])


def test_equal_area_grid_has_constant_exact_areas():
    res = 1000.895023  # GEDI L4B / EASE-Grid 2.0 global 1 km
    t = Affine(res, 0, 2_000_000.0, 0, -res, 4_000_000.0)
    assert area_kind("EPSG:6933", t, (50, 50)) == "equal_area"
    areas = pixel_areas_m2(t, (50, 50), "EPSG:6933")
    assert np.all(areas == res * res)
    for r, c in ((0, 0), (25, 40), (49, 49)):
        assert geod_pixel_area_m2("EPSG:6933", t, r, c) == pytest.approx(res * res, rel=1e-7)


def test_mollweide_on_wgs84_is_not_equal_area_and_is_handled_per_pixel():
    t = Affine(10_000.0, 0, 500_000.0, 0, -10_000.0, 7_000_000.0)   # 10 km pixels, ~60-70 N
    assert area_kind("ESRI:54009", t, (20, 20)) == "projected"
    areas = pixel_areas_m2(t, (20, 20), "ESRI:54009")
    for r, c in ((0, 0), (10, 5), (19, 19)):
        assert areas[r, c] == pytest.approx(geod_pixel_area_m2("ESRI:54009", t, r, c), rel=1e-7)
    # a spherical projection on an ellipsoidal datum: planar areas are off by far more than 0.1 %
    assert abs(areas[10, 5] / 1e8 - 1) > 1e-3


# Karney's polygon area sums per-edge terms of global size, so for a 30 m pixel the reference
# itself is only good to ~1e-9 with 4 vertices and degrades with more: few vertices there.
@pytest.mark.parametrize(("pixel_m", "ref_vertices"), [(30.0, 1), (1000.0, 64)])
def test_utm_pixels_match_geod(pixel_m, ref_vertices):
    t = Affine(pixel_m, 0, 300_000.0, 0, -pixel_m, 5_500_000.0)
    areas = pixel_areas_m2(t, (12, 9), "EPSG:32633")
    for r, c in ((0, 0), (6, 4), (11, 8)):
        ref = geod_pixel_area_m2("EPSG:32633", t, r, c, n=ref_vertices)
        assert areas[r, c] == pytest.approx(ref, rel=1e-8)


POLY_LATS = [0.0, 40.0, 65.0]


def _irregular_polygon(lon0: float, lat0: float) -> shapely.Polygon:
    ang = np.linspace(0, 2 * np.pi, 23, endpoint=False)
    rad = 0.35 + 0.12 * np.sin(3 * ang)
    return shapely.Polygon(np.column_stack([lon0 + 1.3 * rad * np.cos(ang), lat0 + rad * np.sin(ang)]))


@pytest.mark.parametrize("lat0", POLY_LATS)
def test_polygon_area_from_pixel_areas_geographic(lat0):
    import geopandas as gpd

    poly = _irregular_polygon(20.0, lat0)
    res = 0.01
    t = Affine(res, 0, 18.5, 0, -res, lat0 + 1.0)
    grid = RasterArray(np.ones((200, 300), dtype=np.float32), t, "EPSG:4326")
    gdf = gpd.GeoDataFrame({"iso3": ["AAA"]}, geometry=[poly], crs=4326)
    out = zonal_totals(grid, gdf, name_col=None)
    geod_ha = abs(WGS84.geometry_area_perimeter(shapely.segmentize(poly, 0.01))[0]) / 1e4
    assert out["raster_area_ha"].iloc[0] == pytest.approx(geod_ha, rel=1e-3)   # the 0.1 %
    assert out["raster_area_ha"].iloc[0] == pytest.approx(geod_ha, rel=2e-5)   # what it achieves


@pytest.mark.parametrize("lat0", POLY_LATS)
def test_polygon_area_from_pixel_areas_ease_grid(lat0):
    import geopandas as gpd

    poly = _irregular_polygon(20.0, lat0)
    res = 1000.895023
    to6933 = Transformer.from_crs(4326, 6933, always_xy=True)
    x0, y1 = to6933.transform(18.5, min(lat0 + 1.0, 80))
    t = Affine(res, 0, x0, 0, -res, y1)
    grid = RasterArray(np.ones((260, 240), dtype=np.float32), t, "EPSG:6933")
    gdf = gpd.GeoDataFrame({"iso3": ["AAA"]}, geometry=[poly], crs=4326)
    out = zonal_totals(grid, gdf, name_col=None)
    geod_ha = abs(WGS84.geometry_area_perimeter(shapely.segmentize(poly, 0.01))[0]) / 1e4
    assert out["coverage_fraction"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    assert out["raster_area_ha"].iloc[0] == pytest.approx(geod_ha, rel=1e-3)


def test_bad_grids_raise():
    with pytest.raises(RasterError, match="rotated"):
        pixel_areas_m2(Affine(0.1, 0.01, 0, 0, -0.1, 10), (5, 5), "EPSG:4326")
    with pytest.raises(RasterError, match="beyond"):
        pixel_areas_m2(Affine(1, 0, 0, 0, -1, 95), (10, 10), "EPSG:4326")
    with pytest.raises(SawaValueError, match="outside the grid"):
        pixel_areas_m2(Affine(1, 0, 0, 0, -1, 50), (10, 10), "EPSG:4326", window=Window(8, 0, 5, 2))
    with pytest.raises(RasterError, match="CRS"):
        pixel_areas_m2(Affine(1, 0, 0, 0, -1, 50), (10, 10), None)
