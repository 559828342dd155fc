"""Private numba kernels of the waveform engine (one module, ``@njit``).

Public code calls :func:`waveform.metrics.compute_metrics`, which validates
its input and calls :func:`metrics_kernel` here. Everything in this module
works on plain numpy arrays and is valid Python, so it also runs (slowly)
with ``NUMBA_DISABLE_JIT=1``.

The processing chain per shot follows the GEDI L2A algorithm as it shows in
the intermediate values of a real L2A granule (``BEAMxxxx/rx_processing_aN``),
which we reverse-engineered step by step (see ``tests/waveform/test_l2a_agreement.py``):

1. noise mean ``mu`` and standard deviation ``sd``: L1B ``noise_mean_corrected``
   / ``noise_stddev_corrected`` when given (L2A ``rx_processing_aN/mean`` and
   ``stddev`` are exactly these), else estimated from the quieter of the
   waveform's head and tail windows;
2. thresholds ``front = mu + k_front * sd`` and ``back = mu + k_back * sd``
   (L2A ``front_threshold`` / ``back_threshold`` match to 2e-5 counts);
3. smoothing: a cascade of centred moving averages (an almost-Gaussian filter,
   Wells 1986) with edge replication; the box widths per L2A smoothing width
   are in :mod:`waveform.algorithms`. Only the part of the waveform that can
   matter is smoothed (exact pruning with box means, see ``_process_shot``);
4. signal start ``toploc`` = first quarter-sample (L2A ``rx_subbin_resolution``
   = 4) where the linearly interpolated smoothed waveform exceeds ``front``;
   signal end ``botloc`` = last quarter-sample where it exceeds ``back``.
   Locations are 0-based sample positions in the L1B waveform: the stored L2A
   values satisfy ``elev_lowestmode = elevation_bin0 - zcross * bin_size``
   with ``bin_size = (bin0 - lastbin) / (count - 1)`` to 3e-5 m, and L2A
   ``botloc_amp >= back_threshold`` for every shot (no further back-off);
5. modes = descending zero crossings of the first difference of the
   ``zcross``-smoothed waveform, linearly interpolated and rounded to a quarter
   sample, strictly between ``toploc`` and ``botloc``, with an amplitude
   above ``back``, and not within a quarter sample of a neighbouring minimum
   (L2A ``rx_modelocs``, top to bottom); the ground (L2A ``zcross``) is the
   lowest mode, or with mode selection (group a2) the lowest mode whose
   amplitude exceeds ``back`` by ``select_amp`` counts (L2A
   ``selected_mode``; all 300 reference shots agree to a quarter sample);
6. cumulative energy of ``smoothed_zcross - mu`` on the quarter-sample grid
   from ``botloc`` upward (the ``zcross`` filter: a2's stored percentiles need
   the 3.5 ns filter): the location of percentile ``k`` is the grid point
   just before the running sum first reaches ``k %`` of the total
   (L2A ``rx_cumulative``; 0 -> ``botloc``, 100 -> ``toploc``);
   ``RH_k = (ground - location_k) * bin_size``. L2A stores RH as integer
   centimetres truncated toward zero (``geolocation/rh_aN``); sawa keeps metres.

Reason codes (0 = ok) are module constants; their table is
:data:`waveform.metrics.REASON_CODES`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Most modes stored per shot (L2A ``rx_max_mode_count``).
MAX_MODES = 20
#: Sub-sample resolution of locations (L2A ``rx_subbin_resolution``): quarter samples.
SUBBIN = 4
#: Number of relative heights RH0..RH100.
N_RH = 101
#: Shots per parallel work block (each block allocates its scratch once).
BLOCK_SHOTS = 128

# reason codes (documented in waveform.metrics.REASON_CODES)
OK = 0
EMPTY = 1
NONFINITE = 2
BAD_GEOLOCATION = 3
BAD_NOISE = 4
NO_SIGNAL = 5
NO_SIGNAL_END = 6
NO_MODE = 7
NO_ENERGY = 8
TOO_SHORT = 9
SATURATED = 10

#: Fewest samples a waveform needs (a difference of a difference).
MIN_SAMPLES = 3
#: A waveform whose signal holds at least this many consecutive raw samples exactly equal to its
#: maximum has a clipped flat top: the detector saturated. GEDI L2A flags such shots
#: (``rx_assess/rx_clipflag``, ``rx_clipbin_count`` consecutive clipped bins; quality_flag = 0,
#: L2A ATBD / user guide). With digitiser noise (sd ~3 counts) or a smooth return, 4 equal
#: maxima in a row do not occur; a clip leaves a plateau as wide as the clipped part of the return.
SATURATION_MIN_RUN = 4
#: Largest plausible |elevation_bin0| / |elevation_lastbin| (m): no surface return lies 100 km from the
#: ellipsoid (GEDI flies at ~420 km). Beyond it the geolocation is garbage (and heights would overflow).
MAX_ABS_ELEVATION_M = 1.0e5
#: Plausible vertical size of one sample (m). GEDI (and LVIS, GLAS) digitise at 1 ns = 0.1499 m of
#: range (L1B user guide), i.e. ~0.149-0.150 m vertically; simulators use 0.15-1 m. Outside 1 cm..10 m
#: bin0/lastbin are not a waveform's geolocation (and a SAWA terrain model in such bins would need
#: billions of samples).
MIN_BIN_SIZE_M = 0.01
MAX_BIN_SIZE_M = 10.0

#: Relative margin of the sample-level scan for the half-maximum extents: far above rounding
#: (~1e-16) so that no quarter at or above half the peak is skipped; quarters are then checked exactly.
HALF_MAX_SCAN_MARGIN = 1e-9

#: k / 100 for k = 0..100 (cumulative-energy fractions; a constant array avoids a division per step).
PERCENT = np.arange(N_RH) / 100.0


@njit(cache=True)
def smooth_boxes(w, n, boxes, nbox, half, lo, hi, st, out):
    """Centred cascade of moving averages of ``w[:n]``, written to ``out[lo:hi]`` only.

    ``boxes[:nbox]`` are the box widths (samples); ``half`` = (sum(widths) -
    nbox) / 2 is the half-length of the equivalent kernel (an integer, so that
    the filter is centred). ``st`` is scratch of shape (>= nbox + 1,
    >= (hi - lo) + 2*half + max(widths)). The waveform is extended by
    replicating its first and last samples. Each stage is a running sum
    (``acc += x[j] - x[j - width]``); all stages advance in one loop so that
    their dependency chains overlap. Cost O((hi - lo) * nbox), independent of
    the widths.
    """
    m = (hi - lo) + 2 * half
    base = lo - half
    pad = 1
    for p in range(nbox):
        if boxes[p] > pad:
            pad = boxes[p]
    for p in range(nbox + 1):
        for j in range(pad):
            st[p, j] = 0.0  # zero history: stage p is exact from buffer index sum(widths[:p+1]-1)
    half2 = 2 * half
    if base >= 0 and base + m <= n and (nbox == 4 or nbox == 5):
        # no edge to replicate: the first stage reads the waveform in place (buffer index j is
        # sample base + j - pad) and treats what lies before the buffer as zero history, as the copy does
        if nbox == 4:
            _cascade4(w, base - pad, st, pad, m, boxes[0], boxes[1], boxes[2], boxes[3], out, lo, half2)
        else:
            _cascade5(w, base - pad, st, pad, m, boxes[0], boxes[1], boxes[2], boxes[3], boxes[4], out, lo, half2)
        return
    x0 = st[0]
    # copy with edge replication: head (before sample 0), body, tail (after sample n - 1)
    j_body = -base if base < 0 else 0
    j_tail = n - base if n - base < m else m
    first_value = w[0]
    last_value = w[n - 1]
    for j in range(0, j_body):
        x0[pad + j] = first_value
    for j in range(j_body, j_tail):
        x0[pad + j] = w[base + j]
    for j in range(j_tail, m):
        x0[pad + j] = last_value
    # a causal cascade delays by `half`: buffer index pad + j is centred on sample base + j - half,
    # so out[lo + i] is buffer index pad + 2 * half + i
    if nbox == 4:
        _cascade4(x0, 0, st, pad, m, boxes[0], boxes[1], boxes[2], boxes[3], out, lo, half2)
    elif nbox == 5:
        _cascade5(x0, 0, st, pad, m, boxes[0], boxes[1], boxes[2], boxes[3], boxes[4], out, lo, half2)
    else:
        for p in range(nbox):
            width = boxes[p]
            inv = 1.0 / width
            src = st[p]
            dst = st[p + 1]
            acc = 0.0
            for j in range(pad, pad + m):
                acc += src[j] - src[j - width]
                dst[j] = acc * inv
        res = st[nbox]
        for i in range(hi - lo):
            out[lo + i] = res[pad + i + half2]


@njit(cache=True)
def _cascade4(src, off, st, pad, m, b0, b1, b2, b3, out, lo, delay):
    # stage 0 reads src[j + off] (history before buffer index pad is zero); the last stage goes
    # straight to out[lo:] once past the first `delay` (warm-up) values
    x1 = st[1]
    x2 = st[2]
    x3 = st[3]
    shift = lo - pad - delay
    first_out = pad + delay
    i0 = 1.0 / b0
    i1 = 1.0 / b1
    i2 = 1.0 / b2
    i3 = 1.0 / b3
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    history = pad + b0
    for j in range(pad, pad + m):
        if j >= history:
            a0 += float(src[j + off]) - float(src[j + off - b0])
        else:
            a0 += float(src[j + off])  # x - 0.0 == x: the same sum as with a zeroed history
        x1[j] = a0 * i0
        a1 += x1[j] - x1[j - b1]
        x2[j] = a1 * i1
        a2 += x2[j] - x2[j - b2]
        x3[j] = a2 * i2
        a3 += x3[j] - x3[j - b3]
        if j >= first_out:
            out[j + shift] = a3 * i3


@njit(cache=True)
def _cascade5(src, off, st, pad, m, b0, b1, b2, b3, b4, out, lo, delay):
    x1 = st[1]
    x2 = st[2]
    x3 = st[3]
    x4 = st[4]
    shift = lo - pad - delay
    first_out = pad + delay
    i0 = 1.0 / b0
    i1 = 1.0 / b1
    i2 = 1.0 / b2
    i3 = 1.0 / b3
    i4 = 1.0 / b4
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    history = pad + b0
    for j in range(pad, pad + m):
        if j >= history:
            a0 += float(src[j + off]) - float(src[j + off - b0])
        else:
            a0 += float(src[j + off])  # x - 0.0 == x: the same sum as with a zeroed history
        x1[j] = a0 * i0
        a1 += x1[j] - x1[j - b1]
        x2[j] = a1 * i1
        a2 += x2[j] - x2[j - b2]
        x3[j] = a2 * i2
        a3 += x3[j] - x3[j - b3]
        x4[j] = a3 * i3
        a4 += x4[j] - x4[j - b4]
        if j >= first_out:
            out[j + shift] = a4 * i4


#: Relative slack of the box-mean tests that prune the smoothing: a window passes when its sum
#: exceeds the limit less this fraction of it, so that rounding never prunes a sample that matters.
MEAN_PRUNE_SLACK = 1e-7

#: Samples per block of the first pass over a raw waveform: the pass sums each block (LLVM
#: vectorises the reassociated sum) and keeps its maximum, so that the later searches for the first
#: and last sample above a threshold look at block maxima instead of the noise samples.
SCAN_BLOCK = 16


@njit(cache=True, fastmath={"reassoc"})
def sum_and_block_max(w, n, block_max):
    """Sum of ``w[:n]`` in float64, and ``block_max[b]`` = max of each full block of SCAN_BLOCK samples.

    NaN/inf propagate into the sum (the caller rejects such waveforms before
    it uses the maxima). Reassociation only reorders the additions.
    """
    acc = 0.0
    n_full = n // SCAN_BLOCK
    for b in range(n_full):
        b0 = b * SCAN_BLOCK
        top = w[b0]
        part = 0.0
        for i in range(SCAN_BLOCK):
            x = w[b0 + i]
            part += float(x)  # float64 also in plain Python (float32 + float stays float32 in numpy 2)
            top = max(top, x)
        acc += part
        block_max[b] = top
    for i in range(n_full * SCAN_BLOCK, n):
        acc += float(w[i])
    return acc


@njit(cache=True)
def first_sample_above(w, n, thr, block_max, i0=0):
    """Index of the first raw sample > ``thr`` at or after ``i0`` (-1 if none), skipping blocks whose maximum is not."""
    b = (i0 + SCAN_BLOCK - 1) // SCAN_BLOCK  # first whole block at or after i0
    head_end = min(b * SCAN_BLOCK, n)
    for i in range(i0, head_end):
        if w[i] > thr:
            return i
    n_full = n // SCAN_BLOCK
    while b < n_full and not block_max[b] > thr:
        b += 1
    for i in range(max(b * SCAN_BLOCK, head_end), n):
        if w[i] > thr:
            return i
    return -1


@njit(cache=True)
def last_sample_above(w, n, thr, block_max):
    """Index of the last raw sample > ``thr`` (-1 if none), skipping blocks whose maximum is not."""
    n_full = n // SCAN_BLOCK
    for i in range(n - 1, n_full * SCAN_BLOCK - 1, -1):  # the partial block at the end
        if w[i] > thr:
            return i
    b = n_full - 1
    while b >= 0 and not block_max[b] > thr:
        b -= 1
    if b < 0:
        return -1
    for i in range(b * SCAN_BLOCK + SCAN_BLOCK - 1, b * SCAN_BLOCK - 1, -1):
        if w[i] > thr:
            return i
    return -1  # not reached: block b holds a sample above thr


@njit(cache=True)
def first_mean_above(w, n, width, thr, block_max):
    """First sample ``i`` where the mean of the ``width`` samples ending at ``i`` exceeds ``thr``.

    Samples before the waveform repeat ``w[0]`` (as in the smoothing). -1 if none.
    Used to prune smoothing: a box cascade containing this box cannot exceed
    ``thr`` before ``i - half``. A mean cannot exceed ``thr`` unless a sample in
    its window does, so the running mean starts at the first such sample and,
    once ``width`` samples have passed without another (after a noise spike),
    jumps to the next one. The test keeps a slack of MEAN_PRUNE_SLACK of the
    limit (never prune on rounding); a sample counts as above when it exceeds
    ``thr`` less the same slack, so that no window passing the test is skipped.
    """
    lim = width * thr
    slack = MEAN_PRUNE_SLACK * abs(lim)
    hot = thr - slack / width  # a window without a sample above `hot` sums to <= lim - slack
    i = first_sample_above(w, n, hot, block_max)
    while i >= 0:
        acc = 0.0
        for t in range(i - width + 1, i + 1):  # window ending at i
            acc += float(w[t if t > 0 else 0])
        last_hot = i
        j = i
        while True:
            if acc > lim - slack:
                return j
            j += 1
            if j >= n:
                return -1
            out_j = j - width
            acc += float(w[j]) - float(w[out_j if out_j > 0 else 0])
            if w[j] > hot:
                last_hot = j
            elif j - last_hot >= width:  # the window ending at j holds no sample above `hot`
                break
        i = first_sample_above(w, n, hot, block_max, j + 1)
    return -1


@njit(cache=True)
def last_mean_above(w, n, width, thr, block_max):
    """Last sample ``i`` where the mean of the ``width`` samples starting at ``i`` exceeds ``thr``.

    Samples after the waveform repeat ``w[n - 1]``. -1 if none.
    """
    start = last_sample_above(w, n, thr, block_max)
    if start < 0:
        return -1
    lim = width * thr
    slack = MEAN_PRUNE_SLACK * abs(lim)
    acc = 0.0
    for t in range(start, start + width):  # window starting at `start`
        acc += float(w[t if t < n - 1 else n - 1])
    for i in range(start, -1, -1):
        if i < start:
            out_i = i + width
            acc += float(w[i]) - float(w[out_i if out_i < n - 1 else n - 1])
        if acc > lim - slack:
            return i
    return -1


@njit(cache=True)
def flat_top_run(w, i0, i1, block_max):
    """Length of the run of samples equal to the maximum of ``w[i0:i1]``, from its first occurrence.

    Full blocks of SCAN_BLOCK samples inside the range use their stored maxima.
    """
    b_first = (i0 + SCAN_BLOCK - 1) // SCAN_BLOCK  # blocks b_first..b_last-1 lie inside the range
    b_last = i1 // SCAN_BLOCK
    if b_last <= b_first:
        b_first = b_last = i1  # no full block: the head loop covers everything
    head_end = min(b_first * SCAN_BLOCK, i1)
    top = float(w[i0])
    for i in range(i0, head_end):
        top = max(top, float(w[i]))
    for b in range(b_first, b_last):
        top = max(top, block_max[b])
    for i in range(max(b_last * SCAN_BLOCK, head_end), i1):
        top = max(top, float(w[i]))
    at = i0  # first occurrence of the maximum
    while at < head_end and float(w[at]) != top:
        at += 1
    if at == head_end and at < i1:
        b = b_first
        while b < b_last and block_max[b] != top:
            b += 1
        at = b * SCAN_BLOCK if b < b_last else max(b_last * SCAN_BLOCK, head_end)
        while float(w[at]) != top:
            at += 1
    run = 1
    while at + run < i1 and float(w[at + run]) == top:
        run += 1
    return run, top


@njit(cache=True)
def interp_at(sm, n, x):
    """Linearly interpolated value of ``sm`` at fractional sample ``x``."""
    if x <= 0.0:
        return sm[0]
    i0 = int(np.floor(x))
    if i0 >= n - 1:
        return sm[n - 1]
    f = x - i0
    return sm[i0] + f * (sm[i0 + 1] - sm[i0])


@njit(cache=True)
def first_above(sm, lo, hi, thr):
    """First quarter-sample where the interpolated ``sm`` exceeds ``thr`` (-1 if none).

    Only ``sm[lo:hi]`` is read; the caller guarantees ``sm[lo] <= thr`` unless ``lo == 0``.
    """
    i1 = -1
    for i in range(lo, hi):
        if sm[i] > thr:
            i1 = i
            break
    if i1 < 0:
        return -1
    if i1 == 0:
        return 0
    low = sm[i1 - 1]
    step = sm[i1] - low
    for f in range(1, SUBBIN):
        if low + step * (f / SUBBIN) > thr:
            return (i1 - 1) * SUBBIN + f
    return i1 * SUBBIN


@njit(cache=True)
def last_above(sm, lo, hi, n, thr):
    """Last quarter-sample where the interpolated ``sm`` exceeds ``thr`` (-1 if none).

    Only ``sm[lo:hi]`` is read; the caller guarantees ``sm[hi - 1] <= thr`` unless ``hi == n``.
    """
    i2 = -1
    for i in range(hi - 1, lo - 1, -1):
        if sm[i] > thr:
            i2 = i
            break
    if i2 < 0:
        return -1
    if i2 == n - 1:
        return i2 * SUBBIN
    low = sm[i2]
    step = sm[i2 + 1] - low
    for f in range(SUBBIN - 1, 0, -1):
        if low + step * (f / SUBBIN) > thr:
            return i2 * SUBBIN + f
    return i2 * SUBBIN


@njit(cache=True)
def find_modes(smz, n, top_q, bot_q, thr, modes_q, amps):
    """Local maxima of ``smz`` strictly inside (top_q, bot_q) with amplitude > ``thr``.

    A maximum closer than one quarter sample to a neighbouring minimum (a
    wiggle that does not change the sign of the slope on L2A's quarter-sample
    grid) is not a mode: L2A rejects them (reference granule, a3/a5/a6).
    Writes quarter-sample locations (top to bottom) and amplitudes of the
    lowest ``len(modes_q)`` modes; returns the total number found (may exceed
    the storage).
    """
    top = top_q / SUBBIN
    bot = bot_q / SUBBIN
    lo = int(np.floor(top)) - 1
    if lo < 0:
        lo = 0
    hi = int(np.ceil(bot)) + 1
    if hi > n - 2:
        hi = n - 2
    count = 0
    cap = modes_q.shape[0]
    last_min = -np.inf  # location of the latest minimum
    last_max = -np.inf  # unrounded location of the latest accepted mode
    min_gap = 1.0 / SUBBIN
    for i in range(lo, hi):
        d0 = smz[i + 1] - smz[i]
        d1 = smz[i + 2] - smz[i + 1]
        if d0 < 0.0 and d1 >= 0.0:
            xm = i + 0.5 + d0 / (d0 - d1)
            last_min = xm
            if count > 0 and xm - last_max < min_gap:  # drop the wiggle's maximum
                count -= 1
                last_max = -np.inf
            continue
        if d0 > 0.0 and d1 <= 0.0:
            x = i + 0.5 + d0 / (d0 - d1)
            if x <= top or x >= bot or x - last_min < min_gap:
                continue
            amp = interp_at(smz, n, x)
            if amp <= thr:
                continue
            if count >= cap:  # keep the lowest `cap` modes: the ground is the lowest
                for j in range(cap - 1):
                    modes_q[j] = modes_q[j + 1]
                    amps[j] = amps[j + 1]
                slot = cap - 1
            else:
                slot = count
            modes_q[slot] = np.floor(x * SUBBIN + 0.5)
            amps[slot] = amp
            last_max = x
            count += 1
    return count


@njit(cache=True)
def noise_from_waveform(w, n, window):
    """Mean and standard deviation of the quieter of the head and tail windows."""
    m = window if window < n else n
    if m < 2:
        return np.nan, np.nan
    best_mean = np.nan
    best_sd = np.inf
    for side in range(2):
        s0 = 0 if side == 0 else n - m
        acc = 0.0
        for i in range(s0, s0 + m):
            acc += float(w[i])
        mean = acc / m
        var = 0.0
        for i in range(s0, s0 + m):
            d = float(w[i]) - mean
            var += d * d
        sd = np.sqrt(var / (m - 1))
        if sd < best_sd:
            best_sd = sd
            best_mean = mean
    return best_mean, best_sd


@njit(cache=True)
def _group_values(smz, n, mu, i, f_lo, f_hi, fill):
    """Interpolated ``smz`` minus ``mu`` at the quarter samples 4i..4i+3 (``fill`` outside f_lo..f_hi).

    The same expression as L2A's (and ``np.interp``'s) linear interpolation:
    ``s0 + (s1 - s0) * f / 4``; past the last sample the waveform is flat.
    """
    s0 = smz[i]
    step = smz[i + 1] - s0 if i < n - 1 else 0.0
    v0 = s0 - mu
    v1 = (s0 + step * 0.25) - mu
    v2 = (s0 + step * 0.5) - mu
    v3 = (s0 + step * 0.75) - mu
    if f_lo > 0:
        v0 = fill
    if f_lo > 1:
        v1 = fill
    if f_lo > 2:
        v2 = fill
    if f_hi < 3:
        v3 = fill
    if f_hi < 2:
        v2 = fill
    if f_hi < 1:
        v1 = fill
    return v0, v1, v2, v3


@njit(cache=True)
def half_max_extents(smz, n, mu, top_q, bot_q, peak):
    """First quarter from the top and last from the bottom where interpolated ``smz - mu`` >= ``peak`` / 2.

    A linear interpolation lies between its end samples, so a sample scan finds
    the interval (a margin covers rounding); quarter values are then checked
    exactly from the interval before.
    """
    i_top = top_q // SUBBIN
    i_bot = bot_q // SUBBIN
    f_top = top_q - SUBBIN * i_top
    f_bot = bot_q - SUBBIN * i_bot
    n_groups = i_bot - i_top + 1
    half = 0.5 * peak
    near = half - HALF_MAX_SCAN_MARGIN * abs(half)
    first_q = top_q
    g_start = n_groups - 1
    for g in range(n_groups - 1, -1, -1):
        if smz[i_bot - g] - mu >= near:
            g_start = min(g + 1, n_groups - 1)
            break
    for g in range(g_start, -1, -1):
        i = i_bot - g
        e0, e1, e2, e3 = _group_values(smz, n, mu, i, f_top if g == n_groups - 1 else 0,
                                       f_bot if g == 0 else SUBBIN - 1, -np.inf)
        if max(max(e0, e1), max(e2, e3)) >= half:
            first_q = SUBBIN * i + (0 if e0 >= half else (1 if e1 >= half else (2 if e2 >= half else 3)))
            break
    last_q = bot_q
    g_start = 0
    for g in range(n_groups):
        if i_bot - g + 1 < n and smz[i_bot - g + 1] - mu >= near:
            g_start = max(g - 1, 0)
            break
    for g in range(g_start, n_groups):
        i = i_bot - g
        e0, e1, e2, e3 = _group_values(smz, n, mu, i, f_top if g == n_groups - 1 else 0,
                                       f_bot if g == 0 else SUBBIN - 1, -np.inf)
        if max(max(e0, e1), max(e2, e3)) >= half:
            last_q = SUBBIN * i + (3 if e3 >= half else (2 if e2 >= half else (1 if e1 >= half else 0)))
            break
    return first_q, last_q


@njit(cache=True)
def energy_profile(smz, n, mu, top_q, bot_q, ground_q, loc_q, run_max):
    """Cumulative-energy percentiles, energies and half-maximum extents of one signal.

    The energy is ``smz - mu`` interpolated on the quarter-sample grid from
    ``bot_q`` up to ``top_q`` (L2A ``rx_cumulative``). Percentile ``k``
    (1..99) sits at the grid point just before the first quarter where the
    running sum from the bottom reaches ``k/100`` of the total (0 ->
    ``bot_q``, 100 -> ``top_q``); ``loc_q`` receives the 101 locations.

    One pass goes up the signal a sample (four quarters) at a time and stores
    the running maximum of the partial sums at every quarter (``run_max``,
    index ``4 g + j`` for the ``j``-th quarter from the bottom of the ``g``-th
    sample; non-decreasing even where the smoothed waveform dips below the
    noise mean, and the first quarter where it reaches a target is the first
    where the running sum does). Each sample then gets the number of
    percentiles it reaches (a product, exact up to rounding, which a check per
    percentile corrects); the first sample of each percentile follows by a
    scatter and a suffix minimum, and the quarter inside it by counting the
    four stored maxima below the target: no data-dependent search per
    percentile. Scratch ``run_max``: >= SUBBIN x (samples in the signal + 1).

    Returns (total, below, first_q, last_q): energy of the signal and from
    ``bot_q`` up to ``ground_q`` inclusive (both / SUBBIN, counts x samples),
    and the first and last quarter at or above half the peak of ``smz - mu``
    (:func:`half_max_extents`).
    """
    i_top = top_q // SUBBIN
    i_bot = bot_q // SUBBIN
    f_top = top_q - SUBBIN * i_top
    f_bot = bot_q - SUBBIN * i_bot
    n_groups = i_bot - i_top + 1
    ground_g = i_bot - ground_q // SUBBIN
    f_ground = ground_q - SUBBIN * (ground_q // SUBBIN)
    running = 0.0
    best = -np.inf
    peak = -np.inf
    below = np.nan
    for g in range(n_groups):
        i = i_bot - g
        f_lo = f_top if g == n_groups - 1 else 0
        f_hi = f_bot if g == 0 else SUBBIN - 1
        v0, v1, v2, v3 = _group_values(smz, n, mu, i, f_lo, f_hi, 0.0)
        if f_lo > 0 or f_hi < SUBBIN - 1:  # end samples: the peak only over their quarters in the signal
            e0, e1, e2, e3 = _group_values(smz, n, mu, i, f_lo, f_hi, -np.inf)
            peak = max(peak, max(max(e0, e1), max(e2, e3)))
        else:  # a linear interpolation peaks at its ends
            peak = max(peak, max(v0, v3))
        v32 = v3 + v2
        p3 = running + v3
        p2 = running + v32
        p1 = running + (v32 + v1)
        p0 = running + (v32 + (v1 + v0))
        if g == ground_g:
            below = p0 if f_ground == 0 else (p1 if f_ground == 1 else (p2 if f_ground == 2 else p3))
        m32 = max(p3, p2)
        m321 = max(m32, p1)
        j = SUBBIN * g
        run_max[j] = max(best, p3)
        run_max[j + 1] = max(best, m32)
        run_max[j + 2] = max(best, m321)
        best = max(best, max(m321, p0))
        run_max[j + 3] = best
        running = p0
    total = running
    loc_q[0] = bot_q
    loc_q[N_RH - 1] = top_q

    first_q, last_q = half_max_extents(smz, n, mu, top_q, bot_q, peak)

    if not total > 0.0:
        for k in range(1, N_RH - 1):
            loc_q[k] = np.nan
        return total / SUBBIN, below / SUBBIN, first_q, last_q
    # first sample whose running maximum reaches each percentile: scatter + suffix minimum
    for k in range(1, N_RH - 1):
        loc_q[k] = n_groups - 1  # the last sample reaches them all (its partials end at the total)
    scale = (N_RH - 1) / total
    for g in range(n_groups - 1, -1, -1):  # smallest g wins
        x = run_max[SUBBIN * g + SUBBIN - 1] * scale  # percentiles reached, up to rounding (fixed below)
        c = int(x) if x > 0.0 else 0
        loc_q[c if c < N_RH - 2 else N_RH - 2] = g
    for k in range(N_RH - 3, 0, -1):
        loc_q[k] = min(loc_q[k], loc_q[k + 1])
    loc_q[0] = bot_q
    for k in range(1, N_RH - 1):
        g = int(loc_q[k])
        target = total * PERCENT[k]
        while g > 0 and run_max[SUBBIN * g - 1] >= target:  # the count's rounding: exact first sample
            g -= 1
        while run_max[SUBBIN * g + SUBBIN - 1] < target:
            g += 1
        j = SUBBIN * g
        behind = (int(run_max[j] < target) + int(run_max[j + 1] < target)
                  + int(run_max[j + 2] < target) + int(run_max[j + 3] < target))
        q = SUBBIN * (i_bot - g) + (SUBBIN - 1 - behind)
        loc_q[k] = q + 1 if q < bot_q else bot_q
    return total / SUBBIN, below / SUBBIN, first_q, last_q


@njit(cache=True)
def _fail(k, reason, reason_out, n_rh, rh, scalars):
    reason_out[k] = reason
    for j in range(n_rh):
        rh[k, j] = np.nan
    for j in range(scalars.shape[0]):
        scalars[j, k] = np.nan


# row indices of the `scalars` output, one row per quantity (metrics.py names them)
S_GROUND_INDEX = 0
S_TOPLOC = 1
S_BOTLOC = 2
S_GROUND_ELEV = 3
S_TOP_ELEV = 4
S_EXTENT = 5
S_LEE = 6
S_TEE = 7
S_ENERGY_TOTAL = 8
S_ENERGY_SIGNAL = 9
S_RV = 10
S_RG = 11
S_COVER = 12
S_NOISE_MEAN = 13
S_NOISE_SD = 14
S_FRONT_THR = 15
S_BACK_THR = 16
S_BIN_SIZE = 17
N_SCALARS = 18


@njit(cache=True)
def _same_boxes(boxes_locs, nbox_locs, boxes_z, nbox_z, g):
    if nbox_locs[g] != nbox_z[g]:
        return False
    for p in range(nbox_z[g]):
        if boxes_locs[g, p] != boxes_z[g, p]:
            return False
    return True


@njit(cache=True)
def _process_shot(
    k, w, n, bin0, lastbin, mu_in, sd_in, g,
    front_k, back_k, boxes_locs, nbox_locs, half_locs, boxes_z, nbox_z, half_z,
    select_mode, select_amp, noise_window, rho_ratio,
    st, block_max, sm_l, sm_z, run_max, loc_q, modes_q, amps,
    scalars, rh, mode_locs, n_modes, reason,
):
    for j in range(mode_locs.shape[1]):
        mode_locs[k, j] = np.nan
    n_modes[k] = 0
    if n == 0:
        _fail(k, EMPTY, reason, N_RH, rh, scalars)
        return
    if n < MIN_SAMPLES:
        _fail(k, TOO_SHORT, reason, N_RH, rh, scalars)
        return
    sum_w = sum_and_block_max(w, n, block_max)  # NaN/inf propagate
    if not np.isfinite(sum_w):
        _fail(k, NONFINITE, reason, N_RH, rh, scalars)
        return
    # sample 0 is the top of the waveform: bin0 must lie above lastbin
    if not (abs(bin0) <= MAX_ABS_ELEVATION_M and abs(lastbin) <= MAX_ABS_ELEVATION_M) or not bin0 > lastbin:
        _fail(k, BAD_GEOLOCATION, reason, N_RH, rh, scalars)
        return
    bin_size = (bin0 - lastbin) / (n - 1)
    if not (MIN_BIN_SIZE_M <= bin_size <= MAX_BIN_SIZE_M):
        _fail(k, BAD_GEOLOCATION, reason, N_RH, rh, scalars)
        return
    mu = mu_in
    sd = sd_in
    if not (np.isfinite(mu) and np.isfinite(sd)):
        mu, sd = noise_from_waveform(w, n, noise_window)
    if not (np.isfinite(mu) and np.isfinite(sd) and sd > 0.0):
        _fail(k, BAD_NOISE, reason, N_RH, rh, scalars)
        scalars[S_NOISE_MEAN, k] = mu
        scalars[S_NOISE_SD, k] = sd
        return
    front = mu + front_k[g] * sd
    back = mu + back_k[g] * sd

    # scalars that exist even without a signal
    scalars[S_ENERGY_TOTAL, k] = sum_w - n * mu
    scalars[S_NOISE_MEAN, k] = mu
    scalars[S_NOISE_SD, k] = sd
    scalars[S_FRONT_THR, k] = front
    scalars[S_BACK_THR, k] = back
    scalars[S_BIN_SIZE, k] = bin_size

    # Exact pruning: the cascade = its widest box followed by a normalised non-negative kernel,
    # so the smoothed waveform stays <= a threshold wherever every mean of that box under the
    # kernel does. Smooth only from (first box mean above front) - half to (last box mean
    # above back) + half; single noise spikes above the threshold do not widen the range.
    hl = half_locs[g]
    widest = 1
    for p in range(nbox_locs[g]):
        widest = max(widest, boxes_locs[g, p])
    raw_first = first_mean_above(w, n, widest, front, block_max)
    if raw_first < 0:
        reason[k] = NO_SIGNAL
        _nan_signal(k, rh, scalars)
        return
    raw_last = last_mean_above(w, n, widest, back, block_max)
    if raw_last < 0:
        reason[k] = NO_SIGNAL_END
        _nan_signal(k, rh, scalars)
        return
    lo = raw_first - hl - 4
    if lo < 0:
        lo = 0
    hi = raw_last + hl + 5
    if hi > n:
        hi = n
    if hi - lo < 2:
        lo = 0
        hi = n
    smooth_boxes(w, n, boxes_locs[g], nbox_locs[g], hl, lo, hi, st, sm_l)

    top_q = first_above(sm_l, lo, hi, front)
    if top_q < 0:
        reason[k] = NO_SIGNAL
        _nan_signal(k, rh, scalars)
        return
    bot_q = last_above(sm_l, lo, hi, n, back)
    if bot_q < 0 or bot_q <= top_q:
        reason[k] = NO_SIGNAL_END
        _nan_signal(k, rh, scalars)
        scalars[S_TOPLOC, k] = top_q / SUBBIN
        return
    # a clipped flat top inside the signal: the detector saturated (heights and energies biased)
    s_lo = top_q // SUBBIN
    s_hi = bot_q // SUBBIN + 2
    if s_hi > n:
        s_hi = n
    run, top = flat_top_run(w, s_lo, s_hi, block_max)
    if run >= SATURATION_MIN_RUN and top > front:
        reason[k] = SATURATED
        _nan_signal(k, rh, scalars)
        return
    scalars[S_TOPLOC, k] = top_q / SUBBIN
    scalars[S_BOTLOC, k] = bot_q / SUBBIN
    scalars[S_TOP_ELEV, k] = bin0 - bin_size * top_q / SUBBIN
    scalars[S_EXTENT, k] = bin_size * (bot_q - top_q) / SUBBIN

    # smoothed waveform for modes and energies, over the signal (+ margins for differences)
    zlo = top_q // SUBBIN - 2
    if zlo < 0:
        zlo = 0
    zhi = bot_q // SUBBIN + 4
    if zhi > n:
        zhi = n
    if _same_boxes(boxes_locs, nbox_locs, boxes_z, nbox_z, g):
        smz = sm_l
    else:
        smooth_boxes(w, n, boxes_z[g], nbox_z[g], half_z[g], zlo, zhi, st, sm_z)
        smz = sm_z

    count = find_modes(smz, n, top_q, bot_q, back, modes_q, amps)
    n_modes[k] = count
    stored = count if count < modes_q.shape[0] else modes_q.shape[0]
    for j in range(stored):
        mode_locs[k, j] = modes_q[j] / SUBBIN
    if count == 0:
        reason[k] = NO_MODE
        for j in range(N_RH):
            rh[k, j] = np.nan
        scalars[S_GROUND_INDEX, k] = np.nan
        scalars[S_GROUND_ELEV, k] = np.nan
        _nan_energy(k, scalars)
        return
    sel = stored - 1
    if select_mode[g]:
        while sel > 0 and amps[sel] - back < select_amp[g]:
            sel -= 1
    ground_q = int(modes_q[sel])
    scalars[S_GROUND_INDEX, k] = ground_q / SUBBIN
    scalars[S_GROUND_ELEV, k] = bin0 - bin_size * ground_q / SUBBIN

    signal, below, first_q, last_q = energy_profile(smz, n, mu, top_q, bot_q, ground_q, loc_q, run_max)
    scalars[S_ENERGY_SIGNAL, k] = signal
    if not signal > 0.0:
        reason[k] = NO_ENERGY
        for j in range(N_RH):
            rh[k, j] = np.nan
        _nan_energy(k, scalars)
        scalars[S_ENERGY_SIGNAL, k] = signal
        return
    for j in range(N_RH):
        rh[k, j] = bin_size * (ground_q - loc_q[j]) / SUBBIN

    scalars[S_LEE, k] = bin_size * (first_q - top_q) / SUBBIN
    scalars[S_TEE, k] = bin_size * (bot_q - last_q) / SUBBIN

    rg = 2.0 * below
    if rg < 0.0:
        rg = 0.0
    if rg > signal:
        rg = signal
    rv = signal - rg
    scalars[S_RG, k] = rg
    scalars[S_RV, k] = rv
    scalars[S_COVER, k] = rv / (rv + rho_ratio * rg)
    reason[k] = OK


@njit(cache=True)
def _nan_signal(k, rh, scalars):
    for j in range(N_RH):
        rh[k, j] = np.nan
    for c in (S_GROUND_INDEX, S_TOPLOC, S_BOTLOC, S_GROUND_ELEV, S_TOP_ELEV, S_EXTENT,
              S_LEE, S_TEE, S_ENERGY_SIGNAL, S_RV, S_RG, S_COVER):
        scalars[c, k] = np.nan


@njit(cache=True)
def _nan_energy(k, scalars):
    for c in (S_LEE, S_TEE, S_ENERGY_SIGNAL, S_RV, S_RG, S_COVER):
        scalars[c, k] = np.nan


@njit(cache=True, parallel=True, nogil=True)
def metrics_kernel(
    samples, start, count, bin0, lastbin, noise_mean, noise_sd, group,
    front_k, back_k, boxes_locs, nbox_locs, half_locs, boxes_z, nbox_z, half_z,
    select_mode, select_amp, noise_window, rho_ratio,
    scalars, rh, mode_locs, n_modes, reason,
):
    """Full metric set for every shot of a ragged batch (parallel over shot blocks).

    Per-group settings are arrays indexed by ``group[k]`` (0-based). Outputs
    are preallocated by the caller: ``scalars`` (N_SCALARS, n) float64 (one
    contiguous row per quantity, returned without copies),
    ``rh`` (n, 101) float64, ``mode_locs`` (n, MAX_MODES) float64,
    ``n_modes`` (n,) int32, ``reason`` (n,) uint8.
    """
    n_shots = count.shape[0]
    n_blocks = (n_shots + BLOCK_SHOTS - 1) // BLOCK_SHOTS
    max_half = 0
    max_box = 0
    max_width = 1
    for g in range(half_locs.shape[0]):
        max_half = max(max_half, half_locs[g], half_z[g])
        max_box = max(max_box, nbox_locs[g], nbox_z[g])
        for p in range(nbox_locs[g]):
            max_width = max(max_width, boxes_locs[g, p])
        for p in range(nbox_z[g]):
            max_width = max(max_width, boxes_z[g, p])
    for blk in prange(n_blocks):
        k0 = blk * BLOCK_SHOTS
        k1 = min(k0 + BLOCK_SHOTS, n_shots)
        longest = 1
        for k in range(k0, k1):
            if count[k] > longest:
                longest = count[k]
        st = np.empty((max_box + 1, longest + 2 * max_half + max_width), np.float64)
        block_max = np.empty(longest // SCAN_BLOCK + 1, np.float64)
        sm_l = np.empty(longest, np.float64)
        sm_z = np.empty(longest, np.float64)
        run_max = np.empty(SUBBIN * (longest + 1), np.float64)
        loc_q = np.empty(N_RH, np.float64)
        modes_q = np.empty(mode_locs.shape[1], np.float64)
        amps = np.empty(mode_locs.shape[1], np.float64)
        for k in range(k0, k1):
            s = start[k]
            n = count[k]
            _process_shot(
                k, samples[s:s + n], n, bin0[k], lastbin[k], noise_mean[k], noise_sd[k], group[k],
                front_k, back_k, boxes_locs, nbox_locs, half_locs, boxes_z, nbox_z, half_z,
                select_mode, select_amp, noise_window, rho_ratio,
                st, block_max, sm_l, sm_z, run_max, loc_q, modes_q, amps,
                scalars, rh, mode_locs, n_modes, reason,
            )


@njit(cache=True, parallel=True)
def smooth_batch_kernel(samples, start, count, boxes, nbox, half, out):
    """Smoothed copy of every waveform (same layout as ``samples``), for inspection/tests."""
    n_shots = count.shape[0]
    longest = 1
    for k in range(n_shots):
        if count[k] > longest:
            longest = count[k]
    width = 1
    for p in range(nbox):
        width = max(width, boxes[p])
    n_blocks = (n_shots + BLOCK_SHOTS - 1) // BLOCK_SHOTS
    for blk in prange(n_blocks):
        st = np.empty((nbox + 1, longest + 2 * half + width), np.float64)
        tmp = np.empty(longest, np.float64)
        for k in range(blk * BLOCK_SHOTS, min((blk + 1) * BLOCK_SHOTS, n_shots)):
            s = start[k]
            n = count[k]
            if n == 0:
                continue
            smooth_boxes(samples[s:s + n], n, boxes, nbox, half, 0, n, st, tmp)
            for i in range(n):
                out[s + i] = tmp[i]
