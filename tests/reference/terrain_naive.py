"""Slow, obvious reference implementations for the terrain tests.

Independent of ``terrain``: pixel spacing comes from the closed-form radii of
curvature of the WGS84 ellipsoid (not pyproj), the Horn stencil is written out
pixel by pixel, the footprint plane fit uses ``numpy.linalg.lstsq``, and SAWA's
bare-ground quantiles come from the closed-form Gaussian CDF (scipy).
"""

from __future__ import annotations

import math

import numpy as np

WGS84_A = 6378137.0
WGS84_F = 1.0 / 298.257223563


def radii_of_curvature(lat_deg):
    """Meridian radius M and prime-vertical radius N (m) of WGS84 at ``lat_deg``."""
    e2 = WGS84_F * (2.0 - WGS84_F)
    s2 = np.sin(np.radians(lat_deg)) ** 2
    w = np.sqrt(1.0 - e2 * s2)
    return WGS84_A * (1.0 - e2) / w**3, WGS84_A / w


def geographic_spacing(lat_deg, res_x_deg, res_y_deg):
    """(two-column distance along the parallel, two-row distance along the meridian) in m at ``lat_deg``."""
    m, n = radii_of_curvature(lat_deg)
    rad = math.pi / 180.0
    return 2.0 * n * np.cos(np.radians(lat_deg)) * res_x_deg * rad, 2.0 * m * res_y_deg * rad


def horn_naive(z, dist_ew_rows, dist_ns_rows):
    """Horn slope/aspect (deg) pixel by pixel; edges and pixels with a NaN neighbour are NaN."""
    z = np.asarray(z, dtype=np.float64)
    h, w = z.shape
    slope = np.full((h, w), np.nan)
    aspect = np.full((h, w), np.nan)
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            win = z[r - 1:r + 2, c - 1:c + 2]
            if not np.all(np.isfinite(win)):
                continue
            a, b, cc = win[0]
            d, _, f = win[1]
            g, hh, i = win[2]
            dzdx = ((cc - a) / dist_ew_rows[r - 1] + 2 * (f - d) / dist_ew_rows[r] + (i - g) / dist_ew_rows[r + 1]) / 4
            dzdy = ((a + 2 * b + cc) - (g + 2 * hh + i)) / (4 * dist_ns_rows[r])
            t = math.hypot(dzdx, dzdy)
            slope[r, c] = math.degrees(math.atan(t))
            if t > 0:
                aspect[r, c] = math.degrees(math.atan2(-dzdx, -dzdy)) % 360.0
    return slope, aspect


def weighted_plane_fit(dx_m, dy_m, z, weights):
    """Gradient (dz/dEast, dz/dNorth) of the weighted least-squares plane through points."""
    sw = np.sqrt(np.asarray(weights, dtype=np.float64))
    a = np.column_stack([np.ones_like(dx_m), dx_m, dy_m]) * sw[:, None]
    coef, *_ = np.linalg.lstsq(a, np.asarray(z) * sw, rcond=None)
    return coef[1], coef[2]


def gaussian_quantile_above_end(p, sigma, end_sigmas, start_sigmas):
    """Height above the signal end (in units of ``sigma``) of the ``p`` energy quantile of a Gaussian
    return counted from an end ``end_sigmas`` below the centre to a start ``start_sigmas`` above it."""
    from scipy.stats import norm

    lo = norm.cdf(-end_sigmas)
    hi = norm.cdf(start_sigmas)
    return (end_sigmas + norm.ppf(lo + p * (hi - lo))) * sigma


def box_cascade_sigma(boxes):
    """Standard deviation (samples) of a cascade of centred moving averages."""
    return math.sqrt(sum((b * b - 1) / 12.0 for b in boxes))
