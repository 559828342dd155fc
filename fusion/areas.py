"""Pixel areas on the ellipsoid, for every raster grid a carbon total is computed on.

Three cases (:func:`area_kind`):

* **geographic** grids (longitude/latitude, north-up): a pixel is a quadrangle between two
  meridians and two parallels, whose area on the ellipsoid has a closed form. With
  ``q(phi) = (1 - e^2) [sin(phi) / (1 - e^2 sin^2(phi)) + atanh(e sin(phi)) / e]`` (the authalic
  function of the authalic latitude; Snyder 1987, "Map Projections: A Working Manual", USGS
  Professional Paper 1395, ch. 3), the area
  between latitudes phi1 < phi2 over a longitude span dlon (radians) is
  ``a^2 / 2 * dlon * (q(phi2) - q(phi1))``. All pixels of a row share that area, so a grid needs
  one value per row.
* **equal-area** projected grids (EASE-Grid 2.0 EPSG:6933, LAEA, Albers, Equal Earth ...): every
  pixel has the planar area ``|a*e - b*d|`` of the affine transform. A CRS counts as equal-area
  only after a numeric check on the ellipsoid (a spherical-only projection on an ellipsoidal datum,
  e.g. Mollweide on WGS 84 (ESRI:54009), is *not* equal-area on that ellipsoid: 0.7 % off).
* other **projected** grids: per-pixel ellipsoidal area of the pixel's outline. The outline
  (4 sides, each cut into ``subdivisions`` and ``2 x subdivisions`` segments, Richardson-
  extrapolated) is inverse-projected to longitude/latitude
  and mapped by ``(lon, lat) -> (lon, q(lat))``; that map is area-preserving up to the factor
  ``a^2/2`` (it is the ellipsoidal Lambert cylindrical equal-area projection), so the shoelace
  area of the mapped outline, times ``a^2/2``, is the pixel's area on the ellipsoid. Rows are
  processed in chunks of bounded size.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.windows import Window

from waveform.errors import RasterError, SawaValueError

from .constants import DENSIFY_DEG, DENSIFY_M

AreaKind = Literal["geographic", "equal_area", "projected"]

#: Relative tolerance of the numeric equal-area check (planar vs ellipsoidal pixel area).
EQUAL_AREA_RTOL = 1e-7
#: Segments per pixel side for projected (non equal-area) grids (then doubled for Richardson).
DEFAULT_SUBDIVISIONS = 2
#: Pixels per chunk of the projected per-pixel computation (bounds memory to ~150 MB).
_CHUNK_PIXELS = 100_000
#: Latitude slack (degrees) tolerated beyond +-90 (float noise in transforms).
_LAT_SLACK_DEG = 1e-9


def _as_crs(crs) -> CRS:
    if crs is None:
        raise RasterError("pixel areas need a CRS; the raster has none")
    try:
        return CRS.from_user_input(crs)
    except Exception as exc:  # pyproj.exceptions.CRSError and friends
        raise RasterError(f"cannot interpret CRS {crs!r}: {exc}") from exc


def _as_affine(transform) -> Affine:
    if isinstance(transform, Affine):
        return transform
    try:
        return Affine(*tuple(transform)[:6])
    except TypeError as exc:
        raise SawaValueError(f"not an affine transform: {transform!r}") from exc


def ellipsoid_of(crs) -> tuple[float, float]:
    """(semi-major axis a in metres, first eccentricity squared e^2) of a CRS's ellipsoid."""
    geod = _as_crs(crs).get_geod()
    if geod is None:
        raise RasterError(f"CRS {crs!r} has no ellipsoid")
    return float(geod.a), float(geod.es)


def authalic_q(lat_deg, e2: float) -> np.ndarray:
    """Snyder's q(phi) (dimensionless): a^2/2 * q is the area from the equator per radian of longitude."""
    s = np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64)))
    if e2 < 1e-24:
        return 2.0 * s
    e = math.sqrt(e2)
    return (1.0 - e2) * (s / (1.0 - e2 * s * s) + np.arctanh(e * s) / e)


def band_area_m2(lat1_deg, lat2_deg, dlon_deg, crs="EPSG:4326") -> np.ndarray:
    """Ellipsoidal area (m^2) between two parallels over a longitude span (closed form)."""
    a, e2 = ellipsoid_of(crs)
    q1 = authalic_q(lat1_deg, e2)
    q2 = authalic_q(lat2_deg, e2)
    return 0.5 * a * a * np.radians(np.abs(np.asarray(dlon_deg, dtype=np.float64))) * np.abs(q2 - q1)


def ellipsoid_area_m2(crs="EPSG:4326") -> float:
    """Total surface area of the CRS's ellipsoid (m^2): 4 pi R_q^2 with R_q the authalic radius."""
    return float(band_area_m2(-90.0, 90.0, 360.0, crs))


def _geographic_checks(t: Affine, crs: CRS, height: int) -> None:
    if t.b != 0 or t.d != 0:
        raise RasterError(f"geographic grid with a rotated transform {tuple(t)[:6]} is not supported")
    unit = crs.axis_info[0].unit_name if crs.axis_info else "degree"
    if "degree" not in unit.lower():
        raise RasterError(f"geographic CRS {crs.name!r} has angular unit {unit!r}; degrees are required")
    lats = (t.f, t.f + t.e * height)
    if max(abs(lats[0]), abs(lats[1])) > 90.0 + _LAT_SLACK_DEG:
        raise RasterError(
            f"geographic grid rows reach latitude {lats[0] if abs(lats[0]) > 90 else lats[1]:.6f}, beyond +-90 deg"
        )


def row_areas_m2(transform, height: int, crs, row_off: int = 0) -> np.ndarray:
    """Area (m^2) of one pixel in each row ``row_off .. row_off+height-1`` of a geographic grid."""
    crs = _as_crs(crs)
    t = _as_affine(transform)
    if not crs.is_geographic:
        raise RasterError(f"row_areas_m2 needs a geographic CRS, got {crs.name!r}")
    _geographic_checks(t, crs, row_off + height)
    rows = np.arange(row_off, row_off + height + 1, dtype=np.float64)
    lat_edges = np.clip(t.f + t.e * rows, -90.0, 90.0)
    a, e2 = ellipsoid_of(crs)
    q = authalic_q(lat_edges, e2)
    return 0.5 * a * a * math.radians(abs(t.a)) * np.abs(np.diff(q))


def _planar_pixel_area(t: Affine) -> float:
    return abs(t.a * t.e - t.b * t.d)


def _lonlat_transformer(crs: CRS) -> Transformer:
    return Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)


def _outline_areas_m2(t: Affine, crs: CRS, row0: int, rows: int, col0: int, cols: int,
                      subdivisions: int, to_lonlat: Transformer, a: float, e2: float) -> np.ndarray:
    """Per-pixel ellipsoidal areas of a block of a projected grid (see module docstring).

    The outline is sampled with ``2 * subdivisions`` points per side; the shoelace areas with
    ``subdivisions`` and ``2 * subdivisions`` segments per side are combined by Richardson
    extrapolation (the error of straight segments falls as 1/n^2), which makes 10-km pixels of a
    strongly distorted projection agree with Karney's geodesic areas to ~1e-9.
    """
    m = 2 * int(subdivisions)
    fr = row0 + np.arange(m * rows + 1, dtype=np.float64) / m
    fc = col0 + np.arange(m * cols + 1, dtype=np.float64) / m
    cc, rr = np.meshgrid(fc, fr)
    x = t.c + t.a * cc + t.b * rr
    y = t.f + t.d * cc + t.e * rr
    lon, lat = to_lonlat.transform(x, y)
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        bad = np.argwhere(~(np.isfinite(lon) & np.isfinite(lat)))[0]
        raise RasterError(
            f"pixel corner at fine-grid index {tuple(int(v) for v in bad)} (rows {row0}.., cols {col0}..) "
            f"is outside the valid domain of {crs.name!r}; cannot compute its area"
        )
    qv = authalic_q(lat, e2)
    lam = np.radians(lon)
    ri = (np.arange(rows) * m)[:, None]
    ci = (np.arange(cols) * m)[None, :]

    def shoelace(step: int) -> np.ndarray:
        k = np.arange(0, m, step)
        offs = np.concatenate([
            np.stack([np.zeros_like(k), k], 1),          # top edge, left -> right
            np.stack([k, np.full_like(k, m)], 1),        # right edge, top -> bottom
            np.stack([np.full_like(k, m), m - k], 1),    # bottom edge, right -> left
            np.stack([m - k, np.zeros_like(k)], 1),      # left edge, bottom -> top
        ])
        xs = np.stack([lam[ri + dr, ci + dc] for dr, dc in offs])    # (points, rows, cols)
        ys = np.stack([qv[ri + dr, ci + dc] for dr, dc in offs])
        dx = xs - xs[0]
        dx = (dx + np.pi) % (2.0 * np.pi) - np.pi                    # unwrap across the antimeridian
        dy = ys - ys[0]
        cross = dx * np.roll(dy, -1, axis=0) - np.roll(dx, -1, axis=0) * dy
        return 0.5 * a * a * 0.5 * np.abs(cross.sum(axis=0))

    fine, coarse = shoelace(1), shoelace(2)
    return (4.0 * fine - coarse) / 3.0


def area_kind(crs, transform=None, shape: tuple[int, int] | None = None) -> AreaKind:
    """'geographic', 'equal_area' or 'projected' (see module docstring).

    With ``transform`` and ``shape`` the equal-area test samples 9 pixels of that grid; without
    them it samples 1-km squares at 9 points of the CRS's area of use.
    """
    crs = _as_crs(crs)
    if crs.is_geographic:
        return "geographic"
    if not crs.is_projected:
        raise RasterError(f"CRS {crs.name!r} is neither geographic nor projected; cannot compute areas")
    a, e2 = ellipsoid_of(crs)
    to_lonlat = _lonlat_transformer(crs)
    if transform is not None and shape is not None:
        t = _as_affine(transform)
        h, w = int(shape[0]), int(shape[1])
        rows = sorted({0, h // 2, max(h - 1, 0)})
        cols = sorted({0, w // 2, max(w - 1, 0)})
        samples = [(t, r, c) for r in rows for c in cols]
    else:
        aou = crs.area_of_use
        west, south, east, north = aou.bounds if aou is not None else (-10.0, -10.0, 10.0, 10.0)
        fwd = Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
        samples = []
        for fy in (0.1, 0.5, 0.9):
            for fx in (0.1, 0.5, 0.9):
                x, y = fwd.transform(west + fx * (east - west), south + fy * (north - south))
                samples.append((Affine(1000.0, 0, x, 0, -1000.0, y), 0, 0))
    for t, r, c in samples:
        try:
            ell = _outline_areas_m2(t, crs, r, 1, c, 1, DEFAULT_SUBDIVISIONS, to_lonlat, a, e2)[0, 0]
        except RasterError:
            continue  # a sample outside the projection's domain says nothing
        if abs(ell / _planar_pixel_area(t) - 1.0) > EQUAL_AREA_RTOL:
            return "projected"
    return "equal_area"


def pixel_areas_m2(transform, shape: tuple[int, int], crs, window: Window | None = None,
                   subdivisions: int = DEFAULT_SUBDIVISIONS, kind: AreaKind | None = None) -> np.ndarray:
    """Area (m^2) of every pixel of a grid (or of ``window`` of it) on the CRS's ellipsoid.

    Geographic and equal-area grids return a read-only broadcast view (one value per row, or a
    single value): memory stays O(rows); ``np.array(result)`` makes a writable copy.
    ``kind`` skips :func:`area_kind` when the caller already knows it.
    """
    crs = _as_crs(crs)
    t = _as_affine(transform)
    height, width = int(shape[0]), int(shape[1])
    if height <= 0 or width <= 0:
        raise SawaValueError(f"grid shape must be positive, got {shape}")
    if window is None:
        row0, col0, rows, cols = 0, 0, height, width
    else:
        row0, col0 = int(window.row_off), int(window.col_off)
        rows, cols = int(window.height), int(window.width)
        if row0 < 0 or col0 < 0 or row0 + rows > height or col0 + cols > width:
            raise SawaValueError(f"window {window} is outside the grid of shape {shape}")
    kind = kind or area_kind(crs, t, (height, width))
    if kind == "geographic":
        per_row = row_areas_m2(t, rows, crs, row_off=row0)
        return np.broadcast_to(per_row[:, None], (rows, cols))
    if kind == "equal_area":
        return np.broadcast_to(np.float64(_planar_pixel_area(t)), (rows, cols))
    a, e2 = ellipsoid_of(crs)
    to_lonlat = _lonlat_transformer(crs)
    out = np.empty((rows, cols), dtype=np.float64)
    chunk_rows = max(1, _CHUNK_PIXELS // max(cols, 1))
    for r in range(0, rows, chunk_rows):
        nr = min(chunk_rows, rows - r)
        out[r:r + nr] = _outline_areas_m2(t, crs, row0 + r, nr, col0, cols, subdivisions, to_lonlat, a, e2)
    return out


def densify(geometry, crs) -> shapely.Geometry:
    """Segmentize a geometry so its straight edges (in its own CRS) survive reprojection/geodesics."""
    crs = _as_crs(crs)
    step = DENSIFY_DEG if crs.is_geographic else DENSIFY_M
    return shapely.segmentize(geometry, step)


def geodesic_area_m2(geometry, crs) -> float:
    """Ellipsoidal area (m^2) of a polygon whose edges are straight lines in ``crs``.

    The polygon is densified (edges <= 0.05 deg or 5 km), taken to longitude/latitude on the
    CRS's own ellipsoid and measured with :meth:`pyproj.Geod.geometry_area_perimeter` (Karney 2013).
    """
    crs = _as_crs(crs)
    geom = densify(geometry, crs)
    if not crs.is_geographic:
        to_lonlat = _lonlat_transformer(crs)
        geom = shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    geod = crs.get_geod() or Geod(ellps="WGS84")
    # Geod works modulo 360 deg of longitude: a ring spanning the whole globe (a latitude band)
    # would be degenerate, so measure the geometry in strips at most 90 deg wide.
    minx, miny, maxx, maxy = geom.bounds
    total = 0.0
    for x0 in np.arange(minx, maxx, 90.0):
        part = geom if maxx - minx <= 90.0 else geom.intersection(shapely.box(x0, miny - 1, min(x0 + 90.0, maxx), maxy + 1))
        for poly in shapely.get_parts(part):
            if poly.geom_type in ("Polygon", "MultiPolygon") and not poly.is_empty:
                area, _ = geod.geometry_area_perimeter(shapely.orient_polygons(poly))
                total += abs(float(area))
        if maxx - minx <= 90.0:
            break
    return total


__all__ = [
    "AreaKind",
    "area_kind",
    "authalic_q",
    "band_area_m2",
    "densify",
    "ellipsoid_area_m2",
    "ellipsoid_of",
    "geodesic_area_m2",
    "pixel_areas_m2",
    "row_areas_m2",
]
