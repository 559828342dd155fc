"""Slow, obvious per-cell implementation of the hybrid-inference gridding (oracle for fusion.grid).

Written straight from the textbook forms (Patterson et al. 2019; Cochran 1977 eq. 6.48-6.49):
a Python loop over cells, track means, ``n_bar``, and the double sum ``sum_i sum_j g_i' C g_j``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np


def naive_grid(x, y, agbd, transform, width, height, *, agbd_se=None, track_id=None, jacobians=None,
               vcov=None, min_shots=3, min_tracks=None):
    """Return dict of (height, width) arrays: mean, se, n_shots, n_tracks, var_model, var_sampling.

    ``x``/``y`` are coordinates in the grid CRS; ``transform`` an affine (a, b, c, d, e, f).
    """
    a, _, c, _, e, f = tuple(transform)[:6]
    cells = defaultdict(list)
    for i in range(len(agbd)):
        if not math.isfinite(agbd[i]):
            continue
        if agbd_se is not None and jacobians is None and not math.isfinite(agbd_se[i]):
            continue
        col = math.floor((x[i] - c) / a)
        row = math.floor((y[i] - f) / e)
        if 0 <= col < width and 0 <= row < height:
            cells[(row, col)].append(i)
    out = {k: np.full((height, width), np.nan) for k in ("mean", "se", "var_model", "var_sampling")}
    out["n_shots"] = np.zeros((height, width), dtype=np.int64)
    out["n_tracks"] = np.zeros((height, width), dtype=np.int64)
    if track_id is not None and min_tracks is None:
        min_tracks = 2
    for (row, col), idx in cells.items():
        n = len(idx)
        values = [float(agbd[i]) for i in idx]
        mu = sum(values) / n
        out["n_shots"][row, col] = n
        if track_id is not None:
            tracks = defaultdict(list)
            for i in idx:
                tracks[track_id[i]].append(float(agbd[i]))
            m = len(tracks)
            out["n_tracks"][row, col] = m
            if m >= 2:
                n_bar = n / m
                v_samp = sum((len(v) / n_bar) ** 2 * (sum(v) / len(v) - mu) ** 2 for v in tracks.values())
                v_samp /= m * (m - 1)
            else:
                v_samp = math.nan
            enough = n >= min_shots and m >= min_tracks
        else:
            if n >= 2:
                s2 = sum((v - mu) ** 2 for v in values) / (n - 1)
                v_samp = s2 / n
            else:
                v_samp = math.nan
            enough = n >= min_shots
        if jacobians is not None:
            v_mod = 0.0
            for i in idx:
                for j in idx:
                    v_mod += float(np.asarray(jacobians[i]) @ np.asarray(vcov) @ np.asarray(jacobians[j]))
            v_mod /= n * n
        elif agbd_se is not None:
            v_mod = (sum(float(agbd_se[i]) for i in idx) / n) ** 2
        else:
            v_mod = 0.0
        if enough:
            out["mean"][row, col] = mu
            out["var_sampling"][row, col] = v_samp
            out["var_model"][row, col] = v_mod
            out["se"][row, col] = math.sqrt(v_samp + v_mod) if math.isfinite(v_samp) else math.nan
    return out
