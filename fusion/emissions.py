"""Gross deforestation emissions from forest height lost between the SRTM and TanDEM-X DEMs.

Workflow (:func:`run_emissions`):

1. both DEMs on the TanDEM-X grid (SRTM warped bilinearly; voids stay voids and are counted);
2. one vertical datum: SRTM EGM96 -> WGS84 ellipsoid with the PROJ geoid grid when installed,
   otherwise the (tile-constant) geoid undulation is absorbed in the co-registration's vertical
   bias (strict mode raises DatumError instead);
3. Nuth & Kääb (2011) co-registration of SRTM to TanDEM-X on stable terrain = not start-year
   forest, not tree-cover loss, buffered by ``stable_buffer_px`` (:mod:`terrain.coregister`);
4. C- vs X-band penetration difference = median(TanDEM-X - SRTM) over stable, uncleared forest
   (or a given value), added to the SRTM heights of start-year forest (:mod:`terrain.difference`);
5. height loss = SRTM(corrected) - TanDEM-X; deforested pixels (the stated rule): start-year
   forest AND height loss > ``min_loss_m`` (5 m) AND, when a forest height raster is given,
   height loss > ``min_loss_fraction`` (0.5) x start height, AND tree-cover loss when that
   raster is given, in 8-connected patches of at least ``min_patch_ha`` (0.5 ha);
6. AGB loss (Mg/ha) = the height-AGB relation fitted on GEDI RH98/AGBD pairs
   (:func:`fit_height_agb`) applied to the height lost (a cleared pixel loses the biomass of a
   stand as tall as the height it lost);
7. above-ground carbon = :func:`fusion.carbon.agb_to_carbon` of the AGB loss (carbon fraction from the
   cited factor table, :class:`fusion.carbon.CarbonFactors`: IPCC 2006 default 0.47, or the row of
   ``ecological_zone``/``forest_type``; below-ground biomass is not counted); gross emissions
   (Tg C/yr) per region = sum(carbon loss x pixel area) / years between the DEM dates, with pixel
   areas on the ellipsoid from :func:`fusion.areas.pixel_areas_m2`;
8. uncertainty: Monte Carlo over the allometry coefficients (their fitted covariance), the
   penetration offset and the co-registration residual (both as a tile-wide error plus
   independent block-level departures, block size ``block_px``), with the deforested-pixel
   classification held fixed.

Outputs: ``emissions.csv`` (one row per region + a total row), ``height_loss.tif`` (m),
``agb_loss.tif`` (Mg/ha), ``emissions_map.png``, ``emissions_bar.png`` (with the cited published
rows of :data:`PUBLISHED_EMISSIONS`) and ``manifest.json``.

Slope and aspect for the co-registration come from :mod:`terrain.coregister`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from scipy import ndimage

from fusion.areas import pixel_areas_m2
from fusion.carbon import CarbonFactors, agb_to_carbon, default_factors
from fusion.constants import M2_PER_HA
from terrain.coregister import CoregistrationResult, coregister_grids
from terrain.difference import (
    DEFAULT_BLOCK_PX,
    DatumHandling,
    Grid,
    PenetrationEstimate,
    block_medians,
    convert_vertical_datum,
    estimate_penetration_offset,
    forest_height_loss,
    read_raster,
    warp_to_grid,
)
from terrain.rasters import write_geotiff
from waveform.errors import ModelError, NoOverlapError, SawaFileError, SawaValueError
from waveform.outputs import atomic_path, build_manifest, write_json_atomic

#: SRTM flew 11-22 February 2000; the middle of the mission.
SRTM_DATE = "2000-02-16"
#: Default TanDEM-X DEM epoch: middle of the global DEM acquisitions (December 2010 - January 2015,
#: Rizzoli et al. 2017, ISPRS J. Photogramm. 132:119-139), i.e. about 2013-01-01.
TANDEMX_DATE = "2013-01-01"
#: Deforestation rule defaults.
MIN_LOSS_M = 5.0
MIN_LOSS_FRACTION = 0.5
MIN_PATCH_HA = 0.5
#: FAO forest definition: trees taller than 5 m (FRA 2020 Terms and Definitions).
FOREST_MIN_HEIGHT_M = 5.0
#: Buffer (pixels) grown around forest and tree-cover loss before taking the rest as stable terrain,
#: and eroded from forest for the penetration estimate (mixed edge pixels, residual shifts).
STABLE_BUFFER_PX = 3
#: Monte Carlo draws: default and hard bound.
MC_DRAWS = 200
MAX_MC_DRAWS = 5000
#: Minimum valid shot pairs for a height-AGB fit.
MIN_ALLOMETRY_SHOTS = 10
#: Shot-table column aliases.
RH98_COLUMNS = ("rh98", "rh_98", "RH98", "rh98_m")
AGBD_COLUMNS = ("agbd", "agbd_mg_ha", "AGBD")

#: Published gross emission estimates for comparison (Tg C/yr). Values of Baccini 2017 and Harris
#: 2012 for Latin America are those stated in issue 8; the pan-tropical totals quoted in the
#: citations were checked against the papers' abstracts.
PUBLISHED_EMISSIONS: tuple[dict, ...] = (
    {
        "name": "Seed system (SRTM - TanDEM-X)",
        "value_tg_c_per_yr": 267.51,
        "period": "2000-2013",
        "region": "Latin America",
        "citation": "Seed value of this workflow stated in sawa issue 8 (not a peer-reviewed figure).",
    },
    {
        "name": "Baccini et al. 2017",
        "value_tg_c_per_yr": 519.78,
        "period": "2003-2014",
        "region": "Latin America",
        "citation": "Baccini, A. et al. (2017) Tropical forests are a net carbon source based on aboveground "
                    "measurements of gain and loss. Science 358(6360):230-234, doi:10.1126/science.aam5962. "
                    "Gross losses include degradation; pan-tropical losses 861.7 +/- 80.2 Tg C/yr.",
    },
    {
        "name": "Harris et al. 2012",
        "value_tg_c_per_yr": 438.0,
        "period": "2000-2005",
        "region": "Latin America",
        "citation": "Harris, N. L. et al. (2012) Baseline map of carbon emissions from deforestation in tropical "
                    "regions. Science 336(6088):1573-1576, doi:10.1126/science.1217962. Pan-tropical 0.81 Pg C/yr "
                    "(90% prediction interval 0.57-1.22).",
    },
)


# --- height -> AGB ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeightAgbFit:
    """``AGBD (Mg/ha) = cf * a * height_m ** b``, fitted by OLS of ln AGBD on ln RH98.

    ``cf = exp(rse_log**2 / 2)`` is Baskerville's (1972) correction of the log-space bias, so the
    relation predicts the mean (not the median) AGBD at a height. ``cov_log`` is the covariance of
    ``(ln a, b)``.
    """

    a: float
    b: float
    cov_log: np.ndarray
    rse_log: float
    n: int
    correction_factor: float

    def predict(self, height_m: np.ndarray) -> np.ndarray:
        h = np.clip(np.asarray(height_m, dtype=np.float64), 0.0, None)
        return self.correction_factor * self.a * h**self.b

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws of ``(ln a, b)`` from their fitted normal distribution."""
        return rng.multivariate_normal([math.log(self.a), self.b], self.cov_log, size=n)

    def to_dict(self) -> dict:
        return {
            "formula": "agbd_mg_ha = correction_factor * a * height_m ** b",
            "a": self.a, "b": self.b, "correction_factor": self.correction_factor,
            "rse_log": self.rse_log, "n": self.n, "cov_log_a_b": self.cov_log.tolist(),
        }


def fit_height_agb(rh98_m, agbd_mg_ha) -> HeightAgbFit:
    """Fit ``AGBD = a * RH98**b`` (log-log OLS with Baskerville correction) on shots with both > 0."""
    h = np.asarray(rh98_m, dtype=np.float64).ravel()
    y = np.asarray(agbd_mg_ha, dtype=np.float64).ravel()
    if h.shape != y.shape:
        raise ModelError(f"fit_height_agb: rh98 has {h.size} values but agbd has {y.size}")
    ok = np.isfinite(h) & np.isfinite(y) & (h > 0) & (y > 0)
    n = int(ok.sum())
    if n < MIN_ALLOMETRY_SHOTS:
        raise ModelError(
            f"fit_height_agb: {n} shots with finite rh98 > 0 and agbd > 0 (of {h.size}); need >= {MIN_ALLOMETRY_SHOTS}"
        )
    x = np.column_stack([np.ones(n), np.log(h[ok])])
    ly = np.log(y[ok])
    coef, *_ = np.linalg.lstsq(x, ly, rcond=None)
    resid = ly - x @ coef
    sigma2 = float(resid @ resid / (n - 2))
    cov = sigma2 * np.linalg.inv(x.T @ x)
    return HeightAgbFit(math.exp(coef[0]), float(coef[1]), cov, math.sqrt(sigma2), n, math.exp(sigma2 / 2.0))


def read_shots(path: str | os.PathLike) -> pd.DataFrame:
    """A GEDI-like shot table (Parquet or CSV) with columns rh98 (m) and agbd (Mg/ha), aliases accepted."""
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"shot table {path} does not exist")
    try:
        table = pd.read_csv(path) if path.suffix.lower() in (".csv", ".txt") else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise SawaFileError(f"cannot read shot table {path}: {exc}") from exc
    out = {}
    for target, aliases in (("rh98", RH98_COLUMNS), ("agbd", AGBD_COLUMNS)):
        found = next((c for c in aliases if c in table.columns), None)
        if found is None:
            raise SawaValueError(f"shot table {path} has no {target} column (looked for {', '.join(aliases)}); "
                                 f"columns: {', '.join(map(str, table.columns[:20]))}")
        out[target] = pd.to_numeric(table[found], errors="coerce")
    return pd.DataFrame(out)


# --- deforestation ------------------------------------------------------------------------------
def classify_deforestation(
    height_loss_m: np.ndarray,
    forest_start: np.ndarray,
    pixel_area_ha: np.ndarray,
    start_height_m: np.ndarray | None = None,
    tree_cover_loss: np.ndarray | None = None,
    min_loss_m: float = MIN_LOSS_M,
    min_loss_fraction: float = MIN_LOSS_FRACTION,
    min_patch_ha: float = MIN_PATCH_HA,
) -> tuple[np.ndarray, np.ndarray]:
    """Deforested pixels by the stated rule, and the candidates rejected as too-small patches.

    Rule: ``forest_start & loss > min_loss_m`` (& ``loss > min_loss_fraction * start height`` if
    given) (& ``tree_cover_loss`` if given), then 8-connected patches of >= ``min_patch_ha``.
    """
    loss = np.asarray(height_loss_m, dtype=np.float64)
    area = np.broadcast_to(np.asarray(pixel_area_ha, dtype=np.float64), loss.shape)
    candidate = np.asarray(forest_start, bool) & np.isfinite(loss) & (loss > min_loss_m)
    if start_height_m is not None:
        candidate &= loss > min_loss_fraction * np.nan_to_num(np.asarray(start_height_m, dtype=np.float64))
    if tree_cover_loss is not None:
        candidate &= np.asarray(tree_cover_loss, bool)
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    if n == 0:
        return candidate, np.zeros_like(candidate)
    patch_area = ndimage.sum_labels(area, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], patch_area >= min_patch_ha])
    deforested = keep[labels]
    return deforested, candidate & ~deforested


# --- areas and regions --------------------------------------------------------------------------
def pixel_areas_ha(grid: Grid) -> np.ndarray:
    """Area (ha) of every pixel of ``grid`` on its CRS's ellipsoid (:func:`fusion.areas.pixel_areas_m2`)."""
    return np.asarray(pixel_areas_m2(grid.transform, grid.shape, grid.crs)) / M2_PER_HA


_REGION_FIELDS = ("name", "NAME", "region", "REGION", "iso3", "ISO_A3", "ADM0_A3", "id")


def rasterize_regions(regions_path: str | os.PathLike, grid: Grid, region_field: str | None = None,
                      grid_name: str = "the DEM grid") -> tuple[np.ndarray, list[str], object]:
    """Region index raster (0 = outside, i = names[i-1]) on ``grid``, names, and the polygons in grid CRS."""
    import geopandas as gpd
    from rasterio.features import rasterize

    path = Path(regions_path)
    if not path.exists():
        raise SawaFileError(f"regions file {path} does not exist")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises many types
        raise SawaFileError(f"cannot read regions file {path}: {exc}") from exc
    if gdf.crs is None:
        raise SawaValueError(f"regions file {path} has no CRS")
    if len(gdf) == 0:
        raise SawaValueError(f"regions file {path} has no features")
    if region_field is None:
        region_field = next((c for c in _REGION_FIELDS if c in gdf.columns), None)
    elif region_field not in gdf.columns:
        raise SawaValueError(f"regions file {path} has no column {region_field!r}; columns: {', '.join(map(str, gdf.columns))}")
    names_col = gdf[region_field].astype(str) if region_field else pd.Series([f"region {i + 1}" for i in range(len(gdf))])
    gdf = gdf.to_crs(grid.crs)
    names = list(dict.fromkeys(names_col))
    code = {n: i + 1 for i, n in enumerate(names)}
    shapes = [(geom, code[n]) for geom, n in zip(gdf.geometry, names_col, strict=True) if geom is not None and not geom.is_empty]
    index = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="int32")
    if not index.any():
        raise NoOverlapError(f"no polygon of regions file {path} covers a pixel of {grid_name}")
    gdf = gdf.assign(_region=names_col.values)
    return index, names, gdf


def _loss_mask(values: np.ndarray, srtm_date: str, tandemx_date: str) -> tuple[np.ndarray, str]:
    """Tree-cover-loss raster -> mask. 0/1 rasters as is; Hansen ``lossyear`` codes (year - 2000) kept
    when the year lies between the DEM dates."""
    finite = np.isfinite(values)
    vmax = float(np.nanmax(values)) if finite.any() else 0.0
    if vmax <= 1:
        return finite & (values > 0), "binary (non-zero = loss)"
    y0, y1 = int(srtm_date[:4]), int(tandemx_date[:4])
    year = 2000 + values
    return finite & (values > 0) & (year >= y0) & (year <= y1), f"Hansen lossyear codes kept for {y0}-{y1}"


def years_between(start: str, end: str) -> float:
    """Years (365.25 d) between two ISO dates; SawaValueError if not increasing."""
    try:
        d0, d1 = _dt.date.fromisoformat(str(start)), _dt.date.fromisoformat(str(end))
    except ValueError as exc:
        raise SawaValueError(f"DEM dates must be ISO dates (YYYY-MM-DD): {start!r}, {end!r}") from exc
    years = (d1 - d0).days / 365.25
    if years <= 0:
        raise SawaValueError(f"TanDEM-X date {end} is not after the SRTM date {start}")
    return years


# --- the workflow -------------------------------------------------------------------------------
@dataclass
class EmissionsResult:
    """What :func:`run_emissions` wrote and measured."""

    table: pd.DataFrame
    coregistration: CoregistrationResult
    penetration: PenetrationEstimate
    allometry: HeightAgbFit
    datum: DatumHandling
    years: float
    paths: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> pd.Series:
        return self.table.loc[self.table["region"] == TOTAL_ROW].iloc[0]


TOTAL_ROW = "ALL REGIONS"


def run_emissions(
    srtm: str | os.PathLike,
    tandemx: str | os.PathLike,
    forest: str | os.PathLike,
    regions: str | os.PathLike,
    out_dir: str | os.PathLike,
    shots: str | os.PathLike | pd.DataFrame | None = None,
    allometry: HeightAgbFit | None = None,
    tree_cover_loss: str | os.PathLike | None = None,
    srtm_date: str = SRTM_DATE,
    tandemx_date: str = TANDEMX_DATE,
    srtm_datum: str | None = "egm96",
    tandemx_datum: str | None = "wgs84",
    strict_datum: bool = False,
    penetration_offset_m: float | None = None,
    penetration_sd_m: float = 1.0,
    min_loss_m: float = MIN_LOSS_M,
    min_loss_fraction: float = MIN_LOSS_FRACTION,
    min_patch_ha: float = MIN_PATCH_HA,
    forest_min_height_m: float = FOREST_MIN_HEIGHT_M,
    region_field: str | None = None,
    ecological_zone: str | None = None,
    forest_type: str | None = None,
    carbon_factors: CarbonFactors | None = None,
    n_draws: int = MC_DRAWS,
    seed: int = 0,
    block_px: int = DEFAULT_BLOCK_PX,
    stable_buffer_px: int = STABLE_BUFFER_PX,
    vertical: str = "median",
    plots: bool = True,
) -> EmissionsResult:
    """Gross deforestation emissions per region from SRTM and TanDEM-X DEMs (see the module doc).

    ``forest``: start-year forest mask (0/1) or canopy height (m; forest = height >=
    ``forest_min_height_m``). ``shots``: GEDI-like table (rh98, agbd) to fit the height-AGB relation,
    or pass a fitted ``allometry``. ``penetration_offset_m``: None = estimate over stable forest;
    a value = use it with standard deviation ``penetration_sd_m`` in the Monte Carlo.
    Carbon fraction: :func:`fusion.carbon.agb_to_carbon` with ``carbon_factors`` (default: the shipped
    IPCC table) for ``ecological_zone`` (a GEZ zone or climate domain; None = IPCC default 0.47) and
    ``forest_type``; only above-ground biomass is counted.
    """
    if allometry is None and shots is None:
        raise SawaValueError("run_emissions needs GEDI-like shots (rh98, agbd) or a fitted allometry")
    if not 1 <= n_draws <= MAX_MC_DRAWS:
        raise SawaValueError(f"n_draws must be in 1..{MAX_MC_DRAWS}, got {n_draws}")
    factors = carbon_factors or default_factors()
    cf_row = factors.carbon_fraction_row(ecological_zone, forest_type)  # fails early on an unknown zone
    years = years_between(srtm_date, tandemx_date)
    out = Path(out_dir)

    if allometry is None:
        table = shots if isinstance(shots, pd.DataFrame) else read_shots(shots)
        missing = [c for c in ("rh98", "agbd") if c not in table.columns]
        if missing:
            raise SawaValueError(f"shot table lacks column(s) {', '.join(missing)}")
        allometry = fit_height_agb(table["rh98"].to_numpy(), table["agbd"].to_numpy())

    # 1. grid and DEMs
    tdx, grid = read_raster(tandemx)
    tdx_name = f"TanDEM-X DEM {tandemx}"
    srtm_on = warp_to_grid(srtm, grid, Resampling.bilinear, name=f"SRTM DEM {srtm}", grid_name=tdx_name)
    srtm_void = ~np.isfinite(srtm_on)
    tdx_void = ~np.isfinite(tdx)
    # 2. datum
    srtm_on, datum = convert_vertical_datum(srtm_on, grid, srtm_datum, tandemx_datum, strict=strict_datum,
                                            name=f"SRTM DEM {srtm}")
    # forest, loss, regions
    forest_raw = warp_to_grid(forest, grid, Resampling.nearest, name=f"forest raster {forest}", grid_name=tdx_name)
    forest_valid = np.isfinite(forest_raw)
    values = forest_raw[forest_valid]
    is_mask = values.size > 0 and bool(np.all((values == 0) | (values == 1)))
    start_height = None if is_mask else np.where(forest_valid, forest_raw, np.nan)
    forest_start = forest_valid & ((forest_raw == 1) if is_mask else (forest_raw >= forest_min_height_m))
    loss_mask = None
    loss_rule = "none"
    if tree_cover_loss is not None:
        loss_raw = warp_to_grid(tree_cover_loss, grid, Resampling.nearest, name=f"tree cover loss {tree_cover_loss}",
                                grid_name=tdx_name)
        loss_mask, loss_rule = _loss_mask(loss_raw, srtm_date, tandemx_date)
    region_index, region_names, region_gdf = rasterize_regions(regions, grid, region_field, grid_name=tdx_name)

    # 3. co-registration on stable terrain
    disturbed = forest_start | (loss_mask if loss_mask is not None else False)
    if stable_buffer_px > 0:
        disturbed = ndimage.binary_dilation(disturbed, iterations=stable_buffer_px)
    stable = ~disturbed & forest_valid
    try:
        coreg = coregister_grids(tdx, srtm_on, grid, stable=stable, vertical=vertical)
    except SawaValueError as exc:
        raise SawaValueError(f"co-registering SRTM DEM {srtm} to TanDEM-X DEM {tandemx}: {exc}") from exc
    coreg.datum = datum
    coreg.ref_path, coreg.dem_path = str(tandemx), str(srtm)
    srtm_aligned = coreg.apply(srtm_on)

    # 4. penetration
    stable_forest = ndimage.binary_erosion(forest_start, iterations=stable_buffer_px) if stable_buffer_px else forest_start.copy()
    if loss_mask is not None:
        stable_forest &= ~ndimage.binary_dilation(loss_mask, iterations=max(stable_buffer_px, 1))
    if penetration_offset_m is None:
        penetration = estimate_penetration_offset(srtm_aligned, tdx, stable_forest, block_px)
    else:
        penetration = PenetrationEstimate(float(penetration_offset_m), float(penetration_sd_m), 0.0, 0, 0, "given")

    # 5. height loss and deforestation
    height_loss = forest_height_loss(srtm_aligned, tdx, forest_start, penetration.offset_m)
    areas_ha = pixel_areas_ha(grid)
    deforested, rejected = classify_deforestation(
        height_loss, forest_start, areas_ha, start_height, loss_mask, min_loss_m, min_loss_fraction, min_patch_ha)

    # 6-7. AGB and carbon
    agb_loss = np.where(deforested, allometry.predict(height_loss), 0.0)
    carbon = agb_to_carbon(agb_loss, ecological_zone, forest_type=forest_type, include_bgb=False, factors=factors)
    assessed = np.isfinite(height_loss) & forest_valid
    stable_dh = tdx - srtm_aligned
    coreg_blocks = block_medians(stable_dh, stable & np.isfinite(stable_dh), block_px)
    coreg_block_sd = float(np.std(coreg_blocks, ddof=1)) if coreg_blocks.size >= 2 else 0.0
    coreg_se = coreg_block_sd / math.sqrt(max(coreg_blocks.size, 1))

    table = _region_table(region_names, region_index, areas_ha, forest_start, assessed, srtm_void, tdx_void,
                          deforested, rejected, height_loss, agb_loss, carbon.agc, years)
    mc = _monte_carlo(
        height_loss, deforested, areas_ha, region_index, len(region_names), allometry, penetration,
        coreg_se, coreg_block_sd, block_px, carbon.carbon_fraction, years, n_draws, seed)
    for col, values_ in mc.items():
        table[col] = values_

    # outputs
    paths: dict[str, Path] = {}
    paths["emissions_csv"] = out / "emissions.csv"
    with atomic_path(paths["emissions_csv"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    nodata = -9999.0
    loss_out = np.where(assessed, height_loss, nodata).astype(np.float32)
    paths["height_loss_tif"] = write_geotiff(out / "height_loss.tif", loss_out, grid.transform, grid.crs, nodata=nodata,
                                             band_names=["height_loss_m"], tags={"units": "m", "penetration_offset_m": f"{penetration.offset_m:.3f}"})
    agb_out = np.where(assessed, agb_loss, nodata).astype(np.float32)
    paths["agb_loss_tif"] = write_geotiff(out / "agb_loss.tif", agb_out, grid.transform, grid.crs, nodata=nodata,
                                          band_names=["agb_loss_mg_ha"], tags={"units": "Mg/ha", "deforestation_rule": _rule_text(
                                              min_loss_m, min_loss_fraction, start_height is not None, loss_mask is not None, min_patch_ha)})
    if plots:
        paths["map_png"] = out / "emissions_map.png"
        _plot_map(paths["map_png"], grid, height_loss, agb_loss, forest_start, deforested, region_gdf)
        paths["bar_png"] = out / "emissions_bar.png"
        _plot_bars(paths["bar_png"], table, srtm_date, tandemx_date)

    counts = {
        "grid_px": int(grid.height * grid.width),
        "forest_start_px": int(forest_start.sum()),
        "stable_terrain_px": int(stable.sum()),
        "stable_forest_px": int(stable_forest.sum()),
        "srtm_void_px": int(srtm_void.sum()),
        "tandemx_void_px": int(tdx_void.sum()),
        "forest_not_assessed_px": int((forest_start & ~assessed).sum()),
        "deforested_px": int(deforested.sum()),
        "rejected_small_patch_px": int(rejected.sum()),
        "deforested_outside_regions_px": int((deforested & (region_index == 0)).sum()),
    }
    inputs = {"srtm": srtm, "tandemx": tandemx, "forest": forest, "regions": regions}
    if tree_cover_loss is not None:
        inputs["tree_cover_loss"] = tree_cover_loss
    if shots is not None and not isinstance(shots, pd.DataFrame):
        inputs["shots"] = shots
    parameters = {
        "srtm_date": srtm_date, "tandemx_date": tandemx_date, "years": years, "srtm_datum": srtm_datum,
        "tandemx_datum": tandemx_datum, "strict_datum": strict_datum, "penetration_offset_m": penetration_offset_m,
        "penetration_sd_m": penetration_sd_m, "min_loss_m": min_loss_m, "min_loss_fraction": min_loss_fraction,
        "min_patch_ha": min_patch_ha, "forest_min_height_m": forest_min_height_m, "forest_input": "mask" if is_mask else "height",
        "tree_cover_loss_rule": loss_rule, "region_field": region_field, "carbon_fraction": float(cf_row["value"]),
        "carbon_fraction_source": str(cf_row["citation"]), "carbon_factor_table": factors.source,
        "ecological_zone": ecological_zone, "forest_type": forest_type, "below_ground_biomass": "not counted",
        "n_draws": n_draws, "seed": seed, "block_px": block_px, "stable_buffer_px": stable_buffer_px, "vertical": vertical,
        "deforestation_rule": _rule_text(min_loss_m, min_loss_fraction, start_height is not None, loss_mask is not None, min_patch_ha),
    }
    extra = {
        "coregistration": coreg.to_dict(),
        "datum": datum.to_dict(),
        "penetration": penetration.to_dict(),
        "coregistration_residual": {"block_sd_m": coreg_block_sd, "standard_error_m": coreg_se, "n_blocks": int(coreg_blocks.size)},
        "allometry": allometry.to_dict(),
        "counts": counts,
        "published_comparison": list(PUBLISHED_EMISSIONS),
        "uncertainty_method": "Monte Carlo over allometry (ln a, b) covariance, penetration offset and co-registration "
                              "residual (tile-wide + independent block-level errors); classification held fixed",
    }
    paths["manifest"] = out / "manifest.json"
    write_json_atomic(paths["manifest"], build_manifest(inputs, parameters, {k: v for k, v in paths.items() if k != "manifest"}, extra))
    return EmissionsResult(table, coreg, penetration, allometry, datum, years, paths, counts)


def _rule_text(min_loss_m, min_loss_fraction, with_height, with_loss, min_patch_ha) -> str:
    parts = ["start-year forest", f"height loss > {min_loss_m:g} m"]
    if with_height:
        parts.append(f"height loss > {min_loss_fraction:g} x start height")
    if with_loss:
        parts.append("tree-cover loss between the DEM dates")
    return " AND ".join(parts) + f"; 8-connected patches >= {min_patch_ha:g} ha"


def _region_table(names, index, areas_ha, forest, assessed, srtm_void, tdx_void, deforested, rejected,
                  height_loss, agb_loss, carbon_loss, years) -> pd.DataFrame:
    """Per-region counts, areas (ha), AGB (Tg) and carbon (Tg C) lost; ``carbon_loss`` in Mg C/ha."""
    n = len(names)

    def per(mask, weights=None):
        w = None if weights is None else np.where(mask, weights, 0.0).ravel()
        counts = np.bincount(index.ravel(), weights=w if w is not None else mask.ravel().astype(np.float64), minlength=n + 1)
        return counts[1:]

    agb_mg = per(deforested, agb_loss * areas_ha)
    carbon_mg = per(deforested, carbon_loss * areas_ha)
    loss_sum = per(deforested, np.nan_to_num(height_loss))
    d_px = per(deforested)
    table = pd.DataFrame({
        "region": names,
        "forest_start_px": per(forest).astype(np.int64),
        "forest_start_area_ha": per(forest, areas_ha),
        "forest_not_assessed_px": per(forest & ~assessed).astype(np.int64),
        "srtm_void_px": per(srtm_void).astype(np.int64),
        "tandemx_void_px": per(tdx_void).astype(np.int64),
        "deforested_px": d_px.astype(np.int64),
        "deforested_area_ha": per(deforested, areas_ha),
        "rejected_small_patch_px": per(rejected).astype(np.int64),
        "mean_height_loss_m": np.divide(loss_sum, d_px, out=np.full(n, np.nan), where=d_px > 0),
        "agb_loss_tg": agb_mg / 1e6,
        "carbon_loss_tg_c": carbon_mg / 1e6,
        "emissions_tg_c_per_yr": carbon_mg / 1e6 / years,
    })
    total = {c: table[c].sum() for c in table.columns if c != "region"}
    total["region"] = TOTAL_ROW
    total["mean_height_loss_m"] = float(loss_sum.sum() / d_px.sum()) if d_px.sum() > 0 else float("nan")
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table["years"] = years
    return table


def _monte_carlo(height_loss, deforested, areas_ha, region_index, n_regions, allometry, penetration,
                 coreg_se, coreg_block_sd, block_px, carbon_fraction, years, n_draws, seed) -> dict[str, np.ndarray]:
    """Per-region (+ total) standard deviation and 5/95 percentiles of emissions (Tg C/yr).

    ``carbon_fraction``: per pixel (from :func:`fusion.carbon.agb_to_carbon`), held fixed.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(deforested)
    loss = height_loss[rows, cols]
    area = areas_ha[rows, cols]
    cf = carbon_fraction[rows, cols]
    reg = region_index[rows, cols]
    n_bc = math.ceil(deforested.shape[1] / block_px)
    block = (rows // block_px) * n_bc + cols // block_px
    _, block = np.unique(block, return_inverse=True)
    n_blocks = int(block.max()) + 1 if block.size else 0
    coefs = allometry.sample(rng, n_draws)
    draws = np.zeros((n_draws, n_regions + 1))
    for j in range(n_draws):
        offset = rng.normal(0.0, penetration.standard_error_m) + rng.normal(0.0, coreg_se)
        local = rng.normal(0.0, penetration.block_sd_m, n_blocks) + rng.normal(0.0, coreg_block_sd, n_blocks)
        lj = np.clip(loss + offset + (local[block] if n_blocks else 0.0), 0.0, None)
        agb = allometry.correction_factor * math.exp(coefs[j, 0]) * lj ** coefs[j, 1]
        e = np.bincount(reg, weights=agb * area * cf, minlength=n_regions + 1) / 1e6 / years
        draws[j, :n_regions] = e[1:]
        draws[j, n_regions] = e[1:].sum()
    return {
        "emissions_sd_tg_c_per_yr": draws.std(axis=0, ddof=1) if n_draws > 1 else np.zeros(n_regions + 1),
        "emissions_p05_tg_c_per_yr": np.percentile(draws, 5, axis=0),
        "emissions_p95_tg_c_per_yr": np.percentile(draws, 95, axis=0),
    }


# --- figures ------------------------------------------------------------------------------------
def _plot_map(path, grid, height_loss, agb_loss, forest, deforested, region_gdf) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    left, bottom, right, top = grid.bounds
    extent = (left, right, bottom, top)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), constrained_layout=True)
    shown = np.where(forest & np.isfinite(height_loss), height_loss, np.nan)
    im0 = axes[0].imshow(shown, extent=extent, cmap="RdYlBu_r", vmin=-10, vmax=40, interpolation="nearest")
    axes[0].set_title("Height loss SRTM - TanDEM-X, start-year forest (m)")
    fig.colorbar(im0, ax=axes[0], shrink=0.8, label="m")
    agb = np.where(deforested, agb_loss, np.nan)
    axes[1].imshow(np.where(forest, 0.0, np.nan), extent=extent, cmap="Greys", vmin=0, vmax=4, interpolation="nearest")
    im1 = axes[1].imshow(agb, extent=extent, cmap="inferno_r", interpolation="nearest")
    axes[1].set_title("AGB loss on deforested pixels (Mg/ha)")
    fig.colorbar(im1, ax=axes[1], shrink=0.8, label="Mg/ha")
    for ax in axes:
        region_gdf.boundary.plot(ax=ax, color="black", linewidth=0.8)
        for _, row in region_gdf.iterrows():
            p = row.geometry.representative_point()
            if left <= p.x <= right and bottom <= p.y <= top:
                ax.annotate(str(row["_region"]), (p.x, p.y), fontsize=8, ha="center")
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_xlabel(f"x ({grid.crs.to_string()})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plot_bars(path, table: pd.DataFrame, srtm_date: str, tandemx_date: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    val = table["emissions_tg_c_per_yr"].to_numpy()
    lo = val - table["emissions_p05_tg_c_per_yr"].to_numpy()
    hi = table["emissions_p95_tg_c_per_yr"].to_numpy() - val
    x = np.arange(len(table))
    colors = ["tab:green"] * (len(table) - 1) + ["tab:olive"]
    axes[0].bar(x, val, color=colors, yerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]), capsize=4)
    axes[0].set_xticks(x, table["region"], rotation=30, ha="right")
    axes[0].set_ylabel("Tg C / yr")
    axes[0].set_title(f"This run: gross emissions {srtm_date[:4]}-{tandemx_date[:4]} (5-95% Monte Carlo)")
    pub = PUBLISHED_EMISSIONS
    xp = np.arange(len(pub))
    axes[1].bar(xp, [p["value_tg_c_per_yr"] for p in pub], color=["tab:blue", "tab:gray", "tab:gray"])
    axes[1].set_xticks(xp, [f"{p['name']}\n{p['period']}" for p in pub], fontsize=8)
    axes[1].set_ylabel("Tg C / yr")
    axes[1].set_title("Published: Latin America gross emissions")
    for xi, p in zip(xp, pub, strict=True):
        axes[1].annotate(f"{p['value_tg_c_per_yr']:.2f}", (xi, p["value_tg_c_per_yr"]), ha="center", va="bottom", fontsize=8)
    fig.text(0.5, -0.02, "Baccini et al. 2017 Science 358:230; Harris et al. 2012 Science 336:1573; seed value: sawa issue 8",
             ha="center", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


__all__ = [
    "SRTM_DATE",
    "TANDEMX_DATE",
    "PUBLISHED_EMISSIONS",
    "HeightAgbFit",
    "fit_height_agb",
    "read_shots",
    "classify_deforestation",
    "pixel_areas_ha",
    "rasterize_regions",
    "years_between",
    "EmissionsResult",
    "run_emissions",
    "TOTAL_ROW",
]
