"""sawa biomass package: L4A-form footprint AGBD models, ML learners, spatial CV, model files.

Public API (imported lazily, so ``import biomass`` stays light):

* :class:`biomass.l4a.L4AModel` - per-stratum OLS of sqrt(AGBD) on sqrt(RH + 100 m), NASA's
  GEDI L4A model form (fit / predict / predict_se / predict_frame / get_params);
  :func:`biomass.l4a.gedi_l4a_model` - NASA's version 2 models from the shipped table.
* :mod:`biomass.model_data` - read ``ANCILLARY/model_data`` from any L4A granule
  (:func:`read_model_table`), the packaged JSON copy (:func:`load_packaged_model_table`).
* :class:`biomass.learners.RandomForestAGB`, :class:`biomass.learners.GradientBoostingAGB`.
* :func:`biomass.cv.spatial_block_cv`, :func:`biomass.cv.compare_metric_sets`.
* :func:`biomass.modelio.save_model` / :func:`biomass.modelio.load_model` (JSON / skops, no pickle).
* :func:`biomass.shots.predict_shots`, :func:`biomass.shots.predict_shot_file`,
  :func:`biomass.shots.fit_shots`, :func:`biomass.shots.fit_shot_file` (``sawa predict`` / ``sawa fit``).
* :func:`biomass.agreement.l4a_agreement` - sawa vs the values in an L4A granule
  (``python -m biomass.agreement GRANULE.h5``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "L4AModel": "l4a",
    "gedi_l4a_model": "l4a",
    "ModelTable": "model_data",
    "StratumModel": "model_data",
    "read_model_table": "model_data",
    "load_packaged_model_table": "model_data",
    "RandomForestAGB": "learners",
    "GradientBoostingAGB": "learners",
    "spatial_block_cv": "cv",
    "compare_metric_sets": "cv",
    "save_model": "modelio",
    "load_model": "modelio",
    "predict_shots": "shots",
    "predict_shot_file": "shots",
    "fit_shots": "shots",
    "fit_shot_file": "shots",
    "l4a_agreement": "agreement",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'biomass' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
