"""Terrain under each lidar footprint: slope, aspect, relief and DEM height, read only where shots are.

:func:`footprint_terrain` groups shots by DEM block (:data:`~terrain.constants.FOOTPRINT_BLOCK_PX`
pixels), reads each block that holds shots once (plus a halo as wide as the largest
footprint window) and computes every shot of the block in a numba kernel. The DEM
is never read whole; blocks without shots are never read.

Slope under a footprint: choice and justification
--------------------------------------------------
The waveform broadening that SAWA removes is the spread of ground heights under
the footprint's Gaussian intensity: for a plane of gradient ``g`` under an
isotropic Gaussian spot of sigma ``s_fp`` the heights have sigma ``s_fp |g|``
[Hofton2000; Wang2019 eq. for the bare-ground waveform]. The plane that
produces that spread is the *intensity-weighted least-squares plane* of the
ground under the footprint, so the default ``method="plane"`` fits
``z = z0 + g_e dx + g_n dy`` to the DEM pixels around the shot with Gaussian
weights ``exp(-r^2 / (2 s_w^2))``, ``s_w^2 = s_fp^2 + p^2 / (2 ln 2)`` (``p`` the
metric pixel size), within ``r <= 3 s_w``. For DEMs much finer than the footprint
(lidar DTMs) the weights are the footprint's own; for DEMs as coarse as the
footprint (SRTM / Copernicus 30 m under GEDI's 25 m) the pixel term widens the
weights to the 3x3 neighbourhood with a corner neighbour weighing half an edge
neighbour, as in Horn's stencil [Horn1981] (which is itself the weighted
least-squares plane of the 3x3 window with weights 1-2-1). ``method="horn"`` gives the alternative: the
Horn gradient at the four pixel centres around the shot, bilinearly
interpolated. Both are exact on planes (tests); the plane fit also uses
partial windows at voids and DEM edges.

Relief (Lefsky's terrain index [Lefsky2005]): ``max - min`` of the DEM pixels
whose centres lie within ``max(D/2, 1.5 p)`` of the shot (``D`` the footprint
diameter): the footprint disc on fine DEMs, the 3x3 neighbourhood (Lefsky's
window) on coarse ones. ``dem_elevation_m``: bilinear interpolation of the DEM
at the shot (nearest pixel where a neighbour is nodata), in the DEM's vertical
datum (see :mod:`terrain.dem`).

Every shot keeps its row; ``reason`` says why values are missing
(:data:`~terrain.constants.TERRAIN_REASONS`): ``no_coordinates``,
``outside_dem``, ``nodata`` (DEM void at the shot), ``too_few_pixels``.

[Hofton2000] Hofton, Minster & Blair (2000) Decomposition of laser altimeter waveforms. IEEE TGRS 38, 1989.
[Horn1981] Horn (1981) Hill shading and the reflectance map. Proc. IEEE 69, 14-47.
[Lefsky2005] Lefsky et al. (2005) GRL 32, L22S02.
[Wang2019] Wang, Ni, Sun et al. (2019) RSE 224, 386-400.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numba import njit, prange
from rasterio.windows import Window

from waveform.constants import FOOTPRINT_DIAMETER_M
from waveform.errors import SawaValueError

from .constants import FLAT_SLOPE_DEG, FOOTPRINT_BLOCK_PX, MIN_PLANE_PIXELS, WGS84_A_M, WGS84_INV_F
from .dem import DEM, as_dem, check_elevations, overlap_check
from .slope import _horn_kernel, slope_aspect_from_gradient

#: Gaussian footprint sigma per diameter: GEDI's "~25 m" read as the 1/e^2 intensity diameter,
#: D = 4 sigma (as waveform.simulate.footprint_sigma_m with convention "1/e2").
SIGMA_PER_DIAMETER = 0.25
#: Pixel term of the plane-fit weight sigma: s_w^2 = s_fp^2 + (c p)^2 with c^2 = 1 / (2 ln 2), so that on a
#: DEM much coarser than the footprint a corner neighbour weighs half an edge neighbour, as in Horn's 1-2-1
#: stencil [Horn1981].
PIXEL_SIGMA_FACTOR = math.sqrt(1.0 / (2.0 * math.log(2.0)))
#: Plane-fit weights are used out to this many weight sigmas.
WINDOW_SIGMAS = 3.0

# reason codes of the kernel
_OK, _NODATA, _TOO_FEW = 0, 1, 2
REASON_BY_CODE = {_OK: "ok", _NODATA: "nodata", _TOO_FEW: "too_few_pixels"}
TERRAIN_COLUMNS = ["slope_deg", "aspect_deg", "relief_m", "dem_elevation_m", "n_pixels", "reason"]


def _radii_of_curvature(lat_deg: np.ndarray, a: float = WGS84_A_M, inv_f: float = WGS84_INV_F):
    """Meridian (M) and prime-vertical (N) radii of curvature (m) of the ellipsoid at ``lat_deg``."""
    f = 1.0 / inv_f
    e2 = f * (2.0 - f)
    s2 = np.sin(np.radians(lat_deg)) ** 2
    w = np.sqrt(1.0 - e2 * s2)
    return a * (1.0 - e2) / w**3, a / w


def pixel_metres_at(dem: DEM, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metric pixel width and height (m) of the DEM at CRS points (per shot)."""
    res_x, res_y = dem.res
    if dem.is_geographic:
        from pyproj import CRS as PCRS

        ell = PCRS.from_wkt(dem.crs.to_wkt()).ellipsoid
        a = ell.semi_major_metre if ell is not None else WGS84_A_M
        inv_f = ell.inverse_flattening if (ell is not None and ell.inverse_flattening) else WGS84_INV_F
        m, n = _radii_of_curvature(y, a, inv_f)
        rad = math.pi / 180.0
        return n * np.cos(np.radians(y)) * res_x * rad, m * res_y * rad
    unit = dem.linear_unit_m()
    px = np.full(x.shape, res_x * unit)
    py = np.full(x.shape, res_y * unit)
    if dem.scale_factor_correction and x.size:
        try:
            from pyproj import Proj

            lon, lat = dem.to_lonlat(x, y)
            f = Proj(dem.crs.to_wkt()).get_factors(lon, lat)
            kp = np.asarray(f.parallel_scale, np.float64)
            km = np.asarray(f.meridional_scale, np.float64)
            ok = np.isfinite(kp) & np.isfinite(km) & (kp > 0) & (km > 0)
            px = np.where(ok, px / np.where(ok, kp, 1.0), px)
            py = np.where(ok, py / np.where(ok, km, 1.0), py)
        except Exception:  # noqa: BLE001 - no factors for this CRS: grid distances
            pass
    return px, py


@njit(cache=True, parallel=True)
def _plane_kernel(z, row, col, px_m, py_m, sigma_fp, relief_radius, ge, gn, relief, elev, npix, code):
    """Gaussian-weighted LS plane, relief and bilinear height for shots in a block.

    ``z``: block heights (NaN nodata); ``row``/``col``: fractional positions in the block
    (pixel centres at integer + 0.5); ``px_m``/``py_m``: metric pixel size per shot.
    """
    h, w = z.shape
    for k in prange(row.shape[0]):
        rk = row[k] - 0.5
        ck = col[k] - 0.5
        pxk = px_m[k]
        pyk = py_m[k]
        p = max(pxk, pyk) * PIXEL_SIGMA_FACTOR
        s2 = sigma_fp * sigma_fp + p * p
        rmax = WINDOW_SIGMAS * math.sqrt(s2)
        rrel = relief_radius[k]
        reach = max(rmax, rrel)
        dr = int(math.ceil(reach / pyk)) + 1
        dc = int(math.ceil(reach / pxk)) + 1
        ic = int(math.floor(rk + 0.5))
        jc = int(math.floor(ck + 0.5))
        ge[k] = np.nan
        gn[k] = np.nan
        relief[k] = np.nan
        elev[k] = np.nan
        npix[k] = 0
        if ic < 0 or ic >= h or jc < 0 or jc >= w or not math.isfinite(z[ic, jc]):
            code[k] = _NODATA
            continue
        sw = 0.0
        sx = 0.0
        sy = 0.0
        sz = 0.0
        sxx = 0.0
        sxy = 0.0
        syy = 0.0
        sxz = 0.0
        syz = 0.0
        zmin = np.inf
        zmax = -np.inf
        n = 0
        z_ref = z[ic, jc]
        for i in range(max(ic - dr, 0), min(ic + dr + 1, h)):
            dy = (rk - i) * pyk  # north positive
            for j in range(max(jc - dc, 0), min(jc + dc + 1, w)):
                v = z[i, j]
                if not math.isfinite(v):
                    continue
                dx = (j - ck) * pxk
                r2 = dx * dx + dy * dy
                if r2 <= rrel * rrel:
                    if v < zmin:
                        zmin = v
                    if v > zmax:
                        zmax = v
                if r2 > rmax * rmax:
                    continue
                wt = math.exp(-0.5 * r2 / s2)
                dz = v - z_ref
                n += 1
                sw += wt
                sx += wt * dx
                sy += wt * dy
                sz += wt * dz
                sxx += wt * dx * dx
                sxy += wt * dx * dy
                syy += wt * dy * dy
                sxz += wt * dx * dz
                syz += wt * dy * dz
        npix[k] = n
        if zmax >= zmin:
            relief[k] = zmax - zmin
        else:
            relief[k] = 0.0
        # bilinear height at the shot (nearest pixel when a corner is nodata)
        i0 = int(math.floor(rk))
        j0 = int(math.floor(ck))
        fr = rk - i0
        fc = ck - j0
        if 0 <= i0 and i0 + 1 < h and 0 <= j0 and j0 + 1 < w:
            q = (z[i0, j0] * (1 - fr) * (1 - fc) + z[i0, j0 + 1] * (1 - fr) * fc
                 + z[i0 + 1, j0] * fr * (1 - fc) + z[i0 + 1, j0 + 1] * fr * fc)
            elev[k] = q if math.isfinite(q) else z_ref
        else:
            elev[k] = z_ref
        if n < MIN_PLANE_PIXELS or sw <= 0.0:
            code[k] = _TOO_FEW
            continue
        mx = sx / sw
        my = sy / sw
        mz = sz / sw
        cxx = sxx / sw - mx * mx
        cxy = sxy / sw - mx * my
        cyy = syy / sw - my * my
        cxz = sxz / sw - mx * mz
        cyz = syz / sw - my * mz
        det = cxx * cyy - cxy * cxy
        scale = cxx * cyy
        if not (det > 1e-9 * scale) or scale <= 0.0:
            code[k] = _TOO_FEW
            continue
        ge[k] = (cyy * cxz - cxy * cyz) / det
        gn[k] = (cxx * cyz - cxy * cxz) / det
        code[k] = _OK


@njit(cache=True)
def _bilinear_gradient(gxe, gxn, row, col, ge, gn):
    """Bilinear interpolation of gradient grids at fractional positions (NaN where a corner is NaN)."""
    h, w = gxe.shape
    for k in range(row.shape[0]):
        rk = row[k] - 0.5
        ck = col[k] - 0.5
        i0 = int(math.floor(rk))
        j0 = int(math.floor(ck))
        if i0 < 0:
            i0 = 0
        if j0 < 0:
            j0 = 0
        if i0 > h - 2:
            i0 = h - 2
        if j0 > w - 2:
            j0 = w - 2
        fr = min(max(rk - i0, 0.0), 1.0)
        fc = min(max(ck - j0, 0.0), 1.0)
        a = (1 - fr) * (1 - fc)
        b = (1 - fr) * fc
        c = fr * (1 - fc)
        d = fr * fc
        ge[k] = a * gxe[i0, j0] + b * gxe[i0, j0 + 1] + c * gxe[i0 + 1, j0] + d * gxe[i0 + 1, j0 + 1]
        gn[k] = a * gxn[i0, j0] + b * gxn[i0, j0 + 1] + c * gxn[i0 + 1, j0] + d * gxn[i0 + 1, j0 + 1]


def _as_coords(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    if lon.shape != lat.shape or lon.ndim != 1:
        raise SawaValueError(f"longitude and latitude must be 1-D arrays of equal length, got {lon.shape}, {lat.shape}")
    bad = np.isfinite(lat) & (np.abs(lat) > 90.0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise SawaValueError(f"latitude {lat[k]} of shot index {k} is outside -90..90 degrees (lon/lat swapped?)")
    return lon, lat


def footprint_terrain(
    dem,
    lon,
    lat,
    footprint_diameter_m: float = FOOTPRINT_DIAMETER_M,
    method: str = "plane",
    block_px: int = FOOTPRINT_BLOCK_PX,
    require_overlap: bool = True,
) -> pd.DataFrame:
    """Slope, aspect, relief and DEM height under each footprint (one row per shot, same order).

    ``dem``: a :class:`~terrain.dem.DEM` or DEM path(s); ``lon``/``lat``: EPSG:4326
    footprint centres (degrees); ``footprint_diameter_m``: 1/e^2 diameter of the
    Gaussian footprint (GEDI ~25 m). ``method``: ``"plane"`` (Gaussian-weighted
    plane fit, default) or ``"horn"`` (bilinear Horn gradient); see the module
    docstring. Columns: :data:`TERRAIN_COLUMNS` (``slope_deg``, ``aspect_deg`` =
    downslope azimuth clockwise from north, NaN when flat; ``relief_m``;
    ``dem_elevation_m`` in the DEM's datum; ``n_pixels`` in the plane fit;
    ``reason``). ``df.attrs`` holds the DEM's vertical datum.

    ``require_overlap``: raise :class:`~waveform.errors.NoOverlapError` when no
    shot falls on the DEM (False: every shot gets ``outside_dem``).
    """
    if method not in ("plane", "horn"):
        raise SawaValueError(f"method must be 'plane' or 'horn', got {method!r}")
    if not (np.isfinite(footprint_diameter_m) and footprint_diameter_m > 0):
        raise SawaValueError(f"footprint_diameter_m must be > 0 m, got {footprint_diameter_m!r}")
    if int(block_px) < 8:
        raise SawaValueError(f"block_px must be >= 8, got {block_px}")
    lon, lat = _as_coords(lon, lat)
    d, opened = as_dem(dem)
    try:
        return _footprint_terrain(d, lon, lat, float(footprint_diameter_m), method, int(block_px), require_overlap)
    finally:
        if opened:
            d.close()


def _footprint_terrain(d: DEM, lon, lat, diameter, method, block_px, require_overlap) -> pd.DataFrame:
    n = lon.shape[0]
    reason = np.full(n, "ok", dtype=object)
    ge = np.full(n, np.nan)
    gn = np.full(n, np.nan)
    relief = np.full(n, np.nan)
    elev = np.full(n, np.nan)
    npix = np.zeros(n, np.int32)
    has_xy = np.isfinite(lon) & np.isfinite(lat)
    reason[~has_xy] = "no_coordinates"
    if require_overlap and n:
        overlap_check(d, lon, lat)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    if has_xy.any():
        x[has_xy], y[has_xy] = d.from_lonlat(lon[has_xy], lat[has_xy])
    row, col = d.fractional_rowcol(x, y)
    inside = has_xy & np.isfinite(row) & np.isfinite(col) & (row >= 0) & (row < d.height) & (col >= 0) & (col < d.width)
    reason[has_xy & ~inside] = "outside_dem"
    idx = np.flatnonzero(inside)
    if idx.size:
        px_m, py_m = pixel_metres_at(d, x[idx], y[idx])
        sigma_fp = SIGMA_PER_DIAMETER * diameter
        relief_radius = np.maximum(0.5 * diameter, 1.5 * np.maximum(px_m, py_m))
        pix_sigma = PIXEL_SIGMA_FACTOR * np.maximum(px_m, py_m)
        reach = np.maximum(WINDOW_SIGMAS * np.sqrt(sigma_fp**2 + pix_sigma**2), relief_radius)
        halo = int(np.ceil(np.max(reach / np.minimum(px_m, py_m)))) + 2
        brow = (row[idx] // block_px).astype(np.int64)
        bcol = (col[idx] // block_px).astype(np.int64)
        key = brow * (d.width // block_px + 2) + bcol
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for group in np.split(order, bounds):
            sel = idx[group]
            r0 = int(brow[group[0]]) * block_px - halo
            c0 = int(bcol[group[0]]) * block_px - halo
            win = Window(c0, r0, block_px + 2 * halo, block_px + 2 * halo)
            z = d.read(win)
            check_elevations(z, f"DEM {d.name} rows {max(r0, 0)}-{r0 + win.height}, cols {max(c0, 0)}-{c0 + win.width}")
            lr = np.ascontiguousarray(row[sel] - r0)
            lc = np.ascontiguousarray(col[sel] - c0)
            g_e = np.empty(sel.size)
            g_n = np.empty(sel.size)
            rel = np.empty(sel.size)
            el = np.empty(sel.size)
            npx = np.empty(sel.size, np.int32)
            code = np.empty(sel.size, np.int8)
            _plane_kernel(z, lr, lc, np.ascontiguousarray(px_m[group]), np.ascontiguousarray(py_m[group]),
                          sigma_fp, np.ascontiguousarray(relief_radius[group]), g_e, g_n, rel, el, npx, code)
            if method == "horn":
                rows = np.arange(r0, r0 + win.height, dtype=np.float64)
                dew, dns = d.row_spacing_m(rows, col=c0 + win.width / 2.0)
                zp = np.ascontiguousarray(z)
                gxe = np.full(z.shape, np.nan)
                gxn = np.full(z.shape, np.nan)
                inner_e = np.empty((z.shape[0] - 2, z.shape[1] - 2))
                inner_n = np.empty_like(inner_e)
                _horn_kernel(zp, np.ascontiguousarray(dew), np.ascontiguousarray(dns[1:-1]), inner_e, inner_n)
                gxe[1:-1, 1:-1] = inner_e
                gxn[1:-1, 1:-1] = inner_n
                _bilinear_gradient(gxe, gxn, lr, lc, g_e, g_n)
                horn_ok = np.isfinite(g_e) & np.isfinite(g_n)
                code = np.where(code == _NODATA, _NODATA, np.where(horn_ok, _OK, _TOO_FEW)).astype(np.int8)
            ge[sel], gn[sel], relief[sel], elev[sel], npix[sel] = g_e, g_n, rel, el, npx
            for c, name in REASON_BY_CODE.items():
                reason[sel[code == c]] = name
    ok = reason == "ok"
    ge[~ok] = np.nan
    gn[~ok] = np.nan
    slope, aspect = slope_aspect_from_gradient(ge, gn)
    nodata = reason == "nodata"
    relief[nodata] = np.nan
    elev[nodata] = np.nan
    out = pd.DataFrame({
        "slope_deg": slope,
        "aspect_deg": aspect,
        "relief_m": relief,
        "dem_elevation_m": elev,
        "n_pixels": npix,
        "reason": reason,
    })
    out.attrs.update(vertical_datum=d.vertical_datum, datum_source=d.datum_source, dem=d.name,
                     footprint_diameter_m=diameter, method=method, flat_slope_deg=FLAT_SLOPE_DEG)
    return out


__all__ = ["footprint_terrain", "pixel_metres_at", "TERRAIN_COLUMNS", "SIGMA_PER_DIAMETER"]
