"""Zonal totals of an AGB map (Mg/ha) per country or user polygon, with uncertainty and carbon.

For each polygon, with ``c_i`` the fraction of pixel ``i`` inside the polygon (exact, from
exactextract), ``a_i`` the pixel's ellipsoidal area (ha, :mod:`fusion.areas`), ``x_i`` its AGB and
``s_i`` its standard error (Mg/ha):

* ``agb_pg = sum c_i a_i x_i / 1e9`` (pixels with nodata/NaN AGB are skipped);
* ``mapped_area_ha = sum c_i a_i`` over pixels with an AGB value ("forest area" when the map's
  nodata marks non-forest); ``agb_mean_mg_ha = agb / mapped_area``;
* ``raster_area_ha = sum c_i a_i`` over all pixels (incl. nodata): with ``polygon_area_ha``
  (geodesic, :func:`fusion.areas.geodesic_area_m2`) it gives ``coverage_fraction``;
* uncertainty, two bounding assumptions on the spatial correlation of pixel errors:
  ``agb_se_pg = sum c_i a_i s_i`` (errors fully correlated within the polygon: the conservative
  default, appropriate for model/allometry errors shared by neighbouring pixels) and
  ``agb_se_independent_pg = sqrt(sum c_i a_i^2 s_i^2)`` (independent pixel errors; for partial
  pixels ``c_i`` replaces ``c_i^2``, an upper bound);
* carbon per pixel with :func:`fusion.carbon.agb_to_carbon` (carbon fraction, root-to-shoot ratio
  by zone and AGB class), then summed the same way: ``agc_pg``, ``bgc_pg``, ``carbon_pg`` (AGC +
  BGC, or AGC alone when below-ground biomass is not included: see ``carbon_pools``) and their SEs.

Rasters are read by window through exactextract's feature-sequential processor
(``max_cells_in_memory`` cells at a time), so memory stays bounded on large maps. Polygons are
made valid (``shapely.make_valid``, recorded in the ``warnings`` column), densified and reprojected
to the raster CRS. Natural Earth admin-0 files are keyed by ISO 3166-1 alpha-3 with the fallback
``ISO_A3 -> ISO_A3_EH -> ADM0_A3`` (:func:`load_countries`).
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from exactextract import exact_extract
from exactextract.operation import Operation
from exactextract.raster import RasterSource
from pyproj import CRS
from rasterio.windows import Window

from waveform.errors import NoOverlapError, RasterError, SawaFileError, SawaValueError

from .areas import AreaKind, area_kind, densify, geodesic_area_m2, pixel_areas_m2
from .carbon import (
    CarbonFactors,
    agb_to_carbon,
    canonical_continent,
    canonical_origin,
    default_factors,
)
from .constants import (
    GEDI_LATITUDE_LIMIT_DEG,
    M2_PER_HA,
    MAX_CELLS_IN_MEMORY,
    MG_PER_PG,
    NATURAL_EARTH_ISO3_COLUMNS,
    NATURAL_EARTH_MISSING_CODE,
    NATURAL_EARTH_NON_ISO_CODES,
)

_ISO3_RE = re.compile(r"^[A-Z]{3}$")
#: Relative tolerance when checking that the AGB, SE and zone rasters share one grid.
_GRID_RTOL = 1e-9

SE_ASSUMPTION = (
    "agb_se_pg / carbon_se_pg: pixel errors fully correlated within each polygon (sum of pixel "
    "SE x area; conservative). *_se_independent_pg: independent pixel errors (root of the sum of "
    "squares)."
)


# --- raster inputs -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RasterArray:
    """An in-memory raster: a 2-D array with its affine transform, CRS and optional nodata."""

    array: np.ndarray
    transform: Affine
    crs: Any
    nodata: float | None = None

    def __post_init__(self) -> None:
        if np.ndim(self.array) != 2:
            raise SawaValueError(f"RasterArray needs a 2-D array, got shape {np.shape(self.array)}")


RasterInput = str | os.PathLike | RasterArray | tuple


class _Reader:
    """Reads windows of one band as float64 with NaN where the raster has no value."""

    def __init__(self, src: RasterInput, what: str, band: int = 1) -> None:
        self.what = what
        self._ds = None
        if isinstance(src, tuple):
            src = RasterArray(*src)
        if isinstance(src, RasterArray):
            self.label = f"<in-memory {what} array>"
            self.array = np.asarray(src.array)
            self.transform = Affine(*tuple(src.transform)[:6])
            self.crs = CRS.from_user_input(src.crs) if src.crs is not None else None
            self.nodata = src.nodata
            self.height, self.width = self.array.shape
        elif isinstance(src, (str, os.PathLike)):
            path = Path(src)
            self.label = str(path)
            if not path.is_file():
                raise SawaFileError(f"{what} raster {path} does not exist")
            try:
                self._ds = rasterio.open(path)
            except rasterio.errors.RasterioIOError as exc:
                raise SawaFileError(f"cannot open {what} raster {path}: {exc}") from exc
            if not 1 <= band <= self._ds.count:
                raise RasterError(f"{what} raster {path} has {self._ds.count} band(s); band {band} requested")
            self.band = band
            self.transform = self._ds.transform
            self.crs = CRS.from_user_input(self._ds.crs) if self._ds.crs is not None else None
            self.nodata = self._ds.nodatavals[band - 1]
            self.height, self.width = self._ds.height, self._ds.width
            self.scale = self._ds.scales[band - 1]
            self.offset = self._ds.offsets[band - 1]
        else:
            raise SawaValueError(
                f"{what}: expected a raster path, a RasterArray or an (array, transform, crs[, nodata]) "
                f"tuple, got {type(src).__name__}"
            )
        if self.crs is None:
            raise RasterError(f"{what} raster {self.label} has no CRS")
        t = self.transform
        if t.b != 0 or t.d != 0:
            raise RasterError(f"{what} raster {self.label} has a rotated transform; not supported")
        if t.e >= 0:
            raise RasterError(f"{what} raster {self.label} is not north-up (transform e = {t.e}); not supported")

    @property
    def extent(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    def read(self, x0: int, y0: int, nx: int, ny: int) -> np.ndarray:
        if self._ds is None:
            arr = np.asarray(self.array[y0:y0 + ny, x0:x0 + nx], dtype=np.float64)
            if self.nodata is not None and not np.isnan(self.nodata):
                arr = np.where(arr == self.nodata, np.nan, arr)
            return arr
        raw = self._ds.read(self.band, window=Window(x0, y0, nx, ny), masked=True)
        arr = raw.astype(np.float64).filled(np.nan)
        if self.scale not in (None, 1.0) or self.offset not in (None, 0.0):
            arr = arr * (self.scale or 1.0) + (self.offset or 0.0)
        return arr

    def same_grid(self, other: _Reader) -> bool:
        if (self.height, self.width) != (other.height, other.width):
            return False
        if not self.crs.equals(other.crs):
            return False
        a, b = np.array(tuple(self.transform)[:6]), np.array(tuple(other.transform)[:6])
        scale = max(abs(self.transform.a), abs(self.transform.e))
        return bool(np.all(np.abs(a - b) <= _GRID_RTOL * np.maximum(1.0, np.abs(a)) + 1e-6 * scale))

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


@dataclass(frozen=True)
class _CarbonSpec:
    zone: str | None
    forest_type: str | None
    include_bgb: bool
    factors: CarbonFactors
    continent: str | None = None
    origin: str | None = None


class _Blocks:
    """Per-window fields shared by all exactextract sources (one read per window)."""

    def __init__(self, agb: _Reader, se: _Reader | None, zone: _Reader | None,
                 carbon: _CarbonSpec, kind: AreaKind) -> None:
        self.agb, self.se, self.zone, self.carbon, self.kind = agb, se, zone, carbon, kind
        self._key: tuple[int, int, int, int] | None = None
        self._fields: dict[str, np.ndarray] = {}

    def get(self, x0: int, y0: int, nx: int, ny: int) -> dict[str, np.ndarray]:
        key = (int(x0), int(y0), int(nx), int(ny))
        if key == self._key:
            return self._fields
        x0, y0, nx, ny = key
        agb = self.agb.read(x0, y0, nx, ny)
        finite = np.isfinite(agb)
        agb = np.where(finite, agb, np.nan)  # +-inf pixels are nodata like NaN: never inf/NaN in a total
        if np.any(agb[finite] < 0):
            r, c = np.argwhere(finite & (agb < 0))[0]
            raise RasterError(
                f"AGB raster {self.agb.label}: negative value {agb[r, c]:g} Mg/ha at pixel "
                f"(row {y0 + r}, col {x0 + c})"
            )
        area_ha = np.array(pixel_areas_m2(self.agb.transform, (self.agb.height, self.agb.width), self.agb.crs,
                                          window=Window(x0, y0, nx, ny), kind=self.kind)) / M2_PER_HA
        f: dict[str, np.ndarray] = {
            "area_ha": area_ha,
            "one": np.ones_like(agb),
            "valid": np.where(finite, 1.0, np.nan),
            "agb": agb,
        }
        se = None
        if self.se is not None:
            se = self.se.read(x0, y0, nx, ny)
            se = np.where(finite & np.isfinite(se), se, np.nan)  # inf SE: missing (reported in warnings)
            f["se"] = se
            f["se_missing"] = np.where(finite & ~np.isfinite(se), 1.0, np.nan)
            f["agb_var_a"] = se * se * area_ha
        zone: str | np.ndarray | None = self.carbon.zone
        if self.zone is not None:
            codes = self.zone.read(x0, y0, nx, ny)
            missing = finite & ~np.isfinite(codes)
            if missing.any():
                r, c = np.argwhere(missing)[0]
                raise RasterError(
                    f"zone raster {self.zone.label} has no ecological zone code at pixel (row {y0 + r}, "
                    f"col {x0 + c}) where the AGB raster has a value ({int(missing.sum())} such pixels in this block)"
                )
            zone = np.where(finite, codes, 0).astype(np.int64)
        res = agb_to_carbon(agb, zone, forest_type=self.carbon.forest_type, include_bgb=self.carbon.include_bgb,
                            agb_se_mg_ha=se, factors=self.carbon.factors, continent=self.carbon.continent,
                            origin=self.carbon.origin)
        f["agc"] = res.agc
        f["bgc"] = res.bgc
        if se is not None:
            f["c_se"] = res.total_c_se
            f["c_var_a"] = res.total_c_se * res.total_c_se * area_ha
        self._key, self._fields = key, f
        return f


class _FieldSource(RasterSource):
    """An exactextract raster source serving one field of :class:`_Blocks`."""

    def __init__(self, blocks: _Blocks, field: str) -> None:
        super().__init__()
        self._blocks = blocks
        self._field = field
        self._reader = blocks.agb
        self.set_name(field)

    def res(self):
        t = self._reader.transform
        return (abs(t.a), abs(t.e))

    def extent(self):
        return self._reader.extent

    def srs_wkt(self):
        return self._reader.crs.to_wkt()

    def nodata_value(self):
        return None

    def read_window(self, x0, y0, nx, ny):
        return np.ascontiguousarray(self._blocks.get(x0, y0, nx, ny)[self._field], dtype=np.float64)


# --- polygons ----------------------------------------------------------------------------------
def _natural_earth_iso3(row: pd.Series) -> tuple[str, str]:
    for col in NATURAL_EARTH_ISO3_COLUMNS:
        if col in row.index:
            val = str(row[col]).strip()
            if val and val != NATURAL_EARTH_MISSING_CODE and val.lower() != "nan":
                return val, col
    raise SawaValueError(f"Natural Earth feature {row.get('NAME', '?')!r} has no code in {NATURAL_EARTH_ISO3_COLUMNS}")


def load_countries(path: str | os.PathLike, layer: str | None = None) -> gpd.GeoDataFrame:
    """Country polygons keyed by ISO 3166-1 alpha-3 (``iso3``), with ``name`` and ``iso3_source``.

    Natural Earth admin-0 files (``ISO_A3``/``ISO_A3_EH``/``ADM0_A3`` columns) get ``iso3`` from
    the first usable code (``ISO_A3`` is "-99" for France, Norway, ...); ``iso3_source`` names the
    column used and flags the Natural Earth codes that are not ISO 3166 (N. Cyprus CYN,
    Somaliland SOL, Kosovo KOS). Other files must already have ``iso3`` (and ideally ``name``).
    """
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"country polygons {path} do not exist")
    try:
        gdf = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as exc:  # pyogrio raises its own DataSourceError
        raise SawaFileError(f"cannot read country polygons {path}: {exc}") from exc
    if gdf.crs is None:
        raise SawaFileError(f"country polygons {path} have no CRS")
    if "iso3" in gdf.columns:
        out = gdf.copy()
        out["iso3_source"] = "iso3"
        if "name" not in out.columns:
            out["name"] = out["iso3"]
        return out
    if not any(c in gdf.columns for c in NATURAL_EARTH_ISO3_COLUMNS):
        raise SawaFileError(f"country polygons {path}: no 'iso3' column and no Natural Earth code columns {NATURAL_EARTH_ISO3_COLUMNS}")
    codes = [_natural_earth_iso3(r) for _, r in gdf.iterrows()]
    name_col = next((c for c in ("NAME_LONG", "NAME", "ADMIN") if c in gdf.columns), None)
    out = gpd.GeoDataFrame(
        {
            "iso3": [c for c, _ in codes],
            "name": gdf[name_col].astype(str).values if name_col else [c for c, _ in codes],
            "iso3_source": [
                f"{src} (Natural Earth code, not ISO 3166)" if code in NATURAL_EARTH_NON_ISO_CODES else src
                for code, src in codes
            ],
        },
        geometry=gdf.geometry.values,
        crs=gdf.crs,
    )
    return out


def _prepare_polygons(polygons, id_col: str, ids: Sequence[str] | None, name_col: str | None,
                      extra_cols: Sequence[str] = ()) -> tuple[gpd.GeoDataFrame, dict[str, list[str]]]:
    if isinstance(polygons, (str, os.PathLike)):
        gdf = load_countries(polygons) if id_col == "iso3" else gpd.read_file(polygons)
    elif isinstance(polygons, gpd.GeoDataFrame):
        gdf = polygons
        if id_col == "iso3" and "iso3" not in gdf.columns and any(c in gdf.columns for c in NATURAL_EARTH_ISO3_COLUMNS):
            codes = [_natural_earth_iso3(r)[0] for _, r in gdf.iterrows()]
            gdf = gdf.assign(iso3=codes)
    else:
        raise SawaValueError(f"polygons: expected a GeoDataFrame or a vector file path, got {type(polygons).__name__}")
    if gdf.crs is None:
        raise SawaValueError("polygons have no CRS")
    if id_col not in gdf.columns:
        raise SawaValueError(f"polygons have no id column {id_col!r}; columns: {list(gdf.columns)}")
    keep = [id_col] + [c for c in (name_col, *extra_cols) if c and c in gdf.columns and c != id_col]
    gdf = gdf[keep + [gdf.geometry.name]].copy()
    gdf = gdf.rename_geometry("geometry") if gdf.geometry.name != "geometry" else gdf
    notes: dict[str, list[str]] = {}
    # ids
    missing_id = gdf[id_col].isna() | (gdf[id_col].astype(str).str.strip() == "")
    if missing_id.any():
        raise SawaValueError(f"polygons: rows {list(gdf.index[missing_id])} have no {id_col!r}")
    gdf[id_col] = gdf[id_col].astype(str).str.strip()
    if id_col == "iso3":
        bad = gdf[~gdf[id_col].str.match(_ISO3_RE)]
        if len(bad):
            raise SawaValueError(
                f"polygons: {id_col!r} values {sorted(set(bad[id_col]))} are not ISO 3166-1 alpha-3 codes "
                "(Natural Earth files: use fusion.zonal.load_countries, which falls back to ISO_A3_EH/ADM0_A3)"
            )
    # geometries
    for i, row in gdf.iterrows():
        geom = row.geometry
        if geom is None or geom.is_empty:
            raise SawaValueError(f"polygon {row[id_col]!r} (row {i}) has an empty geometry")
        if geom.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            raise SawaValueError(f"polygon {row[id_col]!r} (row {i}) is a {geom.geom_type}, not a polygon")
        if not geom.is_valid:
            reason = shapely.is_valid_reason(geom)
            fixed = shapely.make_valid(geom)
            polys = shapely.get_parts(fixed)
            polys = [p for p in polys if p.geom_type in ("Polygon", "MultiPolygon")]
            fixed = shapely.union_all(polys) if polys else shapely.Polygon()
            if fixed.is_empty:
                raise SawaValueError(f"polygon {row[id_col]!r} (row {i}) is invalid ({reason}) and has no area once made valid")
            gdf.at[i, "geometry"] = fixed
            notes.setdefault(row[id_col], []).append(f"invalid geometry ({reason}) made valid")
    # duplicated ids -> dissolve
    dup = gdf[id_col].duplicated(keep=False)
    crs = gdf.crs
    if dup.any():
        for key, n in gdf.loc[dup, id_col].value_counts().items():
            notes.setdefault(key, []).append(f"{n} polygons with this id dissolved into one")
        first = gdf.drop_duplicates(id_col).set_index(id_col)
        merged = gdf.dissolve(by=id_col, as_index=True)
        merged = merged.drop(columns=[c for c in merged.columns if c != "geometry"])
        gdf = first.drop(columns="geometry").join(merged).reset_index()
        gdf = gpd.GeoDataFrame(gdf, geometry="geometry", crs=crs)
    # selection
    if ids is not None:
        wanted = [str(i).strip() for i in ids]
        have = set(gdf[id_col])
        unknown = [i for i in wanted if i not in have]
        if unknown:
            hints = {u: difflib.get_close_matches(u, sorted(have), n=3) for u in unknown}
            raise SawaValueError(f"unknown {id_col} value(s) {unknown} (not among the {len(have)} polygons; close: {hints})")
        gdf = gdf[gdf[id_col].isin(wanted)]
    return gdf.reset_index(drop=True), notes


# --- the totals --------------------------------------------------------------------------------
_SUM_FIELDS_BASE = ("one", "valid", "agb", "agc", "bgc")
_SUM_FIELDS_SE = ("se", "se_missing", "agb_var_a", "c_se", "c_var_a")


def _extract(blocks: _Blocks, gdf: gpd.GeoDataFrame, with_se: bool, max_cells: int) -> pd.DataFrame:
    area = _FieldSource(blocks, "area_ha")
    fields = list(_SUM_FIELDS_BASE) + (list(_SUM_FIELDS_SE) if with_se else [])
    sources = {f: _FieldSource(blocks, f) for f in fields}
    ops = [Operation("weighted_sum", f"{f}_ws", src, area) for f, src in sources.items()]
    ops.append(Operation("count", "valid_count", sources["valid"]))
    vec = gpd.GeoDataFrame({"_zid": np.arange(len(gdf))}, geometry=gdf.geometry.values, crs=gdf.crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = exact_extract(list(sources.values()), vec, ops, include_cols=["_zid"], output="pandas",
                            strategy="feature-sequential", max_cells_in_memory=int(max_cells))
    return res.set_index("_zid").sort_index()


def zonal_totals(
    values: RasterInput,
    polygons,
    id_col: str = "iso3",
    se_raster: RasterInput | None = None,
    *,
    name_col: str | None = "name",
    ids: Sequence[str] | None = None,
    zone: str | RasterInput | None = None,
    zone_col: str | None = None,
    forest_type: str | None = None,
    include_bgb: bool | None = None,
    factors: CarbonFactors | None = None,
    continent: str | None = None,
    origin: str | None = None,
    band: int = 1,
    max_cells_in_memory: int = MAX_CELLS_IN_MEMORY,
) -> pd.DataFrame:
    """AGB (and carbon) totals per polygon, in Pg, with uncertainty (see module docstring).

    ``values``: AGB raster (Mg/ha) as a GeoTIFF path (preferred for large rasters), a
    :class:`RasterArray` or an ``(array, transform, crs[, nodata])`` tuple; ``se_raster`` the same
    for its standard error (same grid). ``polygons``: GeoDataFrame or vector file (Natural Earth
    admin-0 files are keyed by ISO3 automatically); ``ids`` selects polygons (unknown ids raise).
    Carbon: ``zone`` is a GEZ zone name for all pixels or a raster of GEZ codes on the same grid;
    ``zone_col`` a polygon column with a zone name per polygon; without any zone the IPCC default
    carbon fraction applies and only above-ground carbon is counted (``include_bgb`` defaults to
    True when a zone is known, else False). ``continent``/``origin`` select root-to-shoot rows of a
    factor table that has them (see :mod:`fusion.carbon`; no effect with the shipped table).

    Returns one row per polygon: ``<id_col>, name, polygon_area_ha, raster_area_ha,
    mapped_area_ha, mapped_pixels, coverage_fraction, agb_pg, agb_mean_mg_ha, agb_se_pg,
    agb_se_independent_pg, agb_mean_se_mg_ha, agc_pg, bgc_pg, carbon_pg, carbon_se_pg,
    carbon_se_independent_pg, carbon_pools, zone, warnings`` (SE columns are NaN without an SE
    raster; ``attrs["se_assumption"]`` states the two SE assumptions).
    """
    agb = _Reader(values, "AGB", band=band)
    readers = [agb]
    try:
        se = _Reader(se_raster, "AGB standard error") if se_raster is not None else None
        zone_reader = None
        zone_name: str | None = None
        if isinstance(zone, (str, os.PathLike)) and Path(zone).is_file():
            zone_reader = _Reader(zone, "ecological zone")
        elif isinstance(zone, str):
            zone_name = zone
        elif zone is not None:
            zone_reader = _Reader(zone, "ecological zone")
        for r in (se, zone_reader):
            if r is not None:
                readers.append(r)
                if not r.same_grid(agb):
                    raise RasterError(f"{r.what} raster {r.label} is not on the grid of the AGB raster {agb.label}")
        factors = factors or default_factors()
        if zone_name is not None:
            factors.canonical_zone(zone_name)  # fail early on an unknown zone
        continent = canonical_continent(continent) if continent is not None else None
        origin = canonical_origin(origin) if origin is not None else None
        gdf, notes = _prepare_polygons(polygons, id_col, ids, name_col, extra_cols=[zone_col] if zone_col else [])
        if zone_col is not None and zone_col not in gdf.columns:
            raise SawaValueError(f"polygons have no zone column {zone_col!r}")
        known_zone = zone_reader is not None or zone_name is not None or zone_col is not None
        bgb = known_zone if include_bgb is None else bool(include_bgb)
        if bgb and not known_zone:
            raise SawaValueError("include_bgb=True needs an ecological zone: pass zone= or zone_col=")
        kind = area_kind(agb.crs, agb.transform, (agb.height, agb.width))
        # geodesic polygon areas in the polygons' own CRS (edges straight there), then reproject
        poly_area_ha = np.array([geodesic_area_m2(g, gdf.crs) for g in gdf.geometry]) / M2_PER_HA
        geoms = gpd.GeoSeries([densify(g, gdf.crs) for g in gdf.geometry], crs=gdf.crs).to_crs(agb.crs)
        for i, g in enumerate(geoms):
            if not g.is_valid:
                geoms.iloc[i] = shapely.make_valid(g)
                notes.setdefault(gdf[id_col].iloc[i], []).append("made valid after reprojection to the raster CRS")
        work = gpd.GeoDataFrame(gdf.drop(columns="geometry"), geometry=geoms.values, crs=agb.crs)
        groups: list[tuple[str | None, np.ndarray]]
        if zone_col is not None:
            groups = [(z, np.flatnonzero((work[zone_col] == z).values)) for z in work[zone_col].unique()]
        else:
            groups = [(zone_name, np.arange(len(work)))]
        parts = []
        for zname, idx in groups:
            spec = _CarbonSpec(zname, forest_type, bgb, factors, continent, origin)
            if zname is not None:   # fail before reading pixels: unknown zone, no R, no forest type
                factors.carbon_fraction(zname, forest_type)
                if bgb:
                    factors.root_shoot_rows(zname, forest_type, continent, origin)
            blocks = _Blocks(agb, se, zone_reader, spec, kind)
            raw = _extract(blocks, work.iloc[idx], se is not None, max_cells_in_memory)
            raw.index = idx
            parts.append(raw)
        raw = pd.concat(parts).sort_index()
    finally:
        for r in readers:
            r.close()
    return _assemble(gdf, raw, poly_area_ha, notes, id_col, name_col, se is not None, bgb,
                     zone_col=zone_col, zone_label=_zone_label(zone_name, zone_reader, zone_col), factors=factors)


def _zone_label(zone_name, zone_reader, zone_col) -> str:
    if zone_col is not None:
        return f"per polygon ({zone_col})"
    if zone_reader is not None:
        return f"GEZ code raster {zone_reader.label}"
    return zone_name or "none (IPCC default carbon fraction)"


def _assemble(gdf, raw, poly_area_ha, notes, id_col, name_col, with_se, bgb, zone_col, zone_label, factors) -> pd.DataFrame:
    ws = lambda f: raw[f"{f}_ws"].astype(float).to_numpy()  # noqa: E731
    out = pd.DataFrame({id_col: gdf[id_col].to_numpy()})
    if name_col and name_col in gdf.columns:
        out["name"] = gdf[name_col].astype(str).to_numpy()
    out["polygon_area_ha"] = poly_area_ha
    out["raster_area_ha"] = ws("one")
    out["mapped_area_ha"] = ws("valid")
    out["mapped_pixels"] = raw["valid_count"].astype(float).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["coverage_fraction"] = out["raster_area_ha"] / out["polygon_area_ha"]
        agb_mg = ws("agb")
        out["agb_pg"] = agb_mg / MG_PER_PG
        out["agb_mean_mg_ha"] = np.where(out["mapped_area_ha"] > 0, agb_mg / out["mapped_area_ha"], np.nan)
        if with_se:
            out["agb_se_pg"] = ws("se") / MG_PER_PG
            out["agb_se_independent_pg"] = np.sqrt(ws("agb_var_a")) / MG_PER_PG
            out["agb_mean_se_mg_ha"] = np.where(out["mapped_area_ha"] > 0, ws("se") / out["mapped_area_ha"], np.nan)
            se_missing_ha = ws("se_missing")
        else:
            out["agb_se_pg"] = np.nan
            out["agb_se_independent_pg"] = np.nan
            out["agb_mean_se_mg_ha"] = np.nan
            se_missing_ha = np.zeros(len(out))
        out["agc_pg"] = ws("agc") / MG_PER_PG
        out["bgc_pg"] = ws("bgc") / MG_PER_PG if bgb else np.nan
        out["carbon_pg"] = out["agc_pg"] + (out["bgc_pg"] if bgb else 0.0)
        out["carbon_se_pg"] = ws("c_se") / MG_PER_PG if with_se else np.nan
        out["carbon_se_independent_pg"] = np.sqrt(ws("c_var_a")) / MG_PER_PG if with_se else np.nan
    out["carbon_pools"] = "AGB+BGB" if bgb else "AGB"
    out["zone"] = gdf[zone_col].to_numpy() if zone_col else zone_label
    msgs = []
    for i, key in enumerate(out[id_col]):
        m = list(notes.get(key, []))
        if out["raster_area_ha"].iloc[i] <= 0:
            m.append("polygon does not overlap the raster")
        elif out["coverage_fraction"].iloc[i] < 0.999:
            m.append(f"raster covers {100 * out['coverage_fraction'].iloc[i]:.1f}% of the polygon")
        if se_missing_ha[i] > 0:
            m.append(f"{se_missing_ha[i]:.4g} ha with AGB but no SE (counted with SE 0)")
        msgs.append("; ".join(m))
    out["warnings"] = msgs
    out.attrs["se_assumption"] = SE_ASSUMPTION
    out.attrs["carbon_factors"] = factors.source
    return out


def latitude_band_total(
    values: RasterInput,
    south_deg: float = -GEDI_LATITUDE_LIMIT_DEG,
    north_deg: float = GEDI_LATITUDE_LIMIT_DEG,
    se_raster: RasterInput | None = None,
    **kwargs,
) -> pd.Series:
    """Totals (as :func:`zonal_totals`) of the part of the raster between two latitudes.

    Default: the GEDI band 51.6 S - 51.6 N. Returns one row (a Series) with ``region`` =
    "lat[-51.6,51.6]". Keyword arguments go to :func:`zonal_totals` (zone, forest_type, ...).
    """
    if not -90.0 <= south_deg < north_deg <= 90.0:
        raise SawaValueError(f"latitude band needs -90 <= south < north <= 90, got {south_deg}, {north_deg}")
    reader = _Reader(values, "AGB")
    try:
        crs, (west, south_r, east, north_r) = reader.crs, reader.extent
    finally:
        reader.close()
    region = f"lat[{south_deg:g},{north_deg:g}]"
    if crs.is_geographic:
        band = shapely.box(west, max(south_deg, south_r), east, min(north_deg, north_r))
        if south_deg >= north_r or north_deg <= south_r:
            raise NoOverlapError(f"latitude band {region} does not overlap the raster (latitudes {south_r:g}..{north_r:g})")
        band_crs = crs
    else:
        eps = 1e-9
        band = densify(shapely.box(-180.0 + eps, south_deg, 180.0 - eps, north_deg), "EPSG:4326")
        band = gpd.GeoSeries([band], crs="EPSG:4326").to_crs(crs).iloc[0]
        band = shapely.make_valid(band).intersection(shapely.box(west, south_r, east, north_r))
        if band.is_empty:
            raise NoOverlapError(f"latitude band {region} does not overlap the raster")
        band_crs = crs
    gdf = gpd.GeoDataFrame({"region": [region]}, geometry=[band], crs=band_crs)
    res = zonal_totals(values, gdf, id_col="region", se_raster=se_raster, name_col=None, **kwargs)
    return res.iloc[0]


__all__ = [
    "RasterArray",
    "SE_ASSUMPTION",
    "latitude_band_total",
    "load_countries",
    "zonal_totals",
]
