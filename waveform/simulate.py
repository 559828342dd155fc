"""Physically based simulator of GEDI-like received waveforms for known truth.

The model (all heights in metres, ellipsoidal; all times in ns of round-trip
time; one digitiser sample = 1 ns = :data:`~waveform.constants.SAMPLE_RANGE_M`
= 0.1499 m of range):

Footprint
    A nadir-looking laser spot whose horizontal intensity is a 2-D Gaussian
    ``I(r) ~ exp(-r^2 / (2 sigma_fp^2))``. GEDI footprints are "~25 m in
    diameter" [Dubayah2020; L1B user guide]; we read that diameter ``D`` as the
    1/e^2 *intensity* diameter of the Gaussian beam (``I(D/2) = e^-2 I(0)``),
    so ``sigma_fp = D / 4 = 6.25 m`` (parameter ``footprint_convention``:
    ``"1/e2"`` D = 4 sigma, ``"fwhm"`` D = 2.3548 sigma, ``"1/e"`` D = 2.828
    sigma). For comparison, the GEDI simulator's default footprint width is
    sigma = 5.5 m [Hancock2019, gediRat ``fSigma``].

Transmit pulse
    Gaussian in time with FWHM 15.6 ns [Dubayah2020, Table 1;
    :data:`~waveform.constants.TX_PULSE_FWHM_S`], i.e. ``sigma_t = FWHM /
    (2 sqrt(2 ln 2)) = 6.62 ns`` and ``sigma_pulse_m = sigma_t * c/2 = 0.993 m``;
    or a per-shot ``pulse_sigma_ns`` (e.g. an L1B ``tx_egsigma``).

Ground
    A tilted plane through the footprint centre::

        z_g(dx, dy) = z0 - tan(slope) * (dx sin(aspect) + dy cos(aspect))

    with ``dx`` east and ``dy`` north of the centre (m), ``slope`` from the
    horizontal and ``aspect`` the *downslope* azimuth, clockwise from north
    (0 = the ground falls towards north, 90 = towards east), as GDAL's
    ``gdaldem aspect``. Under the Gaussian footprint the ground heights are
    then Gaussian-distributed about ``z0`` with ``sigma_terrain = sigma_fp *
    tan(slope)`` (the projection of a 2-D isotropic Gaussian on the gradient
    direction), independent of aspect for a circular nadir spot. Convolved
    with the pulse, the ground return is Gaussian in height with::

        sigma_z^2 = sigma_pulse_m^2 + (sigma_fp * tan(slope))^2

    (:func:`return_sigma_m`), the broadening the SAWA terrain correction later
    removes [Hofton2000; Hancock2019].

Canopy
    A horizontally homogeneous crown layer that follows the terrain: at every
    point of the footprint it occupies heights ``[H - d, H]`` above the
    *local* ground (``H`` canopy height, ``d = crown_depth_ratio * H``). The
    plant area density inside the crown layer has the vertical shape of the
    crown's cross-section (``s = (H - h) / d`` is the relative depth into the
    crown; ``A(s)`` the fraction of the plant area above depth ``s``):

    * ``"ellipsoid"`` (spheroid crowns, section ~ s(1 - s)): ``A = 3 s^2 - 2 s^3``
    * ``"cone"`` (apex on top, section ~ s^2): ``A = s^3``
    * ``"cylinder"`` (uniform density): ``A = s``

    Light is attenuated by Beer-Lambert's law, so the gap probability at
    height ``h`` is ``Pgap(h) = exp(-k L_above(h)) = (1 - cover)^A(s(h))``,
    where ``cover = 1 - Pgap(ground)`` is the canopy cover: the
    (Gaussian-weighted) fraction of the footprint energy intercepted by
    crowns [Tang & Armston 2019, L2B ATBD, eq. for cover = 1 - Pgap]. The
    canopy return of the layer between ``h`` and ``h + dh`` is
    ``rho_v * (Pgap(h + dh) - Pgap(h))`` and the ground return
    ``rho_g * (1 - cover)``, with ``rho_v / rho_g = 1.5`` as GEDI L2B assumes
    [Tang & Armston 2019], so that ``cover = 1 / (1 + (rho_v/rho_g) *
    E_ground / E_canopy)`` holds exactly for the simulated energies. The
    Lambertian ``cos(slope)`` reduction of the ground's nadir radiance is
    deliberately *not* applied (``rho_g`` is the effective nadir
    reflectance), so that energy ratio gives the true cover on any slope.
    The canopy profile is convolved with the same terrain and pulse
    Gaussians as the ground (canopy heights are above the local ground, so
    on a slope the canopy return is broadened too).

Digitiser
    ``rx = offset + E * (ground + canopy returns per sample) + N(0,
    noise_sd)`` in float32 counts, ``E`` the integrated counts of a
    bare-ground return (``bare_ground_energy``; the reference L1B subset has
    ``rx_energy`` 16,000-19,600 on full-power and 7,000-8,600 on coverage
    beams), ``offset ~ 200`` and ``noise_sd ~ 3`` counts like the real
    ``noise_mean_corrected`` (~205-255) and ``noise_stddev_corrected``
    (~2.5-3.5). Sample 0 (``elevation_bin0``) lies ``top_margin_samples``
    above the highest return (``z0 + H + 3 sigma_z``); the window ends
    ``bottom_margin_samples`` below the lowest (``z0 - 3 sigma_z``), which
    gives 800-1400 samples like the real ``rx_sample_count`` (749..1417).

Truth (one row per shot, :data:`TRUTH_COLUMNS`)
    ground elevation at the footprint centre, canopy top elevation
    (``z0 + H``), canopy height, cover, slope, aspect, the model widths and
    expected energies, and the **true RH profile of the canopy alone**:
    ``rh_p`` (p = 0..100, m above ``z0``) is the height at which the
    cumulative energy of the *noise-free* return of the same canopy on *flat*
    ground (slope 0: no terrain broadening; pulse broadening kept), counted
    from the bottom, reaches p % of its total, the return being counted from
    ``z0 - 3 sigma_pulse`` to ``z0 + H + 3 sigma_pulse``. So ``rh0 =
    -3 sigma_pulse`` and ``rh100 = H + 3 sigma_pulse`` by construction, and
    bare ground gives ``rh50 = 0``. A terrain-corrected waveform of a sloped
    shot should give these RH.

Sources
-------
[Dubayah2020] Dubayah, R. et al. (2020) The Global Ecosystem Dynamics Investigation: high-resolution laser
    ranging of the Earth's forests and topography. Science of Remote Sensing 1, 100002 (footprint ~25 m,
    pulse 15.6 ns FWHM, 242 Hz, 60 m along track, 600 m between tracks).
[Tang & Armston 2019] Tang, H. & Armston, J. (2019) ATBD for GEDI L2B Footprint Canopy Cover and Vertical
    Profile Metrics, v1.0 (cover = 1 - Pgap, fixed rho_v/rho_g = 1.5).
[Hancock2019] Hancock, S. et al. (2019) The GEDI simulator: a large-footprint waveform lidar simulator for
    calibration and validation of spaceborne missions. Earth and Space Science 6, 294-310.
[Hofton2000] Hofton, M.A., Minster, J.B. & Blair, J.B. (2000) Decomposition of laser altimeter waveforms.
    IEEE TGRS 38(4), 1989-1996 (Gaussian pulse and footprint; slope broadening).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit, prange

from .batch import RaggedBatch
from .constants import FOOTPRINT_DIAMETER_M, SAMPLE_INTERVAL_S, SAMPLE_RANGE_M, TX_PULSE_FWHM_S
from .errors import SawaValueError

#: rho_v / rho_g, the canopy-to-ground reflectance ratio assumed by GEDI L2B [Tang & Armston 2019].
RHO_V_OVER_RHO_G = 1.5

#: FWHM of a Gaussian in units of its sigma: 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Footprint diameter conventions: diameter = factor * sigma_fp for a Gaussian spot.
FOOTPRINT_CONVENTIONS = {
    "1/e2": 4.0,  # 1/e^2 intensity diameter (laser beam waist convention): I(D/2) = e^-2 I(0)
    "fwhm": FWHM_PER_SIGMA,  # full width at half maximum
    "1/e": 2.0 * math.sqrt(2.0),  # 1/e intensity diameter
}

#: Crown shapes -> integer codes used by the numba kernels.
CROWN_SHAPES = {"ellipsoid": 0, "cone": 1, "cylinder": 2}

#: Default integrated counts of a bare-ground return on a full-power beam (see module docstring).
BARE_GROUND_ENERGY_COUNTS = 15_000.0
#: Default digitiser offset (counts) and noise standard deviation (counts), like real L1B.
DIGITISER_OFFSET_COUNTS = 200.0
NOISE_SD_COUNTS = 3.0
#: Window margins (samples) above the highest and below the lowest return (+-3 sigma_z).
TOP_MARGIN_SAMPLES = 100
BOTTOM_MARGIN_SAMPLES = 500
#: Truth returns are counted over [-K sigma_pulse, H + K sigma_pulse] with K = 3.
TRUTH_SUPPORT_SIGMAS = 3.0
#: Transmit waveform: samples, 1-based location of the pulse centre, peak amplitude above the
#: offset (counts) and noise (counts); the reference L1B has 128 samples, tx_gloc ~54-62,
#: peak ~1150 counts above ~205.
TX_SAMPLE_COUNT = 128
TX_GLOC_1BASED = 56.0
TX_AMPLITUDE_COUNTS = 1150.0
TX_NOISE_SD_COUNTS = 1.0
#: Gaussian kernels are truncated at +-KERNEL_SIGMAS sigma (relative mass lost < 6e-7).
KERNEL_SIGMAS = 5.0

RH_COLUMNS = [f"rh{i}" for i in range(101)]
TRUTH_COLUMNS = [
    "shot_number",
    "ground_elevation_m",
    "canopy_top_elevation_m",
    "canopy_height_m",
    "cover",
    "slope_deg",
    "aspect_deg",
    "crown_shape",
    "crown_depth_m",
    "footprint_sigma_m",
    "pulse_sigma_m",
    "terrain_sigma_m",
    "return_sigma_m",
    "ground_energy",
    "canopy_energy",
    "offset",
    "noise_sd",
    *RH_COLUMNS,
]


@dataclass(frozen=True)
class SimulatedShots:
    """Simulated waveforms and their truth.

    ``batch``: received waveforms (float32 counts, sample 0 on top, elevations in
    ``elevation_bin0``/``elevation_lastbin``); ``truth``: one row per shot
    (:data:`TRUTH_COLUMNS`), in the batch's order; ``tx``: transmit waveforms
    (their ``elevation_bin0``/``lastbin`` carry the sample index range 0..count-1,
    as :func:`waveform.gedi.iter_l1b` returns them) and ``tx_params``: per-shot
    ``tx_egsigma`` (ns), ``tx_egamplitude`` (counts above the offset) and
    ``tx_gloc`` (1-based sample of the pulse centre).
    """

    batch: RaggedBatch
    truth: pd.DataFrame
    tx: RaggedBatch
    tx_params: pd.DataFrame

    def __len__(self) -> int:
        return self.batch.n_shots


# --------------------------------------------------------------------------- geometry helpers
def footprint_sigma_m(diameter_m: float = FOOTPRINT_DIAMETER_M, convention: str = "1/e2") -> float:
    """Gaussian footprint sigma (m) for a footprint ``diameter_m`` read in ``convention``."""
    try:
        factor = FOOTPRINT_CONVENTIONS[convention]
    except KeyError:
        raise SawaValueError(
            f"footprint convention {convention!r} unknown (expected one of {', '.join(FOOTPRINT_CONVENTIONS)})"
        ) from None
    if not (diameter_m > 0 and math.isfinite(diameter_m)):
        raise SawaValueError(f"footprint diameter must be > 0 m, got {diameter_m}")
    return float(diameter_m) / factor


def pulse_sigma_ns_default() -> float:
    """Sigma (ns) of the Gaussian GEDI transmit pulse of FWHM 15.6 ns [Dubayah2020]."""
    return TX_PULSE_FWHM_S / SAMPLE_INTERVAL_S / FWHM_PER_SIGMA


def ns_to_m(t_ns):
    """Round-trip time (ns) -> range (m): c/2 per ns."""
    return np.asarray(t_ns, dtype=np.float64) * (SAMPLE_RANGE_M / (SAMPLE_INTERVAL_S * 1e9))


def terrain_sigma_m(slope_deg, footprint_sigma: float):
    """Height spread (m, 1 sigma) of a plane of ``slope_deg`` under a Gaussian footprint."""
    return footprint_sigma * np.tan(np.radians(np.asarray(slope_deg, dtype=np.float64)))


def return_sigma_m(slope_deg, footprint_sigma: float, pulse_sigma_m):
    """Sigma (m) of the ground return on a plane: sqrt(sigma_pulse^2 + (sigma_fp tan slope)^2)."""
    ts = terrain_sigma_m(slope_deg, footprint_sigma)
    return np.sqrt(np.asarray(pulse_sigma_m, dtype=np.float64) ** 2 + ts**2)


def crown_gap_probability(height_m, canopy_height_m: float, cover: float, crown_depth_m: float,
                          crown_shape: str = "ellipsoid") -> np.ndarray:
    """Pgap(h) = (1 - cover)^A(s) of the crown layer at heights ``height_m`` above the ground (vectorised over h)."""
    shape = _shape_code(crown_shape)
    h = np.asarray(height_m, dtype=np.float64)
    out = np.empty(h.shape, dtype=np.float64)
    flat = out.reshape(-1)
    for i, hv in enumerate(h.reshape(-1)):
        flat[i] = _pgap(hv, float(canopy_height_m), float(crown_depth_m), float(cover), shape)
    return out


def _shape_code(crown_shape: str) -> int:
    try:
        return CROWN_SHAPES[crown_shape]
    except KeyError:
        raise SawaValueError(
            f"crown shape {crown_shape!r} unknown (expected one of {', '.join(CROWN_SHAPES)})"
        ) from None


# --------------------------------------------------------------------------- numba kernels
@njit(cache=True)
def _pgap(h, top, depth, cover, shape):
    """Gap probability at height h (m above local ground) of the crown layer [top - depth, top]."""
    if cover <= 0.0 or top <= 0.0 or h >= top:
        return 1.0
    if h <= top - depth:
        a = 1.0
    else:
        s = (top - h) / depth
        if shape == 0:
            a = s * s * (3.0 - 2.0 * s)
        elif shape == 1:
            a = s * s * s
        else:
            a = s
    return math.exp(a * math.log1p(-cover))


@njit(cache=True)
def _render(h_first, step, n, sigma, e_ground, e_canopy_rho, top, depth, cover, shape, out):
    """Expected return (counts per sample) on the grid h_i = h_first + i * step (heights above z0).

    Ground: e_ground * N(h_i; 0, sigma) * |step|. Canopy: the interception of each bin
    (Pgap at its upper edge - Pgap at its lower edge) times e_canopy_rho, spread by a
    discrete Gaussian kernel of ``sigma`` (normalised to unit sum).
    """
    astep = abs(step)
    for i in range(n):
        out[i] = 0.0
    norm = astep / (math.sqrt(2.0 * math.pi) * sigma)
    if e_ground > 0.0:
        for i in range(n):
            u = (h_first + i * step) / sigma
            if abs(u) < 12.0:
                out[i] += e_ground * norm * math.exp(-0.5 * u * u)
    if not (cover > 0.0 and top > 0.0 and e_canopy_rho > 0.0):
        return
    m = int(math.ceil(KERNEL_SIGMAS * sigma / astep))
    kernel = np.empty(2 * m + 1)
    ksum = 0.0
    for j in range(2 * m + 1):
        u = (j - m) * astep / sigma
        kernel[j] = math.exp(-0.5 * u * u)
        ksum += kernel[j]
    for j in range(2 * m + 1):
        kernel[j] /= ksum
    lo = top - depth
    for i in range(n):
        h = h_first + i * step
        if h - 0.5 * astep >= top or h + 0.5 * astep <= lo:
            continue
        mass = e_canopy_rho * (_pgap(h + 0.5 * astep, top, depth, cover, shape)
                               - _pgap(h - 0.5 * astep, top, depth, cover, shape))
        if mass <= 0.0:
            continue
        for j in range(2 * m + 1):
            k = i + j - m
            if 0 <= k < n:
                out[k] += mass * kernel[j]


@njit(parallel=True, cache=True)
def _render_batch(start, count, h_first, step, sigma, e_ground, e_canopy_rho, top, depth, cover, shape, out):
    for k in prange(count.shape[0]):
        s = start[k]
        _render(h_first[k], step, count[k], sigma[k], e_ground[k], e_canopy_rho[k], top[k], depth[k],
                cover[k], shape, out[s:s + count[k]])


@njit(parallel=True, cache=True)
def _truth_rh(top, depth, cover, shape, pulse_sigma, rho, support_sigmas, max_step, rh_out):
    """True RH0..RH100 (m above z0) of the flat-ground noise-free return of each shot."""
    for k in prange(top.shape[0]):
        lo = -support_sigmas * pulse_sigma[k]
        hi = max(top[k], 0.0) + support_sigmas * pulse_sigma[k]
        nb = int(math.ceil((hi - lo) / max_step))
        dh = (hi - lo) / nb
        dens = np.empty(nb)
        # ascending grid of bin centres
        _render(lo + 0.5 * dh, dh, nb, pulse_sigma[k], 1.0 - cover[k], rho, top[k], depth[k], cover[k],
                shape, dens)
        total = 0.0
        for i in range(nb):
            total += dens[i]
        # cumulative at bin edges; edge i is at lo + i * dh
        p = 0
        cum = 0.0
        for i in range(nb):
            nxt = cum + dens[i]
            while p <= 100 and nxt >= total * p / 100.0:
                target = total * p / 100.0
                frac = 0.0 if dens[i] <= 0.0 else (target - cum) / dens[i]
                if frac < 0.0:
                    frac = 0.0
                rh_out[k, p] = lo + (i + frac) * dh
                p += 1
            cum = nxt
        while p <= 100:
            rh_out[k, p] = hi
            p += 1
        rh_out[k, 100] = hi


@njit(parallel=True, cache=True)
def _digitise(samples, start, count, offset, sd, noise, quantum):
    """samples <- offset + samples + sd * noise, rounded to ``quantum`` counts when > 0 (in place)."""
    for k in prange(count.shape[0]):
        s = start[k]
        for i in range(s, s + count[k]):
            x = offset[k] + np.float64(samples[i]) + sd[k] * np.float64(noise[i])
            if quantum > 0.0:
                x = round(x / quantum) * quantum
            samples[i] = x


# --------------------------------------------------------------------------- public API
def _as_shots(name: str, value, n: int | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise SawaValueError(f"simulate_waveforms: '{name}' must be a scalar or 1-D array, got shape {arr.shape}")
    if n is not None and arr.ndim == 1 and arr.shape[0] not in (1, n):
        raise SawaValueError(f"simulate_waveforms: '{name}' has {arr.shape[0]} values, expected {n} (one per shot)")
    return arr


def _check(name: str, values: np.ndarray, ok: np.ndarray, rule: str, shot_number: np.ndarray) -> None:
    bad = np.flatnonzero(~ok)
    if bad.size:
        k = int(bad[0])
        raise SawaValueError(
            f"simulate_waveforms: {name}={values[k]!r} for shot {int(shot_number[k])} (index {k}) is invalid: "
            f"{rule} ({bad.size} shot(s) bad)"
        )


def simulate_waveforms(
    ground_elevation_m,
    canopy_height_m,
    cover,
    slope_deg,
    aspect_deg=0.0,
    *,
    crown_shape: str = "ellipsoid",
    crown_depth_ratio: float = 0.5,
    footprint_diameter_m: float = FOOTPRINT_DIAMETER_M,
    footprint_convention: str = "1/e2",
    pulse_sigma_ns=None,
    noise_sd=NOISE_SD_COUNTS,
    offset=DIGITISER_OFFSET_COUNTS,
    bare_ground_energy=BARE_GROUND_ENERGY_COUNTS,
    rho_v_over_rho_g: float = RHO_V_OVER_RHO_G,
    shot_number=None,
    top_margin_samples: int = TOP_MARGIN_SAMPLES,
    bottom_margin_samples: int = BOTTOM_MARGIN_SAMPLES,
    quantum_counts: float | None = None,
    tx_amplitude=TX_AMPLITUDE_COUNTS,
    rng: int | np.random.Generator | None = 0,
) -> SimulatedShots:
    """Simulate GEDI-like received (and transmit) waveforms of ``n`` shots; see the module docstring.

    Every per-shot argument is a scalar or a 1-D array of ``n`` values:
    ``ground_elevation_m`` (z0, ellipsoidal m at the footprint centre),
    ``canopy_height_m`` (H >= 0, above the local ground), ``cover`` (0 <= cover < 1;
    must be 0 where H = 0), ``slope_deg`` (0 <= slope < 85), ``aspect_deg``
    (downslope azimuth, clockwise from north), ``pulse_sigma_ns`` (default: the
    15.6 ns FWHM pulse), ``noise_sd`` and ``offset`` (counts),
    ``bare_ground_energy`` (integrated counts of a bare-ground return; scale it
    down for coverage beams), ``tx_amplitude`` (counts), ``shot_number`` (uint64,
    default 0..n-1). ``quantum_counts`` rounds the digitised samples to that step
    (None: no rounding). ``rng`` is a seed or a ``numpy.random.Generator``; equal
    seeds give identical waveforms.

    Returns :class:`SimulatedShots`. 100,000 shots take a few seconds.
    """
    arrays = {
        "ground_elevation_m": ground_elevation_m, "canopy_height_m": canopy_height_m, "cover": cover,
        "slope_deg": slope_deg, "aspect_deg": aspect_deg, "noise_sd": noise_sd, "offset": offset,
        "bare_ground_energy": bare_ground_energy, "tx_amplitude": tx_amplitude,
    }
    if pulse_sigma_ns is not None:
        arrays["pulse_sigma_ns"] = pulse_sigma_ns
    sizes = {k: np.asarray(v).shape[0] for k, v in arrays.items() if np.ndim(v) == 1}
    if shot_number is not None and np.ndim(shot_number) == 1:
        sizes["shot_number"] = np.asarray(shot_number).shape[0]
    ns = set(sizes.values()) - {1}
    if len(ns) > 1:
        raise SawaValueError(f"simulate_waveforms: per-shot arrays have different lengths: {sizes}")
    n = ns.pop() if ns else (1 if sizes else 1)
    v = {k: np.broadcast_to(_as_shots(k, a, n), (n,)).astype(np.float64) for k, a in arrays.items()}
    if shot_number is None:
        shots = np.arange(n, dtype=np.uint64)
    else:
        shots = np.broadcast_to(np.asarray(shot_number).astype(np.uint64), (n,)).copy()
    shape = _shape_code(crown_shape)
    if not (0.0 < crown_depth_ratio <= 1.0):
        raise SawaValueError(f"simulate_waveforms: crown_depth_ratio must be in (0, 1], got {crown_depth_ratio}")
    if not (rho_v_over_rho_g > 0):
        raise SawaValueError(f"simulate_waveforms: rho_v_over_rho_g must be > 0, got {rho_v_over_rho_g}")
    if top_margin_samples < 0 or bottom_margin_samples < 0:
        raise SawaValueError("simulate_waveforms: window margins must be >= 0 samples")
    sigma_fp = footprint_sigma_m(footprint_diameter_m, footprint_convention)

    z0, H, c = v["ground_elevation_m"], v["canopy_height_m"], v["cover"]
    slope, aspect = v["slope_deg"], v["aspect_deg"]
    for name in v:
        _check(name, v[name], np.isfinite(v[name]), "must be finite", shots)
    _check("canopy_height_m", H, H >= 0, "must be >= 0 m", shots)
    _check("cover", c, (c >= 0) & (c < 1), "must be in [0, 1)", shots)
    _check("cover", c, (H > 0) | (c == 0), "a shot with canopy_height_m = 0 must have cover = 0", shots)
    _check("slope_deg", slope, (slope >= 0) & (slope < 85), "must be in [0, 85) degrees", shots)
    _check("noise_sd", v["noise_sd"], v["noise_sd"] >= 0, "must be >= 0 counts", shots)
    _check("bare_ground_energy", v["bare_ground_energy"], v["bare_ground_energy"] >= 0, "must be >= 0", shots)
    if pulse_sigma_ns is None:
        p_ns = np.full(n, pulse_sigma_ns_default())
    else:
        p_ns = v["pulse_sigma_ns"]
        _check("pulse_sigma_ns", p_ns, p_ns > 0, "must be > 0 ns", shots)
    sigma_p = ns_to_m(p_ns)
    sigma_t = terrain_sigma_m(slope, sigma_fp)
    sigma_z = np.sqrt(sigma_p**2 + sigma_t**2)
    depth = crown_depth_ratio * H
    e0 = v["bare_ground_energy"]
    e_ground = e0 * (1.0 - c)
    e_canopy_rho = e0 * rho_v_over_rho_g

    # ---- digitiser window: sample i at z = bin0 - i * dz
    dz = SAMPLE_RANGE_M
    hi = H + 3.0 * sigma_z
    lo = -3.0 * sigma_z
    bin0 = z0 + hi + top_margin_samples * dz
    count64 = np.ceil((bin0 - (z0 + lo)) / dz).astype(np.int64) + bottom_margin_samples + 1
    if n and count64.max() > np.iinfo(np.uint16).max:
        k = int(np.argmax(count64))
        raise SawaValueError(
            f"simulate_waveforms: shot {int(shots[k])} needs {int(count64[k])} samples (> 65535, the L1B uint16 limit)"
        )
    count = count64.astype(np.int32)
    lastbin = bin0 - (count - 1) * dz
    start = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(count64[:-1], out=start[1:])
    total = int(count64.sum()) if n else 0
    rx = np.empty(total, dtype=np.float32)
    if n:
        _render_batch(start, count, bin0 - z0, -dz, sigma_z, e_ground, e_canopy_rho, H, depth, c, shape, rx)

    # ---- truth
    rh = np.empty((n, 101), dtype=np.float64)
    if n:
        _truth_rh(H, depth, c, shape, sigma_p, float(rho_v_over_rho_g), TRUTH_SUPPORT_SIGMAS, dz / 2.0, rh)

    # ---- digitiser noise and offset (float32 noise, added in place)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if quantum_counts is not None and not quantum_counts > 0:
        raise SawaValueError(f"simulate_waveforms: quantum_counts must be > 0, got {quantum_counts}")
    quantum = 0.0 if quantum_counts is None else float(quantum_counts)
    noise = gen.standard_normal(total, dtype=np.float32)
    if n:
        _digitise(rx, start, count, v["offset"], v["noise_sd"], noise, quantum)
    del noise
    batch = RaggedBatch(
        samples=rx,
        start=start,
        count=count,
        elevation_bin0=bin0.astype(np.float64),
        elevation_lastbin=lastbin.astype(np.float64),
        shot_number=shots,
        source="simulated",
    )

    # ---- transmit waveforms: Gaussian pulse of sigma p_ns (1 sample = 1 ns)
    tx_gloc = np.full(n, TX_GLOC_1BASED) + gen.uniform(-0.5, 0.5, n)
    idx = np.arange(TX_SAMPLE_COUNT, dtype=np.float64)
    u = (idx[None, :] - (tx_gloc[:, None] - 1.0)) / p_ns[:, None]
    tx_wave = v["offset"][:, None] + v["tx_amplitude"][:, None] * np.exp(-0.5 * u * u)
    tx_wave = tx_wave + TX_NOISE_SD_COUNTS * gen.standard_normal(tx_wave.shape)
    if quantum_counts is not None:
        tx_wave = np.round(tx_wave / quantum_counts) * quantum_counts
    tx_count = np.full(n, TX_SAMPLE_COUNT, dtype=np.int32)
    tx = RaggedBatch(
        samples=tx_wave.astype(np.float32).reshape(-1),
        start=np.arange(n, dtype=np.int64) * TX_SAMPLE_COUNT,
        count=tx_count,
        elevation_bin0=np.zeros(n),
        elevation_lastbin=np.full(n, TX_SAMPLE_COUNT - 1.0),
        shot_number=shots.copy(),
        source="simulated-tx",
    )
    tx_params = pd.DataFrame({
        "shot_number": shots,
        "tx_egsigma": p_ns.astype(np.float32),
        "tx_egamplitude": v["tx_amplitude"].astype(np.float32),
        "tx_gloc": tx_gloc.astype(np.float32),
    })

    truth = pd.DataFrame({
        "shot_number": shots,
        "ground_elevation_m": z0,
        "canopy_top_elevation_m": z0 + H,
        "canopy_height_m": H,
        "cover": c,
        "slope_deg": slope,
        "aspect_deg": np.mod(aspect, 360.0),
        "crown_shape": crown_shape,
        "crown_depth_m": depth,
        "footprint_sigma_m": np.full(n, sigma_fp),
        "pulse_sigma_m": sigma_p,
        "terrain_sigma_m": sigma_t,
        "return_sigma_m": sigma_z,
        "ground_energy": e_ground,
        "canopy_energy": e_canopy_rho * c,
        "offset": v["offset"],
        "noise_sd": v["noise_sd"],
    })
    truth = pd.concat([truth, pd.DataFrame(rh, columns=RH_COLUMNS)], axis=1)
    return SimulatedShots(batch=batch, truth=truth, tx=tx, tx_params=tx_params)


def bare_ground_waveform(ground_elevation_m, slope_deg=0.0, aspect_deg=0.0, **kwargs) -> SimulatedShots:
    """Waveforms of bare ground (canopy height 0, cover 0); keyword arguments as :func:`simulate_waveforms`."""
    z = np.asarray(ground_elevation_m, dtype=np.float64)
    zeros = np.zeros(z.shape)
    return simulate_waveforms(z, zeros, zeros, slope_deg, aspect_deg, **kwargs)


def noise_free_waveform(shots: SimulatedShots) -> np.ndarray:
    """The expected (noise-free) received counts of every sample: samples minus noise is not
    recoverable, so this re-renders the returns from the truth table (offset included)."""
    t = shots.truth
    b = shots.batch
    shape = _shape_code(str(t["crown_shape"].iloc[0])) if len(t) else 0
    out = np.empty(b.samples.shape[0], dtype=np.float64)
    if len(t):
        h = t["canopy_height_m"].to_numpy(np.float64)
        c = t["cover"].to_numpy(np.float64)
        e_ground = t["ground_energy"].to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            e_canopy_rho = np.where(c > 0, t["canopy_energy"].to_numpy(np.float64) / np.where(c > 0, c, 1.0), 0.0)
        _render_batch(b.start, b.count, b.elevation_bin0 - t["ground_elevation_m"].to_numpy(np.float64),
                      -SAMPLE_RANGE_M, t["return_sigma_m"].to_numpy(np.float64), e_ground, e_canopy_rho,
                      h, t["crown_depth_m"].to_numpy(np.float64), c, shape, out)
        out += np.repeat(t["offset"].to_numpy(np.float64), b.count.astype(np.int64))
    return out


__all__ = [
    "SimulatedShots",
    "simulate_waveforms",
    "bare_ground_waveform",
    "noise_free_waveform",
    "footprint_sigma_m",
    "pulse_sigma_ns_default",
    "return_sigma_m",
    "terrain_sigma_m",
    "crown_gap_probability",
    "ns_to_m",
    "RHO_V_OVER_RHO_G",
    "FOOTPRINT_CONVENTIONS",
    "CROWN_SHAPES",
    "TRUTH_COLUMNS",
    "RH_COLUMNS",
]
