"""DEM input: single files, tile mosaics (same and mixed CRS), SRTM .hgt, nodata, vertical datums, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from terrain.constants import EGM96, EGM2008, ELLIPSOID, UNKNOWN_DATUM
from terrain.dem import (
    check_elevations,
    compare_with_gedi,
    dem_paths,
    detect_vertical_datum,
    geoid_transformer,
    open_dem,
    overlap_check,
)
from waveform.errors import DatumError, NoOverlapError, RasterError, SawaFileError, SawaValueError


def _write(path, z, transform, crs="EPSG:4326", nodata=-9999.0, tags=None, units=None, dtype="float32"):
    profile = dict(driver="GTiff", height=z.shape[0], width=z.shape[1], count=1, dtype=dtype, transform=transform,
                   nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z.astype(dtype), 1)
        if tags:
            dst.update_tags(**tags)
        if units:
            dst.units = (units,)
    return path


@pytest.fixture(scope="module")
def srtm_tiles(tmp_path_factory, srtm_path):
    """The real SRTM reference split into 4 tiles of unequal size."""
    out = tmp_path_factory.mktemp("tiles")
    paths = []
    with rasterio.open(srtm_path) as src:
        z = src.read(1)
        for r0, r1 in ((0, 430), (430, 1000)):
            for c0, c1 in ((0, 610), (610, 1000)):
                win = Window(c0, r0, c1 - c0, r1 - r0)
                p = out / f"part_{r0}_{c0}.tif"
                _write(p, z[r0:r1, c0:c1], src.window_transform(win), nodata=src.nodata, dtype="int16")
                paths.append(p)
    return paths


def test_single_file_reads_windows_with_nodata_and_padding(srtm_path):
    with open_dem(srtm_path) as dem:
        assert (dem.width, dem.height) == (1000, 1000)
        assert dem.vertical_datum == EGM96 and "srtm" in dem.datum_source
        with rasterio.open(srtm_path) as src:
            raw = src.read(1).astype(np.float64)
        w = dem.read(Window(-2, -3, 6, 7))
        assert np.all(np.isnan(w[:3])) and np.all(np.isnan(w[:, :2]))
        np.testing.assert_array_equal(w[3:, 2:], raw[:4, :4])
        corner = dem.read(Window(998, 998, 5, 5))
        np.testing.assert_array_equal(corner[:2, :2], raw[998:, 998:])
        assert np.isnan(corner[2:, :]).all()


def test_mosaic_of_tiles_equals_the_single_file(srtm_path, srtm_tiles):
    with open_dem(srtm_path) as one, open_dem(srtm_tiles, vertical_datum=EGM96) as mosaic:
        assert (mosaic.width, mosaic.height) == (one.width, one.height)
        assert mosaic.transform.almost_equals(one.transform)
        for win in (Window(0, 0, 1000, 1000), Window(600, 420, 30, 25)):
            a, b = one.read(win), mosaic.read(win)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(a[np.isfinite(a)], b[np.isfinite(b)])


def test_mosaic_honours_per_tile_nodata_and_gaps(tmp_path):
    t = Affine(0.001, 0, 10.0, 0, -0.001, 1.0)
    a = np.full((10, 10), 100.0)
    a[2, 3] = -1.0  # nodata of tile a
    b = np.full((10, 10), 200.0)
    _write(tmp_path / "a.tif", a, t, nodata=-1.0)
    _write(tmp_path / "b.tif", b, t @ Affine.translation(20, 0), nodata=-9999.0)  # gap of 10 columns
    with open_dem([tmp_path / "a.tif", tmp_path / "b.tif"], vertical_datum=ELLIPSOID) as dem:
        assert dem.width == 30
        z = dem.read(Window(0, 0, 30, 10))
        assert np.isnan(z[2, 3]) and z[0, 0] == 100.0
        assert np.isnan(z[:, 10:20]).all()
        assert (z[:, 20:] == 200.0).all()


def test_mixed_crs_tiles_are_warped_into_the_first_crs(tmp_path):
    # tile 1 in EPSG:4326, tile 2 a plane in UTM 33N beside it: read through merge/WarpedVRT
    t = Affine(0.0005, 0, 15.0, 0, -0.0005, 45.0)
    _write(tmp_path / "geo.tif", np.full((40, 40), 300.0), t)
    from pyproj import Transformer

    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(15.02, 45.0)
    _write(tmp_path / "utm.tif", np.full((60, 60), 500.0), Affine(30, 0, x0, 0, -30, y0), crs="EPSG:32633")
    with open_dem([tmp_path / "geo.tif", tmp_path / "utm.tif"], vertical_datum=ELLIPSOID) as dem:
        assert dem.crs.to_epsg() == 4326
        z = dem.read(Window(0, 0, dem.width, 40))
        assert np.nanmin(z[:, :38]) == 300.0
        assert np.nanmax(z) == pytest.approx(500.0) and np.isfinite(z[:, 45]).any()


def test_srtm_hgt_file_is_egm96_and_georeferenced_by_gdal(tmp_path):
    n = 1201  # SRTM3 tile: 1201 x 1201 big-endian int16, nodata -32768
    z = (np.arange(n, dtype=np.int16)[None, :] % 1000 + 100).repeat(n, axis=0)
    z[5, 5] = -32768
    path = tmp_path / "N39E040.hgt"
    z.astype(">i2").tofile(path)
    with open_dem(path) as dem:
        assert dem.crs.to_epsg() == 4326
        assert dem.vertical_datum == EGM96
        west, south, east, north = dem.bounds  # pixel-is-point tile N39E040: centres on whole 3" steps
        assert west == pytest.approx(40 - 0.5 / 1200) and north == pytest.approx(40 + 0.5 / 1200)
        assert east == pytest.approx(41 + 0.5 / 1200) and south == pytest.approx(39 - 0.5 / 1200)
        w = dem.read(Window(0, 0, 8, 8))
        assert np.isnan(w[5, 5]) and w[0, 3] == 103


@pytest.mark.parametrize(
    ("name", "crs", "tags", "expected"),
    [
        ("srtm_tile.tif", "EPSG:4326", {}, EGM96),
        ("Copernicus_DSM_10_N45.tif", "EPSG:4326", {}, EGM2008),
        ("dem.tif", "EPSG:4326", {"DTED_VerticalDatum": "E08"}, EGM2008),
        ("TDM1_DEM__30_N45E005_DEM.tif", "EPSG:4326", {}, ELLIPSOID),
        ("dem.tif", "EPSG:4326", {"VERTICAL_DATUM": "WGS84 ellipsoidal height (not geoid)"}, ELLIPSOID),
        ("dem.tif", "EPSG:4326+5773", {}, EGM96),
        ("dem.tif", "EPSG:4326+3855", {}, EGM2008),
        ("dem.tif", "EPSG:4979", {}, ELLIPSOID),
        ("dem.tif", "EPSG:4326", {}, UNKNOWN_DATUM),
    ],
)
def test_vertical_datum_detection(name, crs, tags, expected):
    datum, why = detect_vertical_datum(name, rasterio.crs.CRS.from_user_input(crs), tags)
    assert datum == expected and why


def test_real_copernicus_tile_is_egm2008_from_its_dted_tag(copernicus_path):
    with open_dem(copernicus_path) as dem:
        assert dem.vertical_datum == EGM2008
        assert "DTED_VerticalDatum" in dem.datum_source


def test_tiles_mixing_datums_are_refused(tmp_path):
    t = Affine(0.001, 0, 10.0, 0, -0.001, 1.0)
    _write(tmp_path / "srtm_a.tif", np.ones((5, 5)), t)
    _write(tmp_path / "tandemx_b.tif", np.ones((5, 5)), t @ Affine.translation(5, 0))
    with pytest.raises(DatumError, match="mix vertical datums"):
        open_dem([tmp_path / "srtm_a.tif", tmp_path / "tandemx_b.tif"])


def test_geoid_heights_are_not_converted_silently(srtm_path):
    lon, lat, h = np.array([40.5]), np.array([39.5]), np.array([1500.0])
    with open_dem(srtm_path) as dem:
        out, reason = dem.to_ellipsoidal(lon, lat, h)
        if geoid_transformer(EGM96) is None:  # no PROJ geoid grid offline: a reason, never H returned as h
            assert np.isnan(out[0]) and reason[0] == "geoid_grid_unavailable"
            with pytest.raises(DatumError, match="geoid grid is not installed"):
                dem.to_ellipsoidal(lon, lat, h, strict=True)
        else:  # EGM96 undulation in eastern Anatolia is ~ +20..+30 m
            assert reason[0] == "ok" and 10 < out[0] - 1500.0 < 40
    with open_dem(srtm_path, vertical_datum=ELLIPSOID) as dem:
        out, reason = dem.to_ellipsoidal(lon, lat, h)
        assert out[0] == 1500.0 and reason[0] == "ok"


def test_compare_with_gedi_flags_a_geoid_offset():
    rng = np.random.default_rng(0)
    gedi = rng.uniform(100, 900, 200)
    ok = compare_with_gedi(gedi + rng.normal(0, 1.5, 200), gedi, ELLIPSOID)
    assert ok.verdict == "consistent" and abs(ok.median_offset_m) < 0.5
    shifted = compare_with_gedi(gedi - 28.0 + rng.normal(0, 1.5, 200), gedi, ELLIPSOID)
    assert shifted.verdict == "offset_suggests_geoid" and abs(shifted.median_offset_m + 28.0) < 0.5
    assert compare_with_gedi(gedi[:3], gedi[:3], ELLIPSOID).verdict == "too_few_shots"


def test_elevation_units(tmp_path):
    t = Affine(10, 0, 500000, 0, -10, 5000000)
    p = _write(tmp_path / "feet.tif", np.full((20, 20), 1000.0), t, crs="EPSG:32633", units="ft")
    with open_dem(p) as dem:
        assert dem.z_to_m == pytest.approx(0.3048)
        assert dem.read(Window(0, 0, 2, 2))[0, 0] == pytest.approx(304.8)
    with open_dem(p, z_units="m") as dem:
        assert dem.read(Window(0, 0, 1, 1))[0, 0] == 1000.0
    p2 = _write(tmp_path / "furlong.tif", np.ones((4, 4)), t, crs="EPSG:32633", units="furlong")
    with pytest.raises(RasterError, match="furlong"):
        open_dem(p2)
    with pytest.raises(SawaValueError, match="plausible range"):
        check_elevations(np.array([120000.0, 150000.0]), "DEM in cm")


def test_bad_input(tmp_path):
    with pytest.raises(SawaFileError, match="does not exist"):
        open_dem(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a raster")
    with pytest.raises(SawaFileError, match="cannot be read"):
        open_dem(tmp_path / "junk.tif")
    nocrs = _write(tmp_path / "nocrs.tif", np.ones((4, 4)), Affine(1, 0, 0, 0, -1, 4), crs=None)
    with pytest.raises(RasterError, match="has no CRS"):
        open_dem(nocrs)
    # degree-sized pixels in a metre CRS: every slope would be ~90 degrees
    deg_in_m = _write(tmp_path / "deg.tif", np.ones((4, 4)), Affine(0.00083, 0, 40, 0, -0.00083, 40), crs="EPSG:32637")
    with pytest.raises(SawaValueError, match="degree coordinates in a metre CRS"):
        open_dem(deg_in_m)
    with pytest.raises(SawaValueError, match="vertical_datum"):
        open_dem(nocrs, vertical_datum="NAVD88")


def test_no_overlap_is_a_clear_error(srtm_path):
    with open_dem(srtm_path) as dem:
        overlap_check(dem, np.array([40.2]), np.array([39.6]))
        with pytest.raises(NoOverlapError, match="does not overlap any of the 2 shots"):
            overlap_check(dem, np.array([-44.1, -44.12]), np.array([-13.7, -13.73]))


def test_dem_paths_expands_list_files(tmp_path):
    listing = tmp_path / "tiles.txt"
    listing.write_text("a.tif\n# comment\n/abs/b.tif\n\n")
    assert dem_paths([f"@{listing}", "c.tif"]) == [tmp_path / "a.tif", Path("/abs/b.tif"), Path("c.tif")]


def test_a_vrt_file_on_disk_opens_like_any_dem(tmp_path, srtm_path, srtm_tiles):
    # a hand-written GDAL VRT of the four tiles (SimpleSource, as gdalbuildvrt writes)
    with rasterio.open(srtm_path) as src:
        t, crs = src.transform, src.crs.to_wkt()
    sources = []
    for p in srtm_tiles:
        with rasterio.open(p) as tile:
            c0 = round((tile.transform.c - t.c) / t.a)
            r0 = round((tile.transform.f - t.f) / t.e)
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{p}</SourceFilename><SourceBand>1</SourceBand>'
                f'<SrcRect xOff="0" yOff="0" xSize="{tile.width}" ySize="{tile.height}"/>'
                f'<DstRect xOff="{c0}" yOff="{r0}" xSize="{tile.width}" ySize="{tile.height}"/></SimpleSource>')
    xml = (f'<VRTDataset rasterXSize="1000" rasterYSize="1000"><SRS>{crs}</SRS>'
           f"<GeoTransform>{t.c!r}, {t.a!r}, 0, {t.f!r}, 0, {t.e!r}</GeoTransform>"
           '<VRTRasterBand dataType="Int16" band="1"><NoDataValue>-32768</NoDataValue>'
           + "".join(sources) + "</VRTRasterBand></VRTDataset>")
    vrt = tmp_path / "srtm_mosaic.vrt"
    vrt.write_text(xml)
    with open_dem(vrt) as dem, open_dem(srtm_path) as one:
        assert dem.vertical_datum == EGM96  # 'srtm' in the name
        a, b = dem.read(Window(0, 0, 1000, 1000)), one.read(Window(0, 0, 1000, 1000))
        np.testing.assert_array_equal(a, b)
