"""The embedded sample world: a small synthetic region where every quantity is known.

Run ``python -m data_samples.generate [DIR]`` (or ``sawa sample -o DIR``) to write it;
``load_sample_world()`` generates it once into a cache folder and returns the paths.
Everything comes from one seed (:data:`SEED`) and this one script; equal versions
give byte-identical files, which are checked against the committed
``sample_world_checksums.json``.

The world (lon 10.0-10.3 E, lat 1.0-0.8 S, EPSG:4326; heights are WGS84
*ellipsoidal* metres)
-----------------------------------------------------------------------------------
* **Terrain** (``dem.tif``, 1 arc-second = 1/3600 deg, 1080 x 720 px, float32, 1 cm
  steps): an analytic surface ``z(x, y)`` = 400 m + three families of random plane
  waves: a flat plain in the west (RMS gradient 0.012; DEM slopes median 0.6, 95 % < 5.2 deg),
  rolling hills from lon ~10.09 (RMS gradient 0.15; median 7.7, 5-95 % 2-22 deg) and a
  steep mountain range (+1000 m uplift, RMS gradient 0.62; median 26, 5-95 % 8-45, max
  ~58 deg) from lon ~10.20; elevations 234-2232 m.
  ``x``/``y`` are metres east/north of (10.0 E, 1.0 S) with constant WGS84 metres
  per degree at 0.9 S; true slopes/aspects at shots come from the analytic gradient
  rescaled by the exact metres per degree at the shot's latitude.
* **Forest** (``canopy_height.tif`` m, ``canopy_cover.tif`` fraction, ``agb.tif``
  Mg/ha, same grid): a forest mask (~40 % of the plain, ~90 % of the hills, ~95 %
  of the mountains), canopy height 5-50 m (mean ~20 m on the plain, ~33 m in the hills,
  decreasing with elevation in the mountains), cover ``0.95 (1 - exp(-H / 12 m))``
  plus noise, and AGB from the stated allometry (:data:`ALLOMETRY`):
  ``AGB [Mg/ha] = 2.0 * H[m]^1.5 * cover``. Non-forest pixels have H = cover = AGB = 0.
* **Optical products** (``optical/``), correlated with AGB as optical products are:
  ``tree_cover_pct.tif`` (3 arc-seconds, uint8 %: mean cover x 100 + N(0, 4 %)),
  ``ndvi.tif`` (0.001 deg, float32: ``0.25 + 0.6 (1 - exp(-AGB / 110))`` + N(0, 0.02),
  saturating), and ``carbon_agb_utm.tif`` (UTM 32S, EPSG:32732, 100 m, float32 Mg/ha:
  a "carbon product" ``AGB / (1 + AGB / 800)`` x lognormal(0, 0.15) noise, i.e.
  saturating above ~300 Mg/ha; nodata -9999 outside the world).
* **Countries** (``countries.gpkg``, layer ``countries``): Planaria (XPL, the plain),
  Collina (XCL, the hills), Montania (XMT, the mountains), tiling the extent; borders
  meander along *pixel edges* of the 1" grid, so each pixel lies in exactly one
  country. ``true_agb_mg`` = sum over its pixels of AGB x pixel area, the area of
  the lat/lon cell on the WGS84 ellipsoid (``pyproj.Geod.polygon_area_perimeter``),
  ``true_agb_pg`` = that x 1e-9, ``true_area_ha``, ``n_pixels``.
* **GEDI granules** (``granules/*.h5``, :func:`waveform.l1b_writer.write_l1b`
  layout): two passes (orbit 90001 ascending, heading 38.4 deg; orbit 90002
  descending, heading 141.6 deg: the ISS ground-track headings at 51.6 deg
  inclination near the equator), 8 beams 600 m apart cross-track, shots every 60 m
  along track [Dubayah2020]; each shot simulated by
  :func:`waveform.simulate.simulate_waveforms` from the truth at its position
  (ground plane = the tangent plane of the analytic terrain at the footprint centre;
  canopy height and cover = those of the pixel containing it), full-power beams
  with 15,000 integrated counts for bare ground, coverage beams 0.45 of that,
  +-5 % shot-to-shot laser energy, per-beam digitiser offset and noise like the
  reference granule's beams.
* **Truth** (``truth.parquet``): one row per shot, see :data:`TRUTH_COLUMNS`.

Reproducibility: all randomness is from ``numpy.random.default_rng(SEED)`` streams;
fields are rounded (DEM/heights 1 cm, cover 1e-4, AGB 0.01 Mg/ha, waveforms 1/64
count) so that last-bit differences of maths libraries across machines almost
never change a stored value; GeoTIFFs carry no dates, HDF5 objects no timestamps
and the GeoPackage a fixed OGR_CURRENT_DATE. The checksums file records each
file's sha256 and a *content* sha256 (decoded arrays, geometries, attributes),
so a different zlib/GDAL build that compresses differently is still accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Generator version: bump when the output changes (it names the cache folder).
VERSION = 1
#: The one seed of the world.
SEED = 20190418  # first GEDI science data day

WEST, EAST, SOUTH, NORTH = 10.0, 10.3, -1.0, -0.8
RES_DEG = 1.0 / 3600.0
WIDTH_PX = 1080
HEIGHT_PX = 720
CRS = "EPSG:4326"
UTM_CRS = "EPSG:32732"  # UTM zone 32 south (6-12 E)
UTM_RES_M = 100.0
NDVI_RES_DEG = 0.001
TREE_COVER_BLOCK_PX = 3

#: WGS84 ellipsoid (EPSG:7030).
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
#: Latitude (deg) at which the terrain's constant metres-per-degree are taken.
TERRAIN_REF_LAT = -0.9

#: ISS orbit inclination (deg) -> ground-track heading near the equator: asin(cos i / cos lat).
ISS_INCLINATION_DEG = 51.6
BEAM_SPACING_M = 600.0
SHOT_SPACING_M = 60.0
SHOT_RATE_HZ = 242.0
#: Shots closer than this to the world's edge are not simulated (m).
EDGE_MARGIN_M = 60.0
#: GEDI delta_time epoch is 2018-01-01T00:00:00Z; the passes are placed on 2020-06-01 and 2020-06-07.
#: ``along_track_m``: the part of the orbit in the granule, metres along track from ``center``.
PASSES = (
    {"orbit": 90001, "direction": "ascending", "center": (10.105, -0.90), "along_track_m": (-10_000.0, 10_000.0),
     "delta_time0": 76_204_800.0},
    {"orbit": 90002, "direction": "descending", "center": (10.215, -0.90), "along_track_m": (-20_000.0, 20_000.0),
     "delta_time0": 76_723_200.0},
)
#: Per-beam digitiser offset and noise sd (counts), like the reference granule's beams.
BEAM_DIGITISER = {
    "BEAM0000": (244.0, 2.8), "BEAM0001": (245.0, 2.9), "BEAM0010": (241.0, 2.5), "BEAM0011": (241.0, 2.6),
    "BEAM0101": (205.0, 3.3), "BEAM0110": (228.0, 3.5), "BEAM1000": (255.0, 3.1), "BEAM1011": (222.5, 3.0),
}
FULL_POWER_BARE_GROUND_ENERGY = 15_000.0
COVERAGE_ENERGY_FACTOR = 0.45
LASER_ENERGY_JITTER = 0.05
WAVEFORM_QUANTUM_COUNTS = 1.0 / 64.0
CROWN_SHAPE = "ellipsoid"
CROWN_DEPTH_RATIO = 0.5

COUNTRIES = (
    {"iso3": "XPL", "name": "Planaria", "terrain": "flat plain"},
    {"iso3": "XCL", "name": "Collina", "terrain": "rolling hills"},
    {"iso3": "XMT", "name": "Montania", "terrain": "steep mountains"},
)
#: Mean border columns (px of the 1" grid) between the countries, and their meanders.
BORDER_COLUMNS = (360, 720)
BORDER_MEANDER_PX = ((24.0, 300.0, 9.0, 97.0), (30.0, 410.0, 7.0, 71.0))

FILES = {
    "dem": "dem.tif",
    "height": "canopy_height.tif",
    "cover": "canopy_cover.tif",
    "agb": "agb.tif",
    "tree_cover": "optical/tree_cover_pct.tif",
    "ndvi": "optical/ndvi.tif",
    "carbon_agb": "optical/carbon_agb_utm.tif",
    "countries": "countries.gpkg",
    "truth": "truth.parquet",
    "world": "world.json",
}
GRANULE_DIR = "granules"
CHECKSUMS_NAME = "checksums.json"
#: The committed checksums (beside this script).
COMMITTED_CHECKSUMS = Path(__file__).with_name("sample_world_checksums.json")

RH_COLUMNS = [f"rh{i}" for i in range(101)]
TRUTH_COLUMNS = [
    "shot_number", "beam", "power", "granule", "iso3", "lat", "lon", "ground_elevation_m",
    "canopy_top_elevation_m", "canopy_height_m", "cover", "agb_mg_ha", "slope_deg", "aspect_deg",
    "footprint_sigma_m", "pulse_sigma_m", "terrain_sigma_m", "return_sigma_m", "ground_energy",
    "canopy_energy", "row", "col", *RH_COLUMNS,
]


# --------------------------------------------------------------------------- allometry
@dataclass(frozen=True)
class Allometry:
    """The world's stated height/cover -> AGB relation: ``AGB = a * H^b * cover^c`` (Mg/ha, H in m)."""

    a: float = 2.0
    b: float = 1.5
    c: float = 1.0
    formula: str = "AGB [Mg/ha] = a * H[m]^b * cover^c"
    units: str = "Mg/ha (dry above-ground biomass); H canopy height in m; cover fraction 0-1"

    def __call__(self, height_m, cover):
        h = np.asarray(height_m, dtype=np.float64)
        c = np.asarray(cover, dtype=np.float64)
        return self.a * np.power(np.maximum(h, 0.0), self.b) * np.power(np.maximum(c, 0.0), self.c)

    def as_dict(self) -> dict:
        return {"formula": self.formula, "a": self.a, "b": self.b, "c": self.c, "units": self.units}


ALLOMETRY = Allometry()


# --------------------------------------------------------------------------- the world's paths
@dataclass(frozen=True)
class SampleWorld:
    """Paths of a generated sample world and what it was made with.

    ``optical_paths`` maps ``tree_cover``, ``ndvi`` and ``carbon_agb`` to GeoTIFFs;
    ``summary`` holds the figures of ``world.json`` (shots per beam/country/slope
    bin, true totals per country).
    """

    root: Path
    dem_path: Path
    height_path: Path
    cover_path: Path
    agb_path: Path
    optical_paths: dict[str, Path]
    countries_path: Path
    granule_paths: tuple[Path, ...]
    truth_path: Path
    world_path: Path
    checksums_path: Path
    allometry: Allometry = ALLOMETRY
    bounds: tuple[float, float, float, float] = (WEST, SOUTH, EAST, NORTH)
    crs: str = CRS
    seed: int = SEED
    version: int = VERSION
    summary: dict = field(default_factory=dict, compare=False)

    def read_truth(self):
        """The per-shot truth table (pandas DataFrame)."""
        import pandas as pd

        return pd.read_parquet(self.truth_path)

    def read_countries(self):
        """The countries with their true totals (GeoDataFrame)."""
        import geopandas as gpd

        return gpd.read_file(self.countries_path, layer="countries")

    def files(self) -> dict[str, Path]:
        """Every generated file by relative name."""
        return {str(p.relative_to(self.root)): p for p in sorted(_list_files(self.root))}


def _world_from_dir(root: Path) -> SampleWorld:
    granules = tuple(sorted((root / GRANULE_DIR).glob("*.h5")))
    summary = {}
    world_json = root / FILES["world"]
    if world_json.exists():
        summary = json.loads(world_json.read_text()).get("summary", {})
    return SampleWorld(
        root=root,
        dem_path=root / FILES["dem"],
        height_path=root / FILES["height"],
        cover_path=root / FILES["cover"],
        agb_path=root / FILES["agb"],
        optical_paths={k: root / FILES[k] for k in ("tree_cover", "ndvi", "carbon_agb")},
        countries_path=root / FILES["countries"],
        granule_paths=granules,
        truth_path=root / FILES["truth"],
        world_path=world_json,
        checksums_path=root / CHECKSUMS_NAME,
        summary=summary,
    )


def _list_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUMS_NAME]


# --------------------------------------------------------------------------- geometry helpers
def metres_per_degree(lat_deg) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 metres per degree of longitude and of latitude at ``lat_deg``."""
    phi = np.radians(np.asarray(lat_deg, dtype=np.float64))
    w = np.sqrt(1.0 - WGS84_E2 * np.sin(phi) ** 2)
    m_lon = np.pi / 180.0 * WGS84_A * np.cos(phi) / w
    m_lat = np.pi / 180.0 * WGS84_A * (1.0 - WGS84_E2) / w**3
    return m_lon, m_lat


M_LON_REF, M_LAT_REF = (float(v) for v in metres_per_degree(TERRAIN_REF_LAT))


def grid_transform():
    return _north_up(WEST, NORTH, RES_DEG)


def _north_up(west: float, north: float, res: float):
    """Affine transform of a north-up grid with square pixels of ``res``."""
    from affine import Affine

    return Affine(res, 0.0, west, 0.0, -res, north)


def pixel_centres() -> tuple[np.ndarray, np.ndarray]:
    """Longitudes (width,) and latitudes (height,) of the 1" pixel centres (north to south)."""
    lon = WEST + (np.arange(WIDTH_PX) + 0.5) * RES_DEG
    lat = NORTH - (np.arange(HEIGHT_PX) + 0.5) * RES_DEG
    return lon, lat


def pixel_area_m2_per_row() -> np.ndarray:
    """Area (m2) of a 1" pixel of each row on the WGS84 ellipsoid (pyproj.Geod)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    out = np.empty(HEIGHT_PX)
    for r in range(HEIGHT_PX):
        top = NORTH - r * RES_DEG
        bottom = top - RES_DEG
        area, _ = geod.polygon_area_perimeter([WEST, WEST + RES_DEG, WEST + RES_DEG, WEST],
                                              [bottom, bottom, top, top])
        out[r] = abs(area)
    return out


def smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smoothstep_derivative(t):
    inside = (t > 0.0) & (t < 1.0)
    return np.where(inside, 6.0 * t * (1.0 - t), 0.0)


# --------------------------------------------------------------------------- terrain
@dataclass(frozen=True)
class WaveField:
    """Sum of plane waves ``sum_k A_k cos(kx_k x + ky_k y + phi_k)`` (x, y in m)."""

    amplitude: np.ndarray
    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, rms_gradient: float, wavelength_m: tuple[float, float]):
        wl = np.exp(rng.uniform(np.log(wavelength_m[0]), np.log(wavelength_m[1]), n))
        k = 2.0 * np.pi / wl
        theta = rng.uniform(0.0, np.pi, n)
        phase = rng.uniform(0.0, 2.0 * np.pi, n)
        # each wave contributes rms_gradient^2 / n to the mean squared gradient |grad z|^2 = A^2 k^2 / 2
        amplitude = rms_gradient * np.sqrt(2.0 / n) / k
        return cls(amplitude, k * np.cos(theta), k * np.sin(theta), phase)

    def value_and_gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = np.zeros(np.broadcast(x, y).shape)
        gx = np.zeros_like(z)
        gy = np.zeros_like(z)
        for a, kx, ky, ph in zip(self.amplitude, self.kx, self.ky, self.phase, strict=True):
            arg = kx * x + ky * y + ph
            z += a * np.cos(arg)
            s = np.sin(arg)
            gx -= a * kx * s
            gy -= a * ky * s
        return z, gx, gy


@dataclass(frozen=True)
class Terrain:
    """The analytic terrain; ``elevation_and_gradient(lon, lat)`` gives z (m) and dz/dx, dz/dy per metre."""

    plain: WaveField
    hills: WaveField
    mountains: WaveField
    base_m: float = 400.0
    uplift_m: float = 1000.0
    hills_from_lon: tuple[float, float] = (10.075, 10.105)
    mountains_from_lon: tuple[float, float] = (10.185, 10.215)

    @classmethod
    def from_rng(cls, rng: np.random.Generator) -> Terrain:
        return cls(
            plain=WaveField.random(rng, 8, 0.012, (2000.0, 8000.0)),
            hills=WaveField.random(rng, 16, 0.15, (700.0, 4000.0)),
            mountains=WaveField.random(rng, 16, 0.62, (1500.0, 6000.0)),
        )

    def weights(self, lon):
        """Zone weights (hills, mountains) and their derivatives per metre east."""
        a0, a1 = self.hills_from_lon
        b0, b1 = self.mountains_from_lon
        th = (lon - a0) / (a1 - a0)
        tm = (lon - b0) / (b1 - b0)
        wh, wm = smoothstep(th), smoothstep(tm)
        dwh = smoothstep_derivative(th) / ((a1 - a0) * M_LON_REF)
        dwm = smoothstep_derivative(tm) / ((b1 - b0) * M_LON_REF)
        return wh, wm, dwh, dwm

    def elevation_and_gradient(self, lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        x = (lon - WEST) * M_LON_REF
        y = (lat - SOUTH) * M_LAT_REF
        zp, pgx, pgy = self.plain.value_and_gradient(x, y)
        zh, hgx, hgy = self.hills.value_and_gradient(x, y)
        zm, mgx, mgy = self.mountains.value_and_gradient(x, y)
        wh, wm, dwh, dwm = self.weights(lon)
        z = self.base_m + zp + wh * zh + wm * (self.uplift_m + zm)
        gx = pgx + dwh * zh + wh * hgx + dwm * (self.uplift_m + zm) + wm * mgx
        gy = pgy + wh * hgy + wm * mgy
        return z, gx, gy

    def slope_aspect(self, lon, lat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Elevation (m), slope (deg) and downslope aspect (deg clockwise from north) at points."""
        z, gx, gy = self.elevation_and_gradient(lon, lat)
        m_lon, m_lat = metres_per_degree(lat)
        # the analytic x/y use constant metres per degree; rescale to true metres east/north
        ge = gx * (M_LON_REF / m_lon)
        gn = gy * (M_LAT_REF / m_lat)
        slope = np.degrees(np.arctan(np.hypot(ge, gn)))
        aspect = np.mod(np.degrees(np.arctan2(-ge, -gn)), 360.0)
        return z, slope, aspect


# --------------------------------------------------------------------------- fields
def _smooth_noise(rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian random field on the 1" grid, correlation length ~sigma_px."""
    from scipy.ndimage import gaussian_filter

    white = rng.standard_normal((HEIGHT_PX, WIDTH_PX))
    f = gaussian_filter(white, sigma_px, mode="reflect")
    return (f - f.mean()) / f.std()


def _q(values, step: float) -> np.ndarray:
    """Round to a multiple of ``step`` (stable stored values across maths libraries)."""
    return np.round(np.asarray(values, dtype=np.float64) / step) * step


@dataclass
class Fields:
    dem: np.ndarray
    height: np.ndarray
    cover: np.ndarray
    agb: np.ndarray
    forest: np.ndarray


def build_fields(terrain: Terrain, rng: np.random.Generator) -> Fields:
    lon, lat = pixel_centres()
    lon2, lat2 = np.meshgrid(lon, lat)
    z, _, _ = terrain.elevation_and_gradient(lon2, lat2)
    dem = _q(z, 0.01).astype(np.float32)
    wh, wm, _, _ = terrain.weights(lon2)
    n_mask = _smooth_noise(rng, 15.0)
    n_height = _smooth_noise(rng, 4.0)
    n_texture = _smooth_noise(rng, 1.0)
    n_cover = _smooth_noise(rng, 2.0)
    threshold = 0.25 * (1 - wh) + (-1.3) * wh * (1 - wm) + (-1.6) * wm
    forest = n_mask > threshold
    mean_h = 20.0 * (1 - wh) + 33.0 * wh * (1 - wm) + wm * (40.0 - 0.012 * (z - 600.0))
    h = np.clip(mean_h + 5.0 * n_height + 2.0 * n_texture, 5.0, 50.0)
    height = np.where(forest, _q(h, 0.01), 0.0).astype(np.float32)
    cov = np.clip(0.95 * (1.0 - np.exp(-height.astype(np.float64) / 12.0)) + 0.04 * n_cover, 0.05, 0.95)
    cover = np.where(forest, _q(cov, 1e-4), 0.0).astype(np.float32)
    agb = _q(ALLOMETRY(height, cover), 0.01).astype(np.float32)
    return Fields(dem=dem, height=height, cover=cover, agb=agb, forest=forest)


# --------------------------------------------------------------------------- countries
def border_columns() -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first column of Collina and the first column of Montania (pixel-edge borders)."""
    rows = np.arange(HEIGHT_PX)
    out = []
    for base, (a1, p1, a2, p2) in zip(BORDER_COLUMNS, BORDER_MEANDER_PX, strict=True):
        c = base + a1 * np.sin(2 * np.pi * rows / p1) + a2 * np.sin(2 * np.pi * rows / p2 + 1.0)
        out.append(np.round(c).astype(np.int64))
    return out[0], out[1]


def country_index_raster() -> np.ndarray:
    """0/1/2 (XPL/XCL/XMT) per 1" pixel."""
    b1, b2 = border_columns()
    cols = np.arange(WIDTH_PX)[None, :]
    return (cols >= b1[:, None]).astype(np.int8) + (cols >= b2[:, None]).astype(np.int8)


def country_polygons() -> list:
    """Shapely polygons of the three countries, built from pixel-edge staircases."""
    import shapely

    b1, b2 = border_columns()
    left = [np.zeros(HEIGHT_PX, dtype=np.int64), b1, b2]
    right = [b1, b2, np.full(HEIGHT_PX, WIDTH_PX, dtype=np.int64)]
    polys = []
    for lo, hi in zip(left, right, strict=True):
        pts = []
        for r in range(HEIGHT_PX):  # right side, top to bottom
            y_top, y_bot = NORTH - r * RES_DEG, NORTH - (r + 1) * RES_DEG
            x = WEST + hi[r] * RES_DEG
            pts += [(x, y_top), (x, y_bot)]
        for r in range(HEIGHT_PX - 1, -1, -1):  # left side, bottom to top
            y_top, y_bot = NORTH - r * RES_DEG, NORTH - (r + 1) * RES_DEG
            x = WEST + lo[r] * RES_DEG
            pts += [(x, y_bot), (x, y_top)]
        poly = shapely.Polygon(pts)
        poly = shapely.simplify(poly, 0.0)  # drop collinear vertices
        if not poly.is_valid:
            raise RuntimeError("sample world: a country polygon is invalid (generator bug)")
        polys.append(poly)
    return polys


def country_totals(agb: np.ndarray, country: np.ndarray, area_m2_row: np.ndarray) -> list[dict]:
    """True AGB (Mg) and area (ha) per country: sums over pixels of AGB x geodesic pixel area."""
    area_ha = np.broadcast_to((area_m2_row / 1e4)[:, None], agb.shape)
    out = []
    for i, meta in enumerate(COUNTRIES):
        sel = country == i
        agb_mg = float(np.sum(agb.astype(np.float64)[sel] * area_ha[sel]))
        out.append({
            **meta,
            "true_agb_mg": agb_mg,
            "true_agb_pg": agb_mg * 1e-9,
            "true_area_ha": float(area_ha[sel].sum()),
            "n_pixels": int(sel.sum()),
        })
    return out


# --------------------------------------------------------------------------- optical products
def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    h, w = a.shape
    return a[: h - h % k, : w - w % k].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def _overlap_matrix(n_src: int, src_step: float, n_dst: int, dst_step: float) -> np.ndarray:
    """Fractional overlap of each destination cell (rows) with each source cell (columns), same origin."""
    src_edges = np.arange(n_src + 1) * src_step
    dst_edges = np.arange(n_dst + 1) * dst_step
    lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
    return np.clip(hi - lo, 0.0, None) / src_step


def _area_weighted_regrid(a: np.ndarray, res_deg: float) -> np.ndarray:
    """Cell means of ``a`` (1" grid) on a coarser lat/lon grid with the same origin (pixel areas ~equal)."""
    ny = int(round((NORTH - SOUTH) / res_deg))
    nx = int(round((EAST - WEST) / res_deg))
    wy = _overlap_matrix(HEIGHT_PX, RES_DEG, ny, res_deg)
    wx = _overlap_matrix(WIDTH_PX, RES_DEG, nx, res_deg)
    return (wy @ a.astype(np.float64) @ wx.T) / (wy.sum(axis=1)[:, None] * wx.sum(axis=1)[None, :])


def _carbon_product_grid():
    """UTM 32S grid (transform, width, height) covering the world at 100 m."""
    from pyproj import Transformer

    tr = Transformer.from_crs(CRS, UTM_CRS, always_xy=True)
    lons = np.concatenate([np.linspace(WEST, EAST, 50), np.full(50, EAST), np.linspace(EAST, WEST, 50), np.full(50, WEST)])
    lats = np.concatenate([np.full(50, NORTH), np.linspace(NORTH, SOUTH, 50), np.full(50, SOUTH), np.linspace(SOUTH, NORTH, 50)])
    x, y = tr.transform(lons, lats)
    x0 = math.floor(min(x) / UTM_RES_M) * UTM_RES_M
    x1 = math.ceil(max(x) / UTM_RES_M) * UTM_RES_M
    y0 = math.floor(min(y) / UTM_RES_M) * UTM_RES_M
    y1 = math.ceil(max(y) / UTM_RES_M) * UTM_RES_M
    width = int(round((x1 - x0) / UTM_RES_M))
    height = int(round((y1 - y0) / UTM_RES_M))
    return _north_up(x0, y1, UTM_RES_M), width, height


def build_optical(fields: Fields, rng: np.random.Generator) -> dict[str, tuple]:
    """Optical rasters: name -> (array, transform, crs, nodata, tags)."""
    from rasterio.crs import CRS as RioCRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    out = {}
    k = TREE_COVER_BLOCK_PX
    cov = _block_mean(fields.cover.astype(np.float64), k)
    pct = np.clip(np.round(100.0 * cov + 4.0 * rng.standard_normal(cov.shape)), 0, 100).astype(np.uint8)
    out["tree_cover"] = (pct, _north_up(WEST, NORTH, k * RES_DEG), CRS, 255,
                         {"UNITS": "percent", "DESCRIPTION": "tree cover: mean canopy cover x 100 + N(0, 4)"})

    agb_ndvi = _area_weighted_regrid(fields.agb, NDVI_RES_DEG)
    ndvi = 0.25 + 0.6 * (1.0 - np.exp(-agb_ndvi / 110.0)) + 0.02 * rng.standard_normal(agb_ndvi.shape)
    out["ndvi"] = (_q(np.clip(ndvi, -1.0, 1.0), 1e-4).astype(np.float32),
                   _north_up(WEST, NORTH, NDVI_RES_DEG), CRS, -9999.0,
                   {"UNITS": "1", "DESCRIPTION": "NDVI-like index: 0.25 + 0.6 (1 - exp(-AGB/110)) + N(0, 0.02)"})

    transform, width, height = _carbon_product_grid()
    dst = np.full((height, width), np.nan, dtype=np.float64)
    reproject(
        source=fields.agb.astype(np.float64), destination=dst,
        src_transform=grid_transform(), src_crs=RioCRS.from_string(CRS), src_nodata=None,
        dst_transform=transform, dst_crs=RioCRS.from_string(UTM_CRS), dst_nodata=np.nan,
        resampling=Resampling.average, num_threads=1,
    )
    noise = np.exp(0.15 * rng.standard_normal(dst.shape))
    prod = dst / (1.0 + dst / 800.0) * noise
    prod = np.where(np.isfinite(prod), _q(prod, 0.1), -9999.0).astype(np.float32)
    out["carbon_agb"] = (prod, transform, UTM_CRS, -9999.0,
                         {"UNITS": "Mg/ha", "DESCRIPTION": "carbon product: AGB / (1 + AGB/800) x lognormal(0, 0.15)"})
    return out


# --------------------------------------------------------------------------- GEDI passes
def track_heading_deg(lat_deg: float, direction: str) -> float:
    """Ground-track heading (deg clockwise from north) of an orbit of ISS inclination at ``lat_deg``."""
    h = math.degrees(math.asin(math.cos(math.radians(ISS_INCLINATION_DEG)) / math.cos(math.radians(lat_deg))))
    return h if direction == "ascending" else 180.0 - h


def pass_shots(spec: dict) -> dict[str, dict[str, np.ndarray]]:
    """Footprint centres of one pass: beam -> {lon, lat, index} (inside the world, EDGE_MARGIN_M from edges)."""
    from waveform.constants import BEAM_NAMES

    lon_c, lat_c = spec["center"]
    heading = math.radians(track_heading_deg(lat_c, spec["direction"]))
    along = np.array([math.sin(heading), math.cos(heading)])  # east, north
    cross = np.array([math.cos(heading), -math.sin(heading)])  # to the right of the track
    m_lon, m_lat = (float(v) for v in metres_per_degree(lat_c))
    a0, a1 = spec["along_track_m"]
    idx = np.arange(int(math.ceil(a0 / SHOT_SPACING_M)), int(math.floor(a1 / SHOT_SPACING_M)) + 1)
    out = {}
    for j, beam in enumerate(BEAM_NAMES):
        off = (j - 3.5) * BEAM_SPACING_M
        e = idx * SHOT_SPACING_M * along[0] + off * cross[0]
        n = idx * SHOT_SPACING_M * along[1] + off * cross[1]
        lon = lon_c + e / m_lon
        lat = lat_c + n / m_lat
        margin_lon, margin_lat = EDGE_MARGIN_M / m_lon, EDGE_MARGIN_M / m_lat
        inside = ((lon > WEST + margin_lon) & (lon < EAST - margin_lon)
                  & (lat > SOUTH + margin_lat) & (lat < NORTH - margin_lat))
        out[beam] = {"lon": lon[inside], "lat": lat[inside], "index": (idx[inside] - idx[0]).astype(np.int64)}
    return out


def granule_name(spec: dict) -> str:
    """A GEDI L1B release-1 style file name (orbit numbers >= 90000 mark the synthetic passes)."""
    return f"GEDI01_B_2020153000000_O{spec['orbit']:05d}_T00001_02_003_01_SAWA.h5"


def simulate_pass(spec: dict, granule_index: int, terrain: Terrain, fields: Fields, country: np.ndarray):
    """Simulate every shot of one pass; return (beams for write_l1b, tx dict, truth rows DataFrame)."""
    import pandas as pd

    from waveform.constants import COVERAGE_BEAMS
    from waveform.l1b_writer import gedi_shot_numbers
    from waveform.simulate import simulate_waveforms

    beams, txs, truths = {}, {}, []
    for b_i, (beam, pts) in enumerate(pass_shots(spec).items()):
        rng = np.random.default_rng([SEED, 1000 + granule_index, b_i])
        lon, lat, index = pts["lon"], pts["lat"], pts["index"]
        n = lon.shape[0]
        col = np.floor((lon - WEST) / RES_DEG).astype(np.int64)
        row = np.floor((NORTH - lat) / RES_DEG).astype(np.int64)
        z, slope, aspect = terrain.slope_aspect(lon, lat)
        z, slope, aspect = _q(z, 0.001), _q(slope, 1e-4), _q(aspect, 1e-4) % 360.0
        height = fields.height[row, col].astype(np.float64)
        cover = fields.cover[row, col].astype(np.float64)
        power = "coverage" if beam in COVERAGE_BEAMS else "full"
        energy = FULL_POWER_BARE_GROUND_ENERGY * (COVERAGE_ENERGY_FACTOR if power == "coverage" else 1.0)
        energy = _q(energy * np.exp(LASER_ENERGY_JITTER * rng.standard_normal(n)), 0.01)
        offset, noise_sd = BEAM_DIGITISER[beam]
        shot_number = gedi_shot_numbers(spec["orbit"], beam, index)
        sim = simulate_waveforms(
            z, height, cover, slope, aspect,
            crown_shape=CROWN_SHAPE, crown_depth_ratio=CROWN_DEPTH_RATIO,
            noise_sd=noise_sd, offset=offset, bare_ground_energy=energy, shot_number=shot_number,
            quantum_counts=WAVEFORM_QUANTUM_COUNTS, rng=rng,
        )
        delta_time = spec["delta_time0"] + index / SHOT_RATE_HZ
        shots = pd.DataFrame({
            "shot_number": shot_number,
            "latitude_bin0": lat, "longitude_bin0": lon, "latitude_lastbin": lat, "longitude_lastbin": lon,
            "delta_time": delta_time,
            "digital_elevation_model": fields.dem[row, col].astype(np.float64),
            "noise_mean_corrected": np.full(n, offset), "noise_stddev_corrected": np.full(n, noise_sd),
            "tx_egsigma": sim.tx_params["tx_egsigma"].to_numpy(),
            "tx_egamplitude": sim.tx_params["tx_egamplitude"].to_numpy(),
            "tx_gloc": sim.tx_params["tx_gloc"].to_numpy(),
        })
        beams[beam] = (sim.batch, shots)
        txs[beam] = sim.tx
        t = sim.truth
        truth = pd.DataFrame({
            "shot_number": shot_number, "beam": beam, "power": power, "granule": granule_name(spec),
            "iso3": np.array([c["iso3"] for c in COUNTRIES])[country[row, col]],
            "lat": lat, "lon": lon,
            "ground_elevation_m": t["ground_elevation_m"].to_numpy(),
            "canopy_top_elevation_m": t["canopy_top_elevation_m"].to_numpy(),
            "canopy_height_m": height, "cover": cover,
            "agb_mg_ha": fields.agb[row, col].astype(np.float64),
            "slope_deg": slope, "aspect_deg": aspect,
        })
        for name in ("footprint_sigma_m", "pulse_sigma_m", "terrain_sigma_m", "return_sigma_m",
                     "ground_energy", "canopy_energy"):
            truth[name] = _q(t[name].to_numpy(), 1e-6)
        truth["row"] = row
        truth["col"] = col
        rh = _q(t[RH_COLUMNS].to_numpy(), 1e-4)
        truth = pd.concat([truth, pd.DataFrame(rh, columns=RH_COLUMNS)], axis=1)
        truths.append(truth)
    return beams, txs, pd.concat(truths, ignore_index=True)


# --------------------------------------------------------------------------- writing
@contextlib.contextmanager
def _fixed_ogr_date():
    import pyogrio

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2000-01-01T00:00:00.000Z"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def _write_world(out: Path, report: Callable[[str], None] | None = None) -> dict:
    """Generate every file of the world into ``out`` (an empty folder); return the summary."""
    import geopandas as gpd
    import pandas as pd

    from terrain.rasters import write_geotiff
    from waveform.l1b_writer import write_l1b
    from waveform.outputs import atomic_path, write_json_atomic

    say = report or (lambda msg: None)
    rng = np.random.default_rng(SEED)
    terrain = Terrain.from_rng(rng)
    fields = build_fields(terrain, rng)
    country = country_index_raster()
    common_tags = {"SAWA_SAMPLE_WORLD_VERSION": str(VERSION), "SAWA_SAMPLE_WORLD_SEED": str(SEED)}
    transform = grid_transform()
    say("rasters")
    write_geotiff(out / FILES["dem"], fields.dem, transform, CRS, nodata=-9999.0, band_names=["elevation"],
                  tags={**common_tags, "UNITS": "m", "VERTICAL_DATUM": "WGS84 ellipsoidal height (not geoid)",
                        "DESCRIPTION": "sample world terrain, 1 arc-second, ellipsoidal heights"})
    write_geotiff(out / FILES["height"], fields.height, transform, CRS, nodata=-9999.0, band_names=["canopy_height"],
                  tags={**common_tags, "UNITS": "m", "DESCRIPTION": "true canopy height above ground (0 = non-forest)"})
    write_geotiff(out / FILES["cover"], fields.cover, transform, CRS, nodata=-9999.0, band_names=["canopy_cover"],
                  tags={**common_tags, "UNITS": "fraction", "DESCRIPTION": "true canopy cover = 1 - Pgap(ground)"})
    write_geotiff(out / FILES["agb"], fields.agb, transform, CRS, nodata=-9999.0, band_names=["agb"],
                  tags={**common_tags, "UNITS": "Mg/ha",
                        "DESCRIPTION": f"true AGB from the allometry {ALLOMETRY.formula} "
                                       f"(a={ALLOMETRY.a}, b={ALLOMETRY.b}, c={ALLOMETRY.c})"})
    for name, (arr, tr, crs, nodata, tags) in build_optical(fields, rng).items():
        write_geotiff(out / FILES[name], arr, tr, crs, nodata=nodata, band_names=[name], tags={**common_tags, **tags})

    say("countries")
    area_row = pixel_area_m2_per_row()
    totals = country_totals(fields.agb, country, area_row)
    for i, t in enumerate(totals):
        t["forest_pixels"] = int((fields.forest & (country == i)).sum())
    gdf = gpd.GeoDataFrame(
        {
            "iso3": [t["iso3"] for t in totals],
            "name": [t["name"] for t in totals],
            "terrain": [t["terrain"] for t in totals],
            "true_agb_pg": [t["true_agb_pg"] for t in totals],
            "true_agb_mg": [t["true_agb_mg"] for t in totals],
            "true_area_ha": [t["true_area_ha"] for t in totals],
            "n_pixels": [t["n_pixels"] for t in totals],
        },
        geometry=country_polygons(),
        crs=CRS,
    )
    with _fixed_ogr_date(), atomic_path(out / FILES["countries"]) as tmp:
        gdf.to_file(tmp, layer="countries", driver="GPKG")

    say("GEDI passes")
    truths = []
    granules = []
    for g_i, spec in enumerate(PASSES):
        beams, txs, truth = simulate_pass(spec, g_i, terrain, fields, country)
        path = out / GRANULE_DIR / granule_name(spec)
        write_l1b(path, beams, txs, file_name=path.name,
                  abstract="SYNTHETIC GEDI L1B granule of the sawa sample world (simulated waveforms, known truth).")
        granules.append(path.name)
        truths.append(truth)
    truth = pd.concat(truths, ignore_index=True)
    with atomic_path(out / FILES["truth"]) as tmp:
        truth.to_parquet(tmp, index=False)

    summary = _summary(fields, totals, truth, granules)
    write_json_atomic(out / FILES["world"], {
        "version": VERSION, "seed": SEED, "crs": CRS, "bounds": [WEST, SOUTH, EAST, NORTH],
        "resolution_deg": RES_DEG, "allometry": ALLOMETRY.as_dict(), "files": FILES,
        "granules": granules, "summary": summary,
    })
    return summary


def _summary(fields: Fields, totals: list[dict], truth, granules: list[str]) -> dict:
    slope_bins = [0, 5, 10, 20, 30, 40, 50, 90]
    sb = np.digitize(truth["slope_deg"].to_numpy(), slope_bins[1:-1])
    return {
        "extent": {"west": WEST, "south": SOUTH, "east": EAST, "north": NORTH, "crs": CRS},
        "pixels": {"width": WIDTH_PX, "height": HEIGHT_PX, "total": WIDTH_PX * HEIGHT_PX,
                   "forest": int(fields.forest.sum())},
        "dem_m": {"min": float(fields.dem.min()), "max": float(fields.dem.max())},
        "shots_total": int(len(truth)),
        "shots_per_granule": {g: int((truth["granule"] == g).sum()) for g in granules},
        "shots_per_beam": {b: int(v) for b, v in truth.groupby("beam").size().items()},
        "shots_per_country": {c: int(v) for c, v in truth.groupby("iso3").size().items()},
        "shots_per_slope_bin_deg": [
            [lo, hi, int((sb == i).sum())] for i, (lo, hi) in enumerate(zip(slope_bins[:-1], slope_bins[1:], strict=True))
        ],
        "shots_max_slope_deg": float(truth["slope_deg"].max()),
        "countries": [
            {k: t[k] for k in ("iso3", "name", "terrain", "true_agb_pg", "true_agb_mg", "true_area_ha", "n_pixels",
                               "forest_pixels")}
            for t in totals
        ],
    }


# --------------------------------------------------------------------------- checksums
def content_sha256(path: Path) -> str:
    """Digest of a file's decoded content (independent of compression/library build)."""
    suffix = path.suffix.lower()
    h = hashlib.sha256()
    if suffix == ".tif":
        import rasterio

        with rasterio.open(path) as src:
            h.update(repr((src.crs.to_epsg(), tuple(src.transform)[:6], src.dtypes, src.nodata, src.count,
                           src.width, src.height, sorted(src.tags().items()))).encode())
            for b in range(1, src.count + 1):
                h.update(np.ascontiguousarray(src.read(b)).tobytes())
    elif suffix == ".gpkg":
        import geopandas as gpd
        import shapely

        gdf = gpd.read_file(path, layer="countries")
        h.update(repr((gdf.crs.to_epsg(), list(gdf.columns))).encode())
        for col in gdf.columns:
            if col == "geometry":
                for g in gdf.geometry:
                    h.update(shapely.to_wkb(shapely.normalize(g), output_dimension=2))
            else:
                h.update(repr(gdf[col].tolist()).encode())
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        h.update(repr(table.schema.names).encode())
        for name in table.schema.names:
            arr = table.column(name).to_numpy()
            h.update(arr.tobytes() if arr.dtype != object else repr(arr.tolist()).encode())
    elif suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            items = []
            f.visititems(lambda name, obj: items.append((name, obj)))
            for name, obj in [(None, f), *items]:
                h.update(repr(name).encode())
                for key in sorted(obj.attrs):
                    h.update(repr((key, np.asarray(obj.attrs[key]).tolist())).encode())
                if isinstance(obj, h5py.Dataset):
                    data = obj[()]
                    h.update(repr((obj.dtype.str, obj.shape)).encode())
                    h.update(np.ascontiguousarray(data).tobytes())
    elif suffix == ".json":
        h.update(json.dumps(json.loads(path.read_text()), sort_keys=True).encode())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def compute_checksums(root: Path) -> dict:
    from waveform.outputs import sha256_file

    files = {}
    for p in sorted(_list_files(root)):
        rel = p.relative_to(root).as_posix()
        files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p), "content_sha256": content_sha256(p)}
    return {"version": VERSION, "seed": SEED, "files": files}


def verify_world(root: Path, expected: dict | None = None) -> list[str]:
    """Check every file of the world in ``root`` against ``expected`` (default: the committed checksums).

    A file whose bytes differ but whose decoded content is identical is accepted
    (returned in the list of notes). Raises :class:`SawaFileError` naming the
    first file that is missing, extra or different.
    """
    from waveform.errors import SawaFileError
    from waveform.outputs import sha256_file

    if expected is None:
        expected = committed_checksums()
    notes = []
    exp_files = expected["files"]
    present = {p.relative_to(root).as_posix() for p in _list_files(root)}
    missing = sorted(set(exp_files) - present)
    if missing:
        raise SawaFileError(f"sample world {root}: file {missing[0]} is missing ({len(missing)} missing); "
                            f"delete {root} and run `sawa sample` to regenerate it")
    extra = sorted(present - set(exp_files))
    if extra:
        raise SawaFileError(f"sample world {root}: unexpected file {extra[0]} (not produced by generator v{VERSION})")
    for rel, exp in sorted(exp_files.items()):
        path = root / rel
        if sha256_file(path) == exp["sha256"]:
            continue
        got = content_sha256(path)
        if got != exp["content_sha256"]:
            raise SawaFileError(
                f"sample world file {path} differs from the committed checksums "
                f"(content sha256 {got[:16]}..., expected {exp['content_sha256'][:16]}...): the generator or a "
                f"library changed its output; delete {root} and run `sawa sample`, or, if the generator was "
                f"changed on purpose, bump VERSION and run `python -m data_samples.generate --update-checksums`"
            )
        notes.append(f"{rel}: bytes differ from the committed file but the content is identical")
    return notes


def committed_checksums() -> dict:
    from waveform.errors import SawaFileError

    if not COMMITTED_CHECKSUMS.exists():
        raise SawaFileError(f"committed checksums {COMMITTED_CHECKSUMS} are missing; "
                            f"run `python -m data_samples.generate --update-checksums`")
    data = json.loads(COMMITTED_CHECKSUMS.read_text())
    if data.get("version") != VERSION or data.get("seed") != SEED:
        raise SawaFileError(
            f"committed checksums {COMMITTED_CHECKSUMS} are for generator v{data.get('version')} seed "
            f"{data.get('seed')}, this is v{VERSION} seed {SEED}; run `python -m data_samples.generate --update-checksums`"
        )
    return data


# --------------------------------------------------------------------------- public entry points
def default_directory() -> Path:
    """``$SAWA_SAMPLE_DIR`` or ``~/.cache/sawa/sample_world/v<VERSION>``."""
    env = os.environ.get("SAWA_SAMPLE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sawa" / "sample_world" / f"v{VERSION}"


def generate_sample_world(directory: str | os.PathLike | None = None, *, overwrite: bool = True,
                          report: Callable[[str], None] | None = None) -> SampleWorld:
    """Generate the world into ``directory`` (default :func:`default_directory`), atomically.

    Files are written into a temporary sibling folder that is renamed into place
    at the end, so an interrupted run leaves nothing under ``directory``. With
    ``overwrite`` an existing world there is replaced. Writes ``checksums.json``
    (sha256 and content sha256 of every file) beside the files.
    """
    from waveform.outputs import write_json_atomic

    root = Path(directory) if directory is not None else default_directory()
    root = root.expanduser().resolve()
    if root.exists() and not overwrite:
        return _world_from_dir(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the world is meant to be shared
    try:
        _write_world(tmp, report)
        write_json_atomic(tmp / CHECKSUMS_NAME, compute_checksums(tmp))
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
            os.replace(root, old / "world")
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, root)
            except OSError:
                if not (root / CHECKSUMS_NAME).exists():  # not a concurrent generation: a real error
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _world_from_dir(root)


_VERIFIED: dict[Path, SampleWorld] = {}


def load_sample_world(directory: str | os.PathLike | None = None, *, regenerate: bool = False,
                      verify: bool = True) -> SampleWorld:
    """The sample world's paths, generating it on first use (about 10-20 s) and verifying it.

    ``directory`` defaults to ``$SAWA_SAMPLE_DIR`` or ``~/.cache/sawa/sample_world/v<VERSION>``.
    Verification compares every file with the committed checksums (once per
    process); a mismatch raises :class:`~waveform.errors.SawaFileError`.
    """
    root = (Path(directory) if directory is not None else default_directory()).expanduser().resolve()
    if not regenerate and root in _VERIFIED:
        return _VERIFIED[root]
    if regenerate or not (root / CHECKSUMS_NAME).exists():
        if root.exists() and not (root / CHECKSUMS_NAME).exists() and any(root.iterdir()):
            from waveform.errors import SawaFileError

            raise SawaFileError(f"{root} exists, is not empty and holds no sample world ({CHECKSUMS_NAME} absent); "
                                f"choose another folder or empty it")
        world = generate_sample_world(root, overwrite=True)
    else:
        world = _world_from_dir(root)
    if verify:
        verify_world(root)
    _VERIFIED[root] = world
    return world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_samples.generate", description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", default=None, help="output folder (default: the cache folder)")
    parser.add_argument("--update-checksums", action="store_true",
                        help=f"write the generated checksums to {COMMITTED_CHECKSUMS.name} (after a deliberate change)")
    args = parser.parse_args(argv)
    world = generate_sample_world(args.directory, report=lambda m: print(f"  writing {m}", file=sys.stderr))
    sums = json.loads(world.checksums_path.read_text())
    if args.update_checksums:
        from waveform.outputs import write_json_atomic

        write_json_atomic(COMMITTED_CHECKSUMS, sums)
        print(f"updated {COMMITTED_CHECKSUMS}")
    else:
        notes = verify_world(world.root)
        for n in notes:
            print(f"note: {n}")
    print(format_summary(world))
    return 0


def format_summary(world: SampleWorld) -> str:
    """A human-readable account of the world: files and figures."""
    s = world.summary
    lines = [f"sample world v{world.version} (seed {world.seed}) in {world.root}"]
    for rel, p in world.files().items():
        lines.append(f"  {rel:60s} {p.stat().st_size / 1e6:8.2f} MB")
    if s:
        e = s["extent"]
        px = s["pixels"]
        lines.append(f"extent lon {e['west']}..{e['east']}, lat {e['south']}..{e['north']} ({e['crs']}); "
                     f"1\" grid {px['width']} x {px['height']} = {px['total']} px, forest {px['forest']} px; "
                     f"DEM {s['dem_m']['min']:.1f}..{s['dem_m']['max']:.1f} m (ellipsoidal)")
        lines.append(f"shots: {s['shots_total']} ({', '.join(f'{k}: {v}' for k, v in s['shots_per_granule'].items())})")
        lines.append("  per beam: " + ", ".join(f"{k} {v}" for k, v in s["shots_per_beam"].items()))
        lines.append("  per country: " + ", ".join(f"{k} {v}" for k, v in s["shots_per_country"].items()))
        lines.append("  per slope bin (deg): " + ", ".join(f"{lo}-{hi}: {v}" for lo, hi, v in s["shots_per_slope_bin_deg"])
                     + f"; max {s['shots_max_slope_deg']:.1f}")
        for c in s["countries"]:
            lines.append(f"  {c['iso3']} {c['name']:9s} ({c['terrain']}): true AGB {c['true_agb_pg']:.6f} Pg "
                         f"({c['true_agb_mg']:.0f} Mg) on {c['true_area_ha']:.1f} ha, {c['n_pixels']} px")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
