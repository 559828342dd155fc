"""Footprint AGBD -> grid cells with GEDI L4B-style hybrid inference (mean, SE, counts).

The estimator (Patterson et al. 2019; GEDI L4B ATBD, Healey, Patterson et al.)
---------------------------------------------------------------------------------
In a cell with ``n`` footprints on ``m`` ground tracks (clusters; track ``k`` holds ``n_k``
footprints whose predictions ``y_hat_i = g(x_i, beta_hat)`` sum to ``S_k``):

* mean (ratio estimator of clustered samples, the L4B "MU"):
  ``mu = sum_k S_k / sum_k n_k = (1/n) sum_i y_hat_i`` -- the mean of all footprints, each
  track weighted by its number of footprints (not the unweighted mean of track means).
* sampling variance (the L4B "V2" in mode of inference 1), the design-based variance of a ratio
  estimator under simple random sampling of clusters (Cochran 1977, eq. 6.48-6.49; Patterson et
  al. 2019): with ``n_bar = n / m``::

      V_samp = 1 / (m (m - 1)) * sum_k (n_k / n_bar)^2 (S_k / n_k - mu)^2
             = m / ((m - 1) n^2) * sum_k (S_k - n_k mu)^2

  Without track ids every footprint is its own cluster and this is ``s^2 / n`` (SRS).
  It needs ``m >= 2`` (``n >= 2`` without tracks); Patterson et al. (2019) found it
  under-estimates by ~20 % with 2 clusters. No finite-population correction (a 1 km cell holds
  ~1600 potential 25 m footprints; GEDI samples a few percent of them).
* model variance (the L4B "V1"): the delta-method variance of ``mu`` due to the footprint
  model's parameter estimates, shared by every footprint of the cell::

      V_mod = g_bar^T Cov(beta_hat) g_bar,   g_bar = (1/n) sum_i d g(x_i, beta) / d beta
            = (1/n^2) sum_i sum_j g_i^T Cov(beta_hat) g_j

  used when per-footprint gradients (``jacobians``, n x p) and ``vcov`` (p x p) are given.
  Several strata (models) are handled by :func:`stack_strata` (block layout, block-diagonal
  covariance: parameters of different models are independent).
  When only per-footprint model standard errors ``se_i = sqrt(g_i^T Cov g_i)`` are given
  (``agbd_se``), the cross terms are unknown; by Cauchy-Schwarz
  ``g_i^T Cov g_j <= se_i se_j``, so ``V_mod <= (mean_i se_i)^2``: the fully correlated
  bound, which we use (conservative; exact when all footprints share one gradient direction,
  as for footprints of one model in a homogeneous cell). Averaging ``se_i^2 / n`` instead would
  treat parameter errors as independent between footprints, which they are not (one
  ``beta_hat`` for all), and shrink V_mod ~n-fold. If ``agbd_se`` also contains residual
  (prediction) error, as GEDI L4A's ``agbd_se`` may, the bound is larger still; residual errors
  of the sampled footprints do not enter hybrid inference (they average out over the
  population), so pass model-parameter SEs where you have them.
* ``SE = sqrt(V_samp + V_mod)``. Cells with fewer than ``min_shots`` footprints or (with tracks)
  fewer than ``min_tracks`` tracks are nodata. With ``min_tracks=1`` single-track cells get a
  mean but no SE (nodata SE), as no between-cluster variance can be estimated.

Accumulation is vectorised (``np.bincount``, no Python loop per shot) and streams: per cell
the sums of ``y``, ``(y - shift)^2``, ``se`` and gradients, and per (cell, track) the count and
the sum of ``y`` (merged across chunks), so memory is bounded by the grid and the number of
occupied (cell, track) pairs, not by the number of shots (:func:`grid_shot_table` reads a
GeoParquet shot table row group batch by row group batch).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from affine import Affine
from pyproj import CRS, Transformer

from terrain.rasters import write_geotiff
from waveform.errors import NoOverlapError, SawaFileError, SawaValueError

from .constants import GEDI_L4B_CRS, GEDI_L4B_NODATA

log = logging.getLogger(__name__)

# --- constants ----------------------------------------------------------------------------------
#: Cell size (m) of the EASE-Grid 2.0 global 1 km grid (EPSG:6933) of GEDI L4B (NSIDC EASE-Grid
#: 2.0 definition, Brodzik et al. 2012, doi:10.3390/ijgi1010032; 34704 x 14616 cells). The grid
#: is centred on (0, 0), so snapping to multiples of this size from the origin gives L4B's cells.
EASE2_GLOBAL_1KM_RES_M = 1000.895023349556
#: Nodata of written grids (GEDI L4B convention, -9999).
GRID_NODATA = GEDI_L4B_NODATA
#: Default minimum footprints per cell (the audit configuration's ``[grid] min_shots``).
DEFAULT_MIN_SHOTS = 3
#: Default minimum ground tracks per cell when tracks are known: the between-track variance
#: needs two clusters, the smallest case studied by Patterson et al. (2019), who found the
#: variance ~20 % too small there.
DEFAULT_MIN_TRACKS = 2
#: Band order and names of written grids.
GRID_BANDS = ("agbd_mean_mg_ha", "agbd_se_mg_ha", "n_shots", "n_tracks", "var_model_mg2_ha2",
              "var_sampling_mg2_ha2")
#: Shot-table columns tried for footprint coordinates (lon, lat), in order.
LONLAT_COLUMNS = (("longitude", "latitude"), ("lon", "lat"), ("lon_lowestmode", "lat_lowestmode"))
#: Default shot-table columns whose combination identifies a ground track (orbit granule + beam).
DEFAULT_TRACK_COLUMNS = ("granule", "beam")
#: Rows read per batch when streaming a shot table.
DEFAULT_BATCH_ROWS = 200_000
#: Largest grid held in memory (cells): the accumulator keeps ~(5 + parameters) float64 per
#: cell and the written stack 6 float32, so 5e7 cells need ~3-4 GB. Tile larger areas.
MAX_GRID_CELLS = 50_000_000

_CITATION = ("Patterson et al. 2019, Environ. Res. Lett. 14 065007; GEDI L4B ATBD "
             "(Healey, Patterson, Dubayah et al.)")


# --- the grid -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridSpec:
    """A north-up raster grid: CRS, affine transform and shape (``height`` rows x ``width`` cols)."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", CRS.from_user_input(self.crs))
        t = Affine(*tuple(self.transform)[:6])
        object.__setattr__(self, "transform", t)
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise SawaValueError(f"grid transform {tuple(t)[:6]} is not north-up (a > 0, e < 0, no rotation)")
        if self.width <= 0 or self.height <= 0:
            raise SawaValueError(f"grid shape must be positive, got {self.height} x {self.width}")
        if self.width * self.height > MAX_GRID_CELLS:
            raise SawaValueError(
                f"grid of {self.height} x {self.width} cells exceeds {MAX_GRID_CELLS:,} cells; "
                f"use a coarser resolution or smaller bounds")

    # constructors
    @classmethod
    def from_bounds(cls, bounds: Sequence[float], res: float | tuple[float, float], crs: Any = "EPSG:4326",
                    origin: tuple[float, float] = (0.0, 0.0)) -> GridSpec:
        """Grid covering ``bounds`` = (west, south, east, north) in ``crs`` units, cells of ``res``.

        Edges snap outward to ``origin + k * res`` (like ``gdalwarp -tap``), so grids of one
        resolution built from different bounds share cell edges.
        """
        rx, ry = (float(res), float(res)) if np.isscalar(res) else (float(res[0]), float(res[1]))
        if not (rx > 0 and ry > 0 and math.isfinite(rx) and math.isfinite(ry)):
            raise SawaValueError(f"grid resolution must be positive and finite, got {res}")
        west, south, east, north = (float(v) for v in bounds)
        if not (east > west and north > south):
            raise SawaValueError(f"grid bounds {tuple(bounds)} are empty (need west < east, south < north)")
        ox, oy = origin
        # a small tolerance keeps bounds that already sit on the lattice from growing a cell
        eps = 1e-9
        i0 = math.floor((west - ox) / rx + eps)
        i1 = math.ceil((east - ox) / rx - eps)
        j0 = math.floor((south - oy) / ry + eps)
        j1 = math.ceil((north - oy) / ry - eps)
        width, height = max(i1 - i0, 1), max(j1 - j0, 1)
        return cls(crs, Affine(rx, 0.0, ox + _lattice(i0, rx), 0.0, -ry, oy + _lattice(j0 + height, ry)),
                   width, height)

    def __repr__(self) -> str:
        return (f"GridSpec(crs={self.crs.to_string()!r}, transform={tuple(self.transform)[:6]}, "
                f"width={self.width}, height={self.height})")

    @classmethod
    def geographic(cls, res_deg: float, bounds_lonlat: Sequence[float]) -> GridSpec:
        """EPSG:4326 grid of ``res_deg`` cells covering (west, south, east, north) degrees."""
        return cls.from_bounds(bounds_lonlat, res_deg, "EPSG:4326")

    @classmethod
    def equal_area(cls, res_m: float, bounds_lonlat: Sequence[float], crs: Any = GEDI_L4B_CRS) -> GridSpec:
        """Equal-area grid (default EPSG:6933, EASE-Grid 2.0 global) of ``res_m`` metre cells.

        ``bounds_lonlat`` (degrees) are transformed with densified edges. With
        ``res_m = EASE2_GLOBAL_1KM_RES_M`` the cells are those of GEDI L4B (see :meth:`gedi_l4b`).
        """
        target = CRS.from_user_input(crs)
        if target.is_geographic:
            raise SawaValueError(f"equal_area grid needs a projected CRS, got {target.to_string()}")
        tr = Transformer.from_crs("EPSG:4326", target, always_xy=True)
        west, south, east, north = tr.transform_bounds(*bounds_lonlat, densify_pts=21)
        return cls.from_bounds((west, south, east, north), res_m, target)

    @classmethod
    def gedi_l4b(cls, bounds_lonlat: Sequence[float]) -> GridSpec:
        """The cells of the GEDI L4B 1 km EASE-Grid 2.0 grid covering ``bounds_lonlat``."""
        return cls.equal_area(EASE2_GLOBAL_1KM_RES_M, bounds_lonlat, GEDI_L4B_CRS)

    @classmethod
    def like(cls, raster_path: str | os.PathLike) -> GridSpec:
        """The grid of an existing raster."""
        import rasterio

        path = Path(raster_path)
        if not path.is_file():
            raise SawaFileError(f"reference raster {path} does not exist")
        try:
            with rasterio.open(path) as ds:
                if ds.crs is None:
                    raise SawaFileError(f"reference raster {path} has no CRS")
                return cls(CRS.from_user_input(ds.crs), ds.transform, ds.width, ds.height)
        except rasterio.errors.RasterioIOError as exc:
            raise SawaFileError(f"cannot open reference raster {path}: {exc}") from exc

    # properties
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def res(self) -> tuple[float, float]:
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @property
    def is_lonlat(self) -> bool:
        """True when the grid CRS is geographic with longitude/latitude axes on WGS84-like datums."""
        return bool(self.crs.is_geographic)

    def window_transform(self, row_off: int, col_off: int) -> Affine:
        return self.transform * Affine.translation(col_off, row_off)

    def project_lonlat(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Footprint lon/lat (EPSG:4326, degrees) -> grid CRS coordinates."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        if self.crs.equals(CRS.from_epsg(4326)):
            return lon, lat
        tr = _transformer_from_4326(self.crs.to_wkt())
        x, y = tr.transform(lon, lat)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def cell_index(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index (row * width + col) of grid-CRS points; -1 outside (or NaN)."""
        t = self.transform
        col = np.floor((np.asarray(x, dtype=np.float64) - t.c) / t.a)
        row = np.floor((np.asarray(y, dtype=np.float64) - t.f) / t.e)
        inside = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        out = np.full(col.shape, -1, dtype=np.int64)
        out[inside] = row[inside].astype(np.int64) * self.width + col[inside].astype(np.int64)
        return out

    def cell_index_lonlat(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return self.cell_index(*self.project_lonlat(lon, lat))

    def as_dict(self) -> dict[str, Any]:
        return {"crs": self.crs.to_string(), "transform": list(tuple(self.transform)[:6]),
                "width": self.width, "height": self.height}


def _lattice(k: int, res: float) -> float:
    """``k * res``, exact for decimal resolutions such as 0.01 deg (k / 100, not k * 0.01)."""
    inv = 1.0 / res
    if abs(inv - round(inv)) < 1e-9 * inv:
        return k / round(inv)
    return k * res


_TRANSFORMERS: dict[str, Transformer] = {}


def _transformer_from_4326(wkt: str) -> Transformer:
    tr = _TRANSFORMERS.get(wkt)
    if tr is None:
        tr = Transformer.from_crs("EPSG:4326", CRS.from_wkt(wkt), always_xy=True)
        _TRANSFORMERS[wkt] = tr
    return tr


# --- strata helper ------------------------------------------------------------------------------
def stack_strata(jacobians: np.ndarray, stratum: np.ndarray, vcovs: Sequence[np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Block layout for several footprint models (strata) with independent parameters.

    ``jacobians`` (n, p): gradient of each footprint's prediction w.r.t. its own model's ``p``
    parameters; ``stratum`` (n,) ints in ``0..S-1``; ``vcovs``: S covariance matrices (p, p).
    Returns ``(J, V)`` with ``J`` (n, S*p) holding each row's gradient in its stratum's block and
    ``V`` the (S*p, S*p) block-diagonal covariance, for :func:`grid_footprints`.
    """
    jac = np.asarray(jacobians, dtype=np.float64)
    s = np.asarray(stratum)
    if jac.ndim != 2 or s.shape != (jac.shape[0],):
        raise SawaValueError(f"stack_strata: jacobians must be (n, p) and stratum (n,), got {jac.shape}, {s.shape}")
    n_strata = len(vcovs)
    p = jac.shape[1]
    if s.size and (s.min() < 0 or s.max() >= n_strata):
        raise SawaValueError(f"stack_strata: stratum ids must be in 0..{n_strata - 1}, got {s.min()}..{s.max()}")
    out = np.zeros((jac.shape[0], n_strata * p))
    rows = np.arange(jac.shape[0])
    for j in range(p):
        out[rows, s * p + j] = jac[:, j]
    big = np.zeros((n_strata * p, n_strata * p))
    for k, v in enumerate(vcovs):
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (p, p):
            raise SawaValueError(f"stack_strata: vcov of stratum {k} has shape {v.shape}, expected ({p}, {p})")
        big[k * p:(k + 1) * p, k * p:(k + 1) * p] = v
    return out, big


# --- result -------------------------------------------------------------------------------------
@dataclass
class GriddedAGB:
    """Gridded AGBD (Mg/ha) with hybrid-inference SE. Arrays are (height, width); NaN = not estimated.

    ``n_shots``/``n_tracks`` count every accepted footprint/track in the cell, also in cells
    below the minimums. ``n_tracks`` is 0 everywhere when no track ids were given.
    ``counts``: shots read, used, outside the grid, dropped for NaN AGBD/SE/gradient, by filter.
    """

    mean: np.ndarray
    se: np.ndarray
    n_shots: np.ndarray
    n_tracks: np.ndarray
    var_model: np.ndarray
    var_sampling: np.ndarray
    grid: GridSpec
    min_shots: int
    min_tracks: int | None
    model_variance: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def transform(self) -> Affine:
        return self.grid.transform

    @property
    def crs(self) -> CRS:
        return self.grid.crs

    @property
    def n_cells_estimated(self) -> int:
        return int(np.isfinite(self.mean).sum())

    def stack(self) -> np.ndarray:
        """The six bands (:data:`GRID_BANDS`) as a float32 (6, height, width) array, nodata filled."""
        bands = [self.mean, self.se, self.n_shots, self.n_tracks, self.var_model, self.var_sampling]
        arr = np.stack([np.asarray(b, dtype=np.float32) for b in bands])
        return np.where(np.isfinite(arr), arr, np.float32(GRID_NODATA))

    def write(self, path: str | os.PathLike, tags: dict[str, str] | None = None) -> Path:
        """Write a tiled, compressed GeoTIFF (bands :data:`GRID_BANDS`, nodata -9999), atomically."""
        all_tags = {
            "UNITS": "Mg/ha (bands 1-2), count (3-4), (Mg/ha)^2 (5-6)",
            "ESTIMATOR": "hybrid inference: mean of footprint predictions; SE^2 = V_model + V_sampling "
                         "(between-track ratio-estimator variance when tracks are known)",
            "MODEL_VARIANCE": self.model_variance,
            "MIN_SHOTS": str(self.min_shots),
            "MIN_TRACKS": str(self.min_tracks),
            "REFERENCE": _CITATION,
            **{f"COUNT_{k.upper()}": str(v) for k, v in self.counts.items()},
            **(tags or {}),
        }
        return write_geotiff(path, self.stack(), self.grid.transform, self.grid.crs.to_wkt(), nodata=GRID_NODATA,
                             band_names=list(GRID_BANDS), tags=all_tags)


# --- accumulation -------------------------------------------------------------------------------
class HybridAccumulator:
    """Streaming sums for :func:`grid_footprints`: call :meth:`add` per chunk, then :meth:`finish`.

    ``with_tracks``: chunks carry track ids (clusters). ``model_variance``: ``"gradient"``
    (chunks carry ``jacobians`` with ``n_params`` columns; :meth:`finish` needs ``vcov``),
    ``"se_bound"`` (chunks carry ``agbd_se``) or ``"none"`` (sampling variance only).
    """

    def __init__(self, grid: GridSpec, *, with_tracks: bool, model_variance: str = "none",
                 n_params: int | None = None) -> None:
        if model_variance not in ("gradient", "se_bound", "none"):
            raise SawaValueError(f"model_variance must be 'gradient', 'se_bound' or 'none', got {model_variance!r}")
        if model_variance == "gradient" and not n_params:
            raise SawaValueError("model_variance='gradient' needs n_params (columns of the jacobians)")
        self.grid = grid
        self.with_tracks = with_tracks
        self.model_variance = model_variance
        self.n_params = int(n_params or 0)
        ncell = grid.width * grid.height
        self.n = np.zeros(ncell, dtype=np.int64)
        self.sum_y = np.zeros(ncell)
        self.sum_dy2 = np.zeros(ncell)  # sum of (y - shift)^2, for the SRS variance
        self.sum_dy = np.zeros(ncell)
        self.shift: float | None = None
        self.sum_se = np.zeros(ncell) if model_variance == "se_bound" else None
        self.sum_grad = np.zeros((ncell, self.n_params)) if model_variance == "gradient" else None
        self._track_codes: dict[Any, int] = {}
        self.pair_key = np.zeros(0, dtype=np.int64)
        self.pair_n = np.zeros(0, dtype=np.int64)
        self.pair_sum = np.zeros(0)
        self.counts = {"read": 0, "used": 0, "outside_grid": 0, "nan_dropped": 0}

    def _codes(self, track_id: np.ndarray) -> np.ndarray:
        import pandas as pd

        local, uniques = pd.factorize(np.asarray(track_id), use_na_sentinel=True)
        if (local < 0).any():
            k = int(np.flatnonzero(local < 0)[0])
            raise SawaValueError(f"track_id is missing (None/NaN) for footprint {k} of this chunk")
        lut = np.empty(len(uniques), dtype=np.int64)
        for j, u in enumerate(uniques.tolist()):
            code = self._track_codes.get(u)
            if code is None:
                code = len(self._track_codes)
                self._track_codes[u] = code
            lut[j] = code
        if len(self._track_codes) >= 2**31:
            raise SawaValueError("more than 2^31 distinct track ids")
        return lut[local]

    def add(self, lon: np.ndarray, lat: np.ndarray, agbd: np.ndarray, agbd_se: np.ndarray | None = None,
            track_id: np.ndarray | None = None, jacobians: np.ndarray | None = None,
            *, projected: bool = False) -> None:
        """Add footprints (lon/lat degrees EPSG:4326, or grid-CRS x/y with ``projected=True``)."""
        x = np.asarray(lon, dtype=np.float64).ravel()
        y_coord = np.asarray(lat, dtype=np.float64).ravel()
        agbd = np.asarray(agbd, dtype=np.float64).ravel()
        n = agbd.shape[0]
        if x.shape != (n,) or y_coord.shape != (n,):
            raise SawaValueError(f"lon, lat and agbd must have one value per footprint: {x.shape}, "
                                 f"{y_coord.shape}, {agbd.shape}")
        if self.with_tracks and track_id is None:
            raise SawaValueError("this accumulator was created with tracks: track_id is required")
        if not self.with_tracks and track_id is not None:
            raise SawaValueError("this accumulator was created without tracks: track_id must be None")
        tid = None
        if track_id is not None:
            tid = np.asarray(track_id).ravel()
            if tid.shape != (n,):
                raise SawaValueError(f"track_id has shape {tid.shape}, expected ({n},)")
        valid = np.isfinite(agbd)
        se = None
        if self.model_variance == "se_bound":
            if agbd_se is None:
                raise SawaValueError("model_variance='se_bound' needs agbd_se")
            se = np.asarray(agbd_se, dtype=np.float64).ravel()
            if se.shape != (n,):
                raise SawaValueError(f"agbd_se has shape {se.shape}, expected ({n},)")
            bad = np.isfinite(se) & (se < 0)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise SawaValueError(f"agbd_se is negative ({se[k]:g} Mg/ha) for footprint {k}")
            valid &= np.isfinite(se)
        jac = None
        if self.model_variance == "gradient":
            if jacobians is None:
                raise SawaValueError("model_variance='gradient' needs jacobians")
            jac = np.asarray(jacobians, dtype=np.float64)
            if jac.shape != (n, self.n_params):
                raise SawaValueError(f"jacobians have shape {jac.shape}, expected ({n}, {self.n_params})")
            valid &= np.isfinite(jac).all(axis=1)
        if projected:
            cell = self.grid.cell_index(x, y_coord)
        else:
            cell = self.grid.cell_index_lonlat(x, y_coord)
        self.counts["read"] += n
        self.counts["nan_dropped"] += int((~valid).sum())
        outside = valid & (cell < 0)
        self.counts["outside_grid"] += int(outside.sum())
        keep = valid & (cell >= 0)
        if not keep.any():
            return
        c = cell[keep]
        yv = agbd[keep]
        if self.shift is None:
            self.shift = float(np.mean(yv))
        ncell = self.n.shape[0]
        self.counts["used"] += int(c.size)
        self.n += np.bincount(c, minlength=ncell)
        self.sum_y += np.bincount(c, weights=yv, minlength=ncell)
        d = yv - self.shift
        self.sum_dy += np.bincount(c, weights=d, minlength=ncell)
        self.sum_dy2 += np.bincount(c, weights=d * d, minlength=ncell)
        if se is not None:
            self.sum_se += np.bincount(c, weights=se[keep], minlength=ncell)
        if jac is not None:
            jk = jac[keep]
            for j in range(self.n_params):
                self.sum_grad[:, j] += np.bincount(c, weights=jk[:, j], minlength=ncell)
        if self.with_tracks:
            codes = self._codes(tid[keep])
            key = (c << 32) | codes
            keys = np.concatenate([self.pair_key, key])
            ns = np.concatenate([self.pair_n, np.ones(key.size, dtype=np.int64)])
            sums = np.concatenate([self.pair_sum, yv])
            uniq, inv = np.unique(keys, return_inverse=True)
            self.pair_key = uniq
            self.pair_n = np.bincount(inv, weights=ns, minlength=uniq.size).astype(np.int64)
            self.pair_sum = np.bincount(inv, weights=sums, minlength=uniq.size)

    def finish(self, min_shots: int = DEFAULT_MIN_SHOTS, min_tracks: int | None = None,
               vcov: np.ndarray | None = None) -> GriddedAGB:
        """Cell estimates from the accumulated sums (see the module docstring for the formulas)."""
        if min_shots < 1:
            raise SawaValueError(f"min_shots must be >= 1, got {min_shots}")
        if self.with_tracks:
            min_tracks = DEFAULT_MIN_TRACKS if min_tracks is None else int(min_tracks)
            if min_tracks < 1:
                raise SawaValueError(f"min_tracks must be >= 1, got {min_tracks}")
        elif min_tracks not in (None, 0, 1):
            raise SawaValueError(f"min_tracks={min_tracks} needs track ids (track_id), none were given")
        else:
            min_tracks = None
        if self.model_variance == "gradient":
            if vcov is None:
                raise SawaValueError("model_variance='gradient' needs vcov (parameter covariance matrix)")
            vcov = np.asarray(vcov, dtype=np.float64)
            if vcov.shape != (self.n_params, self.n_params):
                raise SawaValueError(f"vcov has shape {vcov.shape}, expected ({self.n_params}, {self.n_params})")
            if not np.allclose(vcov, vcov.T, rtol=1e-8, atol=1e-12 * max(1.0, float(np.abs(vcov).max()))):
                raise SawaValueError("vcov is not symmetric")
        elif vcov is not None:
            raise SawaValueError("vcov given without jacobians")

        h, w = self.grid.height, self.grid.width
        n = self.n
        nf = n.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, self.sum_y / nf, np.nan)
            if self.with_tracks:
                pair_cell = self.pair_key >> 32
                m = np.bincount(pair_cell, minlength=n.size)
                dev = self.pair_sum - self.pair_n * mean[pair_cell]
                ss = np.bincount(pair_cell, weights=dev * dev, minlength=n.size)
                mf = m.astype(np.float64)
                v_samp = np.where(m >= 2, mf / (mf - 1.0) * ss / (nf * nf), np.nan)
                enough = (n >= min_shots) & (m >= min_tracks)
            else:
                m = np.zeros_like(n)
                s2 = (self.sum_dy2 - self.sum_dy * self.sum_dy / nf) / (nf - 1.0)
                v_samp = np.where(n >= 2, np.maximum(s2, 0.0) / nf, np.nan)
                enough = n >= min_shots
            if self.model_variance == "gradient":
                gbar = self.sum_grad / np.where(n > 0, nf, 1.0)[:, None]
                v_mod = np.einsum("cp,pq,cq->c", gbar, vcov, gbar)
                if (v_mod < -1e-9 * np.maximum(np.abs(mean), 1.0) ** 2).any():
                    raise SawaValueError("vcov is not positive semi-definite: negative model variance")
                v_mod = np.maximum(v_mod, 0.0)
            elif self.model_variance == "se_bound":
                v_mod = (self.sum_se / np.where(n > 0, nf, 1.0)) ** 2
            else:
                v_mod = np.zeros(n.size)
        v_mod = np.where(n > 0, v_mod, np.nan)
        se = np.sqrt(v_samp + v_mod)
        mean = np.where(enough, mean, np.nan)
        se = np.where(enough, se, np.nan)
        v_mod = np.where(enough, v_mod, np.nan)
        v_samp = np.where(enough, v_samp, np.nan)
        method = {
            "gradient": "gradient: V_model = g_bar' Cov(beta) g_bar",
            "se_bound": "se_bound: V_model = mean(agbd_se)^2 (fully correlated upper bound)",
            "none": "none: sampling variance only (no model SE given)",
        }[self.model_variance]
        return GriddedAGB(
            mean=mean.reshape(h, w), se=se.reshape(h, w), n_shots=n.reshape(h, w).astype(np.int64),
            n_tracks=m.reshape(h, w).astype(np.int64), var_model=v_mod.reshape(h, w),
            var_sampling=v_samp.reshape(h, w), grid=self.grid, min_shots=int(min_shots), min_tracks=min_tracks,
            model_variance=method, counts=dict(self.counts),
        )


def grid_footprints(
    lon: np.ndarray,
    lat: np.ndarray,
    agbd: np.ndarray,
    agbd_se: np.ndarray | None = None,
    track_id: np.ndarray | None = None,
    grid: GridSpec | None = None,
    min_shots: int = DEFAULT_MIN_SHOTS,
    min_tracks: int | None = None,
    jacobians: np.ndarray | None = None,
    vcov: np.ndarray | None = None,
    *,
    projected: bool = False,
) -> GriddedAGB:
    """Grid footprint AGBD (Mg/ha) with hybrid inference (module docstring).

    ``lon``/``lat``: footprint centres (degrees, EPSG:4326; grid-CRS x/y with ``projected``).
    ``agbd_se``: per-footprint model SE (Mg/ha) -> fully correlated V_model bound; ignored when
    ``jacobians`` (n, p) and ``vcov`` (p, p) give the exact gradient form. ``track_id``: ground
    track of each footprint (e.g. granule + beam), the clusters of the sampling variance;
    ``min_tracks`` defaults to 2 with tracks. Footprints with NaN AGBD/SE/gradients are dropped and
    counted in ``result.counts``; those outside ``grid`` too.
    """
    if grid is None:
        raise SawaValueError("grid_footprints needs grid=GridSpec(...)")
    if (jacobians is None) != (vcov is None):
        raise SawaValueError("jacobians and vcov must be given together (gradient model variance)")
    if jacobians is not None:
        jac = np.asarray(jacobians, dtype=np.float64)
        if jac.ndim != 2:
            raise SawaValueError(f"jacobians must be (n, p), got shape {jac.shape}")
        acc = HybridAccumulator(grid, with_tracks=track_id is not None, model_variance="gradient",
                                n_params=jac.shape[1])
    else:
        acc = HybridAccumulator(grid, with_tracks=track_id is not None,
                                model_variance="se_bound" if agbd_se is not None else "none")
    acc.add(lon, lat, agbd, agbd_se=agbd_se if jacobians is None else None, track_id=track_id,
            jacobians=jacobians, projected=projected)
    if acc.counts["used"] == 0:
        raise NoOverlapError(
            f"no footprint falls in the grid {grid.bounds} ({grid.crs.to_string()}): "
            f"{acc.counts['read']} read, {acc.counts['outside_grid']} outside, {acc.counts['nan_dropped']} NaN")
    return acc.finish(min_shots=min_shots, min_tracks=min_tracks, vcov=vcov)


# --- shot tables --------------------------------------------------------------------------------
def _open_parquet(path: str | os.PathLike) -> pq.ParquetFile:
    p = Path(path)
    if not p.is_file():
        raise SawaFileError(f"shot table {p} does not exist")
    try:
        return pq.ParquetFile(p)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-parquet files
        raise SawaFileError(f"cannot read shot table {p} as Parquet: {exc}") from exc


def lonlat_columns(path: str | os.PathLike, names: Iterable[str]) -> tuple[str, str] | None:
    """The (lon, lat) column pair of a shot table (:data:`LONLAT_COLUMNS`), or None (use geometry)."""
    names = set(names)
    for lon_c, lat_c in LONLAT_COLUMNS:
        if lon_c in names and lat_c in names:
            return lon_c, lat_c
    if "geometry" in names:
        return None
    raise SawaValueError(f"shot table {path} has no longitude/latitude columns ({LONLAT_COLUMNS}) and no geometry")


def _batch_lonlat(batch, pair: tuple[str, str] | None) -> tuple[np.ndarray, np.ndarray]:
    if pair is not None:
        return (batch.column(pair[0]).to_numpy(zero_copy_only=False).astype(np.float64),
                batch.column(pair[1]).to_numpy(zero_copy_only=False).astype(np.float64))
    import shapely

    geoms = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
    return shapely.get_x(geoms), shapely.get_y(geoms)


def _track_keys(parts: list[np.ndarray]) -> np.ndarray:
    """One string key per row from several track columns (e.g. granule and beam)."""
    key = np.asarray(parts[0]).astype(str)
    for part in parts[1:]:
        key = np.char.add(np.char.add(key, "|"), np.asarray(part).astype(str))
    return key


def shot_table_bounds(path: str | os.PathLike, batch_rows: int = DEFAULT_BATCH_ROWS
                      ) -> tuple[float, float, float, float]:
    """(west, south, east, north) degrees of the footprints of a shot table (one streaming pass)."""
    pf = _open_parquet(path)
    pair = lonlat_columns(path, pf.schema_arrow.names)
    cols = list(pair) if pair else ["geometry"]
    w = s = math.inf
    e = n = -math.inf
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        lon, lat = _batch_lonlat(batch, pair)
        ok = np.isfinite(lon) & np.isfinite(lat)
        if ok.any():
            w, e = min(w, float(lon[ok].min())), max(e, float(lon[ok].max()))
            s, n = min(s, float(lat[ok].min())), max(n, float(lat[ok].max()))
    if not math.isfinite(w):
        raise SawaValueError(f"shot table {path} has no footprint with finite coordinates")
    return (w, s, e, n)


def grid_shot_table(
    path: str | os.PathLike,
    grid: GridSpec,
    *,
    agbd_column: str = "agbd",
    se_column: str | None = "agbd_se",
    track_columns: Sequence[str] | None = DEFAULT_TRACK_COLUMNS,
    quality_column: str | None = "quality",
    jacobian_columns: Sequence[str] | None = None,
    vcov: np.ndarray | None = None,
    min_shots: int = DEFAULT_MIN_SHOTS,
    min_tracks: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> GriddedAGB:
    """Grid a GeoParquet shot table, streaming ``batch_rows`` rows at a time (bounded memory).

    ``se_column``/``track_columns``/``quality_column`` set to None are not used;
    ``quality_column`` is used only when the table has it (rows with False are counted in
    ``counts['quality_dropped']``). Tracks are the distinct combinations of ``track_columns``.
    """
    pf = _open_parquet(path)
    names = pf.schema_arrow.names
    pair = lonlat_columns(path, names)
    needed = [agbd_column]
    if se_column and jacobian_columns is None:
        needed.append(se_column)
    if track_columns:
        needed.extend(track_columns)
    if jacobian_columns is not None:
        needed.extend(jacobian_columns)
    missing = [c for c in needed if c not in names]
    if missing:
        hint = ""
        if se_column in missing:
            hint += " (pass se_column=None / --se-column none to grid without model SE)"
        if track_columns and set(track_columns) & set(missing):
            hint += " (pass track_columns=None / --no-tracks to treat shots as independent)"
        raise SawaValueError(f"shot table {path} lacks column(s) {missing}{hint}")
    use_quality = bool(quality_column) and quality_column in names
    cols = list(dict.fromkeys(needed + (list(pair) if pair else ["geometry"])
                              + ([quality_column] if use_quality else [])))
    if jacobian_columns is not None:
        if vcov is None:
            raise SawaValueError("jacobian_columns given without vcov")
        mode, n_params = "gradient", len(jacobian_columns)
    else:
        mode, n_params = ("se_bound" if se_column else "none"), None
    acc = HybridAccumulator(grid, with_tracks=bool(track_columns), model_variance=mode, n_params=n_params)
    quality_dropped = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        lon, lat = _batch_lonlat(batch, pair)
        agbd = batch.column(agbd_column).to_numpy(zero_copy_only=False).astype(np.float64)
        keep = np.ones(agbd.shape[0], dtype=bool)
        if use_quality:
            q = batch.column(quality_column).to_numpy(zero_copy_only=False)
            keep = np.asarray(q, dtype=bool)
            quality_dropped += int((~keep).sum())
        se = jac = track = None
        if mode == "se_bound":
            se = batch.column(se_column).to_numpy(zero_copy_only=False).astype(np.float64)[keep]
        if mode == "gradient":
            jac = np.column_stack([batch.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                                   for c in jacobian_columns])[keep]
        if track_columns:
            track = _track_keys([batch.column(c).to_numpy(zero_copy_only=False) for c in track_columns])[keep]
        acc.add(lon[keep], lat[keep], agbd[keep], agbd_se=se, track_id=track, jacobians=jac)
    acc.counts["quality_dropped"] = quality_dropped
    acc.counts["read"] += quality_dropped
    if acc.counts["used"] == 0:
        raise NoOverlapError(
            f"no footprint of shot table {path} falls in the grid {grid.bounds} ({grid.crs.to_string()}): "
            f"{acc.counts}")
    return acc.finish(min_shots=min_shots, min_tracks=min_tracks, vcov=vcov)


__all__ = [
    "GridSpec",
    "GriddedAGB",
    "HybridAccumulator",
    "grid_footprints",
    "grid_shot_table",
    "shot_table_bounds",
    "stack_strata",
    "lonlat_columns",
    "EASE2_GLOBAL_1KM_RES_M",
    "GRID_BANDS",
    "GRID_NODATA",
    "DEFAULT_MIN_SHOTS",
    "DEFAULT_MIN_TRACKS",
]
