"""DEM handling for multi-date DEM differencing: grids, vertical datums, height change, penetration.

Used to turn two InSAR DEMs of different dates (SRTM, February 2000, C band; TanDEM-X, 2010-2015,
X band) into forest height loss:

1. :func:`read_raster` / :func:`warp_to_grid` bring both DEMs onto one grid (any CRS or tiling in;
   nodata and voids become NaN, counted, never filled);
2. :func:`convert_vertical_datum` brings them to one vertical datum (SRTM heights are EGM96
   orthometric, TanDEM-X heights are WGS84 ellipsoidal; Copernicus DEM heights are EGM2008). PROJ
   needs the geoid grid (``us_nga_egm96_15.tif``, ``us_nga_egm08_25.tif``) for that; offline it is
   usually absent, in which case the datum offset (the geoid undulation, which varies by only a
   few metres over a 1-degree tile) is left in the data and absorbed by the vertical bias of the
   co-registration (:mod:`terrain.coregister`), and the report says so;
3. after co-registration, :func:`estimate_penetration_offset` measures the C- vs X-band
   penetration difference as the median of (after - before) over stable, uncleared forest and
   :func:`forest_height_loss` adds it to the C-band heights of start-year forest before
   differencing.

Radar penetration: the InSAR phase centre lies inside the canopy, deeper at C band (5.6 cm) than
at X band (3.1 cm), so over unchanged forest TanDEM-X is higher than SRTM by a few metres, and a
clearing seen as ``SRTM - TanDEM-X`` underestimates the height lost by the C-band penetration.
References: Solberg, Astrup & Weydahl 2013, Remote Sensing 5:5449 (clear-cut detection from SRTM
and TanDEM-X DSM differences); Tanase et al. 2015, PLoS ONE 10:e0131079 (SRTM vs TanDEM-X forest
change, Indonesia and Australia). The offset varies with forest type and season, so it is
estimated from the data by default rather than taken as one literature constant.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from waveform.errors import DatumError, NoOverlapError, RasterError, SawaFileError, SawaValueError

#: Vertical datums understood by :func:`convert_vertical_datum` -> compound-CRS vertical EPSG code
#: (None: heights above the WGS84 ellipsoid, EPSG:4979).
VERTICAL_DATUMS: dict[str, int | None] = {
    "wgs84": None,  # ellipsoidal heights (TanDEM-X DEM, GEDI elevations)
    "egm96": 5773,  # EGM96 geoid heights (SRTM)
    "egm2008": 3855,  # EGM2008 geoid heights (Copernicus DEM)
}
#: Side of the blocks used to measure the spatial spread of stable-terrain differences (pixels).
DEFAULT_BLOCK_PX = 32
#: NMAD scale factor (normal consistency of the median absolute deviation).
NMAD_SCALE = 1.4826


@dataclass(frozen=True)
class Grid:
    """A raster grid: affine transform (pixel corner), CRS and shape."""

    transform: Affine
    crs: CRS
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        t = self.transform
        xs = [t.c, t.c + t.a * self.width]
        ys = [t.f, t.f + t.e * self.height]
        return (min(xs), min(ys), max(xs), max(ys))


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"raster {path} does not exist")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise SawaFileError(f"cannot open raster {path}: {exc}") from exc


def grid_of(path: str | os.PathLike) -> Grid:
    """The grid of a raster file (RasterError if it has no CRS or a rotated transform)."""
    with _open(path) as src:
        return _grid_from_dataset(src, path)


def _grid_from_dataset(src, path) -> Grid:
    if src.crs is None:
        raise RasterError(f"raster {path} has no CRS; cannot place it on a grid")
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise RasterError(f"raster {path} has a rotated geotransform {tuple(t)[:6]}; not supported")
    return Grid(transform=t, crs=src.crs, height=src.height, width=src.width)


def read_raster(path: str | os.PathLike, band: int = 1) -> tuple[np.ndarray, Grid]:
    """Read one band as float64 with nodata (and NaN) as NaN, and its grid."""
    with _open(path) as src:
        grid = _grid_from_dataset(src, path)
        if band < 1 or band > src.count:
            raise RasterError(f"raster {path} has {src.count} band(s); band {band} requested")
        data = src.read(band, masked=True)
    array = np.where(np.ma.getmaskarray(data), np.nan, np.asarray(data.data, dtype=np.float64))
    return array, grid


def check_overlap(grid_a: Grid, name_a: str, grid_b: Grid, name_b: str) -> float:
    """Fraction of ``grid_a``'s area covered by ``grid_b``; NoOverlapError when they do not meet."""
    left, bottom, right, top = grid_a.bounds
    try:
        b_left, b_bottom, b_right, b_top = transform_bounds(grid_b.crs, grid_a.crs, *grid_b.bounds, densify_pts=21)
    except Exception as exc:  # noqa: BLE001 - PROJ errors have many types
        raise NoOverlapError(f"cannot bring {name_b} bounds into the CRS of {name_a}: {exc}") from exc
    width = min(right, b_right) - max(left, b_left)
    height = min(top, b_top) - max(bottom, b_bottom)
    if width <= 0 or height <= 0:
        raise NoOverlapError(
            f"{name_b} (bounds {tuple(round(v, 6) for v in (b_left, b_bottom, b_right, b_top))} in the CRS of "
            f"{name_a}) does not overlap {name_a} (bounds {tuple(round(v, 6) for v in grid_a.bounds)})"
        )
    return float(width * height / ((right - left) * (top - bottom)))


def warp_to_grid(
    path: str | os.PathLike,
    grid: Grid,
    resampling: Resampling = Resampling.bilinear,
    band: int = 1,
    name: str | None = None,
    grid_name: str = "the target grid",
) -> np.ndarray:
    """Read ``path`` resampled onto ``grid`` (float64; NaN where nodata or outside the source).

    Raises NoOverlapError naming both rasters when they do not overlap.
    """
    name = name or str(path)
    with _open(path) as src:
        src_grid = _grid_from_dataset(src, path)
        check_overlap(grid, grid_name, src_grid, name)
        if band < 1 or band > src.count:
            raise RasterError(f"raster {path} has {src.count} band(s); band {band} requested")
        data = src.read(band, masked=True)
    source = np.where(np.ma.getmaskarray(data), np.nan, np.asarray(data.data, dtype=np.float64))
    if (
        src_grid.crs == grid.crs
        and src_grid.shape == grid.shape
        and all(math.isclose(a, b, rel_tol=0, abs_tol=1e-12) for a, b in zip(src_grid.transform[:6], grid.transform[:6], strict=True))
    ):
        return source
    out = np.full(grid.shape, np.nan, dtype=np.float64)
    reproject(
        source=source,
        destination=out,
        src_transform=src_grid.transform,
        src_crs=src_grid.crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
    )
    return out


# --- vertical datums ------------------------------------------------------------------
def _datum_key(datum: str) -> str:
    key = str(datum).strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    aliases = {"ellipsoid": "wgs84", "wgs84ellipsoid": "wgs84", "egm08": "egm2008", "epsg5773": "egm96", "epsg3855": "egm2008", "epsg4979": "wgs84"}
    key = aliases.get(key, key)
    if key not in VERTICAL_DATUMS:
        raise DatumError(f"unknown vertical datum {datum!r}; known: {', '.join(VERTICAL_DATUMS)}")
    return key


def _vertical_crs(datum_key: str) -> str:
    code = VERTICAL_DATUMS[datum_key]
    return "EPSG:4979" if code is None else f"EPSG:4326+{code}"


def geoid_grid_available(src_datum: str, dst_datum: str) -> bool:
    """Whether PROJ can convert heights between two datums with its best (grid-based) operation."""
    import warnings

    from pyproj.transformer import TransformerGroup

    a, b = _datum_key(src_datum), _datum_key(dst_datum)
    if a == b:
        return True
    with warnings.catch_warnings():  # pyproj warns when the best operation's grid is missing: that is the answer
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(_vertical_crs(a), _vertical_crs(b), always_xy=True)
    return bool(group.best_available and group.transformers)


@dataclass(frozen=True)
class DatumHandling:
    """How the vertical datums of two DEMs were reconciled (for reports)."""

    src_datum: str | None
    dst_datum: str | None
    method: str  # "same", "grid", "absorbed_in_vertical_bias", "unknown"
    note: str

    def to_dict(self) -> dict:
        return {"src_datum": self.src_datum, "dst_datum": self.dst_datum, "method": self.method, "note": self.note}


def convert_vertical_datum(
    heights_m: np.ndarray,
    grid: Grid,
    src_datum: str | None,
    dst_datum: str | None,
    strict: bool = False,
    name: str = "DEM",
) -> tuple[np.ndarray, DatumHandling]:
    """Convert heights on ``grid`` from ``src_datum`` to ``dst_datum``.

    With the PROJ geoid grid present, each pixel is converted. Without it: ``strict=True`` raises
    DatumError naming the DEM and both datums; otherwise the heights are returned unchanged and the
    handling says the (slowly varying, nearly constant over a tile) offset is left to the vertical
    bias of the co-registration. Unknown datums (None) are reported as such.
    """
    if src_datum is None or dst_datum is None:
        return heights_m, DatumHandling(src_datum, dst_datum, "unknown",
                                        f"vertical datum of {name} or of the reference not declared; any constant "
                                        "offset between them is absorbed in the vertical bias")
    a, b = _datum_key(src_datum), _datum_key(dst_datum)
    if a == b:
        return heights_m, DatumHandling(a, b, "same", f"{name} and reference share the {a} datum")
    if not geoid_grid_available(a, b):
        grids = "us_nga_egm96_15.tif" if "egm96" in (a, b) else "us_nga_egm08_25.tif"
        if strict:
            raise DatumError(
                f"{name} heights are {a} but the reference is {b}, and the PROJ geoid grid ({grids}) is not "
                f"installed (PROJ data dir has no such file, network off); install it or drop strict datum handling"
            )
        return heights_m, DatumHandling(
            a, b, "absorbed_in_vertical_bias",
            f"{name} heights are {a}, reference {b}; geoid grid {grids} not available to PROJ, so the geoid "
            "undulation (nearly constant over a tile) is absorbed in the vertical bias estimated on stable terrain",
        )
    from pyproj import Transformer

    transformer = Transformer.from_crs(_vertical_crs(a), _vertical_crs(b), always_xy=True, only_best=True)
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = rasterio.transform.xy(grid.transform, rows.ravel(), cols.ravel(), offset="center")
    lon, lat = np.asarray(xs), np.asarray(ys)
    if not grid.crs.is_geographic:
        from pyproj import Transformer as _T

        lon, lat = _T.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(lon, lat)
    valid = np.isfinite(heights_m.ravel())
    out = heights_m.astype(np.float64, copy=True).ravel()
    _, _, z = transformer.transform(lon[valid], lat[valid], out[valid])
    out[valid] = z
    return out.reshape(heights_m.shape), DatumHandling(a, b, "grid", f"{name} converted from {a} to {b} with the PROJ geoid grid")


# --- differencing and penetration ---------------------------------------------------------
def nmad(values: np.ndarray) -> float:
    """Normalised median absolute deviation of the finite values (NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(NMAD_SCALE * np.median(np.abs(v - np.median(v))))


def block_medians(values: np.ndarray, mask: np.ndarray, block_px: int = DEFAULT_BLOCK_PX, min_count: int = 16) -> np.ndarray:
    """Medians of ``values`` over ``mask`` in square blocks of ``block_px`` (blocks with < min_count skipped)."""
    if block_px <= 0:
        raise SawaValueError(f"block_px must be > 0, got {block_px}")
    rows, cols = values.shape
    out = []
    for r0 in range(0, rows, block_px):
        for c0 in range(0, cols, block_px):
            v = values[r0 : r0 + block_px, c0 : c0 + block_px]
            m = mask[r0 : r0 + block_px, c0 : c0 + block_px] & np.isfinite(v)
            if m.sum() >= min_count:
                out.append(float(np.median(v[m])))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class PenetrationEstimate:
    """C- vs X-band penetration difference: median of (X-band - C-band) height over stable forest."""

    offset_m: float
    standard_error_m: float  # of the tile-wide median, from the spread of block medians
    block_sd_m: float  # spatial spread of block medians (local departure from the tile value)
    n_px: int
    n_blocks: int
    source: str  # "estimated" or "given"

    def to_dict(self) -> dict:
        return {
            "offset_m": self.offset_m, "standard_error_m": self.standard_error_m, "block_sd_m": self.block_sd_m,
            "n_px": self.n_px, "n_blocks": self.n_blocks, "source": self.source,
        }


def estimate_penetration_offset(
    before_cband_m: np.ndarray,
    after_xband_m: np.ndarray,
    stable_forest: np.ndarray,
    block_px: int = DEFAULT_BLOCK_PX,
    min_px: int = 100,
) -> PenetrationEstimate:
    """Median of ``after - before`` over stable (uncleared) forest, with a block-based spread.

    Both DEMs must already be co-registered (shift and vertical bias removed on non-forest stable
    terrain). Forest growth between the dates is inseparable from the penetration difference here
    and is included in the estimate.
    """
    diff = after_xband_m - before_cband_m
    use = stable_forest & np.isfinite(diff)
    n = int(use.sum())
    if n < min_px:
        raise SawaValueError(
            f"only {n} stable forest pixels with both DEMs valid (need >= {min_px}) to estimate the "
            "C/X-band penetration offset; pass a penetration offset explicitly"
        )
    offset = float(np.median(diff[use]))
    blocks = block_medians(diff, use, block_px)
    if blocks.size >= 2:
        sd = float(np.std(blocks, ddof=1))
        se = sd / math.sqrt(blocks.size)
    else:
        sd = nmad(diff[use])
        se = sd / math.sqrt(n)
    return PenetrationEstimate(offset, se, sd, n, int(blocks.size), "estimated")


def forest_height_loss(
    before_cband_m: np.ndarray,
    after_xband_m: np.ndarray,
    forest_start: np.ndarray,
    penetration_offset_m: float,
) -> np.ndarray:
    """Height loss (m, positive = lower surface at the later date), penetration-corrected.

    ``loss = before + offset * forest_start - after``: the C-band surface of start-year forest is
    raised by the C/X penetration difference so both dates refer to the X-band phase centre.
    NaN where either DEM is void.
    """
    if before_cband_m.shape != after_xband_m.shape or forest_start.shape != before_cband_m.shape:
        raise SawaValueError(
            f"height-loss inputs differ in shape: before {before_cband_m.shape}, after {after_xband_m.shape}, "
            f"forest {forest_start.shape}"
        )
    return before_cband_m + penetration_offset_m * forest_start.astype(np.float64) - after_xband_m


__all__ = [
    "VERTICAL_DATUMS",
    "Grid",
    "grid_of",
    "read_raster",
    "check_overlap",
    "warp_to_grid",
    "geoid_grid_available",
    "DatumHandling",
    "convert_vertical_datum",
    "nmad",
    "block_medians",
    "PenetrationEstimate",
    "estimate_penetration_offset",
    "forest_height_loss",
]
