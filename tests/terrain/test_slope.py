"""Horn slope/aspect: analytic planes (projected and geographic at several latitudes), the real DEMs
against a pixel-by-pixel reference, blocked GeoTIFF output, nodata, edges, bad spacing, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.windows import Window
from scipy.integrate import quad

from terrain.dem import open_dem
from terrain.slope import horn_gradient, horn_slope_aspect, slope_aspect_window, write_slope_aspect
from tests.reference.terrain_naive import geographic_spacing, horn_naive, radii_of_curvature
from waveform.errors import SawaValueError

TOL_DEG = 0.1  # the requirement


def _write(path, z, transform, crs, nodata=-9999.0):
    with rasterio.open(path, "w", driver="GTiff", height=z.shape[0], width=z.shape[1], count=1, dtype="float64",
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(z, 1)
    return path


def _meridian_arc(lat0, lat):
    return quad(lambda p: radii_of_curvature(np.degrees(p))[0], math.radians(lat0), math.radians(lat))[0]


def geographic_plane(tmp_path, lat0, slope_deg, aspect_deg, n=240, res=1 / 3600):
    """A plane on the ellipsoid: z = z0 - tan(s) (E sin(a) + N cos(a)) with E = N(phi) cos(phi) dlon and N the
    meridian arc from lat0; returns the path and the analytic slope/aspect of every pixel."""
    lon0 = 10.0
    lons = lon0 + (np.arange(n) + 0.5) * res
    lats = lat0 + n * res / 2 - (np.arange(n) + 0.5) * res
    g = math.tan(math.radians(slope_deg))
    ge0, gn0 = -g * math.sin(math.radians(aspect_deg)), -g * math.cos(math.radians(aspect_deg))
    _, nrad = radii_of_curvature(lats)
    east = (nrad * np.cos(np.radians(lats)))[:, None] * np.radians(lons - lon0)[None, :]
    north = np.array([_meridian_arc(lat0, la) for la in lats])[:, None]
    z = 2000.0 + ge0 * east + gn0 * north
    # analytic gradient: d(N cos phi)/dphi = -M sin phi, so dE/dNorth = -dlon sin(phi)
    ge = np.full(z.shape, ge0)
    gn = gn0 + ge0 * (-np.radians(lons - lon0)[None, :] * np.sin(np.radians(lats))[:, None])
    slope = np.degrees(np.arctan(np.hypot(ge, gn)))
    aspect = np.degrees(np.arctan2(-ge, -gn)) % 360
    path = _write(tmp_path / f"plane_{lat0}_{slope_deg}_{aspect_deg}.tif", z,
                  Affine(res, 0, lon0, 0, -res, lat0 + n * res / 2), "EPSG:4326")
    return path, slope, aspect


@pytest.mark.parametrize("lat0", [0.0, 30.0, -45.0, 60.0, 75.0])
@pytest.mark.parametrize(("slope_deg", "aspect_deg"), [(5.0, 30.0), (30.0, 120.0), (50.0, 250.0)])
def test_geographic_plane_gives_its_slope_at_every_latitude(tmp_path, lat0, slope_deg, aspect_deg):
    path, s_true, a_true = geographic_plane(tmp_path, lat0, slope_deg, aspect_deg)
    slope, aspect = slope_aspect_window(path)
    assert np.isfinite(slope).all()  # edges extrapolated
    assert np.abs(slope - s_true).max() < TOL_DEG / 100
    assert np.abs((aspect - a_true + 180) % 360 - 180).max() < TOL_DEG / 10


def test_a_constant_degree_spacing_would_be_wrong_at_60n(tmp_path):
    # the geodesic spacing matters: with the equator's metres per degree the slope at 60 N is off by degrees
    path, s_true, _ = geographic_plane(tmp_path, 60.0, 30.0, 90.0, n=60)
    with rasterio.open(path) as src:
        z = src.read(1)
    naive_dx = 2 * 111320.0 / 3600
    wrong, _ = horn_slope_aspect(z, naive_dx, naive_dx, compute_edges=True)
    assert np.abs(wrong - s_true).max() > 10.0


def test_projected_plane_grid_and_ground_distances(tmp_path):
    res = 10.0
    n = 150
    x = (np.arange(n) + 0.5) * res
    y = -(np.arange(n) + 0.5) * res
    g = math.tan(math.radians(30.0))
    a = math.radians(120.0)
    z = 3000.0 - g * (x[None, :] * math.sin(a) + y[:, None] * math.cos(a))
    # UTM 33N, easting 500000 = central meridian: point scale factor k0 = 0.9996
    path = _write(tmp_path / "utm.tif", z, Affine(res, 0, 500000 - res * n / 2, 0, -res, 5_000_000), "EPSG:32633")
    with open_dem(path, scale_factor_correction=False) as dem:
        slope, aspect = slope_aspect_window(dem)
    assert np.abs(slope - 30.0).max() < 1e-9 and np.abs(aspect - 120.0).max() < 1e-9
    with open_dem(path) as dem:  # ground distance = grid distance / k, so tan(slope) = k tan(30)
        slope, _ = slope_aspect_window(dem)
    expected = math.degrees(math.atan(0.9996 * g))
    assert np.abs(slope - expected).max() < 2e-4


def test_numba_and_numpy_engines_agree():
    rng = np.random.default_rng(3)
    z = np.cumsum(rng.normal(0, 5, (80, 90)), axis=1)
    z[10:13, 20:22] = np.nan
    dew = np.linspace(40, 60, 80)
    dns = np.full(80, 61.0)
    for edges in (False, True):
        a = horn_gradient(z, dew, dns, compute_edges=edges, engine="numba")
        b = horn_gradient(z, dew, dns, compute_edges=edges, engine="numpy")
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
            np.testing.assert_allclose(u[np.isfinite(u)], v[np.isfinite(v)], rtol=1e-12, atol=1e-12)


def test_nodata_propagates_to_the_3x3_neighbourhood_and_edges_can_stay_empty():
    z = np.add.outer(np.arange(20.0), np.arange(30.0)) * 3.0
    z[8, 12] = np.nan
    slope, _ = horn_slope_aspect(z, 60.0, 60.0, compute_edges=False)
    assert np.isnan(slope[7:10, 11:14]).all() and np.isfinite(slope[7, 10])
    assert np.isnan(slope[0]).all() and np.isnan(slope[:, -1]).all()
    full, _ = horn_slope_aspect(np.add.outer(np.arange(20.0), np.arange(30.0)) * 3.0, 60.0, 60.0, compute_edges=True)
    expected = math.degrees(math.atan(math.hypot(3 / 30, 3 / 30)))
    assert np.abs(full - expected).max() < 1e-9  # edges extrapolated exactly on a plane


@pytest.mark.parametrize("which", ["srtm", "copernicus"])
def test_real_dem_matches_the_pixel_by_pixel_reference(request, which):
    path = request.getfixturevalue(f"{which}_path")
    with open_dem(path) as dem:
        win = Window(300, 200, 150, 120)
        slope, aspect = slope_aspect_window(dem, win)
        z = dem.read(Window(win.col_off - 1, win.row_off - 1, win.width + 2, win.height + 2))
        lat = dem.transform.f - dem.res[1] * (np.arange(win.row_off - 1, win.row_off + win.height + 1) + 0.5)
    dew, dns = geographic_spacing(lat, *dem.res)
    ref_s, ref_a = horn_naive(z, dew, dns)
    ref_s, ref_a = ref_s[1:-1, 1:-1], ref_a[1:-1, 1:-1]
    np.testing.assert_array_equal(np.isnan(slope), np.isnan(ref_s))
    assert np.nanmax(np.abs(slope - ref_s)) < 1e-4
    ok = np.isfinite(ref_a) & (ref_s > 0.5)
    assert np.abs((aspect[ok] - ref_a[ok] + 180) % 360 - 180).max() < 1e-3
    assert 5.0 < np.nanmean(slope) < 40.0  # mountains: real slopes, not ~90 or ~0


def test_blocked_geotiff_equals_whole_window_and_mosaic(tmp_path, srtm_path):
    out = tmp_path / "slope.tif"
    summary = write_slope_aspect(srtm_path, out, block_px=128)
    assert summary["blocks"] == 64 and summary["valid_pixels"] == 1_000_000
    whole_s, whole_a = slope_aspect_window(srtm_path)
    with rasterio.open(out) as src:
        assert src.count == 2 and src.descriptions == ("slope_deg", "aspect_deg")
        assert src.crs.to_epsg() == 4326 and src.profile["tiled"] and src.compression.name == "deflate"
        s, a = src.read(1), src.read(2)
        assert src.overviews(1) == []  # below MIN_OVERVIEW_SIDE_PX (1024): no overviews, as write_geotiff
    np.testing.assert_allclose(s, whole_s.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(whole_a))


def test_implausible_slopes_and_units_are_errors(tmp_path):
    rng = np.random.default_rng(1)
    z = rng.uniform(0, 100, (120, 120))  # 100 m jumps between 5 cm pixels: ~90 degree slopes
    path = _write(tmp_path / "cm_pixels.tif", z, Affine(0.05, 0, 500000, 0, -0.05, 5e6), "EPSG:32633")
    with pytest.raises(SawaValueError, match="implausible"):
        write_slope_aspect(path, tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()
    cm = _write(tmp_path / "heights_cm.tif", np.full((20, 20), 150000.0), Affine(30, 0, 5e5, 0, -30, 5e6), "EPSG:32633")
    with pytest.raises(SawaValueError, match="plausible range"):
        write_slope_aspect(cm, tmp_path / "out2.tif")


def test_cli_slope_on_tiles(tmp_path, srtm_path):
    from fusion.cli import main

    with rasterio.open(srtm_path) as src:
        z = src.read(1)
        for i, (c0, c1) in enumerate(((0, 500), (500, 1000))):
            with rasterio.open(tmp_path / f"srtm_{i}.tif", "w", driver="GTiff", height=1000, width=c1 - c0, count=1,
                               dtype="int16", crs=src.crs, nodata=src.nodata,
                               transform=src.window_transform(Window(c0, 0, c1 - c0, 1000))) as dst:
                dst.write(z[:, c0:c1], 1)
    result = CliRunner().invoke(main, ["slope", str(tmp_path / "srtm_0.tif"), str(tmp_path / "srtm_1.tif"),
                                       "-o", str(tmp_path / "s.tif"), "--block-px", "256"])
    assert result.exit_code == 0, result.output
    assert "EGM96" in result.output and "1000 x 1000" in result.output
    whole, _ = slope_aspect_window(srtm_path)
    with rasterio.open(tmp_path / "s.tif") as src:
        np.testing.assert_array_equal(src.read(1), whole.astype(np.float32))
    bad = CliRunner().invoke(main, ["slope", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "x.tif")])
    assert bad.exit_code != 0 and "not found" in bad.output
