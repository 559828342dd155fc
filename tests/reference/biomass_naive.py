"""Slow, obvious reference implementations for the biomass package (plain Python / numpy).

* :func:`naive_predict_shot` - one shot through one L4A stratum model, written
  line by line from the L4A formulas with the ``math`` module.
* :func:`naive_ols` - OLS by the normal equations, with rse, vcov and the Snowdon ratio.
* :func:`simulate_slope_shots` - a synthetic shot table with known AGB where the
  uncorrected RH metrics are inflated by terrain slope (the footprint's ground
  spread adds height, ~ D/2 * tan(slope)) and "SAWA" metrics are not.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats


def naive_predict_shot(rh_m: list[float], par: list[float], vcov: list[list[float]], rse: float, dof: int,
                       c: float, offset_m: float = 100.0, alpha: float = 0.1) -> dict[str, float]:
    """agbd_t, agbd_t_se, agbd, agbd_se (C * se_t^2), PI bounds for a sqrt/sqrt model (NaN rules as L4A)."""
    x = [1.0] + [math.sqrt(r + offset_m) for r in rh_m]
    t = 0.0
    for j in range(len(x)):
        t += par[j] * x[j]
    q = 0.0
    for i in range(len(x)):
        for j in range(len(x)):
            q += x[i] * vcov[i][j] * x[j]
    se_t = math.sqrt(rse * rse + q)
    tq = float(stats.t.ppf(1 - alpha / 2, dof))
    lo, hi = t - tq * se_t, t + tq * se_t
    return {
        "agbd_t": t,
        "agbd_t_se": se_t,
        "agbd": c * t * t if t >= 0 else math.nan,
        "agbd_se": c * se_t * se_t if t >= 0 else math.nan,
        "agbd_pi_lower": c * lo * lo if lo >= 0 else math.nan,
        "agbd_pi_upper": c * hi * hi if hi >= 0 else math.nan,
    }


def naive_ols(rh_m: np.ndarray, agbd: np.ndarray, offset_m: float = 100.0) -> dict[str, object]:
    """sqrt(agbd) ~ 1 + sqrt(rh + offset): normal equations (X'X) b = X'y, written out."""
    n, p = rh_m.shape
    rows = [[1.0] + [math.sqrt(rh_m[i, k] + offset_m) for k in range(p)] for i in range(n)]
    yt = [math.sqrt(v) for v in agbd]
    xtx = np.zeros((p + 1, p + 1))
    xty = np.zeros(p + 1)
    for i in range(n):
        for a in range(p + 1):
            xty[a] += rows[i][a] * yt[i]
            for b in range(p + 1):
                xtx[a, b] += rows[i][a] * rows[i][b]
    par = np.linalg.solve(xtx, xty)
    fitted = [sum(par[a] * rows[i][a] for a in range(p + 1)) for i in range(n)]
    rss = sum((yt[i] - fitted[i]) ** 2 for i in range(n))
    dof = n - (p + 1)
    rse = math.sqrt(rss / dof)
    vcov = rse * rse * np.linalg.inv(xtx)
    snowdon = (sum(agbd) / n) / (sum(f * f for f in fitted) / n)
    return {"par": par, "vcov": vcov, "rse": rse, "dof": dof, "c": snowdon}


def simulate_slope_shots(n: int = 1200, seed: int = 7, footprint_m: float = 25.0) -> pd.DataFrame:
    """Synthetic shots over a ~40 x 40 km area with known AGB (Mg/ha) and slope-biased raw metrics.

    True canopy height h (m) varies smoothly in space; AGB = 0.9 * h**1.6 (a
    stated allometry). Raw RH50/RH98 add the terrain term 0.5 * D * tan(slope)
    (the ground return spread over a sloped footprint) plus noise; SAWA
    metrics carry only the noise.
    """
    rng = np.random.default_rng(seed)
    lat0, lon0 = 5.0, 20.0
    lat = lat0 + rng.uniform(-0.18, 0.18, n)
    lon = lon0 + rng.uniform(-0.18, 0.18, n)
    u = (lon - lon0) / 0.18
    v = (lat - lat0) / 0.18
    h = 22.0 + 9.0 * np.sin(2.2 * u) * np.cos(1.7 * v) + rng.normal(0, 2.0, n)
    h = np.clip(h, 3.0, None)
    slope = np.clip(25.0 + 20.0 * np.cos(1.3 * u + 0.5) * np.sin(1.9 * v) + rng.normal(0, 4, n), 0.0, 49.0)
    agb = 0.9 * h ** 1.6
    terrain = 0.5 * footprint_m * np.tan(np.radians(slope))
    rh98_true = h
    rh50_true = 0.55 * h
    noise98 = rng.normal(0, 1.0, n)
    noise50 = rng.normal(0, 1.0, n)
    return pd.DataFrame({
        "shot_number": np.arange(n, dtype=np.uint64) + 1,
        "lon": lon, "lat": lat, "slope_deg": slope, "agb_mg_ha": agb,
        "rh98": rh98_true + terrain + noise98, "rh50": rh50_true + 0.5 * terrain + noise50,
        "rh98_sawa": rh98_true + noise98, "rh50_sawa": rh50_true + noise50,
    })
