"""Terrain under footprints: analytic planes and surfaces, the weighted plane fit against lstsq on the real
SRTM, relief, reasons for every shot without terrain, windowed reads only where shots are."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine

from terrain.dem import DEM, open_dem
from terrain.footprint import (
    PIXEL_SIGMA_FACTOR,
    SIGMA_PER_DIAMETER,
    WINDOW_SIGMAS,
    footprint_terrain,
)
from tests.reference.terrain_naive import radii_of_curvature, weighted_plane_fit
from waveform.errors import NoOverlapError, SawaValueError

TOL_DEG = 0.1


def _write(path, z, transform, crs, nodata=-9999.0):
    z = np.where(np.isnan(z), nodata, z)
    with rasterio.open(path, "w", driver="GTiff", height=z.shape[0], width=z.shape[1], count=1, dtype="float64",
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(z, 1)
    return path


def _utm_plane(tmp_path, slope_deg, aspect_deg, res=5.0, n=400):
    x = (np.arange(n) + 0.5) * res
    y = -(np.arange(n) + 0.5) * res
    g = math.tan(math.radians(slope_deg))
    a = math.radians(aspect_deg)
    z = 3000.0 - g * (x[None, :] * math.sin(a) + y[:, None] * math.cos(a))
    x0, y0 = 500000 - res * n / 2, 5_000_000.0
    return _write(tmp_path / f"utm_{slope_deg}_{aspect_deg}_{res}.tif", z, Affine(res, 0, x0, 0, -res, y0),
                  "EPSG:32633"), (x0, y0, res, n)


def _shots_in_utm(extent, k, rng, margin=60.0):
    from pyproj import Transformer

    x0, y0, res, n = extent
    x = rng.uniform(x0 + margin, x0 + res * n - margin, k)
    y = rng.uniform(y0 - res * n + margin, y0 - margin, k)
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


@pytest.mark.parametrize("method", ["plane", "horn"])
@pytest.mark.parametrize("res", [1.0, 30.0])
def test_projected_plane_slope_under_every_footprint(tmp_path, method, res):
    path, extent = _utm_plane(tmp_path, 35.0, 200.0, res=res, n=400 if res == 1.0 else 60)
    rng = np.random.default_rng(0)
    lon, lat = _shots_in_utm(extent, 40, rng, margin=3 * res + 40)
    with open_dem(path, scale_factor_correction=False) as dem:
        out = footprint_terrain(dem, lon, lat, method=method)
    assert (out["reason"] == "ok").all()
    assert np.abs(out["slope_deg"] - 35.0).max() < TOL_DEG / 100
    assert np.abs(out["aspect_deg"] - 200.0).max() < TOL_DEG / 100


@pytest.mark.parametrize("lat0", [0.0, 45.0, 70.0])
def test_geographic_plane_under_footprints(tmp_path, lat0):
    res, n = 1 / 3600, 200
    lons = 10 + (np.arange(n) + 0.5) * res
    lats = lat0 + n * res / 2 - (np.arange(n) + 0.5) * res
    m, nr = radii_of_curvature(lat0)
    # plane in local metres around (10 + n res / 2, lat0): small enough that the ellipsoid is locally flat
    east = nr * math.cos(math.radians(lat0)) * np.radians(lons - lons.mean())
    north = m * np.radians(lats - lat0)
    g = math.tan(math.radians(25.0))
    z = 1500.0 + g * (np.cos(math.radians(30)) * east[None, :] + np.sin(math.radians(30)) * north[:, None])
    path = _write(tmp_path / "geo.tif", z, Affine(res, 0, 10, 0, -res, lat0 + n * res / 2), "EPSG:4326")
    rng = np.random.default_rng(1)
    lon = lons.mean() + rng.uniform(-0.01, 0.01, 30)
    lat = lat0 + rng.uniform(-0.01, 0.01, 30)
    for method in ("plane", "horn"):
        out = footprint_terrain(path, lon, lat, method=method)
        assert (out["reason"] == "ok").all()
        assert np.abs(out["slope_deg"] - 25.0).max() < TOL_DEG / 5
        # gradient points 60 deg from north (uphill): downslope aspect 240
        assert np.abs(out["aspect_deg"] - 240.0).max() < TOL_DEG


def test_plane_fit_equals_weighted_lstsq_on_the_real_srtm(srtm_path):
    rng = np.random.default_rng(2)
    lon = rng.uniform(40.1, 40.7, 25)
    lat = rng.uniform(39.3, 39.9, 25)
    with open_dem(srtm_path) as dem:
        out = footprint_terrain(dem, lon, lat, footprint_diameter_m=25.0)
        assert (out["reason"] == "ok").all()
        z_all = dem.read(rasterio.windows.Window(0, 0, dem.width, dem.height))
    res = 1 / 1200
    for k in range(25):
        m, nr = radii_of_curvature(lat[k])
        px = nr * math.cos(math.radians(lat[k])) * math.radians(res)
        py = m * math.radians(res)
        s_w = math.sqrt((SIGMA_PER_DIAMETER * 25.0) ** 2 + (PIXEL_SIGMA_FACTOR * max(px, py)) ** 2)
        col = (lon[k] - 40.0) / res
        row = (40.0 - lat[k]) / res
        rr, cc = np.mgrid[0:1000, 0:1000]
        dx = (cc + 0.5 - col) * px
        dy = (row - rr - 0.5) * py
        r = np.hypot(dx, dy)
        use = (r <= WINDOW_SIGMAS * s_w) & np.isfinite(z_all)
        ge, gn = weighted_plane_fit(dx[use], dy[use], z_all[use], np.exp(-0.5 * (r[use] / s_w) ** 2))
        assert out["slope_deg"][k] == pytest.approx(math.degrees(math.atan(math.hypot(ge, gn))), abs=1e-7)
        assert out["n_pixels"][k] == use.sum()
        relief_r = max(12.5, 1.5 * max(px, py))
        ring = (r <= relief_r) & np.isfinite(z_all)
        assert out["relief_m"][k] == pytest.approx(z_all[ring].max() - z_all[ring].min())


def test_smooth_surface_on_a_fine_dem_gives_the_analytic_slope(tmp_path):
    # z = 80 sin(2 pi x / 900) + 50 cos(2 pi y / 700) on a 2 m grid: a 25 m footprint sees a near-plane
    res, n = 2.0, 600
    x = (np.arange(n) + 0.5) * res
    y = -(np.arange(n) + 0.5) * res
    z = 80 * np.sin(2 * np.pi * x / 900)[None, :] + 50 * np.cos(2 * np.pi * y / 700)[:, None] + 1000
    x0, y0 = 400000.0, 6_000_000.0
    path = _write(tmp_path / "waves.tif", z, Affine(res, 0, x0, 0, -res, y0), "EPSG:32633")
    rng = np.random.default_rng(4)
    xs = rng.uniform(100, 1100, 50)
    ys = -rng.uniform(100, 1100, 50)
    ge = 80 * 2 * np.pi / 900 * np.cos(2 * np.pi * xs / 900)
    gn = -50 * 2 * np.pi / 700 * np.sin(2 * np.pi * ys / 700) * -1  # d/dNorth with y = -(row) metres
    truth = np.degrees(np.arctan(np.hypot(ge, gn)))
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x0 + xs, y0 + ys)
    with open_dem(path, scale_factor_correction=False) as dem:
        out = footprint_terrain(dem, lon, lat)
    assert np.abs(out["slope_deg"] - truth).max() < 0.5  # curvature within the footprint: < 0.5 deg
    assert np.abs(out["slope_deg"] - truth).mean() < 0.2


def test_every_shot_keeps_its_row_with_a_reason(tmp_path):
    path, extent = _utm_plane(tmp_path, 10.0, 0.0, res=30.0, n=40)
    x0, y0, res, n = extent
    with rasterio.open(path, "r+") as ds:  # a void under one shot and an island pixel
        z = ds.read(1)
        z[20:23, 20:23] = -9999.0
        z[0:12, 30:40] = -9999.0
        z[5, 35] = 3000.0
        ds.write(z, 1)
    from pyproj import Transformer

    tr = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    pts = [(x0 + 21.5 * res, y0 - 21.5 * res),  # on the void
           (x0 + 35.5 * res, y0 - 5.5 * res),  # on the island
           (x0 + 10.5 * res, y0 - 30.5 * res),  # fine
           (x0 - 500, y0 + 500)]  # outside
    lon, lat = (np.array(v) for v in tr.transform([p[0] for p in pts], [p[1] for p in pts]))
    lon = np.append(lon, np.nan)
    lat = np.append(lat, 45.0)
    out = footprint_terrain(path, lon, lat)
    assert list(out["reason"]) == ["nodata", "too_few_pixels", "ok", "outside_dem", "no_coordinates"]
    # ground distances near UTM's central meridian are grid distances / 0.9996
    assert out.loc[2, "slope_deg"] == pytest.approx(math.degrees(math.atan(0.9996 * math.tan(math.radians(10)))),
                                                    abs=1e-5)
    assert out.loc[[0, 1, 3, 4], "slope_deg"].isna().all()
    assert out.attrs["vertical_datum"] == "unknown"
    with pytest.raises(NoOverlapError, match="does not overlap"):
        footprint_terrain(path, lon[3:4], lat[3:4])
    alone = footprint_terrain(path, lon[3:4], lat[3:4], require_overlap=False)
    assert alone["reason"].tolist() == ["outside_dem"]
    with pytest.raises(SawaValueError, match="outside -90..90"):
        footprint_terrain(path, np.array([45.0]), np.array([100.0]))
    with pytest.raises(SawaValueError, match="method"):
        footprint_terrain(path, lon, lat, method="zevenbergen")


def test_reads_only_blocks_that_hold_shots(srtm_path, monkeypatch):
    reads = []
    original = DEM.read

    def spy(self, window):
        reads.append((int(window.height), int(window.width)))
        return original(self, window)

    monkeypatch.setattr(DEM, "read", spy)
    lon = np.array([40.05, 40.06, 40.8])
    lat = np.array([39.95, 39.94, 39.2])
    out = footprint_terrain(srtm_path, lon, lat, block_px=128)
    assert (out["reason"] == "ok").all()
    assert len(reads) == 2  # two blocks with shots, out of 64
    assert max(h * w for h, w in reads) < 200 * 200  # block + halo, never the 1000 x 1000 DEM
