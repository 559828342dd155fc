"""Slow, obvious reference implementation of the waveform metrics (plain numpy / Python).

Every step is written the direct way (explicit kernel and ``np.convolve``,
``np.interp`` on the full quarter-sample grid, ``np.cumsum`` +
``np.searchsorted``) so that the numba kernels of :mod:`waveform._kernels`
can be checked against it. See the docstring of that module for the
definitions; nothing here is tuned for speed.

Also: :func:`simulate_waveforms`, GEDI-like synthetic waveforms with known
ground and canopy (used by tests and benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBBIN = 4


def box_kernel(boxes) -> np.ndarray:
    k = np.ones(1)
    for b in boxes:
        k = np.convolve(k, np.ones(int(b)) / int(b))
    return k


def smooth(w: np.ndarray, boxes) -> np.ndarray:
    """Convolve with the explicit cascade kernel, replicating the end samples."""
    w = np.asarray(w, np.float64)
    k = box_kernel(boxes)
    half = (len(k) - 1) // 2
    padded = np.pad(w, half, mode="edge")
    return np.convolve(padded, k, mode="valid")


def quarter_grid(sm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(SUBBIN * (len(sm) - 1) + 1) / SUBBIN
    return t, np.interp(t, np.arange(len(sm)), sm)


def noise_estimate(w: np.ndarray, window: int) -> tuple[float, float]:
    w = np.asarray(w, np.float64)
    m = min(window, len(w))
    head, tail = w[:m], w[len(w) - m:]
    sd_head, sd_tail = head.std(ddof=1), tail.std(ddof=1)
    return (head.mean(), sd_head) if sd_head <= sd_tail else (tail.mean(), sd_tail)


def signal_bounds(sm: np.ndarray, front: float, back: float) -> tuple[float, float]:
    t, v = quarter_grid(sm)
    above_front = np.flatnonzero(v > front)
    above_back = np.flatnonzero(v > back)
    top = t[above_front[0]] if above_front.size else np.nan
    bot = t[above_back[-1]] if above_back.size else np.nan
    return top, bot


def find_modes(smz: np.ndarray, top: float, bot: float, thr: float) -> list[tuple[float, float]]:
    """(location rounded to a quarter sample, amplitude) of each accepted local maximum.

    Maxima within a quarter sample of a neighbouring minimum are wiggles, not modes.
    """
    d = np.diff(smz)
    maxima, minima = [], []
    for i in range(len(d) - 1):
        if d[i] > 0 and d[i + 1] <= 0:
            maxima.append(i + 0.5 + d[i] / (d[i] - d[i + 1]))
        elif d[i] < 0 and d[i + 1] >= 0:
            minima.append(i + 0.5 + d[i] / (d[i] - d[i + 1]))
    minima = np.array(minima)
    out = []
    for x in maxima:
        if not (top < x < bot):
            continue
        amp = np.interp(x, np.arange(len(smz)), smz)
        if amp <= thr:
            continue
        if minima.size and np.min(np.abs(minima - x)) < 1.0 / SUBBIN:
            continue
        out.append((np.floor(x * SUBBIN + 0.5) / SUBBIN, amp))
    return out


def cumulative_locations(smz: np.ndarray, mu: float, top: float, bot: float) -> tuple[np.ndarray, float]:
    """Sample location of each cumulative-energy percentile 0..100 (from the bottom) and the energy."""
    q_bot, q_top = int(round(bot * SUBBIN)), int(round(top * SUBBIN))
    t = np.arange(q_bot, q_top - 1, -1) / SUBBIN
    v = np.interp(t, np.arange(len(smz)), smz) - mu
    c = np.cumsum(v)
    total = c[-1]
    loc = np.empty(101)
    for k in range(101):
        i = int(np.flatnonzero(c >= total * (k / 100.0))[0]) - 1 if total > 0 else 0
        loc[k] = t[min(max(i, 0), len(t) - 1)]
    loc[0], loc[100] = t[0], t[-1]
    return loc, total / SUBBIN


def metrics_one(w, bin0, lastbin, mu, sd, settings, noise_window=64, rho_ratio=1.5) -> dict:
    """All metrics of one waveform; returns a dict with a ``reason`` name ("ok" or why not)."""
    w = np.asarray(w, np.float64)
    nan = float("nan")
    out = {"reason": "ok", "ground_index": nan, "toploc": nan, "botloc": nan, "rh": np.full(101, nan),
           "ground_elevation_m": nan, "canopy_top_elevation_m": nan, "lee_m": nan, "tee_m": nan,
           "cover": nan, "n_modes": 0, "mode_locations": [], "energy_total": nan}
    n = len(w)
    if n == 0:
        return {**out, "reason": "empty_waveform"}
    if n < 3:
        return {**out, "reason": "too_short"}
    if not np.all(np.isfinite(w)):
        return {**out, "reason": "nonfinite_samples"}
    # sample 0 is the top: bin0 above lastbin, both within 100 km of the ellipsoid, 1 cm..10 m per sample
    if not (abs(bin0) <= 1.0e5 and abs(lastbin) <= 1.0e5) or not bin0 > lastbin:
        return {**out, "reason": "bad_geolocation"}
    bs = (bin0 - lastbin) / (n - 1)
    if not 0.01 <= bs <= 10.0:
        return {**out, "reason": "bad_geolocation"}
    if not (np.isfinite(mu) and np.isfinite(sd)):
        mu, sd = noise_estimate(w, noise_window)
    if not (np.isfinite(mu) and np.isfinite(sd) and sd > 0):
        return {**out, "reason": "bad_noise"}
    out["energy_total"] = float(np.sum(w - mu))
    front = mu + settings.front_threshold_k * sd
    back = mu + settings.back_threshold_k * sd
    sm = smooth(w, settings.boxes_locs)
    smz = smooth(w, settings.boxes_zcross)
    top, bot = signal_bounds(sm, front, back)
    if np.isnan(top):
        return {**out, "reason": "no_signal"}
    if np.isnan(bot) or bot <= top:
        return {**out, "reason": "no_signal_end"}
    # saturation: >= 4 raw samples equal to the signal maximum, from its first occurrence
    lo, hi = int(np.floor(top * SUBBIN)) // SUBBIN, min(int(np.floor(bot * SUBBIN)) // SUBBIN + 2, n)
    seg = w[lo:hi]
    at = int(np.argmax(seg))
    run = 1
    while at + run < len(seg) and seg[at + run] == seg[at]:
        run += 1
    if run >= 4 and seg[at] > front:
        return {**out, "reason": "saturated"}
    out.update(toploc=top, botloc=bot, canopy_top_elevation_m=bin0 - top * bs)
    modes = find_modes(smz, top, bot, back)
    out["n_modes"] = len(modes)
    out["mode_locations"] = [x for x, _ in modes]
    if not modes:
        return {**out, "reason": "no_mode"}
    sel = len(modes) - 1
    if settings.select_mode:
        while sel > 0 and modes[sel][1] - back < settings.select_amp_threshold:
            sel -= 1
    ground = modes[sel][0]
    out.update(ground_index=ground, ground_elevation_m=bin0 - ground * bs)
    loc, energy = cumulative_locations(smz, mu, top, bot)
    if not energy > 0:
        return {**out, "reason": "no_energy"}
    out["rh"] = (ground - loc) * bs
    # leading / trailing edge extents at half of the maximum above the noise mean
    t = np.arange(int(round(top * SUBBIN)), int(round(bot * SUBBIN)) + 1) / SUBBIN
    v = np.interp(t, np.arange(n), smz) - mu
    above = np.flatnonzero(v >= 0.5 * v.max())
    out["lee_m"] = (t[above[0]] - top) * bs
    out["tee_m"] = (bot - t[above[-1]]) * bs
    # cover: symmetric ground return, rg = 2 x energy from the ground mode down to botloc
    tg = np.arange(int(round(bot * SUBBIN)), int(round(ground * SUBBIN)) - 1, -1) / SUBBIN
    rg = float(np.clip(2 * np.sum(np.interp(tg, np.arange(n), smz) - mu) / SUBBIN, 0, energy))
    rv = energy - rg
    out["cover"] = rv / (rv + rho_ratio * rg)
    return out


# --------------------------------------------------------------------------- simulation
@dataclass
class SimulatedWaveforms:
    waveforms: list[np.ndarray]
    elevation_bin0: np.ndarray
    elevation_lastbin: np.ndarray
    noise_mean: np.ndarray
    noise_std: np.ndarray
    ground_index: np.ndarray  # true ground sample (centre of the ground Gaussian)
    ground_elevation_m: np.ndarray
    canopy_height_m: np.ndarray


def simulate_waveforms(n: int, seed: int = 0, bin_size_m: float = 0.15, count_range=(700, 1400),
                       canopy: bool = True) -> SimulatedWaveforms:
    """GEDI-like received waveforms: noise + Gaussian ground return + canopy returns above it.

    Noise mean 190-230 counts, sd 2.5-5; pulse sigma 5.5-7.5 samples; ground
    amplitude 40-600 counts; canopy height 0-45 m made of 1-4 Gaussian layers.
    """
    rng = np.random.default_rng(seed)
    waves = []
    bin0 = np.empty(n)
    last = np.empty(n)
    mu = rng.uniform(190, 230, n)
    sd = rng.uniform(2.5, 5.0, n)
    gidx = np.empty(n)
    gelev = np.empty(n)
    height = np.where(canopy, rng.uniform(0, 45, n), 0.0)
    for k in range(n):
        count = int(rng.integers(count_range[0], count_range[1] + 1))
        x = np.arange(count, dtype=np.float64)
        sigma = rng.uniform(5.5, 7.5)
        g = rng.uniform(0.55, 0.8) * count
        amp_g = rng.uniform(40, 600)
        w = amp_g * np.exp(-0.5 * ((x - g) / sigma) ** 2)
        h_samples = height[k] / bin_size_m
        if canopy and h_samples > 3 * sigma:
            for _ in range(int(rng.integers(1, 5))):
                c = g - rng.uniform(2.5 * sigma, h_samples)
                s = sigma * rng.uniform(1.0, 2.5)
                w += rng.uniform(0.1, 0.8) * amp_g * np.exp(-0.5 * ((x - c) / s) ** 2)
        w = w + mu[k] + rng.normal(0.0, sd[k], count)
        waves.append(w.astype(np.float32))
        top_elev = rng.uniform(0, 3000) + count * bin_size_m
        bin0[k] = top_elev
        last[k] = top_elev - bin_size_m * (count - 1)
        gidx[k] = g
        gelev[k] = top_elev - bin_size_m * g
    return SimulatedWaveforms(waves, bin0, last, mu, sd, gidx, gelev, height)


def simulated_batch(n: int, seed: int = 0, **kw):
    """A :class:`waveform.batch.RaggedBatch` of :func:`simulate_waveforms` and the truth."""
    from waveform.batch import RaggedBatch

    sim = simulate_waveforms(n, seed, **kw)
    batch = RaggedBatch.from_waveforms(sim.waveforms, sim.elevation_bin0, sim.elevation_lastbin,
                                       np.arange(n, dtype=np.uint64) + 10**16, source=f"simulated seed {seed}")
    return batch, sim


# --------------------------------------------------------------------------- synthetic L1B granule
def write_synthetic_l1b(path, shots_per_beam: int, beams=("BEAM0101", "BEAM0110"), seed: int = 0,
                        pool_size: int = 1024, bad_shots: bool = False, block_shots: int = 20_000):
    """Write an HDF5 file in the real GEDI L1B layout (the datasets sawa reads) with simulated shots.

    Waveforms are drawn from a pool of :func:`simulate_waveforms` (so a
    million shots are cheap to make); gzip level 4 and chunk sizes as in real
    L1B granules (rxwaveform chunks of 14200 samples). ``bad_shots`` makes
    shot 1 of each beam empty, shot 2 all NaN and shot 3 noise only.
    Returns the pool's :class:`SimulatedWaveforms` and the per-beam pool
    indices of each shot.
    """
    import h5py

    rng = np.random.default_rng(seed)
    pool = simulate_waveforms(pool_size, seed=seed + 1)
    counts_pool = np.array([len(w) for w in pool.waveforms])
    gz = {"compression": "gzip", "compression_opts": 4}
    picks = {}
    with h5py.File(path, "w") as f:
        meta = f.create_group("METADATA/DatasetIdentification")
        meta.attrs["shortName"] = "GEDI_L1B"
        meta.attrs["fileName"] = "GEDI01_B_2099001000000_O00001_01_T00001_02_005_01_V002.h5"
        meta.attrs["VersionID"] = "02"
        for b_i, beam in enumerate(beams):
            n = shots_per_beam
            idx = rng.integers(0, pool_size, n)
            picks[beam] = idx
            counts = counts_pool[idx].astype(np.int64)
            if bad_shots and n > 3:
                counts[1] = 0
            start1 = np.ones(n, np.int64)
            start1[1:] = 1 + np.cumsum(counts[:-1])
            total = int(counts.sum())
            g = f.create_group(beam)
            g.attrs["description"] = "Full power beam" if beam >= "BEAM0101" else "Coverage beam"
            per_shot_chunk = (max(1, min(n, 554_085)),)
            rx = g.create_dataset("rxwaveform", shape=(max(total, 1),), dtype=np.float32,
                                  chunks=(min(14_200, max(total, 1)),), **gz)
            for k0 in range(0, n, block_shots):
                k1 = min(n, k0 + block_shots)
                parts = [pool.waveforms[i] if counts[k] else np.zeros(0, np.float32)
                         for k, i in zip(range(k0, k1), idx[k0:k1], strict=True)]
                if bad_shots and k0 == 0 and n > 3:
                    parts[2] = np.full(len(parts[2]), np.nan, np.float32)
                    parts[3] = (pool.noise_mean[idx[3]] + rng.normal(0, 3, len(parts[3]))).astype(np.float32)
                block = np.concatenate(parts) if parts else np.zeros(0, np.float32)
                s = int(start1[k0] - 1)
                rx[s : s + block.shape[0]] = block
            shot_number = (np.uint64(10**16) + np.uint64(b_i) * np.uint64(10**9)
                           + np.arange(n, dtype=np.uint64))
            bs = 0.15
            bin0 = pool.elevation_bin0[idx]
            last = bin0 - bs * (counts - 1)
            lat0 = -10.0 + 0.0005 * np.arange(n) + 0.01 * b_i
            lon0 = 20.0 + 0.0003 * np.arange(n)

            def put(name, values, _g=g, _chunks=per_shot_chunk):
                _g.create_dataset(name, data=values, chunks=_chunks, **gz)

            put("shot_number", shot_number)
            put("rx_sample_start_index", start1.astype(np.uint64))
            put("rx_sample_count", counts.astype(np.uint16))
            put("noise_mean_corrected", pool.noise_mean[idx])
            put("noise_stddev_corrected", pool.noise_std[idx])
            put("stale_return_flag", np.zeros(n, np.uint8))
            put("delta_time", 1e8 + 0.0083 * np.arange(n))
            put("tx_egsigma", np.full(n, 6.6, np.float32))
            put("tx_egamplitude", np.full(n, 300.0, np.float32))
            put("tx_gloc", np.full(n, 30.0, np.float32))
            put("rx_energy", np.full(n, 1e4, np.float32))
            put("geolocation/latitude_bin0", lat0)
            put("geolocation/longitude_bin0", lon0)
            put("geolocation/latitude_lastbin", lat0 + 1e-6)
            put("geolocation/longitude_lastbin", lon0 + 1e-6)
            put("geolocation/elevation_bin0", bin0)
            put("geolocation/elevation_lastbin", last)
            put("geolocation/degrade", np.zeros(n, np.uint8))
            put("geolocation/digital_elevation_model", (pool.ground_elevation_m[idx]).astype(np.float32))
    return pool, picks
