"""Slope and aspect with Horn's 3x3 method and metric pixel spacing, blocked for any DEM size.

Gradient [Horn1981] of pixel ``e`` in the 3x3 window (rows top to bottom)::

    a b c
    d e f
    g h i

    dz/dEast  = [ (c - a)/D_ew(row-1) + 2 (f - d)/D_ew(row) + (i - g)/D_ew(row+1) ] / 4
    dz/dNorth = [ (a - g) + 2 (b - h) + (c - i) ] / (4 D_ns(row))

with ``D_ew(r)`` the distance (m) between the centres of the pixels left and
right of a pixel of row ``r`` (two columns apart) and ``D_ns(r)`` the distance
between the centres of rows ``r - 1`` and ``r + 1``. With a constant spacing
this is exactly GDAL's ``gdaldem slope`` (Horn): ``((c + 2f + i) - (a + 2d + g))
/ (8 dx)``. For a geographic DEM the east-west spacing shrinks with latitude
(``N(phi) cos(phi) dlon`` on the ellipsoid); each row of the stencil uses its
own geodesic spacing (:meth:`terrain.dem.DEM.row_spacing_m`, :class:`pyproj.Geod`),
so planes give their slope at every latitude. For projected DEMs the spacing is
pixel size x linear unit / point scale factor (pyproj ``get_factors``).

``slope = atan(|grad z|)`` (degrees, 0..90); ``aspect`` = azimuth of the
*downslope* direction, clockwise from north in degrees [0, 360) (GDAL
``gdaldem aspect`` convention: 0 = the ground falls towards north, 90 =
towards east), ``atan2(-dz/dEast, -dz/dNorth)``; NaN on flat ground (slope <
:data:`~terrain.constants.FLAT_SLOPE_DEG`) where it is undefined.

Pixels with a nodata neighbour are NaN (as GDAL). At the DEM's outer edge
``compute_edges=True`` extrapolates the DEM linearly by one pixel (exact for
planes); ``False`` leaves the edge NaN as GDAL's default.

Three tiers: :func:`horn_gradient` (numba, parallel over rows; ``engine="numpy"``
for the vectorised version), :func:`slope_aspect_window` (a window of a
:class:`~terrain.dem.DEM`, read with a one-pixel halo) and
:func:`write_slope_aspect` (any DEM size: blocks of ``block_px`` with a
one-pixel halo from :func:`terrain.rasters.block_windows`, written block by
block to a tiled, compressed GeoTIFF; memory ~ a few blocks).

[Horn1981] Horn, B.K.P. (1981) Hill shading and the reflectance map. Proc. IEEE 69(1), 14-47.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import rasterio
from numba import njit, prange
from rasterio.enums import Resampling
from rasterio.windows import Window

from waveform.errors import SawaValueError
from waveform.outputs import atomic_path

from .constants import DEFAULT_BLOCK_PX, FLAT_SLOPE_DEG, HORN_HALO_PX, IMPLAUSIBLE_MEDIAN_SLOPE_DEG
from .dem import DEM, as_dem, check_elevations
from .rasters import MIN_OVERVIEW_SIDE_PX, TILE_SIZE_PX, block_windows

SLOPE_BAND_NAMES = ("slope_deg", "aspect_deg")


# --------------------------------------------------------------------------- kernels
@njit(cache=True, parallel=True)
def _horn_kernel(zp, dew_p, dns, ge, gn):
    """Horn gradient of the interior of ``zp`` (h + 2, w + 2) into ``ge``/``gn`` (h, w).

    ``dew_p`` (h + 2,): east-west two-pixel distance per padded row; ``dns`` (h,):
    north-south two-row distance per output row. NaN anywhere in the 3x3 -> NaN.
    """
    h, w = ge.shape
    for r in prange(h):
        e_up = dew_p[r]
        e_mid = dew_p[r + 1]
        e_dn = dew_p[r + 2]
        d_ns = dns[r]
        for c in range(w):
            a = zp[r, c]
            b = zp[r, c + 1]
            cc = zp[r, c + 2]
            d = zp[r + 1, c]
            f = zp[r + 1, c + 2]
            g = zp[r + 2, c]
            hh = zp[r + 2, c + 1]
            i = zp[r + 2, c + 2]
            e = zp[r + 1, c + 1]
            s = a + b + cc + d + e + f + g + hh + i
            if not math.isfinite(s):
                ge[r, c] = np.nan
                gn[r, c] = np.nan
                continue
            ge[r, c] = ((cc - a) / e_up + 2.0 * (f - d) / e_mid + (i - g) / e_dn) / 4.0
            gn[r, c] = ((a - g) + 2.0 * (b - hh) + (cc - i)) / (4.0 * d_ns)


@njit(cache=True, parallel=True)
def _slope_aspect_kernel(ge, gn, flat_tan, slope, aspect):
    h, w = ge.shape
    rad2deg = 180.0 / math.pi
    for r in prange(h):
        for c in range(w):
            x = ge[r, c]
            y = gn[r, c]
            if not (math.isfinite(x) and math.isfinite(y)):
                slope[r, c] = np.nan
                aspect[r, c] = np.nan
                continue
            t = math.sqrt(x * x + y * y)
            slope[r, c] = math.atan(t) * rad2deg
            if t <= flat_tan:
                aspect[r, c] = np.nan
            else:
                a = math.atan2(-x, -y) * rad2deg
                if a < 0.0:
                    a += 360.0
                if a >= 360.0:
                    a -= 360.0
                aspect[r, c] = a


def _pad_linear(z: np.ndarray, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    """Pad by one pixel on the chosen sides: linear extrapolation where asked, NaN elsewhere."""
    h, w = z.shape
    out = np.full((h + 2, w + 2), np.nan)
    out[1:-1, 1:-1] = z
    if left and w >= 2:
        out[1:-1, 0] = 2.0 * z[:, 0] - z[:, 1]
    elif left:
        out[1:-1, 0] = z[:, 0]
    if right and w >= 2:
        out[1:-1, -1] = 2.0 * z[:, -1] - z[:, -2]
    elif right:
        out[1:-1, -1] = z[:, -1]
    if top:
        out[0, :] = 2.0 * out[1, :] - out[2, :] if h >= 2 else out[1, :]
    if bottom:
        out[-1, :] = 2.0 * out[-2, :] - out[-3, :] if h >= 2 else out[-2, :]
    return out


def _check_spacing(dist_ew: np.ndarray, dist_ns: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    dew = np.asarray(dist_ew, dtype=np.float64)
    dns = np.asarray(dist_ns, dtype=np.float64)
    if dew.ndim == 0:
        dew = np.full(n, float(dew))
    if dns.ndim == 0:
        dns = np.full(n, float(dns))
    if dew.shape != (n,) or dns.shape != (n,):
        raise SawaValueError(f"pixel spacing must be scalars or one value per row ({n}), got {dew.shape}, {dns.shape}")
    if not (np.all(np.isfinite(dew)) and np.all(np.isfinite(dns)) and np.all(dew > 0) and np.all(dns > 0)):
        raise SawaValueError("pixel spacing (m) must be finite and > 0 in every row")
    return np.ascontiguousarray(dew), np.ascontiguousarray(dns)


def horn_gradient(
    z: np.ndarray,
    dist_ew,
    dist_ns,
    compute_edges: bool = False,
    engine: str = "numba",
) -> tuple[np.ndarray, np.ndarray]:
    """Horn (1981) gradient ``(dz/dEast, dz/dNorth)`` (m/m) of a north-up 2-D height array (m).

    ``dist_ew``/``dist_ns``: per-row (or scalar) distances in m between the centres
    two columns / two rows apart (2 x pixel width / height on a projected grid).
    NaN heights are nodata. Output has the shape of ``z``; edges NaN unless
    ``compute_edges`` (linear extrapolation). ``engine``: "numba" or "numpy".
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise SawaValueError(f"DEM array must be 2-D, got shape {z.shape}")
    h, w = z.shape
    dew, dns = _check_spacing(dist_ew, dist_ns, h)
    zp = _pad_linear(z, compute_edges, compute_edges, compute_edges, compute_edges)
    dew_p = np.concatenate([[dew[0]], dew, [dew[-1]]]) if h else dew
    if engine == "numba":
        ge = np.empty((h, w))
        gn = np.empty((h, w))
        if h and w:
            _horn_kernel(np.ascontiguousarray(zp), dew_p, dns, ge, gn)
        return ge, gn
    if engine != "numpy":
        raise SawaValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    return _horn_numpy(zp, dew_p, dns)


def _horn_numpy(zp: np.ndarray, dew_p: np.ndarray, dns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c = zp[:-2, :-2], zp[:-2, 1:-1], zp[:-2, 2:]
    d, f = zp[1:-1, :-2], zp[1:-1, 2:]
    g, hh, i = zp[2:, :-2], zp[2:, 1:-1], zp[2:, 2:]
    e_up, e_mid, e_dn = dew_p[:-2, None], dew_p[1:-1, None], dew_p[2:, None]
    ge = ((c - a) / e_up + 2.0 * (f - d) / e_mid + (i - g) / e_dn) / 4.0
    gn = ((a - g) + 2.0 * (b - hh) + (c - i)) / (4.0 * dns[:, None])
    bad = ~np.isfinite(zp[1:-1, 1:-1])
    ge[bad] = np.nan
    gn[bad] = np.nan
    return ge, gn


def slope_aspect_from_gradient(ge: np.ndarray, gn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope (deg) and downslope aspect (deg clockwise from north; NaN when flat) from a gradient."""
    ge = np.ascontiguousarray(np.asarray(ge, dtype=np.float64))
    gn = np.ascontiguousarray(np.asarray(gn, dtype=np.float64))
    if ge.shape != gn.shape:
        raise SawaValueError(f"gradient components differ in shape: {ge.shape} vs {gn.shape}")
    shape = ge.shape
    g2e = ge.reshape(1, -1) if ge.ndim != 2 else ge
    g2n = gn.reshape(1, -1) if gn.ndim != 2 else gn
    slope = np.empty(g2e.shape)
    aspect = np.empty(g2e.shape)
    if g2e.size:
        _slope_aspect_kernel(g2e, g2n, math.tan(math.radians(FLAT_SLOPE_DEG)), slope, aspect)
    return slope.reshape(shape), aspect.reshape(shape)


def horn_slope_aspect(z, dist_ew, dist_ns, compute_edges: bool = False, engine: str = "numba"):
    """Slope and aspect (deg) of a height array; see :func:`horn_gradient`."""
    ge, gn = horn_gradient(z, dist_ew, dist_ns, compute_edges=compute_edges, engine=engine)
    return slope_aspect_from_gradient(ge, gn)


# --------------------------------------------------------------------------- DEM windows
def read_with_halo(dem: DEM, window: Window, halo_px: int = HORN_HALO_PX, compute_edges: bool = True) -> np.ndarray:
    """Heights of ``window`` grown by ``halo_px``; at the DEM's outer edge the halo is linearly extrapolated
    when ``compute_edges`` (else NaN)."""
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    z = dem.read(Window(c0 - halo_px, r0 - halo_px, w + 2 * halo_px, h + 2 * halo_px))
    if compute_edges and halo_px == 1:
        # rows/cols of the halo beyond the DEM: extrapolate from the two nearest inside
        if r0 == 0 and z.shape[0] >= 3:
            z[0, :] = 2.0 * z[1, :] - z[2, :]
        if r0 + h == dem.height and z.shape[0] >= 3:
            z[-1, :] = 2.0 * z[-2, :] - z[-3, :]
        if c0 == 0 and z.shape[1] >= 3:
            z[:, 0] = 2.0 * z[:, 1] - z[:, 2]
        if c0 + w == dem.width and z.shape[1] >= 3:
            z[:, -1] = 2.0 * z[:, -2] - z[:, -3]
    return z


def gradient_window(dem: DEM, window: Window, compute_edges: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Horn gradient (dz/dEast, dz/dNorth) of a DEM window (read with a one-pixel halo)."""
    ge, gn, _ = _gradient_and_heights(dem, window, compute_edges)
    return ge, gn


def _gradient_and_heights(dem: DEM, window: Window, compute_edges: bool):
    zp = read_with_halo(dem, window, HORN_HALO_PX, compute_edges)
    rows = np.arange(int(window.row_off) - 1, int(window.row_off) + int(window.height) + 1, dtype=np.float64)
    dew_p, dns_p = dem.row_spacing_m(rows, col=float(window.col_off) + window.width / 2.0)
    h, w = int(window.height), int(window.width)
    ge = np.empty((h, w))
    gn = np.empty((h, w))
    if h and w:
        _horn_kernel(np.ascontiguousarray(zp), np.ascontiguousarray(dew_p), np.ascontiguousarray(dns_p[1:-1]), ge, gn)
    return ge, gn, zp


def slope_aspect_window(dem, window: Window | None = None, compute_edges: bool = True):
    """Slope and aspect (deg) of ``window`` of a DEM (a :class:`DEM` or path(s)); whole DEM when None."""
    d, opened = as_dem(dem)
    try:
        win = window if window is not None else Window(0, 0, d.width, d.height)
        ge, gn = gradient_window(d, win, compute_edges)
        return slope_aspect_from_gradient(ge, gn)
    finally:
        if opened:
            d.close()


def _check_block(slope: np.ndarray, z: np.ndarray, dem: DEM, window: Window) -> None:
    check_elevations(z, f"DEM {dem.name} window rows {window.row_off}-{window.row_off + window.height}, "
                       f"cols {window.col_off}-{window.col_off + window.width}")
    finite = slope[np.isfinite(slope)]
    if finite.size >= 100 and float(np.median(finite)) > IMPLAUSIBLE_MEDIAN_SLOPE_DEG:
        res_x, res_y = dem.res
        raise SawaValueError(
            f"DEM {dem.name}: median slope {np.median(finite):.1f} deg in rows {window.row_off}-"
            f"{window.row_off + window.height} is implausible: pixel spacing ({res_x:g} x {res_y:g} "
            f"{'deg' if dem.is_geographic else dem.crs.linear_units}) or elevation units are wrong "
            f"(z_to_m = {dem.z_to_m:g}); check the CRS and pass z_units= if heights are not metres"
        )


def write_slope_aspect(
    dem,
    output: str | os.PathLike,
    block_px: int = DEFAULT_BLOCK_PX,
    compute_edges: bool = True,
    overviews: bool = True,
    progress: bool = False,
) -> dict:
    """Slope and aspect GeoTIFF (2 float32 bands, degrees, NaN nodata) of a DEM of any size.

    ``dem``: a :class:`~terrain.dem.DEM` or path(s) (tiles are mosaicked). Blocks of
    ``block_px`` are read with a one-pixel halo and written as they are computed, so
    memory stays at a few blocks. The output is tiled 512 x 512, DEFLATE-compressed,
    with internal overviews, written atomically. Returns a summary dict.
    """
    from tqdm.auto import tqdm

    d, opened = as_dem(dem)
    try:
        if int(block_px) < 16:
            raise SawaValueError(f"block_px must be >= 16, got {block_px}")
        tiled = d.height >= TILE_SIZE_PX and d.width >= TILE_SIZE_PX
        profile = {
            "driver": "GTiff", "height": d.height, "width": d.width, "count": 2, "dtype": "float32",
            "crs": d.crs, "transform": d.transform, "nodata": float("nan"), "compress": "deflate", "predictor": 3,
        }
        if tiled:
            profile.update(tiled=True, blockxsize=TILE_SIZE_PX, blockysize=TILE_SIZE_PX)
        n_valid = 0
        s_min, s_max, s_sum = math.inf, -math.inf, 0.0
        blocks = list(block_windows(d.height, d.width, int(block_px), HORN_HALO_PX))
        with atomic_path(output) as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                for core, _padded, _inner in tqdm(blocks, disable=not progress, desc="sawa slope", unit="block"):
                    ge, gn, zp = _gradient_and_heights(d, core, compute_edges)
                    slope, aspect = slope_aspect_from_gradient(ge, gn)
                    _check_block(slope, zp[1:-1, 1:-1], d, core)
                    dst.write(slope.astype(np.float32), 1, window=core)
                    dst.write(aspect.astype(np.float32), 2, window=core)
                    fin = slope[np.isfinite(slope)]
                    if fin.size:
                        n_valid += fin.size
                        s_min, s_max = min(s_min, float(fin.min())), max(s_max, float(fin.max()))
                        s_sum += float(fin.sum())
                for i, name in enumerate(SLOPE_BAND_NAMES, start=1):
                    dst.set_band_description(i, name)
                dst.update_tags(
                    SLOPE_METHOD="Horn (1981) 3x3, metric spacing per row (geodesic for geographic CRS)",
                    ASPECT_CONVENTION="downslope azimuth, degrees clockwise from north; NaN on flat ground",
                    SOURCE_DEM=d.name, UNITS="degree",
                )
                if overviews and max(d.height, d.width) >= MIN_OVERVIEW_SIDE_PX:
                    factors = [f for f in (2, 4, 8, 16, 32) if max(d.height, d.width) // f >= TILE_SIZE_PX // 2]
                    if factors:
                        dst.build_overviews(factors, Resampling.average)
        return {
            "output": str(Path(output)), "dem": d.name, "width": d.width, "height": d.height, "blocks": len(blocks),
            "valid_pixels": n_valid, "slope_min_deg": s_min if n_valid else float("nan"),
            "slope_max_deg": s_max if n_valid else float("nan"),
            "slope_mean_deg": s_sum / n_valid if n_valid else float("nan"),
        }
    finally:
        if opened:
            d.close()


__all__ = [
    "horn_gradient",
    "horn_slope_aspect",
    "slope_aspect_from_gradient",
    "slope_aspect_window",
    "gradient_window",
    "read_with_halo",
    "write_slope_aspect",
    "SLOPE_BAND_NAMES",
]
