"""Waveform metrics for ragged batches: the public face of the numba kernels.

:func:`compute_metrics` validates its input, explains bad input with a
:class:`~waveform.errors.SawaValueError`, and runs the private kernels of
:mod:`waveform._kernels` (parallel over shots). A shot that cannot be
processed never raises and is never dropped: it gets NaN metrics and a
``reason`` code from :data:`REASON_CODES`.

Definitions (sample 0 is the top of the waveform; heights in m):

* ``ground_index``: fractional sample of the ground (lowest accepted mode),
  ``ground_elevation_m = elevation_bin0 - ground_index * bin_size_m``
  with ``bin_size_m = (bin0 - lastbin) / (count - 1)`` (as GEDI L2A
  ``elev_lowestmode``);
* ``toploc``/``botloc``: signal start/end samples (quarter-sample resolution);
  ``canopy_top_elevation_m`` is the elevation of ``toploc`` (L2A
  ``elev_highestreturn``); ``waveform_extent_m = (botloc - toploc) * bin_size``;
* ``rh[:, k]`` (k = 0..100): height above the ground of the point where the
  cumulative energy from ``botloc`` upward reaches k % (GEDI L2A ``rh``);
  RH below the ground mode are negative, ``rh[:, 0]`` is at ``botloc`` and
  ``rh[:, 100]`` at ``toploc``;
* ``lee_m``/``tee_m``: leading / trailing edge extent (Lefsky et al. 2005,
  GRL 32, L22S02; Lefsky et al. 2007, Can. J. Remote Sens. 33, 97-111): the
  distance from the signal start to the first point where the noise-free
  smoothed waveform reaches half its maximum, and from the last such point to
  the signal end;
* ``energy_total``: sum of (waveform - noise mean) over all samples (L2A
  ``energy_total``, counts x samples); ``energy_signal``: the same for the
  smoothed waveform between ``toploc`` and ``botloc``;
* ``rg``/``rv``: ground and canopy energy; the ground return is taken as
  symmetric about the ground mode, so ``rg = 2 x`` energy from the ground
  mode down to ``botloc`` (clipped to [0, energy_signal]) and
  ``rv = energy_signal - rg``; ``cover = rv / (rv + rho_v/rho_g * rg)`` with
  rho_v/rho_g = 1.5 as in GEDI L2B (Tang & Armston 2019, L2B ATBD).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from . import _kernels as K
from .algorithms import (
    L2A_ALGORITHMS,
    RHO_V_OVER_RHO_G,
    AlgorithmSettings,
    get_algorithm,
    pack_settings,
)
from .batch import RaggedBatch, validate_batch
from .errors import SawaValueError

#: reason code -> (short name, explanation). 0 = processed.
REASON_CODES: dict[int, tuple[str, str]] = {
    K.OK: ("ok", "processed"),
    K.EMPTY: ("empty_waveform", "the waveform has zero samples"),
    K.NONFINITE: ("nonfinite_samples", "the waveform holds NaN/inf (fill) samples"),
    K.BAD_GEOLOCATION: ("bad_geolocation", "elevation_bin0/lastbin missing, beyond "
                                           f"+-{K.MAX_ABS_ELEVATION_M:g} m, or bin0 not above lastbin by "
                                           f"{K.MIN_BIN_SIZE_M:g}-{K.MAX_BIN_SIZE_M:g} m per sample"),
    K.BAD_NOISE: ("bad_noise", "noise mean/sd not finite or sd <= 0"),
    K.NO_SIGNAL: ("no_signal", "the smoothed waveform never exceeds the front threshold"),
    K.NO_SIGNAL_END: ("no_signal_end", "no sample above the back threshold below the signal start"),
    K.NO_MODE: ("no_mode", "no local maximum above the back threshold inside the signal"),
    K.NO_ENERGY: ("no_energy", "the signal energy above the noise mean is not positive"),
    K.TOO_SHORT: ("too_short", f"fewer than {K.MIN_SAMPLES} samples"),
    K.SATURATED: ("saturated", f"clipped flat top: >= {K.SATURATION_MIN_RUN} equal samples at the maximum of the "
                               "signal (detector saturation, GEDI L2A rx_clipflag)"),
}
REASON_NAMES: dict[int, str] = {code: name for code, (name, _) in REASON_CODES.items()}

#: Default noise window (samples) at each end of a waveform when no L1B noise values are given.
DEFAULT_NOISE_WINDOW = 64


@dataclass
class WaveformMetrics:
    """Per-shot metrics of a batch (arrays of length n unless noted)."""

    shot_number: np.ndarray  # uint64
    algorithm: np.ndarray  # uint8, setting group number used per shot
    ground_elevation_m: np.ndarray
    ground_index: np.ndarray  # fractional sample (0 = top)
    toploc: np.ndarray
    botloc: np.ndarray
    rh: np.ndarray  # (n, 101) m
    canopy_top_elevation_m: np.ndarray
    waveform_extent_m: np.ndarray
    lee_m: np.ndarray
    tee_m: np.ndarray
    energy_total: np.ndarray
    energy_signal: np.ndarray
    rv: np.ndarray
    rg: np.ndarray
    cover: np.ndarray
    n_modes: np.ndarray  # int32, modes found
    mode_locations: np.ndarray  # (n, 20) samples, lowest 20 modes top to bottom, NaN padded
    noise_mean: np.ndarray
    noise_std: np.ndarray
    front_threshold: np.ndarray
    back_threshold: np.ndarray
    bin_size_m: np.ndarray
    quality: np.ndarray  # bool, reason == 0
    reason: np.ndarray  # uint8, see REASON_CODES

    def __len__(self) -> int:
        return int(self.shot_number.shape[0])

    def reason_names(self) -> np.ndarray:
        """``reason`` as short names (object array)."""
        names = np.array([REASON_NAMES.get(c, f"code_{c}") for c in range(256)], dtype=object)
        return names[self.reason]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _noise_array(values, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise SawaValueError(f"{name} must have one value per shot ({n}), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def resolve_algorithms(
    algorithm, n: int, table: Mapping[int, AlgorithmSettings] | None = None
) -> tuple[list[AlgorithmSettings], np.ndarray]:
    """Turn an algorithm spec into (distinct groups, per-shot 0-based group index)."""
    if isinstance(algorithm, (str, int, np.integer, AlgorithmSettings)) and not isinstance(algorithm, bool):
        return [get_algorithm(algorithm, table)], np.zeros(n, np.int64)
    arr = np.asarray(algorithm)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise SawaValueError(
            f"algorithm must be a group name/number/settings or one group number per shot ({n}), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise SawaValueError(f"per-shot algorithm numbers must be integers, got dtype {arr.dtype}")
    if arr.shape[0] == 0:  # zero shots is valid (an empty beam): any one group, used by nobody
        known = dict(table) if table is not None else {g.number: g for g in L2A_ALGORITHMS.values()}
        return [known[min(known)]], np.zeros(0, np.int64)
    numbers = np.unique(arr)
    groups = []
    for num in numbers:
        try:
            groups.append(get_algorithm(int(num), table))
        except SawaValueError as exc:
            k = int(np.flatnonzero(arr == num)[0])
            raise SawaValueError(f"shot index {k}: {exc}") from None
    index = np.searchsorted(numbers, arr).astype(np.int64)
    return groups, index


def compute_metrics(
    batch: RaggedBatch,
    algorithm: str | int | AlgorithmSettings | np.ndarray = "a1",
    noise_mean: np.ndarray | float | None = None,
    noise_std: np.ndarray | float | None = None,
    *,
    settings: Mapping[int, AlgorithmSettings] | None = None,
    noise_window: int = DEFAULT_NOISE_WINDOW,
    rho_ratio: float = RHO_V_OVER_RHO_G,
) -> WaveformMetrics:
    """Ground, RH0-100, canopy top, extent, LEE/TEE, energies and cover for every shot.

    ``algorithm``: one L2A setting group ("a1".."a6", 1..6, or an
    :class:`~waveform.algorithms.AlgorithmSettings`) for all shots, or an
    integer array with one group number per shot (e.g. L2A
    ``selected_algorithm``). ``settings`` maps group numbers to settings
    (default: :data:`~waveform.algorithms.L2A_ALGORITHMS`; or
    :func:`~waveform.algorithms.settings_from_l2a`).

    ``noise_mean``/``noise_std``: L1B ``noise_mean_corrected`` /
    ``noise_stddev_corrected`` per shot (what L2A uses); None or NaN entries
    are estimated from the quieter of the first and last ``noise_window``
    samples of the waveform.
    """
    if not isinstance(batch, RaggedBatch):
        raise SawaValueError(f"compute_metrics needs a RaggedBatch, got {type(batch).__name__}")
    validate_batch(batch)
    n = batch.n_shots
    if int(noise_window) < 2:
        raise SawaValueError(f"noise_window must be >= 2 samples, got {noise_window}")
    if not (np.isfinite(rho_ratio) and rho_ratio > 0):
        raise SawaValueError(f"rho_ratio (rho_v/rho_g) must be > 0, got {rho_ratio!r}")
    mu = _noise_array(noise_mean, n, "noise_mean")
    sd = _noise_array(noise_std, n, "noise_std")
    groups, group_index = resolve_algorithms(algorithm, n, settings)
    packed = pack_settings(groups)

    scalars = np.empty((K.N_SCALARS, n), np.float64)  # one contiguous row per quantity
    rh = np.empty((n, K.N_RH), np.float64)
    mode_locs = np.empty((n, K.MAX_MODES), np.float64)
    n_modes = np.zeros(n, np.int32)
    reason = np.zeros(n, np.uint8)
    if n:
        K.metrics_kernel(
            batch.samples, batch.start, batch.count, batch.elevation_bin0, batch.elevation_lastbin,
            mu, sd, group_index,
            packed.front_k, packed.back_k, packed.boxes_locs, packed.nbox_locs, packed.half_locs,
            packed.boxes_z, packed.nbox_z, packed.half_z, packed.select_mode, packed.select_amp,
            int(noise_window), float(rho_ratio),
            scalars, rh, mode_locs, n_modes, reason,
        )
    numbers = np.array([g.number for g in groups], np.uint8)
    return WaveformMetrics(
        shot_number=batch.shot_number.copy(),
        algorithm=numbers[group_index] if n else np.zeros(0, np.uint8),
        ground_elevation_m=scalars[K.S_GROUND_ELEV],
        ground_index=scalars[K.S_GROUND_INDEX],
        toploc=scalars[K.S_TOPLOC],
        botloc=scalars[K.S_BOTLOC],
        rh=rh,
        canopy_top_elevation_m=scalars[K.S_TOP_ELEV],
        waveform_extent_m=scalars[K.S_EXTENT],
        lee_m=scalars[K.S_LEE],
        tee_m=scalars[K.S_TEE],
        energy_total=scalars[K.S_ENERGY_TOTAL],
        energy_signal=scalars[K.S_ENERGY_SIGNAL],
        rv=scalars[K.S_RV],
        rg=scalars[K.S_RG],
        cover=scalars[K.S_COVER],
        n_modes=n_modes,
        mode_locations=mode_locs,
        noise_mean=scalars[K.S_NOISE_MEAN],
        noise_std=scalars[K.S_NOISE_SD],
        front_threshold=scalars[K.S_FRONT_THR],
        back_threshold=scalars[K.S_BACK_THR],
        bin_size_m=scalars[K.S_BIN_SIZE],
        quality=reason == K.OK,
        reason=reason,
    )


def smooth_batch(batch: RaggedBatch, width_ns: float | None = None, boxes: tuple[int, ...] | None = None) -> np.ndarray:
    """Smoothed samples of every waveform (same layout as ``batch.samples``, float64).

    Give either an L2A smoothing width in ns or explicit box widths.
    """
    from .algorithms import cascade_half_length, smoothing_boxes

    validate_batch(batch)
    if (width_ns is None) == (boxes is None):
        raise SawaValueError("give exactly one of width_ns or boxes")
    boxes = smoothing_boxes(width_ns) if boxes is None else tuple(int(b) for b in boxes)
    half = cascade_half_length(boxes)
    out = np.full(batch.samples.shape[0], np.nan)
    arr = np.array(boxes if boxes else (1,), np.int64)
    K.smooth_batch_kernel(batch.samples, batch.start, batch.count, arr, len(boxes), half, out)
    return out


__all__ = [
    "compute_metrics",
    "smooth_batch",
    "resolve_algorithms",
    "WaveformMetrics",
    "REASON_CODES",
    "REASON_NAMES",
    "DEFAULT_NOISE_WINDOW",
    "L2A_ALGORITHMS",
]
