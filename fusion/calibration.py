"""Calibration plots for footprint biomass models: simulated flat-ground plots of known AGB.

GEDI's own L4A models were calibrated on waveforms *simulated* from airborne lidar over field
plots of known AGB, not on on-orbit waveforms [Duncanson2022, L4A ATBD section 2]. sawa does the
same for an audit without a user calibration table: it simulates plots of known canopy height and
cover with :func:`waveform.simulate.simulate_waveforms` on **flat ground**, computes the same
metrics as for the granules (raw RH, SAWA RH and terrain-deconvolved RH at slope 0, waveform
cover) and gives each plot the AGB of a stated allometry ``AGB = a H^b cover^c``. A model fitted
on these plots learns ``AGB | metrics`` free of terrain effects; applied to slope-corrected
metrics of on-orbit shots it gives terrain-corrected AGB, applied to raw metrics it shows the
terrain bias (the comparison the audit reports).

Plot design (defaults in :data:`CALIBRATION_DEFAULTS`): canopy height uniform on
``[min_height_m, max_height_m]`` for forest plots, a fraction of non-forest plots (H = cover = 0),
cover uniform on ``[0.05, 0.98]`` *independent of height* (so the model does not learn a
height-cover relation of any one region), bare-ground return energy uniform between the coverage
and the full-power beam level (coverage beams get 0.45 of the full-power energy in the sample
world, like the reference granule's beams), noise and digitiser offset in the range of the
reference granule's beams.

[Duncanson2022] Duncanson, L. et al. (2022) Aboveground biomass density models for NASA's Global
Ecosystem Dynamics Investigation (GEDI) lidar mission. Remote Sens. Environ. 270, 112845,
doi:10.1016/j.rse.2021.112845.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from waveform.errors import SawaValueError

#: Default plot design. Heights up to 50 m cover the GEDI L4A calibration range of most strata;
#: noise sd 2.5-3.5 counts and digitiser offsets 205-255 counts span the eight beams of the
#: reference L1B granule (``../shared/reference/gedi``; see data_samples.generate.BEAM_DIGITISER).
CALIBRATION_DEFAULTS = {
    "n_plots": 4000,
    "min_height_m": 3.0,
    "max_height_m": 50.0,
    "nonforest_fraction": 0.15,
    "min_cover": 0.05,
    "max_cover": 0.98,
    "noise_sd_counts": (2.5, 3.5),
    "offset_counts": (205.0, 255.0),
    #: bare-ground return energy as a fraction of the simulator's full-power level (coverage beams 0.45)
    "energy_fraction": (0.45, 1.0),
}
#: Ground elevation of the simulated plots (m, ellipsoidal; any value: metrics are relative).
CALIBRATION_GROUND_M = 400.0


@dataclass(frozen=True)
class Allometry:
    """``AGB [Mg/ha] = a * H[m]^b * cover^c`` (0 where H = 0)."""

    a: float
    b: float
    c: float

    def __call__(self, height_m, cover) -> np.ndarray:
        h = np.asarray(height_m, dtype=np.float64)
        cv = np.asarray(cover, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.a * np.power(h, self.b) * np.power(cv, self.c)
        return np.where((h > 0) & (cv > 0), out, 0.0)

    def as_dict(self) -> dict:
        return {**asdict(self), "formula": "AGB [Mg/ha] = a * H[m]^b * cover^c"}


def metric_columns(percentiles, suffix: str = "") -> list[str]:
    """``rh10``, ``rh20``, ... (with ``suffix``, e.g. ``rh10_deconv``)."""
    return [f"rh{int(p)}{suffix}" for p in percentiles]


def simulate_calibration_plots(allometry: Allometry, *, n_plots: int = CALIBRATION_DEFAULTS["n_plots"],
                               seed: int = 0, footprint_diameter_m: float = 25.0,
                               percentiles=None, **design) -> pd.DataFrame:
    """Simulate ``n_plots`` flat-ground plots; one row per plot with truth and metrics.

    Columns: ``plot``, ``canopy_height_m``, ``true_cover``, ``agbd_true_mg_ha``, ``cover``
    (waveform canopy cover), ``rh0`` .. ``rh100`` (raw), ``rhNN_sawa`` and ``rhNN_deconv`` at the
    SAWA percentiles, ``reason`` (waveform), ``sawa_reason``, ``deconv_reason``.
    """
    from terrain.constants import SAWA_PERCENTILES
    from terrain.sawa import deconvolved_metrics, sawa_metrics
    from waveform.metrics import compute_metrics
    from waveform.simulate import BARE_GROUND_ENERGY_COUNTS, simulate_waveforms

    p = {**CALIBRATION_DEFAULTS, **design}
    unknown = set(design) - set(CALIBRATION_DEFAULTS)
    if unknown:
        raise SawaValueError(f"unknown calibration design keys {sorted(unknown)} (known: {sorted(CALIBRATION_DEFAULTS)})")
    if int(n_plots) < 10:
        raise SawaValueError(f"calibration needs at least 10 plots, got {n_plots}")
    if not 0 < p["min_height_m"] < p["max_height_m"]:
        raise SawaValueError(f"calibration heights need 0 < min < max, got {p['min_height_m']}, {p['max_height_m']}")
    percentiles = tuple(SAWA_PERCENTILES if percentiles is None else percentiles)
    n = int(n_plots)
    rng = np.random.default_rng(seed)
    forest = rng.random(n) >= p["nonforest_fraction"]
    height = np.where(forest, rng.uniform(p["min_height_m"], p["max_height_m"], n), 0.0)
    cover = np.where(forest, rng.uniform(p["min_cover"], p["max_cover"], n), 0.0)
    energy = BARE_GROUND_ENERGY_COUNTS * rng.uniform(*p["energy_fraction"], n)
    sim = simulate_waveforms(CALIBRATION_GROUND_M, height, cover, 0.0, footprint_diameter_m=footprint_diameter_m,
                             bare_ground_energy=energy, noise_sd=rng.uniform(*p["noise_sd_counts"], n),
                             offset=rng.uniform(*p["offset_counts"], n), rng=rng)
    m = compute_metrics(sim.batch, "a1")
    flat = np.zeros(n)
    txsig = sim.tx_params["tx_egsigma"].to_numpy(np.float64)
    sw = sawa_metrics(sim.batch, flat, footprint_diameter_m, txsig, percentiles, metrics=m, tx=sim.tx)
    dc = deconvolved_metrics(sim.batch, flat, footprint_diameter_m, txsig, percentiles, metrics=m)
    out = pd.DataFrame({"plot": np.arange(n), "canopy_height_m": height, "true_cover": cover,
                        "agbd_true_mg_ha": allometry(height, cover), "cover": m.cover})
    rh = pd.DataFrame(m.rh, columns=[f"rh{i}" for i in range(m.rh.shape[1])])
    out = pd.concat([out, rh], axis=1)
    out["reason"] = m.reason_names()
    for frame in (sw, dc):
        for c in frame.columns:
            out[c] = frame[c].to_numpy()
    out.attrs["design"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    out.attrs["allometry"] = allometry.as_dict()
    return out


__all__ = ["Allometry", "CALIBRATION_DEFAULTS", "metric_columns", "simulate_calibration_plots"]
