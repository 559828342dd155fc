"""The six GEDI L2A algorithm setting groups (a1-a6) and their smoothing filters.

Sources
-------
[ATBD]  Hofton, M. & Blair, J.B. (2019) Algorithm Theoretical Basis Document (ATBD) for GEDI
        Transmit and Receive Waveform Processing for L1 and L2 Products, v1.0, NASA GSFC,
        section 4 and the table of algorithm setting groups.
[L2A-DD] GEDI L2A data dictionary (LP DAAC): ``rx_processing_aN/ancillary/*`` descriptions.
[GRANULE] The values as stored in ``BEAMxxxx/rx_processing_aN/ancillary/`` of the real granule
        GEDI02_A_2019108080338_O01964_T05337_02_001_01 (release 1; identical in all 7 beams),
        read by :func:`settings_from_l2a`; ``tests/waveform/test_l2a_agreement.py`` checks the
        constants below against it.
[Wells1986] Wells, W.M. (1986) Efficient synthesis of Gaussian filters by cascaded uniform filters.
        IEEE TPAMI 8(2), 234-239.
[Kovesi2010] Kovesi, P. (2010) Fast almost-Gaussian filtering. DICTA 2010, 121-125.

Smoothing
---------
L2A smooths each waveform with a filter of "width" 6.5 or 3.5 ns ([ATBD]; ``rx_smoothing_width_locs``
for the signal bounds, ``rx_smoothing_width_zcross`` for modes and energies). The filter is not a
plain Gaussian of sigma = width: fitting the stored per-shot values of the reference granule
(``pk_sm``, ``zcross_amp``, ``botloc_amp``, ``toploc``, ``botloc``, ``rx_modelocs``) gives an
effective sigma of ~5.8 samples for 6.5 ns and ~3.0 samples for 3.5 ns, with compact support.
Among truncated Gaussians, Hann windows, B-splines and cascaded moving averages, the cascades in
:data:`L2A_SMOOTHING_BOXES` reproduce the stored locations best (6.5 ns: toploc 286/300, botloc
295/300 and mode locations 292/300 shots exact to the quarter sample; 3.5 ns: modes 283/300;
the rest differ by one quarter sample = 3.7 cm). Cascaded moving averages are the classic
almost-Gaussian filter [Wells1986] and run in O(samples) per pass. Other widths get a cascade of
four odd boxes approximating a Gaussian of sigma = :data:`SIGMA_PER_WIDTH` x width
[Kovesi2010].
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import SawaValueError

#: Box widths (samples) of the cascaded moving averages that reproduce L2A's smoothing for the
#: smoothing widths (ns) used by the six groups; calibrated on [GRANULE] (see module docstring).
#: 6.5 ns: four 10-sample boxes (equivalent sigma = sqrt(4 * 99 / 12) = 5.74 samples, support +-18);
#: 3.5 ns: boxes 3, 4, 5, 5, 6 (sigma = 2.97 samples, support +-9).
L2A_SMOOTHING_BOXES: dict[float, tuple[int, ...]] = {
    6.5: (10, 10, 10, 10),
    3.5: (3, 4, 5, 5, 6),
}

#: Effective Gaussian sigma (samples) per ns of L2A smoothing width, mean of the two calibrated
#: widths (5.74 / 6.5 = 0.883, 2.97 / 3.5 = 0.849); used for widths not in the table.
SIGMA_PER_WIDTH = 0.866

#: Number of boxes used for widths not in :data:`L2A_SMOOTHING_BOXES` [Kovesi2010].
DEFAULT_BOX_PASSES = 4

#: L2B ratio of canopy to ground reflectance rho_v / rho_g (GEDI L2B ATBD, Tang & Armston 2019;
#: L2B granules store rhov = 0.6, rhog = 0.4 and cover = rv / (rv + 1.5 rg)).
RHO_V_OVER_RHO_G = 1.5


def box_cascade_for_sigma(sigma_samples: float, passes: int = DEFAULT_BOX_PASSES) -> tuple[int, ...]:
    """Odd box widths whose cascade approximates a Gaussian of ``sigma_samples`` [Kovesi2010]."""
    if not (np.isfinite(sigma_samples) and sigma_samples > 0):
        raise SawaValueError(f"smoothing sigma must be a positive number of samples, got {sigma_samples!r}")
    if passes < 1:
        raise SawaValueError(f"number of box passes must be >= 1, got {passes}")
    var = sigma_samples**2
    ideal = math.sqrt(12.0 * var / passes + 1.0)
    lower = int(math.floor(ideal))
    if lower % 2 == 0:
        lower -= 1
    lower = max(lower, 1)
    upper = lower + 2
    m = round((12.0 * var - passes * lower**2 - 4 * passes * lower - 3 * passes) / (-4.0 * lower - 4.0))
    m = min(max(m, 0), passes)
    return tuple([lower] * m + [upper] * (passes - m))


def smoothing_boxes(width_ns: float) -> tuple[int, ...]:
    """Box cascade for an L2A smoothing width in ns (0 = no smoothing)."""
    width_ns = float(width_ns)
    if not np.isfinite(width_ns) or width_ns < 0:
        raise SawaValueError(f"smoothing width must be >= 0 ns, got {width_ns!r}")
    if width_ns == 0:
        return ()
    for known, boxes in L2A_SMOOTHING_BOXES.items():
        if abs(known - width_ns) < 1e-9:
            return boxes
    return box_cascade_for_sigma(SIGMA_PER_WIDTH * width_ns)


def cascade_half_length(boxes: Iterable[int]) -> int:
    """Half-length of the kernel of a box cascade; the cascade must be centred."""
    boxes = tuple(int(b) for b in boxes)
    if any(b < 1 for b in boxes):
        raise SawaValueError(f"box widths must be >= 1 sample, got {boxes}")
    total = sum(b - 1 for b in boxes)
    if total % 2:
        raise SawaValueError(
            f"box cascade {boxes} is not centred (sum of (width - 1) = {total} is odd); "
            "add or change one box so that the sum is even"
        )
    return total // 2


def cascade_kernel(boxes: Iterable[int]) -> np.ndarray:
    """Explicit (normalised) kernel of a box cascade, for references and plots."""
    k = np.ones(1)
    for b in boxes:
        k = np.convolve(k, np.ones(int(b)) / int(b))
    return k


@dataclass(frozen=True)
class AlgorithmSettings:
    """One L2A algorithm setting group ([ATBD]; names of [L2A-DD] in comments).

    Thresholds are in units of the noise standard deviation above the noise
    mean; widths in ns (= samples at GEDI's 1 ns sampling).
    """

    name: str
    number: int
    front_threshold_k: float  # rx_front_threshold
    back_threshold_k: float  # rx_back_threshold
    smoothing_width_locs_ns: float  # rx_smoothing_width_locs (signal start/end)
    smoothing_width_zcross_ns: float  # rx_smoothing_width_zcross (modes, energies)
    select_mode: bool = False  # enable_select_mode
    select_amp_threshold: float = 50.0  # amp_thresh (counts above back threshold)
    energy_thresh: float = 50.0  # energy_thresh (stored; no effect seen in L2A modes)
    cumulative_energy_thresh: float = 0.0  # cumulative_energy_thresh (informational)
    cumulative_energy_minimum: float = 0.0  # cumulative_energy_minimum (informational)
    source: str = field(default="Hofton & Blair (2019) GEDI L1/L2 waveform ATBD v1.0", compare=False)
    boxes_locs: tuple[int, ...] = field(default=(), compare=False)
    boxes_zcross: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        for attr in ("front_threshold_k", "back_threshold_k"):
            v = getattr(self, attr)
            if not np.isfinite(v):
                raise SawaValueError(f"algorithm {self.name}: {attr} must be finite, got {v!r}")
        if not self.boxes_locs:
            object.__setattr__(self, "boxes_locs", smoothing_boxes(self.smoothing_width_locs_ns))
        if not self.boxes_zcross:
            object.__setattr__(self, "boxes_zcross", smoothing_boxes(self.smoothing_width_zcross_ns))
        cascade_half_length(self.boxes_locs)
        cascade_half_length(self.boxes_zcross)


def _group(number: int, front: float, back: float, locs: float, zcross: float, **kw) -> AlgorithmSettings:
    return AlgorithmSettings(
        name=f"a{number}", number=number, front_threshold_k=front, back_threshold_k=back,
        smoothing_width_locs_ns=locs, smoothing_width_zcross_ns=zcross, **kw,
    )


#: The six L2A setting groups [ATBD]; values as stored in [GRANULE] ``rx_processing_aN/ancillary``
#: (front/back threshold in noise sd, smoothing widths in ns). a2 alone enables mode selection
#: (``enable_select_mode`` = 1, ``cumulative_energy_thresh`` 2.5, ``cumulative_energy_minimum`` 1.5).
L2A_ALGORITHMS: dict[str, AlgorithmSettings] = {
    "a1": _group(1, 3.0, 6.0, 6.5, 6.5),
    "a2": _group(2, 3.0, 3.0, 6.5, 3.5, select_mode=True, cumulative_energy_thresh=2.5,
                 cumulative_energy_minimum=1.5),
    "a3": _group(3, 3.0, 6.0, 6.5, 3.5),
    "a4": _group(4, 6.0, 6.0, 6.5, 6.5),
    "a5": _group(5, 3.0, 2.0, 6.5, 3.5),
    "a6": _group(6, 3.0, 4.0, 6.5, 3.5),
}


def get_algorithm(spec: str | int | AlgorithmSettings,
                  table: Mapping[int, AlgorithmSettings] | None = None) -> AlgorithmSettings:
    """Settings for ``spec``: "a1".."a6" (any case), 1..6, "1".."6" or an :class:`AlgorithmSettings`.

    ``table`` (number -> settings, e.g. from :func:`settings_from_l2a`) replaces
    the built-in constants.
    """
    if isinstance(spec, AlgorithmSettings):
        return spec
    known = dict(table) if table is not None else {s.number: s for s in L2A_ALGORITHMS.values()}
    number: int | None = None
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        number = int(spec)
    elif isinstance(spec, str):
        text = spec.strip().lower()
        if text.startswith("a"):
            text = text[1:]
        if text.isdigit():
            number = int(text)
    if number is None or number not in known:
        names = ", ".join(f"a{n}" for n in sorted(known))
        raise SawaValueError(f"unknown L2A algorithm setting group {spec!r}; expected one of {names} (or 1-{max(known)})")
    return known[number]


def settings_from_l2a(path: str | os.PathLike, beam: str | None = None) -> dict[int, AlgorithmSettings]:
    """Build the setting groups from a real L2A granule's ``BEAMxxxx/rx_processing_aN/ancillary/``.

    ``beam`` defaults to the first beam of the granule. Smoothing filters come
    from :func:`smoothing_boxes` for the stored widths.
    """
    from .gedi import open_granule, read_l2a_settings

    if beam is None:
        with open_granule(path, "L2A") as g:
            if not g.beams:
                raise SawaValueError(f"{path}: L2A granule has no BEAMxxxx groups")
            beam = g.beams[0]
    raw = read_l2a_settings(path, beam)
    out: dict[int, AlgorithmSettings] = {}
    for number, values in raw.items():
        def need(key: str, _values=values, _number=number) -> float:
            if key not in _values:
                raise SawaValueError(f"{path}: {beam}/rx_processing_a{_number}/ancillary has no {key!r}")
            return float(_values[key])

        out[number] = AlgorithmSettings(
            name=f"a{number}",
            number=number,
            front_threshold_k=need("rx_front_threshold"),
            back_threshold_k=need("rx_back_threshold"),
            smoothing_width_locs_ns=need("rx_smoothing_width_locs"),
            smoothing_width_zcross_ns=need("rx_smoothing_width_zcross"),
            select_mode=bool(values.get("enable_select_mode", 0.0)),
            select_amp_threshold=float(values.get("amp_thresh", 50.0)),
            energy_thresh=float(values.get("energy_thresh", 50.0)),
            cumulative_energy_thresh=float(values.get("cumulative_energy_thresh", 0.0)),
            cumulative_energy_minimum=float(values.get("cumulative_energy_minimum", 0.0)),
            source=f"{os.fspath(path)}:{beam}/rx_processing_a{number}/ancillary",
        )
    return out


@dataclass(frozen=True)
class PackedSettings:
    """Setting groups as the flat arrays the kernels take (index = position in ``groups``)."""

    groups: tuple[AlgorithmSettings, ...]
    front_k: np.ndarray
    back_k: np.ndarray
    boxes_locs: np.ndarray
    nbox_locs: np.ndarray
    half_locs: np.ndarray
    boxes_z: np.ndarray
    nbox_z: np.ndarray
    half_z: np.ndarray
    select_mode: np.ndarray
    select_amp: np.ndarray


def pack_settings(groups: Iterable[AlgorithmSettings]) -> PackedSettings:
    groups = tuple(groups)
    if not groups:
        raise SawaValueError("at least one algorithm setting group is needed")
    width = max(1, max(max(len(g.boxes_locs), len(g.boxes_zcross)) for g in groups))
    n = len(groups)
    boxes_locs = np.zeros((n, width), np.int64)
    boxes_z = np.zeros((n, width), np.int64)
    for i, g in enumerate(groups):
        boxes_locs[i, : len(g.boxes_locs)] = g.boxes_locs
        boxes_z[i, : len(g.boxes_zcross)] = g.boxes_zcross
    return PackedSettings(
        groups=groups,
        front_k=np.array([g.front_threshold_k for g in groups], np.float64),
        back_k=np.array([g.back_threshold_k for g in groups], np.float64),
        boxes_locs=boxes_locs,
        nbox_locs=np.array([len(g.boxes_locs) for g in groups], np.int64),
        half_locs=np.array([cascade_half_length(g.boxes_locs) for g in groups], np.int64),
        boxes_z=boxes_z,
        nbox_z=np.array([len(g.boxes_zcross) for g in groups], np.int64),
        half_z=np.array([cascade_half_length(g.boxes_zcross) for g in groups], np.int64),
        select_mode=np.array([g.select_mode for g in groups], np.bool_),
        select_amp=np.array([g.select_amp_threshold for g in groups], np.float64),
    )


__all__ = [
    "AlgorithmSettings",
    "L2A_ALGORITHMS",
    "L2A_SMOOTHING_BOXES",
    "SIGMA_PER_WIDTH",
    "RHO_V_OVER_RHO_G",
    "get_algorithm",
    "settings_from_l2a",
    "smoothing_boxes",
    "box_cascade_for_sigma",
    "cascade_half_length",
    "cascade_kernel",
    "pack_settings",
    "PackedSettings",
]
