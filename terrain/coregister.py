"""DEM-to-DEM co-registration after Nuth & Kääb (2011).

Nuth, C. and Kääb, A.: Co-registration and bias corrections of satellite elevation data sets for
quantifying glacier thickness change, The Cryosphere 5, 271-290, 2011 (doi:10.5194/tc-5-271-2011).

Model. If a DEM is the reference surface displaced horizontally by ``s = (s_east, s_north)`` (m)
and vertically by ``b``, ``DEM(p) = REF(p - s) + b``, then to first order the difference
``dh = DEM - REF = -s . grad(REF) + b``. With terrain slope ``alpha`` and aspect ``psi`` (direction
of steepest *descent*, clockwise from north, so ``grad(REF) = -tan(alpha) (sin psi, cos psi)``)::

    dh / tan(alpha) = s_east sin(psi) + s_north cos(psi) + c = |s| cos(psi - theta_s) + c

(Nuth & Kääb's eq. 3, ``a cos(b - psi) + c``, with ``a = |s|`` and ``b`` the direction of ``s``).
The fit is linear in ``(s_east, s_north, c)``. As in the paper, ``dh / tan(alpha)`` is summarised
by its median in aspect bins (after a per-bin 3-NMAD outlier clip) and the bin medians are fitted
(weighted by bin counts); the DEM is resampled by the opposite shift and the fit repeated until
the shift update is below a tolerance. The vertical bias is then the median of ``REF - DEM`` on
stable terrain (or a robust plane, for long tiles or a datum offset that tilts).

Conventions of the result: ``dx`` is positive east, ``dy`` positive north; ``(dx, dy, dz)`` is the
shift *to apply to DEM* to align it with REF: ``aligned(p) = DEM(p - (dx, dy)) + dz``. Pixels are
REF's pixels; metres are geodesic pixel sizes at the centre of the fitted area.

Slope and aspect: Horn (1981) 3x3 gradients with geodesic pixel sizes per row. This module uses
its own implementation (:func:`horn_slope_aspect`); ``terrain/slope.py`` (another engineer's Horn
implementation with the same definition) should replace it once it is in the package.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from waveform.errors import SawaValueError

from . import slope as _slope
from .difference import (
    DatumHandling,
    Grid,
    convert_vertical_datum,
    nmad,
    read_raster,
    warp_to_grid,
)

#: Stop iterating when the shift update is below this (pixels of REF).
DEFAULT_TOLERANCE_PX = 0.005
#: Maximum Nuth & Kääb iterations.
DEFAULT_MAX_ITERATIONS = 15
#: Slopes used in the fit (degrees): below, dh/tan(slope) is noise-dominated; above, radar layover.
MIN_FIT_SLOPE_DEG = 5.0
MAX_FIT_SLOPE_DEG = 60.0
#: Number of aspect bins over 360 degrees (Nuth & Kääb summarise dh/tan(slope) per aspect bin).
ASPECT_BINS = 36
#: Minimum pixels in an aspect bin for its median to enter the fit, and minimum bins filled.
MIN_BIN_PX = 30
MIN_FILLED_BINS = 18
#: Per-bin and global outlier clips, in NMADs.
BIN_CLIP_NMAD = 3.0
GLOBAL_CLIP_NMAD = 5.0
#: Minimum stable pixels with both DEMs valid for a co-registration.
MIN_STABLE_PX = 500
#: Nodata written in aligned DEM GeoTIFFs (float32).
ALIGNED_NODATA = -32768.0


# --- geometry --------------------------------------------------------------------------------
def pixel_size_m(transform, crs, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic pixel width and height (m) for each row of a north-up grid.

    Geographic CRS: lengths on the CRS ellipsoid between the pixel's edge midpoints (width along
    the row's central parallel, height along a meridian). Projected CRS: the transform's pixel
    size times the CRS linear unit (grid metres, not corrected for projection scale).
    """
    from pyproj import CRS as _CRS

    pcrs = _CRS.from_user_input(crs)
    rows = np.arange(height, dtype=np.float64)
    if pcrs.is_geographic:
        geod = pcrs.get_geod()
        lat = transform.f + transform.e * (rows + 0.5)
        lon0 = np.full_like(lat, transform.c)
        half_a = abs(transform.a) / 2.0
        half_e = abs(transform.e) / 2.0
        _, _, width = geod.inv(lon0 - half_a, lat, lon0 + half_a, lat)
        _, _, heightm = geod.inv(lon0, lat - half_e, lon0, lat + half_e)
        return np.asarray(width, dtype=np.float64), np.asarray(heightm, dtype=np.float64)
    unit = 1.0
    axis = pcrs.axis_info[0] if pcrs.axis_info else None
    if axis is not None and axis.unit_conversion_factor:
        unit = float(axis.unit_conversion_factor)
    return (np.full(height, abs(transform.a) * unit), np.full(height, abs(transform.e) * unit))


def horn_gradient(dem_m: np.ndarray, pixel_width_m, pixel_height_m) -> tuple[np.ndarray, np.ndarray]:
    """Horn (1981) 3x3 gradient ``(dz/d_east, dz/d_north)`` (m/m); NaN on edges and near voids.

    ``pixel_width_m``/``pixel_height_m``: scalars or one value per row (geodesic sizes).
    Row 0 is the northern edge.
    """
    z = np.asarray(dem_m, dtype=np.float64)
    if z.ndim != 2:
        raise SawaValueError(f"horn_gradient: DEM must be 2-D, got shape {z.shape}")
    rows = z.shape[0]
    w = np.broadcast_to(np.asarray(pixel_width_m, dtype=np.float64).reshape(-1), (rows,))
    h = np.broadcast_to(np.asarray(pixel_height_m, dtype=np.float64).reshape(-1), (rows,))
    # the shared Horn kernel of terrain.slope takes distances between centres two pixels apart
    return _slope.horn_gradient(z, 2.0 * w, 2.0 * h, compute_edges=False)


def horn_slope_aspect(dem_m: np.ndarray, pixel_width_m, pixel_height_m) -> tuple[np.ndarray, np.ndarray]:
    """Slope (radians) and aspect (radians, direction of steepest descent clockwise from north, [0, 2pi))."""
    s, a = _slope.slope_aspect_from_gradient(*horn_gradient(dem_m, pixel_width_m, pixel_height_m))
    return np.radians(s), np.radians(a)


def apply_shift(dem_m: np.ndarray, dx_px: float, dy_px: float, dz_m: float = 0.0, order: int = 1) -> np.ndarray:
    """Translate a DEM by ``(dx_px east, dy_px north)`` pixels and add ``dz_m``: ``out(p) = dem(p - d) + dz``.

    Resampled with a spline of ``order`` (1 bilinear, 3 cubic). Voids stay voids: any output pixel
    whose interpolation stencil touches a void or the raster edge is NaN.
    """
    if order not in (1, 3):
        raise SawaValueError(f"apply_shift: order must be 1 or 3, got {order}")
    z = np.asarray(dem_m, dtype=np.float64)
    valid = np.isfinite(z)
    if not valid.any():
        raise SawaValueError("apply_shift: the DEM has no valid pixel")
    if valid.all():
        filled = z
    else:
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        filled = z[tuple(idx)]
    shift = (-float(dy_px), float(dx_px))  # ndimage: out[i] = in[i - shift]; rows run south
    out = ndimage.shift(filled, shift, order=order, mode="nearest", prefilter=order > 1)
    invalid = ndimage.shift((~valid).astype(np.float64), shift, order=1, mode="constant", cval=1.0)
    bad = invalid > 1e-6
    if order > 1:
        bad = ndimage.binary_dilation(bad, iterations=1)
    out[bad] = np.nan
    return out + dz_m


# --- the fit ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AspectFit:
    """One Nuth & Kääb fit: displacement of DEM relative to REF (m) and the per-bin medians."""

    east_m: float
    north_m: float
    c: float
    n_px: int
    bins_filled: int
    bin_aspect_deg: np.ndarray
    bin_median: np.ndarray


def fit_aspect_cosine(dh_m: np.ndarray, slope_rad: np.ndarray, aspect_rad: np.ndarray) -> AspectFit:
    """Fit ``dh / tan(slope) = s_east sin(aspect) + s_north cos(aspect) + c`` on aspect-bin medians.

    Inputs are 1-D arrays of the pixels to use (already filtered). Raises SawaValueError when the
    stable terrain does not cover enough aspect directions for a horizontal shift to be defined.
    """
    target = dh_m / np.tan(slope_rad)
    edges = np.linspace(0.0, 2.0 * np.pi, ASPECT_BINS + 1)
    which = np.clip(np.digitize(aspect_rad, edges) - 1, 0, ASPECT_BINS - 1)
    order = np.argsort(which, kind="stable")
    which_sorted = which[order]
    starts = np.searchsorted(which_sorted, np.arange(ASPECT_BINS + 1))
    med, sin_m, cos_m, weight, centres = [], [], [], [], []
    n_used = 0
    for k in range(ASPECT_BINS):
        sel = order[starts[k] : starts[k + 1]]
        if sel.size < MIN_BIN_PX:
            continue
        t = target[sel]
        m0 = np.median(t)
        spread = nmad(t)
        keep = np.abs(t - m0) <= BIN_CLIP_NMAD * spread if spread > 0 else np.ones(t.size, bool)
        if keep.sum() < MIN_BIN_PX:
            continue
        asp = aspect_rad[sel][keep]
        med.append(np.median(t[keep]))
        sin_m.append(np.mean(np.sin(asp)))
        cos_m.append(np.mean(np.cos(asp)))
        weight.append(math.sqrt(keep.sum()))
        centres.append(math.degrees(0.5 * (edges[k] + edges[k + 1])))
        n_used += int(keep.sum())
    if len(med) < MIN_FILLED_BINS:
        raise SawaValueError(
            f"stable terrain covers only {len(med)} of {ASPECT_BINS} aspect bins with >= {MIN_BIN_PX} pixels "
            f"sloping {MIN_FIT_SLOPE_DEG}-{MAX_FIT_SLOPE_DEG} deg (need {MIN_FILLED_BINS}): the horizontal shift "
            "is not defined on such flat or one-sided terrain"
        )
    w = np.asarray(weight)
    design = np.column_stack([sin_m, cos_m, np.ones(len(med))]) * w[:, None]
    coef, *_ = np.linalg.lstsq(design, np.asarray(med) * w, rcond=None)
    return AspectFit(float(coef[0]), float(coef[1]), float(coef[2]), n_used, len(med), np.asarray(centres), np.asarray(med))


@dataclass
class CoregistrationResult:
    """Shift to apply to DEM to align it with REF, with fit diagnostics."""

    dx_px: float
    dy_px: float
    dx_m: float
    dy_m: float
    dz_m: float
    pixel_width_m: float
    pixel_height_m: float
    converged: bool
    n_stable_px: int
    nmad_before_m: float
    nmad_after_m: float
    median_before_m: float
    vertical_model: str = "median"
    plane_m_per_px: tuple[float, float] | None = None  # (east, north) gradient of the vertical correction
    iterations: list[dict] = field(default_factory=list)
    datum: DatumHandling | None = None
    ref_path: str | None = None
    dem_path: str | None = None
    aligned_path: str | None = None

    def shift_dict(self) -> dict[str, float]:
        """The five numbers of ``sawa coregister --json``."""
        return {"dx_px": self.dx_px, "dy_px": self.dy_px, "dx_m": self.dx_m, "dy_m": self.dy_m, "dz_m": self.dz_m}

    def to_dict(self) -> dict:
        out = self.shift_dict()
        out.update(
            pixel_width_m=self.pixel_width_m, pixel_height_m=self.pixel_height_m, converged=self.converged,
            n_stable_px=self.n_stable_px, nmad_before_m=self.nmad_before_m, nmad_after_m=self.nmad_after_m,
            median_before_m=self.median_before_m, vertical_model=self.vertical_model,
            plane_m_per_px=list(self.plane_m_per_px) if self.plane_m_per_px else None,
            iterations=self.iterations, datum=self.datum.to_dict() if self.datum else None,
            ref_path=self.ref_path, dem_path=self.dem_path, aligned_path=self.aligned_path,
        )
        return out

    def apply(self, dem_m: np.ndarray, order: int = 1) -> np.ndarray:
        """Align a DEM already on REF's grid: shift horizontally, then the vertical correction."""
        out = apply_shift(dem_m, self.dx_px, self.dy_px, 0.0, order)
        return out + self.vertical_correction(out.shape)

    def vertical_correction(self, shape: tuple[int, int]) -> np.ndarray | float:
        if self.plane_m_per_px is None:
            return self.dz_m
        rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
        ge, gn = self.plane_m_per_px
        return self.dz_m + ge * (cols - (shape[1] - 1) / 2.0) - gn * (rows - (shape[0] - 1) / 2.0)


def _robust_plane(diff: np.ndarray, use: np.ndarray) -> tuple[float, float, float]:
    """Fit diff = c0 + ge*(col - cc) - gn*(row - rc) by LS with two 3-NMAD clipping passes."""
    rows, cols = np.nonzero(use)
    y = diff[rows, cols]
    x_e = cols - (diff.shape[1] - 1) / 2.0
    x_n = -(rows - (diff.shape[0] - 1) / 2.0)
    keep = np.ones(y.size, bool)
    coef = np.array([np.median(y), 0.0, 0.0])
    for _ in range(3):
        design = np.column_stack([np.ones(keep.sum()), x_e[keep], x_n[keep]])
        coef, *_ = np.linalg.lstsq(design, y[keep], rcond=None)
        resid = y - (coef[0] + coef[1] * x_e + coef[2] * x_n)
        spread = nmad(resid[keep])
        keep = np.abs(resid - np.median(resid[keep])) <= 3.0 * spread
    return float(coef[0]), float(coef[1]), float(coef[2])


def nuth_kaab(
    ref_m: np.ndarray,
    dem_m: np.ndarray,
    pixel_width_m,
    pixel_height_m,
    stable: np.ndarray | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    vertical: str = "median",
    order: int = 1,
    horizontal: bool = True,
) -> CoregistrationResult:
    """Co-register ``dem_m`` to ``ref_m`` (same grid, NaN = void) on ``stable`` terrain.

    ``pixel_width_m``/``pixel_height_m``: geodesic sizes, scalars or one per row
    (:func:`pixel_size_m`). ``vertical``: "median" (one bias) or "plane" (bias + tilt).
    ``horizontal=False`` estimates only the vertical correction.
    """
    ref = np.asarray(ref_m, dtype=np.float64)
    dem = np.asarray(dem_m, dtype=np.float64)
    if ref.shape != dem.shape:
        raise SawaValueError(f"nuth_kaab: REF shape {ref.shape} differs from DEM shape {dem.shape}; warp DEM onto REF's grid first")
    if vertical not in ("median", "plane"):
        raise SawaValueError(f"nuth_kaab: vertical must be 'median' or 'plane', got {vertical!r}")
    if max_iterations < 1 or not tolerance_px > 0:
        raise SawaValueError(f"nuth_kaab: max_iterations must be >= 1 and tolerance_px > 0, got {max_iterations}, {tolerance_px}")
    stable_mask = np.ones(ref.shape, bool) if stable is None else np.asarray(stable, bool)
    if stable_mask.shape != ref.shape:
        raise SawaValueError(f"nuth_kaab: stable mask shape {stable_mask.shape} differs from REF shape {ref.shape}")
    widths = np.broadcast_to(np.asarray(pixel_width_m, dtype=np.float64).reshape(-1, 1), (ref.shape[0], 1))
    heights = np.broadcast_to(np.asarray(pixel_height_m, dtype=np.float64).reshape(-1, 1), (ref.shape[0], 1))
    slope, aspect = horn_slope_aspect(ref, widths, heights)
    base = stable_mask & np.isfinite(ref) & np.isfinite(slope)
    fit_base = base & (slope >= math.radians(MIN_FIT_SLOPE_DEG)) & (slope <= math.radians(MAX_FIT_SLOPE_DEG))

    dh0 = dem - ref
    use0 = base & np.isfinite(dh0)
    n_stable = int(use0.sum())
    if n_stable < MIN_STABLE_PX:
        raise SawaValueError(
            f"only {n_stable} stable pixels where both DEMs are valid (need >= {MIN_STABLE_PX}); "
            "check the overlap, voids and the stable-terrain mask"
        )
    median_before = float(np.median(dh0[use0]))
    nmad_before = nmad(dh0[use0])

    rows_w = np.broadcast_to(widths, ref.shape)
    rows_h = np.broadcast_to(heights, ref.shape)
    w_c = float(np.mean(rows_w[use0]))
    h_c = float(np.mean(rows_h[use0]))

    dx = dy = 0.0
    aligned = dem
    iterations: list[dict] = []
    converged = not horizontal
    for it in range(max_iterations if horizontal else 0):
        dh = aligned - ref
        use = fit_base & np.isfinite(dh)
        n_fit = int(use.sum())
        if n_fit < MIN_BIN_PX * MIN_FILLED_BINS:
            raise SawaValueError(
                f"only {n_fit} stable pixels sloping {MIN_FIT_SLOPE_DEG}-{MAX_FIT_SLOPE_DEG} deg with both DEMs valid "
                f"(need >= {MIN_BIN_PX * MIN_FILLED_BINS}): the horizontal shift is not defined on such flat terrain "
                "(estimate the vertical bias only with horizontal=False)"
            )
        med = float(np.median(dh[use]))
        spread = nmad(dh[use])
        resid = dh[use] - med
        keep = np.abs(resid) <= GLOBAL_CLIP_NMAD * spread if spread > 0 else np.ones(resid.size, bool)
        fit = fit_aspect_cosine(resid[keep], slope[use][keep], aspect[use][keep])
        step_x = -fit.east_m / w_c
        step_y = -fit.north_m / h_c
        dx += step_x
        dy += step_y
        aligned = apply_shift(dem, dx, dy, 0.0, order)
        step = math.hypot(step_x, step_y)
        iterations.append({
            "iteration": it + 1, "dx_px": dx, "dy_px": dy, "step_px": step, "nmad_m": spread,
            "median_m": med, "n_fit_px": fit.n_px, "aspect_bins": fit.bins_filled,
        })
        if step < tolerance_px:
            converged = True
            break

    diff = ref - aligned
    use_final = base & np.isfinite(diff)
    if int(use_final.sum()) < MIN_STABLE_PX:
        raise SawaValueError(f"only {int(use_final.sum())} stable pixels remain after shifting DEM by ({dx:.2f}, {dy:.2f}) px")
    plane = None
    if vertical == "median":
        dz = float(np.median(diff[use_final]))
    else:
        dz, ge, gn = _robust_plane(diff, use_final)
        plane = (ge, gn)
    result = CoregistrationResult(
        dx_px=dx, dy_px=dy, dx_m=dx * w_c, dy_m=dy * h_c, dz_m=dz, pixel_width_m=w_c, pixel_height_m=h_c,
        converged=converged, n_stable_px=n_stable, nmad_before_m=nmad_before, nmad_after_m=float("nan"),
        median_before_m=median_before, vertical_model=vertical, plane_m_per_px=plane, iterations=iterations,
    )
    final = aligned + result.vertical_correction(ref.shape) - ref
    result.nmad_after_m = nmad(final[use_final])
    return result


# --- files ------------------------------------------------------------------------------------
def coregister_files(
    ref_path: str | os.PathLike,
    dem_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    stable_mask_path: str | os.PathLike | None = None,
    ref_datum: str | None = None,
    dem_datum: str | None = None,
    strict_datum: bool = False,
    **kwargs,
) -> CoregistrationResult:
    """Co-register the DEM file ``dem_path`` to ``ref_path`` (any CRS/grid; DEM is warped to REF's grid).

    ``stable_mask_path``: raster, non-zero = stable terrain (default: every valid pixel).
    ``output_path``: write the aligned DEM on REF's grid (float32 GeoTIFF, nodata -32768).
    Datums: see :func:`terrain.difference.convert_vertical_datum`. Other keywords go to
    :func:`nuth_kaab`.
    """
    from rasterio.enums import Resampling

    from .rasters import write_geotiff

    ref, grid = read_raster(ref_path)
    dem = warp_to_grid(dem_path, grid, Resampling.bilinear, name=f"DEM {dem_path}", grid_name=f"REF {ref_path}")
    dem, datum = convert_vertical_datum(dem, grid, dem_datum, ref_datum, strict=strict_datum, name=f"DEM {dem_path}")
    stable = None
    if stable_mask_path is not None:
        mask = warp_to_grid(stable_mask_path, grid, Resampling.nearest, name=f"stable mask {stable_mask_path}",
                            grid_name=f"REF {ref_path}")
        stable = np.isfinite(mask) & (mask != 0)
    widths, heights = pixel_size_m(grid.transform, grid.crs, grid.height)
    try:
        result = nuth_kaab(ref, dem, widths, heights, stable=stable, **kwargs)
    except SawaValueError as exc:
        raise SawaValueError(f"co-registering {dem_path} to {ref_path}: {exc}") from exc
    result.datum = datum
    result.ref_path, result.dem_path = str(ref_path), str(dem_path)
    if output_path is not None:
        aligned = result.apply(dem, order=kwargs.get("order", 1))
        tags = {f"coregistration_{k}": f"{v:.6f}" for k, v in result.shift_dict().items()}
        tags["coregistration_reference"] = Path(ref_path).name
        write_geotiff(output_path, np.where(np.isfinite(aligned), aligned, ALIGNED_NODATA).astype(np.float32),
                      grid.transform, grid.crs, nodata=ALIGNED_NODATA, tags=tags)
        result.aligned_path = str(output_path)
    return result


def coregister_grids(
    ref_m: np.ndarray, dem_m: np.ndarray, grid: Grid, stable: np.ndarray | None = None, **kwargs
) -> CoregistrationResult:
    """:func:`nuth_kaab` for two arrays on ``grid`` (pixel sizes from the grid)."""
    widths, heights = pixel_size_m(grid.transform, grid.crs, grid.height)
    return nuth_kaab(ref_m, dem_m, widths, heights, stable=stable, **kwargs)


__all__ = [
    "pixel_size_m",
    "horn_gradient",
    "horn_slope_aspect",
    "apply_shift",
    "AspectFit",
    "fit_aspect_cosine",
    "CoregistrationResult",
    "nuth_kaab",
    "coregister_files",
    "coregister_grids",
]
