"""Slope-adaptive waveform metrics (SAWA) and the edge-extent baseline.

SAWA [Wang2019; its predecessor for canopy height over hillsides: Wang2018]
---------------------------------------------------------------------------
A large-footprint waveform over a slope is stretched: every height under the
footprint is spread by the terrain. Wang et al. (2019) remove the stretch with
the waveform of *bare ground of the same slope*:

1. **Bare-ground waveform model.** For a Gaussian footprint of sigma ``s_fp``
   on a plane of slope ``theta`` the ground heights under the spot are
   Gaussian with sigma ``s_fp tan(theta)`` (projection of the isotropic 2-D
   Gaussian on the gradient direction) [Hofton2000; Wang2019 section 2]; the
   received bare-ground waveform is the transmit pulse convolved with it::

       w_g(t) = E_g * (p * N(0, s_t))(t - t_g),   s_t = s_fp tan(theta) / dz

   (``dz`` m per sample), which for a Gaussian pulse of sigma ``s_p`` (L1B
   ``tx_egsigma``, ns = samples) is a Gaussian of ``s_g^2 = s_p^2 + s_t^2``
   samples: in metres ``sigma_g^2 = sigma_tx^2 + (sigma_fp tan(slope))^2``.
   With the measured transmit waveform (L1B ``txwaveform``) the pulse shape is
   used as is. ``s_fp = D / 4`` for GEDI's ~25 m 1/e^2 footprint diameter ``D``
   (as :func:`waveform.simulate.footprint_sigma_m`).
2. **Alignment at the signal ends.** The forest waveform and its bare-ground
   waveform are aligned at their signal ending points (the last sample above
   the back threshold). We give the model the ground energy of the forest
   waveform (L2B-style ``rg``: twice the energy from the ground mode down to
   the signal end, matched iteratively) and put both through the *same*
   engine (:func:`waveform.metrics.compute_metrics`: same smoothing, same
   noise thresholds), so that both signal ends are the same point of the
   ground return.
3. **Quantiles from the signal end.** ``H_p`` is the height above the signal
   end where the cumulative energy counted from the end reaches ``p`` % (the
   RH definition with the signal end as reference); ``Hg_p`` the same for the
   bare-ground waveform.
4. **SAWA metric.** ``RH_p^SAWA = H_p - Hg_p`` (e.g. ``RH50 = H50 - Hg50``,
   ``RH75 = H75 - Hg75`` [Wang2018; Wang2019]).

Computed at :data:`~terrain.constants.SAWA_PERCENTILES` (10, 20, 25, ..., 90,
95, 98) so biomass models can choose. Wang et al. report, for AGB from
simulated 70 m waveforms over 0-40 deg, R2 = 0.92 and RMSE 15.95 Mg/ha, and
from GLAS waveforms over 5.5-34 deg, R2 = 0.84 and RMSE 34.99 Mg/ha, better
than Gaussian decomposition and waveform-parameter (edge-extent) methods.

Edge-extent baseline [Lefsky2005; Lefsky2007; Park2014]
--------------------------------------------------------
Lefsky et al. (2005) corrected the waveform extent ``W`` (signal start to
end) for terrain with a DEM terrain index ``TI`` (elevation range around the
footprint): ``H = b0 + b1 (W - b2 TI)``; Lefsky et al. (2007) replaced ``TI``
by the waveform's own leading and trailing edge extents (``LEE``: signal start
to the first half-maximum point; ``TEE``: last half-maximum point to the
signal end), which grow with the terrain stretch: ``H = b0 + b1 W + b2 LEE +
b3 TEE`` in its linear form (coefficients are always fitted to local
calibration data). Park et al. (2014) compared such empirical corrections with
a physical one, ``H = W - D tan(theta)`` (the terrain's own height range under
the footprint). :func:`fit_edge_extent` / :func:`apply_edge_extent` implement
the linear family for any target (maximum height or one RH metric):
``y = c0 + c1 x + c2 LEE + c3 TEE + c4 TI`` with ``x`` the uncorrected metric
(``W`` for Lefsky's maximum height), fitted by least squares.

Sources
-------
[Wang2019] Wang, Y., Ni, W., Sun, G., Chi, H., Zhang, Z., Guo, Z. (2019) Slope-adaptive waveform metrics
    of large footprint lidar for estimation of forest aboveground biomass. Remote Sens. Environ. 224,
    386-400, doi:10.1016/j.rse.2019.02.017.
[Wang2018] Wang, Y., Ni, W., Sun, G. et al. (2018) Retrieval of forest canopy heights by using
    large-footprint waveform data assisted by the LiDAR model over hillsides. National Remote Sensing
    Bulletin (J. Remote Sens.) 22(3) (RH50 = H50 - Hg50, RH75 = H75 - Hg75).
[Hofton2000] Hofton, M.A., Minster, J.B., Blair, J.B. (2000) Decomposition of laser altimeter waveforms.
    IEEE TGRS 38(4), 1989-1996.
[Lefsky2005] Lefsky, M.A., Harding, D.J., Keller, M. et al. (2005) Estimates of forest canopy height and
    aboveground biomass using ICESat. Geophys. Res. Lett. 32, L22S02.
[Lefsky2007] Lefsky, M.A., Keller, M., Pang, Y., de Camargo, P.B., Hunter, M.O. (2007) Revised method for
    forest canopy height estimation from Geoscience Laser Altimeter System waveforms. J. Appl. Remote
    Sens. 1, 013537.
[Park2014] Park, T., Kennedy, R.E., Choi, S. et al. (2014) Application of physically-based slope
    correction for maximum forest canopy height estimation using waveform lidar across different
    footprint sizes and locations: tests on LVIS and GLAS. Remote Sens. 6, 6566-6586.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from waveform.batch import RaggedBatch, validate_batch
from waveform.constants import FOOTPRINT_DIAMETER_M, SAMPLE_INTERVAL_S, TX_PULSE_FWHM_S
from waveform.errors import SawaValueError
from waveform.metrics import WaveformMetrics, compute_metrics

from . import _sawa_kernels as K
from .constants import (
    MAX_CORRECTION_SLOPE_DEG,
    RL_ITERATIONS_PER_RATIO2,
    RL_MARGIN_BELOW_M,
    RL_MARGIN_SIGMAS,
    RL_MAX_ITERATIONS,
    RL_MIN_ITERATIONS,
    RL_MIN_TERRAIN_SIGMA_SAMPLES,
    SAWA_PERCENTILES,
)

#: Gaussian FWHM / sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Default transmit pulse sigma (ns): FWHM 15.6 ns [Dubayah2020] / 2.3548 = 6.62 ns.
DEFAULT_TX_SIGMA_NS = TX_PULSE_FWHM_S / SAMPLE_INTERVAL_S / FWHM_PER_SIGMA
#: Largest transmit pulse sigma (ns) taken as a pulse width. GEDI's is ~6.6 ns (15.6 ns FWHM, L1B
#: ``tx_egsigma`` ~5-8 ns); LVIS-like simulators use wider pulses. A sigma of 50 ns (118 ns FWHM,
#: ~18 m of range) is no lidar pulse: it is bad input (and would make the bare-ground model
#: millions of samples long).
MAX_TX_SIGMA_NS = 50.0
#: Footprint sigma per diameter (1/e^2 diameter D = 4 sigma), as waveform.simulate (convention "1/e2").
SIGMA_PER_DIAMETER = 0.25
#: Iterations matching the model's ground energy ``rg`` to the forest waveform's.
ENERGY_MATCH_ITERATIONS = 3
#: Model window: +- this many return sigmas (plus smoothing margins) around the ground.
MODEL_HALF_SIGMAS = 8.0
MODEL_MARGIN_SAMPLES = 40

#: SAWA reasons per shot (0 = computed).
SAWA_REASONS = {
    "ok": "SAWA metrics computed",
    "waveform": "the forest waveform has no metrics (see its reason column)",
    "no_slope": "slope missing (no DEM coverage) or not finite",
    "slope_too_steep": "slope above MAX_CORRECTION_SLOPE_DEG: the terrain spread dwarfs any canopy signal",
    "no_ground_energy": "the waveform has no ground energy below its ground mode (rg <= 0)",
    "weak_ground": "the modelled ground return stays below the back threshold; its end is put at the ground "
                   "centre (values kept, use with care)",
    "model_failed": "the bare-ground model waveform could not be processed",
}


def sawa_columns(percentiles: Sequence[int] = SAWA_PERCENTILES) -> list[str]:
    """Column names ``rhNN_sawa`` for the percentiles."""
    return [f"rh{int(p)}_sawa" for p in percentiles]


def _per_shot(name: str, value, n: int, default: float | None = None) -> np.ndarray:
    if value is None:
        if default is None:
            return np.full(n, np.nan)
        return np.full(n, float(default))
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise SawaValueError(f"{name} must be a scalar or one value per shot ({n}), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_percentiles(percentiles) -> list[int]:
    out = []
    for p in percentiles:
        if not (float(p) == int(p) and 0 < int(p) < 100):
            raise SawaValueError(f"SAWA percentiles must be integers in 1..99, got {p!r}")
        out.append(int(p))
    if not out:
        raise SawaValueError("give at least one SAWA percentile")
    return out


def footprint_diameters(value, n: int) -> np.ndarray:
    """Footprint diameter (m) per shot from a scalar or an array; raises for values <= 0 or not finite."""
    d = _per_shot("footprint_diameter_m", value, n)
    bad = ~(np.isfinite(d) & (d > 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise SawaValueError(f"footprint_diameter_m must be > 0 m, got {d[k]!r} (shot index {k})")
    return d


def tx_sigmas(tx_sigma_ns, batch: RaggedBatch) -> np.ndarray:
    """Per-shot transmit pulse sigma (ns): missing (None, NaN, <= 0: e.g. an L1B fill value) gives
    :data:`DEFAULT_TX_SIGMA_NS`; a value above :data:`MAX_TX_SIGMA_NS` (or +inf) is an error naming the shot."""
    sig = _per_shot("tx_sigma_ns", tx_sigma_ns, batch.n_shots, DEFAULT_TX_SIGMA_NS)
    bad = sig > MAX_TX_SIGMA_NS  # +inf too
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise SawaValueError(
            f"transmit pulse sigma {float(sig[k])!r} ns for shot {int(batch.shot_number[k])} is above "
            f"{MAX_TX_SIGMA_NS:g} ns ({int(bad.sum())} shot(s)); give L1B tx_egsigma in ns (GEDI's is ~6.6 ns)"
        )
    return np.where(np.isfinite(sig) & (sig > 0), sig, DEFAULT_TX_SIGMA_NS)


def check_slopes(slope_deg: np.ndarray, shot_number: np.ndarray | None = None) -> None:
    """Raise :class:`SawaValueError` for finite slopes outside [0, 90) degrees (NaN = no DEM, allowed)."""
    s = np.asarray(slope_deg, dtype=np.float64)
    bad = np.isfinite(s) & ((s < 0.0) | (s >= 90.0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        who = f"shot {int(shot_number[k])}" if shot_number is not None else f"shot index {k}"
        raise SawaValueError(
            f"slope {float(s[k])!r} deg for {who} is outside [0, 90) degrees ({int(bad.sum())} shot(s)); slopes must be "
            "in degrees (not percent or radians) from a DEM with correct pixel spacing"
        )


def correctable_slopes(slope_deg, batch: RaggedBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per-shot slopes (deg) checked by :func:`check_slopes`, with those above
    :data:`MAX_CORRECTION_SLOPE_DEG` set to NaN; returns ``(slopes, too_steep mask)``."""
    slope = _per_shot("slope_deg", slope_deg, batch.n_shots)
    check_slopes(slope, batch.shot_number)
    steep = np.isfinite(slope) & (slope > MAX_CORRECTION_SLOPE_DEG)
    return np.where(steep, np.nan, slope), steep


@dataclass
class BareGroundModel:
    """The modelled bare-ground waveforms of a batch and their metrics (one per forest shot)."""

    batch: RaggedBatch
    metrics: WaveformMetrics
    energy: np.ndarray  # counts x samples
    sigma_samples: np.ndarray  # total Gaussian sigma (pulse and terrain) in samples
    terrain_sigma_m: np.ndarray


def _prepare_tx(tx: RaggedBatch, tx_offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    validate_batch(tx)
    samples = np.empty(tx.samples.shape[0], np.float64)
    centre = np.empty(tx.n_shots)
    ok = np.zeros(tx.n_shots, np.bool_)
    if tx.n_shots:
        K.prepare_tx(tx.samples, tx.start, tx.count, tx_offset, samples, centre, ok)
    return samples, centre, ok


def tx_offsets(tx: RaggedBatch, head_samples: int = 10) -> np.ndarray:
    """Transmit-waveform offsets (counts): median of the first ``head_samples`` samples of each."""
    out = np.full(tx.n_shots, np.nan)
    for k in range(tx.n_shots):
        w = tx.waveform(k)
        if w.size:
            out[k] = float(np.median(w[: max(1, min(head_samples, w.size))]))
    return out


def bare_ground_model(
    forest: WaveformMetrics,
    bin_size_m: np.ndarray,
    slope_deg: np.ndarray,
    footprint_diameter_m,
    tx_sigma_ns: np.ndarray,
    algorithm,
    energy: np.ndarray,
    tx: RaggedBatch | None = None,
    tx_offset: np.ndarray | None = None,
    settings=None,
) -> BareGroundModel:
    """Render and process the bare-ground waveform of every shot (see the module docstring).

    ``energy``: ground energy (counts x samples) of each model. Shots with NaN
    inputs get an empty (offset-only) model.
    """
    n = len(forest)
    b = np.where(np.isfinite(bin_size_m) & (bin_size_m > 0), bin_size_m, np.nan)
    sigma_fp = SIGMA_PER_DIAMETER * footprint_diameters(footprint_diameter_m, n)
    terrain_m = sigma_fp * np.tan(np.radians(slope_deg))
    terrain_s = terrain_m / b
    pulse_s = np.asarray(tx_sigma_ns, dtype=np.float64)
    use_tx = np.zeros(n, np.bool_)
    txs = np.zeros(1)
    txst = np.zeros(n, np.int64)
    txn = np.zeros(n, np.int32)
    txc = np.zeros(n)
    tx_extra = np.zeros(n)
    if tx is not None:
        if tx.n_shots != n:
            raise SawaValueError(f"tx has {tx.n_shots} transmit waveforms, the batch {n} shots")
        off = tx_offsets(tx) if tx_offset is None else _per_shot("tx_offset", tx_offset, n)
        txs, txc, use_tx = _prepare_tx(tx, off)
        txst, txn = tx.start, tx.count
        tx_extra = np.where(use_tx, txn.astype(np.float64), 0.0)
    valid = np.isfinite(terrain_s) & np.isfinite(pulse_s) & (pulse_s > 0) & np.isfinite(energy)
    sg = np.sqrt(np.where(valid, pulse_s, 1.0) ** 2 + np.where(valid, terrain_s, 0.0) ** 2)
    half = np.ceil(MODEL_HALF_SIGMAS * sg + tx_extra).astype(np.int64) + MODEL_MARGIN_SAMPLES
    half = np.where(valid, half, 8)
    count = (2 * half + 1).astype(np.int32)
    start = np.zeros(n, np.int64)
    if n:
        np.cumsum(count[:-1].astype(np.int64), out=start[1:])
    total = int(count.sum(dtype=np.int64))
    out = np.empty(total, np.float64)
    centre = half.astype(np.float64)
    offset = np.where(np.isfinite(forest.noise_mean), forest.noise_mean, 0.0)
    e = np.where(valid, energy, 0.0)
    if n:
        K.render_bare_ground(start, count, centre, np.where(valid, pulse_s, 1.0), np.where(valid, terrain_s, 0.0),
                             e, offset, txs, txst, txn, txc, use_tx, out)
    ground = np.where(np.isfinite(forest.ground_elevation_m), forest.ground_elevation_m, 0.0)
    step = np.where(np.isfinite(b), b, 0.15)
    bin0 = ground + half * step
    lastbin = bin0 - (count - 1) * step
    model_batch = RaggedBatch(samples=out.astype(np.float32), start=start, count=count,
                              elevation_bin0=bin0.astype(np.float64), elevation_lastbin=lastbin.astype(np.float64),
                              shot_number=forest.shot_number.copy(), source="sawa-bare-ground-model")
    m = compute_metrics(model_batch, algorithm, forest.noise_mean, forest.noise_std, settings=settings)
    return BareGroundModel(batch=model_batch, metrics=m, energy=e, sigma_samples=sg, terrain_sigma_m=terrain_m)


def heights_above_signal_end(m: WaveformMetrics, percentiles: Sequence[int]) -> np.ndarray:
    """``H_p`` (m): height above the signal end of each cumulative-energy percentile, (n, len(p))."""
    offset = (m.botloc - m.ground_index) * m.bin_size_m  # ground mode above the signal end
    cols = np.asarray(list(percentiles), dtype=np.int64)
    return m.rh[:, cols] + offset[:, None]


def sawa_metrics(
    batch: RaggedBatch,
    slope_deg,
    footprint_diameter_m: float | np.ndarray = FOOTPRINT_DIAMETER_M,
    tx_sigma_ns=None,
    percentiles: Sequence[int] = SAWA_PERCENTILES,
    noise_mean=None,
    noise_std=None,
    *,
    algorithm="a1",
    tx: RaggedBatch | None = None,
    tx_offset=None,
    metrics: WaveformMetrics | None = None,
    ground_energy=None,
    details: bool = False,
    settings=None,
) -> pd.DataFrame:
    """SAWA metrics ``rhNN_sawa`` (m) of every shot of a ragged batch [Wang2019].

    ``slope_deg``: terrain slope under each footprint (array, NaN where unknown);
    ``footprint_diameter_m``: 1/e^2 footprint diameter (GEDI ~25 m), scalar or per shot;
    ``tx_sigma_ns``: transmit pulse sigma per shot (L1B ``tx_egsigma``; default
    6.62 ns = 15.6 ns FWHM); ``tx``: the measured transmit waveforms (L1B
    ``txwaveform``, one per shot) to use the pulse shape instead of a Gaussian;
    ``noise_mean``/``noise_std``/``algorithm``: as
    :func:`waveform.metrics.compute_metrics` (thresholds and smoothing of both the
    forest and the modelled waveform); ``metrics``: the forest waveforms'
    metrics when already computed with those settings.

    Returns one row per shot (batch order): ``shot_number``, ``rhNN_sawa`` for
    each percentile, ``sawa_reason`` (:data:`SAWA_REASONS`); with
    ``details=True`` also ``hNN_m`` (forest quantile above its signal end),
    ``hgNN_m`` (bare ground), ``ground_sigma_m`` (modelled ground-return sigma
    incl. pulse), ``terrain_sigma_m`` and ``model_energy``.
    """
    if not isinstance(batch, RaggedBatch):
        raise SawaValueError(f"sawa_metrics needs a RaggedBatch, got {type(batch).__name__}")
    validate_batch(batch)
    n = batch.n_shots
    pct = _check_percentiles(percentiles)
    footprint = footprint_diameters(footprint_diameter_m, n)
    slope, steep = correctable_slopes(slope_deg, batch)
    txsig = tx_sigmas(tx_sigma_ns, batch)
    m = metrics if metrics is not None else compute_metrics(batch, algorithm, noise_mean, noise_std,
                                                            settings=settings)
    if len(m) != n:
        raise SawaValueError(f"metrics has {len(m)} shots, the batch {n}")
    reason = np.full(n, "ok", dtype=object)
    reason[~np.isfinite(slope)] = "no_slope"
    reason[steep] = "slope_too_steep"
    reason[m.reason != 0] = "waveform"
    rg = m.rg.copy()
    has_ground = np.isfinite(rg) & (rg > 0)
    reason[(reason == "ok") & ~has_ground] = "no_ground_energy"
    use = reason == "ok"

    energy = np.where(use, rg, np.nan)
    given = ground_energy is not None
    if given:
        energy = np.where(use, _per_shot("ground_energy", ground_energy, n), np.nan)
    slope_use = np.where(use, slope, np.nan)
    model = None
    for _ in range(1 if given else ENERGY_MATCH_ITERATIONS):
        model = bare_ground_model(m, m.bin_size_m, slope_use, footprint, txsig, algorithm, energy,
                                  tx=tx, tx_offset=tx_offset, settings=settings)
        mg = model.metrics
        if given:
            break
        ok_model = use & (mg.reason == 0) & np.isfinite(mg.rg) & (mg.rg > 0)
        ratio = np.where(ok_model, rg / np.where(ok_model, mg.rg, 1.0), 1.0)
        if np.all(np.abs(ratio[ok_model] - 1.0) < 1e-3):
            break
        energy = np.where(ok_model, energy * ratio, energy)
    assert model is not None
    mg = model.metrics
    # weak ground: the modelled return never crosses the back threshold -> put its end at its centre
    weak = use & (mg.reason != 0)
    if weak.any():
        # energy whose peak sits twice the back threshold above the noise: end ~ 1.18 sigma below centre
        thr = np.where(np.isfinite(m.back_threshold - m.noise_mean), m.back_threshold - m.noise_mean, 0.0)
        boost = np.where(weak, 2.0 * thr * np.sqrt(2.0 * np.pi) * model.sigma_samples, energy)
        energy2 = np.where(weak, np.maximum(boost, energy), energy)
        model = bare_ground_model(m, m.bin_size_m, slope_use, footprint, txsig, algorithm, energy2,
                                  tx=tx, tx_offset=tx_offset, settings=settings)
        mg = model.metrics
        reason[weak] = "weak_ground"
        reason[weak & (mg.reason != 0)] = "model_failed"
    h_forest = heights_above_signal_end(m, pct)
    h_ground = heights_above_signal_end(mg, pct)
    if weak.any():
        # end at the ground centre: heights above the modelled ground mode for the weak shots
        h_ground[weak] = mg.rh[np.ix_(weak, np.asarray(pct))]
        centre_shift = (m.botloc - m.ground_index) * m.bin_size_m
        h_forest[weak] = h_forest[weak] - centre_shift[weak, None]
    sawa = h_forest - h_ground
    bad = ~np.isin(reason, ("ok", "weak_ground"))
    sawa[bad] = np.nan
    cols: dict[str, np.ndarray] = {"shot_number": batch.shot_number.copy()}
    for j, c in enumerate(sawa_columns(pct)):
        cols[c] = sawa[:, j]
    cols["sawa_reason"] = reason
    if details:
        for j, p in enumerate(pct):
            cols[f"h{p}_m"] = np.where(bad, np.nan, h_forest[:, j])
            cols[f"hg{p}_m"] = np.where(bad, np.nan, h_ground[:, j])
        cols["ground_sigma_m"] = np.where(bad, np.nan, model.sigma_samples * m.bin_size_m)
        cols["terrain_sigma_m"] = np.where(bad, np.nan, model.terrain_sigma_m)
        cols["model_energy"] = np.where(bad, np.nan, model.energy)
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- terrain deconvolution
DECONV_REASONS = {
    "ok": "deconvolved and processed",
    "flat": "terrain sigma below half a sample: the waveform is used as it is",
    "waveform": "the waveform has no metrics (no signal), left as it is",
    "no_slope": "slope missing (no DEM coverage) or not finite",
    "slope_too_steep": "slope above MAX_CORRECTION_SLOPE_DEG: not deconvolved",
    "no_ground": "the deconvolved waveform has no metrics (see deconv_waveform_reason)",
}


def deconvolution_iterations(terrain_sigma_samples, pulse_sigma_samples) -> np.ndarray:
    """Richardson-Lucy iterations per shot: ``10 (s_t / s_p)^2`` clipped to [20, 3000] (0 when s_t < 0.5 sample)."""
    ts = np.asarray(terrain_sigma_samples, np.float64)
    ps = np.asarray(pulse_sigma_samples, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        it = np.ceil(RL_ITERATIONS_PER_RATIO2 * (ts / ps) ** 2)
    it = np.clip(np.nan_to_num(it, nan=0.0), RL_MIN_ITERATIONS, RL_MAX_ITERATIONS)
    return np.where(np.isfinite(ts) & (ts >= RL_MIN_TERRAIN_SIGMA_SAMPLES), it, 0).astype(np.int64)


def terrain_deconvolve(
    batch: RaggedBatch,
    slope_deg,
    footprint_diameter_m: float | np.ndarray = FOOTPRINT_DIAMETER_M,
    tx_sigma_ns=None,
    noise_mean=None,
    noise_std=None,
    *,
    algorithm="a1",
    metrics: WaveformMetrics | None = None,
    iterations=None,
    settings=None,
) -> tuple[RaggedBatch, np.ndarray, np.ndarray]:
    """Flat-ground equivalent waveforms: the terrain Gaussian deconvolved from each waveform.

    sawa's improvement on SAWA (see :func:`deconvolved_metrics`). On a plane of slope
    ``theta`` under a Gaussian footprint every return -- ground *and* canopy, whose
    heights follow the local ground -- is convolved with the terrain's height
    distribution ``N(0, s_fp tan(theta))`` [Hofton2000] (the SAWA bare-ground model
    is this kernel applied to the pulse). Richardson-Lucy deconvolution
    [Richardson1972; Lucy1974] of that Gaussian (``s_t = s_fp tan(theta) / dz``
    samples) from ``max(w - noise_mean, 0)`` over the signal plus margins restores
    the flat-ground waveform (non-negative, energy kept; accelerated as Biggs &
    Andrews 1997, Appl. Opt. 36, 1766); ``iterations`` default to
    :func:`deconvolution_iterations`. Returns ``(batch, iterations, terrain_sigma_samples)``;
    shots with slope < ~0.7 deg, no slope or no signal are returned unchanged.
    """
    validate_batch(batch)
    n = batch.n_shots
    slope, _ = correctable_slopes(slope_deg, batch)
    txsig = tx_sigmas(tx_sigma_ns, batch)
    m = metrics if metrics is not None else compute_metrics(batch, algorithm, noise_mean, noise_std,
                                                            settings=settings)
    b = m.bin_size_m
    sigma_fp = SIGMA_PER_DIAMETER * footprint_diameters(footprint_diameter_m, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = sigma_fp * np.tan(np.radians(slope)) / b
    its = deconvolution_iterations(ts, txsig) if iterations is None else np.broadcast_to(
        np.asarray(iterations, np.int64), (n,)).copy()
    run = (its > 0) & np.isfinite(m.toploc) & np.isfinite(m.botloc) & np.isfinite(m.noise_mean) & np.isfinite(ts)
    its = np.where(run, its, 0)
    samples = batch.samples.astype(np.float64)
    idx = np.flatnonzero(run)
    if idx.size:
        margin = RL_MARGIN_SIGMAS * ts[idx]
        below_m = np.maximum(RL_MARGIN_BELOW_M + RL_MARGIN_SIGMAS * ts[idx] * b[idx], 0.5 * m.waveform_extent_m[idx])
        a = np.maximum(np.floor(m.toploc[idx] - margin - 20), 0).astype(np.int64)
        e = np.minimum(np.ceil(m.botloc[idx] + below_m / b[idx]) + 1, batch.count[idx]).astype(np.int64)
        length = np.maximum(e - a, 0)
        data = np.zeros((idx.size, int(length.max())))
        for j, k in enumerate(idx):
            s0 = batch.start[k] + a[j]
            data[j, :length[j]] = np.maximum(samples[s0:s0 + length[j]] - m.noise_mean[k], 0.0)
        dec = K.richardson_lucy_gaussian(data, length, ts[idx], its[idx])
        for j, k in enumerate(idx):
            s0 = batch.start[k]
            seg = samples[s0:s0 + batch.count[k]]
            seg[:] = m.noise_mean[k]
            seg[a[j]:a[j] + length[j]] = m.noise_mean[k] + dec[j, :length[j]]
    out = RaggedBatch(samples=samples.astype(np.float32), start=batch.start.copy(), count=batch.count.copy(),
                      elevation_bin0=batch.elevation_bin0.copy(), elevation_lastbin=batch.elevation_lastbin.copy(),
                      shot_number=batch.shot_number.copy(), source=f"{batch.source} (terrain-deconvolved)")
    return out, its, ts


def deconvolved_metrics(
    batch: RaggedBatch,
    slope_deg,
    footprint_diameter_m: float | np.ndarray = FOOTPRINT_DIAMETER_M,
    tx_sigma_ns=None,
    percentiles: Sequence[int] = SAWA_PERCENTILES,
    noise_mean=None,
    noise_std=None,
    *,
    algorithm="a1",
    metrics: WaveformMetrics | None = None,
    iterations=None,
    settings=None,
) -> pd.DataFrame:
    """Terrain-deconvolved relative heights ``rhNN_deconv`` (m): sawa's improvement on SAWA.

    The published SAWA aligns quantiles of the forest and the bare-ground waveform at
    their signal ends; this is exact for the ground return but not for canopy
    quantiles (a convolution does not shift quantiles of a mixture the way it shifts
    those of one Gaussian) and it relies on the ground energy ``rg``, which is wrong
    when slope merges ground and canopy into one mode. Here the same physical model
    (terrain Gaussian of ``s_fp tan(slope)``) is *removed* from the whole waveform by
    :func:`terrain_deconvolve` and the usual metrics (ground mode, RH from the signal
    end, as :func:`waveform.metrics.compute_metrics`, same thresholds) are computed on
    the flat-ground equivalent, so ``rhNN_deconv`` estimates the RH the same stand
    would give on flat ground. Columns: ``shot_number``, ``rhNN_deconv``,
    ``deconv_ground_elevation_m``, ``deconv_iterations``, ``deconv_reason``
    (:data:`DECONV_REASONS`).
    """
    validate_batch(batch)
    n = batch.n_shots
    pct = _check_percentiles(percentiles)
    m = metrics if metrics is not None else compute_metrics(batch, algorithm, noise_mean, noise_std,
                                                            settings=settings)
    slope, steep = correctable_slopes(slope_deg, batch)
    dec, its, ts = terrain_deconvolve(batch, slope, footprint_diameter_m, tx_sigma_ns, noise_mean, noise_std,
                                      algorithm=algorithm, metrics=m, iterations=iterations, settings=settings)
    md = compute_metrics(dec, algorithm, m.noise_mean, m.noise_std, settings=settings)
    reason = np.full(n, "ok", dtype=object)
    reason[its == 0] = "flat"
    reason[~np.isfinite(slope)] = "no_slope"
    reason[steep] = "slope_too_steep"
    reason[m.reason != 0] = "waveform"
    reason[(reason == "ok") & (md.reason != 0)] = "no_ground"
    keep = np.isin(reason, ("ok", "flat"))
    rh = np.where(keep[:, None], md.rh[:, pct], np.nan)
    cols: dict[str, np.ndarray] = {"shot_number": batch.shot_number.copy()}
    for j, p in enumerate(pct):
        cols[f"rh{p}_deconv"] = rh[:, j]
    cols["deconv_ground_elevation_m"] = np.where(keep, md.ground_elevation_m, np.nan)
    cols["deconv_iterations"] = its.astype(np.int32)
    cols["deconv_reason"] = reason
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- shot tables
TERRAIN_TABLE_COLUMNS = ("slope_deg", "aspect_deg", "relief_m", "dem_elevation_m", "terrain_reason")


def annotate_terrain(
    shots_gdf,
    batch: RaggedBatch,
    dem,
    footprint_diameter_m: float = FOOTPRINT_DIAMETER_M,
    *,
    tx: RaggedBatch | None = None,
    percentiles: Sequence[int] = SAWA_PERCENTILES,
    deconvolve: bool = True,
    method: str = "plane",
    settings=None,
):
    """Add terrain and SAWA columns to a shot table chunk (the ``on_chunk`` hook of ``sawa metrics --dem``).

    ``shots_gdf``: the shot-table (Geo)DataFrame of ``batch`` (same shots, same
    order; columns ``shot_number``, ``longitude``, ``latitude`` and, when present,
    ``noise_mean``, ``noise_stddev_corrected``, ``tx_egsigma``, ``algorithm``);
    ``dem``: a :class:`terrain.dem.DEM` (open it once for all chunks) or path(s).
    Adds ``slope_deg``, ``aspect_deg``, ``relief_m``, ``dem_elevation_m`` (DEM
    datum, see ``dem.vertical_datum``), ``terrain_reason``
    (:data:`terrain.constants.TERRAIN_REASONS`), ``rhNN_sawa`` and ``sawa_reason``,
    and with ``deconvolve`` ``rhNN_deconv`` and ``deconv_reason``. Shots off the
    DEM keep their row with NaN terrain values and a reason. ``settings``: the
    setting-group table of an L2A granule ({number: AlgorithmSettings}, as
    :func:`waveform.algorithms.settings_from_l2a`) used for every metric computed here,
    so that ``sawa metrics --l2a --dem`` uses the granule's own groups. Returns a new frame.
    """
    from .dem import as_dem
    from .footprint import footprint_terrain

    n = batch.n_shots
    if len(shots_gdf) != n:
        raise SawaValueError(f"annotate_terrain: the shot table has {len(shots_gdf)} rows, the batch {n} shots")
    if "shot_number" in shots_gdf.columns:
        sn = shots_gdf["shot_number"].to_numpy().astype(np.uint64)
        if not np.array_equal(sn, batch.shot_number):
            k = int(np.flatnonzero(sn != batch.shot_number)[0])
            raise SawaValueError(
                f"annotate_terrain: row {k} of the shot table is shot {int(sn[k])}, the batch has "
                f"{int(batch.shot_number[k])}: tables and batches must be in the same order"
            )
    for col in ("longitude", "latitude"):
        if col not in shots_gdf.columns:
            raise SawaValueError(f"annotate_terrain: the shot table has no '{col}' column")

    def col(name):
        return shots_gdf[name].to_numpy(np.float64) if name in shots_gdf.columns else None

    d, opened = as_dem(dem)
    try:
        terrain = footprint_terrain(d, col("longitude"), col("latitude"), footprint_diameter_m, method=method,
                                    require_overlap=False)
    finally:
        if opened:
            d.close()
    algorithm = "a1"
    if "algorithm" in shots_gdf.columns:
        alg = shots_gdf["algorithm"].to_numpy()
        if np.all(np.isfinite(alg.astype(np.float64))) and np.all(alg > 0):
            algorithm = alg.astype(np.int64)
    noise_mean = col("noise_mean")
    noise_std = col("noise_stddev_corrected")
    txsig = col("tx_egsigma")
    slope = terrain["slope_deg"].to_numpy()
    m = compute_metrics(batch, algorithm, noise_mean, noise_std, settings=settings)
    sw = sawa_metrics(batch, slope, footprint_diameter_m, txsig, percentiles, algorithm=algorithm, metrics=m, tx=tx,
                      settings=settings)
    out = shots_gdf.copy()
    out["slope_deg"] = terrain["slope_deg"].to_numpy(np.float32)
    out["aspect_deg"] = terrain["aspect_deg"].to_numpy(np.float32)
    out["relief_m"] = terrain["relief_m"].to_numpy(np.float32)
    out["dem_elevation_m"] = terrain["dem_elevation_m"].to_numpy(np.float32)
    out["terrain_reason"] = terrain["reason"].to_numpy(dtype=object)
    for c in sawa_columns(percentiles):
        out[c] = sw[c].to_numpy(np.float32)
    out["sawa_reason"] = sw["sawa_reason"].to_numpy(dtype=object)
    if deconvolve:
        dc = deconvolved_metrics(batch, slope, footprint_diameter_m, txsig, percentiles, algorithm=algorithm,
                                 metrics=m, settings=settings)
        for p in _check_percentiles(percentiles):
            out[f"rh{p}_deconv"] = dc[f"rh{p}_deconv"].to_numpy(np.float32)
        out["deconv_reason"] = dc["deconv_reason"].to_numpy(dtype=object)
    out.attrs["dem_vertical_datum"] = terrain.attrs.get("vertical_datum")
    return out


# --------------------------------------------------------------------------- edge-extent baseline
EDGE_FEATURES = ("metric", "lee_m", "tee_m", "relief_m")


@dataclass(frozen=True)
class EdgeExtentModel:
    """Linear edge-extent correction ``y = c0 + c1 x + c2 LEE + c3 TEE + c4 TI`` [Lefsky2005; Lefsky2007]."""

    coefficients: tuple[float, ...]  # c0, then one per feature used
    features: tuple[str, ...]
    n: int
    rmse_m: float

    def apply(self, metric, lee_m, tee_m, relief_m=None) -> np.ndarray:
        return apply_edge_extent(self, metric, lee_m, tee_m, relief_m)


def _edge_design(metric, lee_m, tee_m, relief_m, features) -> np.ndarray:
    data = {"metric": metric, "lee_m": lee_m, "tee_m": tee_m, "relief_m": relief_m}
    cols = [np.ones(np.asarray(metric).shape[0])]
    for f in features:
        v = data[f]
        if v is None:
            raise SawaValueError(f"edge-extent feature {f!r} is needed but was not given")
        cols.append(np.asarray(v, dtype=np.float64))
    return np.column_stack(cols)


def fit_edge_extent(target, metric, lee_m, tee_m, relief_m=None,
                    features: Sequence[str] = ("metric", "lee_m", "tee_m")) -> EdgeExtentModel:
    """Least-squares edge-extent model predicting ``target`` (e.g. flat-ground RH or field height).

    ``metric``: the uncorrected waveform metric (waveform extent ``W`` for Lefsky's
    maximum height, or an RH); ``lee_m``/``tee_m``: leading/trailing edge extents;
    ``relief_m``: terrain index (DEM max - min around the footprint). ``features``
    chooses the terms: Lefsky 2005 = ("metric", "relief_m"), Lefsky 2007 =
    ("metric", "lee_m", "tee_m"). Rows with a non-finite value are skipped.
    """
    features = tuple(features)
    unknown = set(features) - set(EDGE_FEATURES)
    if unknown:
        raise SawaValueError(f"unknown edge-extent features {sorted(unknown)}; choose from {EDGE_FEATURES}")
    X = _edge_design(metric, lee_m, tee_m, relief_m, features)
    y = np.asarray(target, dtype=np.float64)
    ok = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    if ok.sum() < X.shape[1] + 2:
        raise SawaValueError(f"edge-extent fit needs at least {X.shape[1] + 2} complete rows, got {int(ok.sum())}")
    coef, *_ = np.linalg.lstsq(X[ok], y[ok], rcond=None)
    resid = y[ok] - X[ok] @ coef
    return EdgeExtentModel(tuple(float(c) for c in coef), features, int(ok.sum()), float(np.sqrt(np.mean(resid**2))))


def apply_edge_extent(model: EdgeExtentModel, metric, lee_m, tee_m, relief_m=None) -> np.ndarray:
    """Corrected metric from an :class:`EdgeExtentModel` (NaN where an input is missing)."""
    X = _edge_design(metric, lee_m, tee_m, relief_m, model.features)
    return X @ np.asarray(model.coefficients)


def physical_height_correction(extent_m, slope_deg, footprint_diameter_m: float = FOOTPRINT_DIAMETER_M) -> np.ndarray:
    """Park et al. (2014) physical correction of the waveform extent: ``W - D tan(slope)`` (m)."""
    return np.asarray(extent_m, np.float64) - float(footprint_diameter_m) * np.tan(
        np.radians(np.asarray(slope_deg, np.float64)))


__all__ = [
    "sawa_metrics",
    "annotate_terrain",
    "TERRAIN_TABLE_COLUMNS",
    "deconvolved_metrics",
    "terrain_deconvolve",
    "deconvolution_iterations",
    "DECONV_REASONS",
    "sawa_columns",
    "bare_ground_model",
    "heights_above_signal_end",
    "check_slopes",
    "tx_offsets",
    "fit_edge_extent",
    "apply_edge_extent",
    "physical_height_correction",
    "EdgeExtentModel",
    "BareGroundModel",
    "SAWA_REASONS",
    "DEFAULT_TX_SIGMA_NS",
    "MAX_TX_SIGMA_NS",
]
