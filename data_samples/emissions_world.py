"""A small simulated world for the SRTM / TanDEM-X forest-height-loss emissions workflow.

``load_emissions_world()`` generates (once, deterministically, cached) a 0.1 x 0.1 degree tile in
the southern Amazon (62.0-61.9 W, 10.0-10.1 S) at 1 arc-second, with everything known:

* ground: a sum of random plane waves (wavelengths 300 m - 6 km, RMS slope 0.30 ~ 17 deg), so
  every surface is an analytic function of (lon, lat) and can be sampled at shifted positions
  exactly, without resampling;
* start-year (2000) forest where a smooth random field exceeds its 40th percentile, canopy height
  12-45 m (mean 28 m); 12 rectangular clearings (6-50 ha) cut between 2000 and the TanDEM-X date,
  each wholly inside forest, inside one region and away from voids;
* ``tandemx.tif`` (the reference grid; WGS84 ellipsoidal heights, float32, nodata -32767):
  ground + remaining canopy (X-band phase centre taken at the canopy top) + N(0, 1.0 m) noise, one
  invalid disc;
* ``srtm.tif`` (its own 1" grid, offset by a fraction of a pixel and 12 px larger, int16 metres,
  nodata -32768 as in SRTM): the year-2000 surface displaced horizontally by ``shift_px`` (TanDEM-X
  pixels, east/north), with the C-band phase centre ``penetration_offset_m`` below the canopy top
  in forest, in EGM96-like heights (ellipsoidal minus a constant stand-in geoid undulation
  ``geoid_undulation_m``) plus an instrument bias, N(0, 2.0 m) noise, and three voids;
* ``forest_height_2000.tif`` (m, 0 = not forest), ``tree_cover_loss.tif`` (1 = loss: the clearings
  plus 300 false-alarm forest pixels that a height-loss rule must reject), ``regions.gpkg``
  (3 regions, in UTM 20S), ``gedi_shots.parquet`` (GEDI-like rh98/agbd pairs drawn from the stated
  allometry ``agbd = a * h**b`` with log-normal scatter), and ``truth.json``.

Truth emissions (Tg C/yr) = sum over cleared pixels of allometry(canopy height) x pixel area x
carbon fraction / years between the DEM dates, with the conventions of the workflow: pixel areas on
the WGS84 ellipsoid from :func:`fusion.areas.pixel_areas_m2` (closed-form quadrangle areas, checked
against the analytic band area in the tests) and the above-ground carbon of
:func:`fusion.carbon.agb_to_carbon` (IPCC 2006 default carbon fraction 0.47 of the shipped table).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Cache layout version; bump when the generator changes (2: shared pixel areas and carbon factors).
VERSION = 2
SEED = 20000211  # SRTM launch date

# Grid of the TanDEM-X-like reference DEM.
LON0, LAT0 = -62.0, -10.0  # top-left corner
RES_DEG = 1.0 / 3600.0
SIZE_PX = 360
SRTM_MARGIN_PX = 12
SRTM_GRID_OFFSET_PX = (0.37, 0.58)  # fractional offset of the SRTM grid origin (east, south), px

#: SRTM content displacement relative to TanDEM-X (TanDEM-X pixels, east, north).
SHIFT_PX = (1.35, -0.72)
GEOID_UNDULATION_M = 12.0  # stand-in EGM96 undulation N: SRTM height = ellipsoidal - N
SRTM_BIAS_M = -1.8
PENETRATION_OFFSET_M = 3.5  # C-band phase centre below the X-band one in forest
SRTM_NOISE_M = 2.0
TANDEMX_NOISE_M = 1.0
ALLOMETRY_A = 1.2  # AGBD (Mg/ha) = a * height_m ** b  (mean relation)
ALLOMETRY_B = 1.65
ALLOMETRY_SIGMA_LOG = 0.25
SRTM_DATE = "2000-02-16"
TANDEMX_DATE = "2013-01-01"
N_CLEARINGS = 12
N_SHOTS = 1500
N_FALSE_ALARMS = 300
FOREST_QUANTILE = 0.40

SRTM_NODATA = -32768
TANDEMX_NODATA = -32767.0

# Region boundaries (degrees): West of REGION_LON; East split at REGION_LAT.
REGION_LON = -61.96
REGION_LAT = -10.045
REGION_NAMES = ("West", "North-East", "South-East")


@dataclass(frozen=True)
class EmissionsWorld:
    """Paths of the simulated emissions world (all in ``folder``)."""

    folder: Path
    srtm_path: Path
    tandemx_path: Path
    forest_height_path: Path
    tree_cover_loss_path: Path
    regions_path: Path
    shots_path: Path
    truth_path: Path

    @property
    def truth(self) -> dict:
        return json.loads(self.truth_path.read_text())


def _paths(folder: Path) -> EmissionsWorld:
    return EmissionsWorld(
        folder=folder,
        srtm_path=folder / "srtm.tif",
        tandemx_path=folder / "tandemx.tif",
        forest_height_path=folder / "forest_height_2000.tif",
        tree_cover_loss_path=folder / "tree_cover_loss.tif",
        regions_path=folder / "regions.gpkg",
        shots_path=folder / "gedi_shots.parquet",
        truth_path=folder / "truth.json",
    )


def default_cache_dir() -> Path:
    root = os.environ.get("SAWA_SAMPLE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "sawa"


def load_emissions_world(cache_dir: str | os.PathLike | None = None, regenerate: bool = False) -> EmissionsWorld:
    """Paths of the emissions sample world, generating it on first use (a few seconds)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"emissions_world_v{VERSION}"
    world = _paths(folder)
    if world.truth_path.exists() and not regenerate:
        return world
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".emissions_world.", dir=root))
    try:
        _generate(_paths(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except FileExistsError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return world


# --- analytic fields ---------------------------------------------------------------------------
_LAT_C = LAT0 - SIZE_PX * RES_DEG / 2
_LON_C = LON0 + SIZE_PX * RES_DEG / 2
_M_PER_DEG_LAT = 110_600.0
_M_PER_DEG_LON = 111_320.0 * np.cos(np.radians(_LAT_C))


@dataclass(frozen=True)
class _Waves:
    kx: np.ndarray
    ky: np.ndarray
    amp: np.ndarray
    phase: np.ndarray

    def __call__(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x = (np.asarray(lon) - _LON_C) * _M_PER_DEG_LON
        y = (np.asarray(lat) - _LAT_C) * _M_PER_DEG_LAT
        out = np.zeros(np.broadcast(x, y).shape)
        for kx, ky, a, ph in zip(self.kx, self.ky, self.amp, self.phase, strict=True):
            out += a * np.cos(kx * x + ky * y + ph)
        return out


def _waves(rng: np.random.Generator, n: int, lam_min_m: float, lam_max_m: float, exponent: float) -> _Waves:
    lam = np.exp(rng.uniform(np.log(lam_min_m), np.log(lam_max_m), n))
    theta = rng.uniform(0, 2 * np.pi, n)
    k = 2 * np.pi / lam
    return _Waves(k * np.cos(theta), k * np.sin(theta), lam**exponent, rng.uniform(0, 2 * np.pi, n))


def _scaled(w: _Waves, factor: float) -> _Waves:
    return _Waves(w.kx, w.ky, w.amp * factor, w.phase)


def _grid_centres(lon_left: float, lat_top: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    lon = lon_left + (np.arange(width) + 0.5) * RES_DEG
    lat = lat_top - (np.arange(height) + 0.5) * RES_DEG
    return np.meshgrid(lon, lat)


def _region_of(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """0 West, 1 North-East, 2 South-East."""
    return np.where(lon < REGION_LON, 0, np.where(lat >= REGION_LAT, 1, 2))


def _years_between(d0: str, d1: str) -> float:
    return (_dt.date.fromisoformat(d1) - _dt.date.fromisoformat(d0)).days / 365.25


def _generate(world: EmissionsWorld) -> None:
    import geopandas as gpd
    import pandas as pd
    from affine import Affine
    from shapely.geometry import box

    from fusion.areas import pixel_areas_m2
    from fusion.carbon import agb_to_carbon
    from fusion.constants import M2_PER_HA
    from terrain.rasters import write_geotiff

    rng = np.random.default_rng(SEED)
    ground_w = _waves(rng, 80, 300.0, 6000.0, 1.0)
    rms_slope = np.sqrt(np.sum((ground_w.amp * np.hypot(ground_w.kx, ground_w.ky)) ** 2) / 2)
    ground_w = _scaled(ground_w, 0.30 / rms_slope)
    forest_w = _waves(rng, 30, 1500.0, 6000.0, 0.0)
    height_w = _waves(rng, 40, 200.0, 2000.0, 0.0)

    lon, lat = _grid_centres(LON0, LAT0, SIZE_PX, SIZE_PX)
    forest_field = forest_w(lon, lat)
    forest_thr = float(np.quantile(forest_field, FOREST_QUANTILE))
    hf = height_w(lon, lat)
    h_mean, h_sd = float(hf.mean()), float(hf.std())

    def ground(lo, la):
        return 180.0 + ground_w(lo, la)

    def forest2000(lo, la):
        return forest_w(lo, la) > forest_thr

    def canopy_height(lo, la):
        return np.clip(28.0 + 6.0 * (height_w(lo, la) - h_mean) / h_sd, 12.0, 45.0)

    forest = forest2000(lon, lat)
    height = canopy_height(lon, lat)

    # --- voids (SRTM grid positions given in TanDEM-X pixel coordinates for placement) ---
    rows, cols = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    srtm_voids = [(60.0, 300.0, 7.0), (250.0, 80.0, 9.0), (310.0, 200.0, 5.0)]  # (row, col, radius px)
    tdx_voids = [(120.0, 150.0, 4.0)]
    near_void = np.zeros((SIZE_PX, SIZE_PX), bool)
    for r0, c0, rad in srtm_voids + tdx_voids:
        near_void |= np.hypot(rows - r0, cols - c0) <= rad + 12

    # --- clearings: rectangles wholly in forest, in one region, away from voids and each other ---
    region = _region_of(lon, lat)
    clearings = []
    taken = np.zeros((SIZE_PX, SIZE_PX), bool)
    attempts = 0
    while len(clearings) < N_CLEARINGS:
        attempts += 1
        if attempts > 20000:
            raise RuntimeError("emissions world: could not place the clearings (generator bug)")
        w_m, h_m = rng.uniform(250.0, 700.0, 2)
        w_deg, h_deg = w_m / _M_PER_DEG_LON, h_m / _M_PER_DEG_LAT
        left = rng.uniform(LON0 + 20 * RES_DEG, LON0 + (SIZE_PX - 20) * RES_DEG - w_deg)
        top = rng.uniform(LAT0 - (SIZE_PX - 20) * RES_DEG + h_deg, LAT0 - 20 * RES_DEG)
        inside = (lon >= left) & (lon < left + w_deg) & (lat <= top) & (lat > top - h_deg)
        pad = 3 * RES_DEG
        around = (lon >= left - pad) & (lon < left + w_deg + pad) & (lat <= top + pad) & (lat > top - h_deg - pad)
        if not inside.any() or not forest[around].all() or near_void[around].any() or taken[around].any():
            continue
        regs = np.unique(region[around])
        if regs.size != 1:
            continue
        far = (lon >= left - 6 * RES_DEG) & (lon < left + w_deg + 6 * RES_DEG) & (lat <= top + 6 * RES_DEG) & (
            lat > top - h_deg - 6 * RES_DEG)
        taken |= far
        clearings.append({"left": left, "top": top, "width_deg": w_deg, "height_deg": h_deg, "region": int(regs[0])})

    def cleared_at(lo, la):
        out = np.zeros(np.broadcast(lo, la).shape, bool)
        for c in clearings:
            out |= (lo >= c["left"]) & (lo < c["left"] + c["width_deg"]) & (la <= c["top"]) & (la > c["top"] - c["height_deg"])
        return out

    cleared = cleared_at(lon, lat)
    forest2012 = forest & ~cleared

    # --- TanDEM-X-like DEM on the reference grid ---
    tdx_transform = Affine(RES_DEG, 0.0, LON0, 0.0, -RES_DEG, LAT0)
    tdx = ground(lon, lat) + np.where(forest2012, height, 0.0) + rng.normal(0.0, TANDEMX_NOISE_M, lon.shape)
    for r0, c0, rad in tdx_voids:
        tdx[np.hypot(rows - r0, cols - c0) <= rad] = TANDEMX_NODATA
    write_geotiff(world.tandemx_path, tdx.astype(np.float32), tdx_transform, "EPSG:4326", nodata=TANDEMX_NODATA,
                  tags={"vertical_datum": "WGS84 ellipsoid", "sample": "emissions_world TanDEM-X-like DEM"})

    # --- SRTM-like DEM on its own grid, year-2000 surface displaced by SHIFT_PX ---
    s_left = LON0 - (SRTM_MARGIN_PX - SRTM_GRID_OFFSET_PX[0]) * RES_DEG
    s_top = LAT0 + (SRTM_MARGIN_PX - SRTM_GRID_OFFSET_PX[1]) * RES_DEG
    s_size = SIZE_PX + 2 * SRTM_MARGIN_PX
    s_lon, s_lat = _grid_centres(s_left, s_top, s_size, s_size)
    src_lon = s_lon - SHIFT_PX[0] * RES_DEG  # value at q is the true surface at q - shift
    src_lat = s_lat - SHIFT_PX[1] * RES_DEG
    s_forest = forest2000(src_lon, src_lat)
    surface_2000 = ground(src_lon, src_lat) + np.where(s_forest, canopy_height(src_lon, src_lat) - PENETRATION_OFFSET_M, 0.0)
    srtm = surface_2000 - GEOID_UNDULATION_M + SRTM_BIAS_M + rng.normal(0.0, SRTM_NOISE_M, s_lon.shape)
    srtm = np.round(srtm)
    s_rows, s_cols = np.mgrid[0:s_size, 0:s_size]
    for r0, c0, rad in srtm_voids:  # placed at the same ground position as the TanDEM-X pixel (r0, c0)
        srtm[np.hypot(s_rows - (r0 + SRTM_MARGIN_PX - SRTM_GRID_OFFSET_PX[1]),
                      s_cols - (c0 + SRTM_MARGIN_PX - SRTM_GRID_OFFSET_PX[0])) <= rad] = SRTM_NODATA
    write_geotiff(world.srtm_path, srtm.astype(np.int16), Affine(RES_DEG, 0.0, s_left, 0.0, -RES_DEG, s_top), "EPSG:4326",
                  nodata=SRTM_NODATA, tags={"vertical_datum": "EGM96 geoid", "sample": "emissions_world SRTM-like DEM"})

    # --- forest height (start year), tree cover loss ---
    write_geotiff(world.forest_height_path, np.where(forest, height, 0.0).astype(np.float32), tdx_transform,
                  "EPSG:4326", nodata=None, tags={"units": "m", "meaning": "canopy height in 2000; 0 = not forest"})
    loss = cleared.copy()
    candidates = np.flatnonzero(forest2012.ravel() & ~near_void.ravel())
    loss.ravel()[rng.choice(candidates, N_FALSE_ALARMS, replace=False)] = True
    write_geotiff(world.tree_cover_loss_path, loss.astype(np.uint8), tdx_transform, "EPSG:4326", nodata=None,
                  tags={"meaning": "1 = tree cover loss between the DEM dates (clearings + false alarms)"})

    # --- regions (UTM 20S) ---
    pad = 0.02
    polys = [
        box(LON0 - pad, LAT0 - SIZE_PX * RES_DEG - pad, REGION_LON, LAT0 + pad),
        box(REGION_LON, REGION_LAT, LON0 + SIZE_PX * RES_DEG + pad, LAT0 + pad),
        box(REGION_LON, LAT0 - SIZE_PX * RES_DEG - pad, LON0 + SIZE_PX * RES_DEG + pad, REGION_LAT),
    ]
    regions = gpd.GeoDataFrame({"region_id": [1, 2, 3], "name": list(REGION_NAMES)}, geometry=polys, crs="EPSG:4326")
    regions.to_crs("EPSG:32720").to_file(world.regions_path, driver="GPKG", layer="regions")

    # --- GEDI-like allometry shots over remaining forest and short vegetation ---
    forest_idx = rng.choice(np.flatnonzero(forest2012.ravel()), N_SHOTS - 200, replace=False)
    h_shots = np.concatenate([height.ravel()[forest_idx], rng.uniform(1.0, 6.0, 200)])
    rh98 = np.clip(h_shots + rng.normal(0.0, 1.0, h_shots.size), 0.5, None)
    agbd = ALLOMETRY_A * h_shots**ALLOMETRY_B * np.exp(rng.normal(0.0, ALLOMETRY_SIGMA_LOG, h_shots.size) - ALLOMETRY_SIGMA_LOG**2 / 2)
    pd.DataFrame({
        "shot_number": np.arange(1, h_shots.size + 1, dtype=np.uint64),
        "rh98": rh98, "agbd": agbd, "true_height_m": h_shots,
    }).to_parquet(world.shots_path, index=False)

    # --- truth ---
    years = _years_between(SRTM_DATE, TANDEMX_DATE)
    areas_ha = np.asarray(pixel_areas_m2(tdx_transform, lon.shape, "EPSG:4326")) / M2_PER_HA
    agb_true = ALLOMETRY_A * height**ALLOMETRY_B
    carbon = agb_to_carbon(agb_true, None, include_bgb=False)  # above-ground carbon, Mg C/ha
    carbon_fraction = float(np.unique(carbon.carbon_fraction)[0])
    per_region = {}
    for k, name in enumerate(REGION_NAMES):
        m = cleared & (region == k)
        agb_mg = float(np.sum(agb_true[m] * areas_ha[m]))
        carbon_mg = float(np.sum(carbon.agc[m] * areas_ha[m]))
        per_region[name] = {
            "cleared_px": int(m.sum()),
            "cleared_area_ha": float(areas_ha[m].sum()),
            "mean_height_loss_m": float(height[m].mean()) if m.any() else 0.0,
            "agb_loss_mg": agb_mg,
            "carbon_loss_mg_c": carbon_mg,
            "emissions_tg_c_per_yr": carbon_mg / years / 1e6,
        }
    patches = []
    for i, c in enumerate(clearings):
        m = (lon >= c["left"]) & (lon < c["left"] + c["width_deg"]) & (lat <= c["top"]) & (lat > c["top"] - c["height_deg"])
        patches.append({
            "id": i + 1, "region": REGION_NAMES[c["region"]], "left_lon": c["left"], "top_lat": c["top"],
            "width_deg": c["width_deg"], "height_deg": c["height_deg"], "px": int(m.sum()),
            "area_ha": float(areas_ha[m].sum()), "mean_height_loss_m": float(height[m].mean()),
            "agb_loss_mg": float(np.sum(agb_true[m] * areas_ha[m])),
        })
    total_agb = sum(p["agb_loss_mg"] for p in per_region.values())
    total_carbon = sum(p["carbon_loss_mg_c"] for p in per_region.values())
    truth = {
        "version": VERSION,
        "seed": SEED,
        "grid": {"crs": "EPSG:4326", "left": LON0, "top": LAT0, "res_deg": RES_DEG, "size_px": SIZE_PX},
        "srtm_content_shift_px": {"east": SHIFT_PX[0], "north": SHIFT_PX[1]},
        "expected_coregistration": {
            "dx_px": -SHIFT_PX[0], "dy_px": -SHIFT_PX[1],
            "dz_m": GEOID_UNDULATION_M - SRTM_BIAS_M,
            "note": "shift to apply to the SRTM-like DEM to align it with the TanDEM-X-like DEM (px of TanDEM-X)",
        },
        "geoid_undulation_m": GEOID_UNDULATION_M,
        "srtm_bias_m": SRTM_BIAS_M,
        "penetration_offset_m": PENETRATION_OFFSET_M,
        "noise_m": {"srtm": SRTM_NOISE_M, "tandemx": TANDEMX_NOISE_M},
        "srtm_void_discs_px": srtm_voids,
        "tandemx_void_discs_px": tdx_voids,
        "carbon_fraction": carbon_fraction,
        "allometry": {"a": ALLOMETRY_A, "b": ALLOMETRY_B, "sigma_log": ALLOMETRY_SIGMA_LOG,
                      "formula": "agbd_mg_ha = a * height_m ** b (mean relation)"},
        "srtm_date": SRTM_DATE,
        "tandemx_date": TANDEMX_DATE,
        "years": years,
        "forest_2000_px": int(forest.sum()),
        "cleared_px": int(cleared.sum()),
        "cleared_area_ha": float(areas_ha[cleared].sum()),
        "agb_loss_mg": total_agb,
        "carbon_loss_mg_c": total_carbon,
        "emissions_tg_c_per_yr": total_carbon / years / 1e6,
        "regions": per_region,
        "clearings": patches,
        "false_alarm_loss_px": N_FALSE_ALARMS,
    }
    world.truth_path.write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")


__all__ = ["EmissionsWorld", "load_emissions_world", "default_cache_dir"]
