"""The one exception hierarchy of sawa, shared by every package.

Modelled on ``rasterio/errors.py``: every class inherits a builtin, so callers
that only know ``ValueError``/``OSError``/``KeyError`` still catch them, while
sawa-aware callers can catch :class:`SawaError`.

Messages name the file, beam, shot number, dataset, pixel or key concerned,
so that an analyst can find the bad input without a debugger.
"""

from __future__ import annotations


class SawaError(Exception):
    """Base class of all sawa errors."""


# --- input files ---------------------------------------------------------
class SawaFileError(SawaError, OSError):
    """A file is missing, unreadable, truncated or not of the expected format."""


class GranuleError(SawaFileError):
    """A GEDI granule cannot be read (not HDF5, truncated, wrong product)."""


class WrongProductError(GranuleError, ValueError):
    """A granule of another product was given (e.g. L2A where L1B is needed)."""


class MissingBeamError(GranuleError, KeyError):
    """A requested BEAMxxxx group is not in the granule."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDatasetError(GranuleError, KeyError):
    """A dataset required by a reader is not in a beam group."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RasterError(SawaFileError):
    """A raster (DEM, optical product) cannot be used: no CRS, no overlap, ..."""


class NoOverlapError(RasterError, ValueError):
    """Two datasets (raster/raster or raster/shots) do not overlap."""


class DatumError(RasterError, ValueError):
    """Vertical datums are mixed or unknown where heights are compared."""


# --- values ---------------------------------------------------------------
class SawaValueError(SawaError, ValueError):
    """An argument has the wrong shape, dtype, unit or range."""


class BatchError(SawaValueError):
    """A ragged waveform batch is inconsistent (offsets out of range, ...)."""


class ModelError(SawaValueError):
    """A biomass model cannot be fitted, applied, loaded or saved."""


class ModelFileError(ModelError, SawaFileError):
    """A model file is tampered with, foreign or of an unknown version."""


class StratumError(ModelError, KeyError):
    """A prediction stratum is unknown to a model."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(SawaValueError):
    """A configuration (TOML, CLI options) is invalid."""


class OutputError(SawaError, OSError):
    """An output cannot be written (unwritable folder, disk full)."""


__all__ = [
    "SawaError",
    "SawaFileError",
    "GranuleError",
    "WrongProductError",
    "MissingBeamError",
    "MissingDatasetError",
    "RasterError",
    "NoOverlapError",
    "DatumError",
    "SawaValueError",
    "BatchError",
    "ModelError",
    "ModelFileError",
    "StratumError",
    "ConfigError",
    "OutputError",
]
