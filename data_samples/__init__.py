"""Embedded sample data for sawa.

``from data_samples import load_sample_world`` gives the synthetic sample world
(DEM, forest truth, optical rasters, countries with true AGB totals, simulated
GEDI L1B granules and the per-shot truth), generated deterministically on first
use by :mod:`data_samples.generate`. Imports are lazy so that ``data_samples``
itself stays light.
"""

from __future__ import annotations

_LAZY = {
    "load_sample_world": "generate",
    "generate_sample_world": "generate",
    "verify_world": "generate",
    "SampleWorld": "generate",
    "Allometry": "generate",
    "ALLOMETRY": "generate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
