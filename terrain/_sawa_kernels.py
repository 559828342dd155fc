"""Private numba kernels of SAWA: bare-ground model waveforms and quantile heights over ragged batches.

Public code calls :func:`terrain.sawa.sawa_metrics`. All functions are valid
Python and run (slowly) with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

#: Gaussian kernels are truncated at +-KERNEL_SIGMAS sigma.
KERNEL_SIGMAS = 6.0
#: Fraction of the transmit peak below which transmit samples are not part of the pulse.
PULSE_FLOOR = 0.01


@njit(cache=True)
def gaussian_kernel(sigma_samples, out_half):
    """Unit-sum discrete Gaussian of ``sigma_samples`` (half-length ``out_half``); a delta when sigma ~ 0."""
    n = 2 * out_half + 1
    k = np.zeros(n)
    if sigma_samples < 1e-3:
        k[out_half] = 1.0
        return k
    s = 0.0
    for j in range(n):
        u = (j - out_half) / sigma_samples
        k[j] = math.exp(-0.5 * u * u)
        s += k[j]
    for j in range(n):
        k[j] /= s
    return k


@njit(cache=True, parallel=True)
def render_bare_ground(start, count, centre, pulse_sigma, terrain_sigma, energy, offset,
                       tx_samples, tx_start, tx_count, tx_centre, use_tx, out):
    """Noise-free bare-ground waveforms (counts) into the ragged ``out``.

    Shot ``k`` occupies ``out[start[k]:start[k] + count[k]]``; its ground return is
    centred on fractional sample ``centre[k]`` and holds ``energy[k]`` counts x
    samples above ``offset[k]``. Shape: the transmit pulse -- a Gaussian of
    ``pulse_sigma[k]`` samples, or when ``use_tx[k]`` the measured transmit
    samples ``tx_samples[tx_start[k]:tx_start[k] + tx_count[k]]`` (offset already
    removed, unit sum) whose centroid ``tx_centre[k]`` is placed on ``centre[k]``
    -- convolved with a Gaussian of ``terrain_sigma[k]`` samples (a plane under a
    Gaussian footprint). Gaussian x Gaussian is rendered in closed form with
    sigma^2 = pulse^2 + terrain^2.
    """
    for k in prange(count.shape[0]):
        s = start[k]
        n = count[k]
        for i in range(n):
            out[s + i] = offset[k]
        e = energy[k]
        if not (e > 0.0):
            continue
        if not use_tx[k]:
            sg = math.sqrt(pulse_sigma[k] ** 2 + terrain_sigma[k] ** 2)
            norm = e / (math.sqrt(2.0 * math.pi) * sg)
            for i in range(n):
                u = (i - centre[k]) / sg
                if abs(u) < 12.0:
                    out[s + i] += norm * math.exp(-0.5 * u * u)
            continue
        # measured pulse convolved with the terrain Gaussian, sampled with linear interpolation
        ts = tx_start[k]
        tn = tx_count[k]
        half = int(math.ceil(KERNEL_SIGMAS * terrain_sigma[k]))
        ker = gaussian_kernel(terrain_sigma[k], half)
        m = tn + 2 * half
        conv = np.zeros(m)
        for j in range(tn):
            v = tx_samples[ts + j]
            if v == 0.0:
                continue
            for q in range(2 * half + 1):
                conv[j + q] += v * ker[q]
        # conv index c corresponds to tx position c - half; tx_centre maps to centre[k]
        shift = centre[k] - (tx_centre[k] + half)
        for i in range(n):
            x = i - shift
            i0 = int(math.floor(x))
            if i0 < 0 or i0 >= m:
                continue
            f = x - i0
            v0 = conv[i0]
            v1 = conv[i0 + 1] if i0 + 1 < m else 0.0
            out[s + i] += e * (v0 + f * (v1 - v0))


@njit(cache=True, parallel=True)
def prepare_tx(tx_samples, tx_start, tx_count, tx_offset, out_samples, out_centre, out_ok):
    """Offset-removed, unit-sum transmit pulses (negative samples -> 0) and their centroids (samples).

    Only the samples of the contiguous run around the maximum that stays above
    ``PULSE_FLOOR`` (1 %) of the peak are kept: the pulse to beyond +-3 sigma
    (a Gaussian loses < 3 % of its variance), without the noise elsewhere in the
    128-sample record.
    """
    for k in prange(tx_count.shape[0]):
        s = tx_start[k]
        n = tx_count[k]
        out_ok[k] = False
        out_centre[k] = np.nan
        for i in range(n):
            out_samples[s + i] = 0.0
        if n < 3:
            continue
        peak = -np.inf
        ip = 0
        for i in range(n):
            v = tx_samples[s + i] - tx_offset[k]
            if v > peak:
                peak = v
                ip = i
        if not (peak > 0.0) or not math.isfinite(peak):
            continue
        lim = PULSE_FLOOR * peak
        lo = ip
        while lo > 0 and tx_samples[s + lo - 1] - tx_offset[k] > lim:
            lo -= 1
        hi = ip
        while hi < n - 1 and tx_samples[s + hi + 1] - tx_offset[k] > lim:
            hi += 1
        tot = 0.0
        mom = 0.0
        for i in range(lo, hi + 1):
            v = tx_samples[s + i] - tx_offset[k]
            if v < 0.0:
                v = 0.0
            out_samples[s + i] = v
            tot += v
            mom += v * i
        if tot <= 0.0:
            continue
        for i in range(lo, hi + 1):
            out_samples[s + i] /= tot
        out_centre[k] = mom / tot
        out_ok[k] = True


def richardson_lucy_gaussian(data: np.ndarray, length: np.ndarray, sigma: np.ndarray, iterations: np.ndarray,
                             chunk_rows: int = 256, accelerate: bool = True) -> np.ndarray:
    """Richardson-Lucy deconvolution of a Gaussian from many non-negative 1-D signals at once.

    ``data`` (n, L): signals (>= 0), signal ``k`` valid in ``data[k, :length[k]]``
    (zero beyond); ``sigma`` (n,): Gaussian sigma (samples); ``iterations`` (n,).
    Update [Richardson1972; Lucy1974]: ``u <- u * K^T (d / (K u))`` (K symmetric),
    with the support restricted to the valid range, which keeps ``u >= 0`` and the
    flux. With ``accelerate`` each step starts from the vector extrapolation
    ``y = u_k + a (u_k - u_{k-1})``, ``a = <g_k, g_{k-1}> / <g_{k-1}, g_{k-1}>``
    clipped to [0, 0.95] (``g`` the last RL changes) [Biggs1997], which reaches a
    given restoration in several times fewer steps. Convolutions by FFT
    (scipy.fft, all cores) on a zero-padded grid of a fast length (no
    wrap-around), batched over rows of equal length, ``chunk_rows`` rows at a
    time; rows that have done their iterations leave the batch. Returns the
    deconvolved signals (n, L).

    [Richardson1972] Richardson, W.H. (1972) JOSA 62(1), 55-59.
    [Lucy1974] Lucy, L.B. (1974) Astron. J. 79, 745-754.
    [Biggs1997] Biggs, D.S.C. & Andrews, M. (1997) Acceleration of iterative image restoration algorithms.
        Applied Optics 36(8), 1766-1775.
    """
    from scipy import fft as sfft

    n, width = data.shape
    out = np.zeros_like(data, dtype=np.float64)
    if n == 0:
        return out
    pad = np.ceil(KERNEL_SIGMAS * np.maximum(sigma, 0.0)).astype(np.int64) + 1
    fft_len = np.array([sfft.next_fast_len(int(max(length[k] + 2 * pad[k], 8)), real=True) for k in range(n)],
                       np.int64)
    # group similar lengths (round up to the next of a few fast sizes) to batch rows
    sizes = np.unique(fft_len)
    for size in sizes:
        rows_all = np.flatnonzero(fft_len == size)
        rows_all = rows_all[np.argsort(iterations[rows_all], kind="stable")]  # ascending iteration counts
        size = int(size)
        x = np.arange(size, dtype=np.float64)
        x = np.minimum(x, size - x)
        for c0 in range(0, rows_all.size, chunk_rows):
            rows = rows_all[c0:c0 + chunk_rows]
            m = rows.size
            sg = np.maximum(sigma[rows], 1e-6)[:, None]
            ker = np.exp(-0.5 * (x[None, :] / sg) ** 2)
            ker /= ker.sum(axis=1, keepdims=True)
            kf = sfft.rfft(ker, axis=1, workers=-1)
            d = np.zeros((m, size))
            mask = np.zeros((m, size), dtype=bool)
            for j, k in enumerate(rows):
                d[j, :length[k]] = data[k, :length[k]]
                mask[j, :length[k]] = True
            u = np.where(mask, d + 1e-3, 0.0)
            u_prev = u.copy()
            g_prev = np.zeros_like(u)
            alpha = np.zeros((m, 1))
            n_it = iterations[rows]
            lo = 0
            for it in range(int(n_it.max()) if m else 0):
                while lo < m and n_it[lo] <= it:
                    lo += 1
                sl = slice(lo, m)
                uu = u[sl]
                if accelerate and it >= 2:
                    y = np.maximum(uu + alpha[sl] * (uu - u_prev[sl]), 0.0)
                else:
                    y = uu
                ky = sfft.irfft(sfft.rfft(y, axis=1, workers=-1) * kf[sl], size, axis=1, workers=-1)
                ratio = np.where(mask[sl], d[sl] / np.maximum(ky, 1e-9), 0.0)
                corr = sfft.irfft(sfft.rfft(ratio, axis=1, workers=-1) * kf[sl], size, axis=1, workers=-1)
                new = np.where(mask[sl], np.maximum(y * corr, 0.0), 0.0)
                if accelerate:
                    g = new - y
                    num = np.sum(g * g_prev[sl], axis=1, keepdims=True)
                    den = np.sum(g_prev[sl] * g_prev[sl], axis=1, keepdims=True)
                    alpha[sl] = np.clip(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), 0.0, 0.95)
                    g_prev[sl] = g
                u_prev[sl] = uu
                u[sl] = new
            for j, k in enumerate(rows):
                out[k, :length[k]] = u[j, :length[k]]
    return out


__all__ = ["render_bare_ground", "prepare_tx", "gaussian_kernel", "richardson_lucy_gaussian"]
