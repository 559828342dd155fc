"""Nuth & Kääb co-registration: sign conventions on analytic surfaces, recovery of known sub-pixel
shifts on the real SRTM and Copernicus DEMs, the sample world's known misregistration, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from scipy import ndimage

from terrain.coregister import (
    apply_shift,
    coregister_files,
    coregister_grids,
    horn_slope_aspect,
    nuth_kaab,
    pixel_size_m,
)
from terrain.difference import (
    Grid,
    convert_vertical_datum,
    geoid_grid_available,
    read_raster,
    warp_to_grid,
)
from waveform.errors import DatumError, NoOverlapError, SawaValueError

TOL_PX = 0.1  # the requirement


# --- geometry and conventions ------------------------------------------------------------------
def test_pixel_size_at_equator_matches_ellipsoid_arcs():
    # 1 arc-second at the equator: along the equator a * pi/180/3600 = 30.9221 m; along the
    # meridian the radius of curvature M = a (1 - e2) = 6335439 m gives 30.7151 m.
    t = Affine(1 / 3600, 0, 10.0, 0, -1 / 3600, 1 / 7200)  # row 0 centred on the equator
    width, height = pixel_size_m(t, "EPSG:4326", 1)
    assert width[0] == pytest.approx(6378137.0 * math.pi / 180 / 3600, rel=1e-6)
    assert height[0] == pytest.approx(6335439.327 * math.pi / 180 / 3600, rel=1e-5)


def test_pixel_size_projected_uses_transform():
    width, height = pixel_size_m(Affine(30, 0, 500000, 0, -25, 0), "EPSG:32720", 4)
    assert width.tolist() == [30.0] * 4 and height.tolist() == [25.0] * 4


def test_horn_slope_and_aspect_of_planes():
    rows, cols = np.mgrid[0:20, 0:20].astype(float)
    # height falls 0.1 m per metre towards the west (rises east): slope atan(0.1), aspect 270 deg
    west = 0.1 * cols * 30.0
    slope, aspect = horn_slope_aspect(west, 30.0, 25.0)
    assert np.nanmax(np.abs(slope - math.atan(0.1))) < 1e-12
    assert np.nanmax(np.abs(np.degrees(aspect[1:-1, 1:-1]) - 270.0)) < 1e-9
    # height rises towards the south (row index grows southwards): descends north, aspect 0
    north = 0.2 * rows * 25.0
    slope, aspect = horn_slope_aspect(north, 30.0, 25.0)
    assert np.nanmax(np.abs(slope - math.atan(0.2))) < 1e-12
    assert np.nanmax(np.minimum(aspect[1:-1, 1:-1], 2 * np.pi - aspect[1:-1, 1:-1])) < 1e-9
    assert np.isnan(slope[0]).all() and np.isnan(slope[:, -1]).all()  # edges have no 3x3 window


def test_apply_shift_moves_content_east_and_north():
    dem = np.zeros((15, 15))
    dem[7, 7] = 10.0
    out = apply_shift(dem, 2, 3, dz_m=1.0)
    # east +2 columns, north +3 rows (row index decreases); dz added everywhere valid
    assert out[4, 9] == pytest.approx(11.0)
    assert np.nansum(out - 1.0) == pytest.approx(10.0)
    assert np.isnan(out[-3:, :]).all() and np.isnan(out[:, :2]).all()  # uncovered edge -> void


def test_apply_shift_keeps_voids_void():
    dem = np.arange(100, dtype=float).reshape(10, 10)
    dem[5, 5] = np.nan
    out = apply_shift(dem, 0.5, 0.0)
    assert np.isnan(out[5, 5]) and np.isnan(out[5, 6])  # stencil touches the void
    assert out[2, 3] == pytest.approx(dem[2, 2] * 0.5 + dem[2, 3] * 0.5)


def _waves(x, y):
    """Analytic terrain with slopes in all directions (m)."""
    return (60 * np.cos(2 * np.pi * x / 900 + 0.3) + 45 * np.sin(2 * np.pi * (0.6 * x + 0.8 * y) / 1300)
            + 50 * np.cos(2 * np.pi * y / 700 + 1.1) + 30 * np.sin(2 * np.pi * (0.8 * x - 0.6 * y) / 500))


def test_analytic_surface_exact_shift_recovered():
    # DEM(p) = REF(p - s) + b sampled exactly: the fit must return d = -s, dz = -b
    px = 30.0
    rows, cols = np.mgrid[0:300, 0:300].astype(float)
    east, north = cols * px, -rows * px
    s_e, s_n, bias = 41.0, -17.0, 4.2  # metres
    ref = _waves(east, north)
    dem = _waves(east - s_e, north - s_n) + bias
    r = nuth_kaab(ref, dem, px, px)
    assert r.converged
    assert r.dx_px == pytest.approx(-s_e / px, abs=0.01)
    assert r.dy_px == pytest.approx(-s_n / px, abs=0.01)
    assert r.dx_m == pytest.approx(-s_e, abs=0.3) and r.dy_m == pytest.approx(-s_n, abs=0.3)
    assert r.dz_m == pytest.approx(-bias, abs=0.05)
    assert r.nmad_after_m < 0.05 * r.nmad_before_m


def test_plane_vertical_model_recovers_tilt():
    px = 30.0
    rows, cols = np.mgrid[0:200, 0:200].astype(float)
    ref = _waves(cols * px, -rows * px)
    tilt = 3.0 + 0.01 * (cols - 99.5) + 0.02 * (rows - 99.5)  # m; rises east and south
    r = nuth_kaab(ref, ref - tilt, px, px, vertical="plane")
    assert r.dz_m == pytest.approx(3.0, abs=0.02)
    assert r.plane_m_per_px[0] == pytest.approx(0.01, abs=1e-3)
    assert r.plane_m_per_px[1] == pytest.approx(-0.02, abs=1e-3)  # per pixel northwards
    assert np.nanmax(np.abs(r.apply(ref - tilt) - ref)) < 0.2


# --- real relief -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def srtm_dem(srtm_path):
    dem, grid = read_raster(srtm_path)
    return dem, grid


def _shifted(ref, s_east_px, s_north_px, bias, blur_px, noise_m, seed):
    """REF content displaced by s (east/north px) + bias, blurred and noisy, borders voided."""
    dem = ndimage.shift(ref, (-s_north_px, s_east_px), order=3, mode="nearest") + bias
    if blur_px:
        dem = ndimage.gaussian_filter(dem, blur_px)
    dem = dem + np.random.default_rng(seed).normal(0.0, noise_m, dem.shape)
    dem[:6], dem[-6:], dem[:, :6], dem[:, -6:] = np.nan, np.nan, np.nan, np.nan
    return dem


@pytest.mark.parametrize(("s_east", "s_north", "bias", "blur", "noise", "crop"), [
    (0.30, -0.20, 5.0, 0.0, 0.5, 1000),
    (-1.37, 0.62, -3.0, 0.8, 1.0, 500),
    (2.45, -1.80, 12.0, 0.8, 2.0, 500),
])
def test_real_srtm_known_subpixel_shift(srtm_dem, s_east, s_north, bias, blur, noise, crop):
    ref_full, grid = srtm_dem
    ref = ref_full[:crop, :crop]
    dem = _shifted(ref, s_east, s_north, bias, blur, noise, seed=1)
    width, height = pixel_size_m(grid.transform, grid.crs, crop)
    r = nuth_kaab(ref, dem, width, height)
    assert r.converged
    assert abs(r.dx_px + s_east) < TOL_PX and abs(r.dy_px + s_north) < TOL_PX
    assert abs(r.dx_px + s_east) < 0.02 and abs(r.dy_px + s_north) < 0.02  # measured: < 0.01
    assert r.dz_m == pytest.approx(-bias, abs=0.5)


@pytest.mark.parametrize(("s_east", "s_north"), [(0.45, 0.35), (-1.6, -0.9)])
def test_real_copernicus_known_subpixel_shift(copernicus_path, s_east, s_north):
    ref, grid = read_raster(copernicus_path)
    dem = _shifted(ref, s_east, s_north, -2.0, 0.6, 1.0, seed=2)
    r = coregister_grids(ref, dem, grid)
    assert abs(r.dx_px + s_east) < TOL_PX and abs(r.dy_px + s_north) < TOL_PX
    # metres use geodesic pixel sizes at ~45.5 N (0.002 deg: ~156 m wide, ~222 m tall)
    assert r.pixel_width_m == pytest.approx(156.2, abs=1.0) and r.pixel_height_m == pytest.approx(222.3, abs=1.0)


def test_cli_on_real_srtm_file_with_shifted_geotransform(srtm_path, tmp_path):
    """The DEM file is the real SRTM with its geotransform moved 0.4 px east, 0.25 px north and
    heights +7.5 m: it must be warped to REF's grid, then the shift (-0.4, -0.25) px recovered."""
    from fusion.cli import main

    with rasterio.open(srtm_path) as src:
        data = src.read(1).astype("float32")
        profile = src.profile
        t = src.transform
    profile.update(dtype="float32", nodata=-32768.0,
                   transform=Affine(t.a, 0, t.c + 0.4 * t.a, 0, t.e, t.f + 0.25 * abs(t.e)))
    dem_path = tmp_path / "moved.tif"
    with rasterio.open(dem_path, "w", **profile) as dst:
        dst.write(ndimage.gaussian_filter(data, 0.6) + 7.5, 1)
    out = tmp_path / "aligned.tif"
    res = CliRunner().invoke(main, ["coregister", str(srtm_path), str(dem_path), "--json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    shift = json.loads(res.output)
    assert set(shift) == {"dx_px", "dy_px", "dx_m", "dy_m", "dz_m"}
    assert abs(shift["dx_px"] + 0.4) < TOL_PX and abs(shift["dy_px"] + 0.25) < TOL_PX
    width, height = pixel_size_m(t, "EPSG:4326", 1000)
    assert shift["dx_m"] == pytest.approx(shift["dx_px"] * np.mean(width), rel=0.01)
    assert shift["dy_m"] == pytest.approx(shift["dy_px"] * np.mean(height), rel=0.01)
    assert shift["dz_m"] == pytest.approx(-7.5, abs=0.3)
    aligned, agrid = read_raster(out)
    ref, grid = read_raster(srtm_path)
    assert agrid.transform == grid.transform and agrid.shape == grid.shape
    diff = (aligned - ref)[20:-20, 20:-20]
    assert abs(np.nanmedian(diff)) < 0.3
    # human-readable form names pixels and metres
    text = CliRunner().invoke(main, ["coregister", str(srtm_path), str(dem_path)])
    assert text.exit_code == 0 and "x (east)" in text.output and " m" in text.output


# --- the sample world's SRTM/TanDEM-X pair --------------------------------------------------------
@pytest.fixture(scope="session")
def emissions_world(tmp_path_factory):
    from data_samples.emissions_world import load_emissions_world

    return load_emissions_world(cache_dir=tmp_path_factory.mktemp("sawa_samples"))


def test_sample_world_misregistration_recovered(emissions_world):
    truth = emissions_world.truth["expected_coregistration"]
    tdx, grid = read_raster(emissions_world.tandemx_path)
    srtm = warp_to_grid(emissions_world.srtm_path, grid)
    height, _ = read_raster(emissions_world.forest_height_path)
    stable = ~ndimage.binary_dilation(height >= 5.0, iterations=3)
    r = coregister_grids(tdx, srtm, grid, stable=stable)
    assert abs(r.dx_px - truth["dx_px"]) < TOL_PX and abs(r.dy_px - truth["dy_px"]) < TOL_PX
    assert abs(r.dx_px - truth["dx_px"]) < 0.02 and abs(r.dy_px - truth["dy_px"]) < 0.02  # measured 0.006
    assert r.dz_m == pytest.approx(truth["dz_m"], abs=0.3)  # geoid undulation + SRTM bias


# --- bad input ---------------------------------------------------------------------------------
def test_non_overlapping_real_dems_raise(srtm_path, copernicus_path):
    with pytest.raises(NoOverlapError, match="does not overlap"):
        coregister_files(srtm_path, copernicus_path)


def test_strict_mismatched_datums_raise_without_geoid_grid(srtm_path):
    if geoid_grid_available("egm96", "wgs84"):
        pytest.skip("the EGM96 geoid grid is installed: the conversion is done, not refused")
    dem, grid = read_raster(srtm_path)
    with pytest.raises(DatumError, match="egm96.*wgs84|us_nga_egm96"):
        convert_vertical_datum(dem, grid, "egm96", "wgs84", strict=True, name="SRTM")
    same, handling = convert_vertical_datum(dem, grid, "egm96", "wgs84", strict=False, name="SRTM")
    assert same is dem and handling.method == "absorbed_in_vertical_bias"
    with pytest.raises(DatumError, match="unknown vertical datum"):
        convert_vertical_datum(dem, grid, "navd88", "wgs84")


def test_flat_terrain_has_no_horizontal_shift():
    flat = np.full((100, 100), 150.0) + np.random.default_rng(0).normal(0, 0.1, (100, 100))
    with pytest.raises(SawaValueError, match="horizontal shift is not defined"):
        nuth_kaab(flat, flat + 1.0, 30.0, 30.0)
    # vertical-only still works there
    r = nuth_kaab(flat, flat + 1.0, 30.0, 30.0, horizontal=False)
    assert r.dx_px == 0 and r.dz_m == pytest.approx(-1.0, abs=0.01)


def test_shape_mismatch_and_void_dem_raise():
    ref = np.zeros((50, 50))
    with pytest.raises(SawaValueError, match="shape"):
        nuth_kaab(ref, np.zeros((40, 50)), 30.0, 30.0)
    with pytest.raises(SawaValueError, match="stable pixels"):
        nuth_kaab(ref, np.full((50, 50), np.nan), 30.0, 30.0)


def test_srtm_voids_do_not_bias_the_shift(srtm_dem):
    ref_full, grid = srtm_dem
    ref = ref_full[:500, :500]
    dem = _shifted(ref, 0.7, -0.4, 0.0, 0.0, 0.5, seed=3)
    rows, cols = np.mgrid[0:500, 0:500]
    for r0, c0, rad in [(100, 100, 40), (300, 350, 60)]:  # radar-shadow-like voids
        dem[np.hypot(rows - r0, cols - c0) < rad] = np.nan
    width, height = pixel_size_m(grid.transform, grid.crs, 500)
    r = nuth_kaab(ref, dem, width, height)
    assert abs(r.dx_px + 0.7) < TOL_PX and abs(r.dy_px - 0.4) < TOL_PX
    assert np.isnan(r.apply(dem)[100, 100])  # voids stay voids


def test_grid_bounds():
    g = Grid(Affine(0.5, 0, 10, 0, -0.5, 5), "EPSG:4326", 4, 6)
    assert g.bounds == (10.0, 3.0, 13.0, 5.0) and g.shape == (4, 6)
