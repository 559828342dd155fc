"""NASA's GEDI L4A model table (``ANCILLARY/model_data``): read, ship as JSON, look up strata.

Every L4A granule carries the table of footprint AGBD models that produced it
[L4A-ATBD, L4A-V2]: one row per *prediction stratum* (plant functional type x
world region, e.g. ``GSW_NAs``) with

* ``rh_index`` / ``predictor_id``: the L2A relative-height percentiles used as
  predictors and their column in ``xvar`` (``predictor_id`` 1..4; 0 = unused slot);
* ``x_transform`` / ``y_transform``: ``sqrt`` for every stratum of version 2,
  applied as x = sqrt(RH_m + ``predictor_offset``) and y = sqrt(AGBD + ``response_offset``);
* ``par`` (intercept first), ``vcov`` (covariance of ``par``), ``rse`` (residual
  standard error, fit units), ``dof`` (residual degrees of freedom), ``npar``;
* ``bias_correction_name`` (``Snowdon``) and ``bias_correction_value`` (the
  ratio-estimator multiplier of the back-transformed prediction) [Snowdon1991];
* ``predictor_max_value`` (transformed units) and ``response_max_value`` (Mg/ha):
  the largest values of the calibration data;
* ``model_group``, ``model_name``, ``model_id``, ``fit_stratum``: which model and
  calibration subset a prediction stratum borrows.

``pft_lut`` and ``region_lut`` map the ``land_cover_data/pft_class`` and
``region_class`` codes of each shot to the names joined into the stratum name
(``f"{pft}_{region}"``).

:func:`read_model_table` reads the table from any L4A granule;
:func:`load_packaged_model_table` reads the copy shipped with sawa
(``biomass/data/gedi_l4a_model_data.json``, written by :func:`write_model_table_json`
from the real granule named in its provenance), so that prediction works
without a granule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from waveform.errors import (
    GranuleError,
    MissingDatasetError,
    ModelError,
    ModelFileError,
    SawaFileError,
)

from .constants import (
    L4A_ALPHA,
    L4A_PREDICTOR_OFFSET_M,
    L4A_RESPONSE_OFFSET_MG_HA,
    MODEL_FILE_VERSION,
    MODEL_TABLE_FORMAT,
)

#: The packaged copy of NASA's table.
PACKAGED_TABLE_PATH = Path(__file__).with_name("data") / "gedi_l4a_model_data.json"

#: Transforms understood by sawa (name in the L4A table -> meaning).
X_TRANSFORMS = ("sqrt", "log", "none")
Y_TRANSFORMS = ("sqrt", "log", "none")


@dataclass
class StratumModel:
    """One OLS model of transformed AGBD on transformed RH predictors, for one prediction stratum.

    ``par`` has ``npar`` entries (intercept, then one per predictor in ``rh_index``
    order); ``vcov`` is ``npar x npar``; ``predictor_max_value`` is in transformed
    units; ``response_max_value`` in Mg/ha.
    """

    predict_stratum: str
    rh_index: tuple[int, ...]
    par: np.ndarray
    vcov: np.ndarray
    rse: float
    dof: int
    bias_correction_value: float
    bias_correction_name: str = "Snowdon"
    x_transform: str = "sqrt"
    y_transform: str = "sqrt"
    predictor_max_value: tuple[float, ...] = ()
    response_max_value: float = math.inf
    model_group: int = 0
    model_name: str = ""
    model_id: int = 0
    fit_stratum: str = ""
    n_train: int | None = None

    def __post_init__(self) -> None:
        self.rh_index = tuple(int(i) for i in self.rh_index)
        self.par = np.asarray(self.par, dtype=np.float64).reshape(-1)
        self.vcov = np.asarray(self.vcov, dtype=np.float64)
        npar = len(self.rh_index) + 1
        if self.par.shape != (npar,):
            raise ModelError(
                f"stratum {self.predict_stratum}: {len(self.rh_index)} predictors need {npar} parameters, "
                f"got {self.par.shape[0]}"
            )
        if self.vcov.shape != (npar, npar):
            raise ModelError(f"stratum {self.predict_stratum}: vcov must be {npar}x{npar}, got {self.vcov.shape}")
        if self.x_transform not in X_TRANSFORMS:
            raise ModelError(f"stratum {self.predict_stratum}: unknown x_transform {self.x_transform!r} "
                             f"(known: {', '.join(X_TRANSFORMS)})")
        if self.y_transform not in Y_TRANSFORMS:
            raise ModelError(f"stratum {self.predict_stratum}: unknown y_transform {self.y_transform!r} "
                             f"(known: {', '.join(Y_TRANSFORMS)})")
        if not self.predictor_max_value:
            self.predictor_max_value = tuple([math.inf] * len(self.rh_index))
        self.predictor_max_value = tuple(float(v) for v in self.predictor_max_value)
        if len(self.predictor_max_value) != len(self.rh_index):
            raise ModelError(f"stratum {self.predict_stratum}: predictor_max_value needs {len(self.rh_index)} values")
        if not (self.rse >= 0 and self.dof >= 1):
            raise ModelError(f"stratum {self.predict_stratum}: rse must be >= 0 and dof >= 1 "
                             f"(got rse={self.rse}, dof={self.dof})")

    @property
    def npar(self) -> int:
        return len(self.rh_index) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "predict_stratum": self.predict_stratum,
            "rh_index": list(self.rh_index),
            "par": [float(v) for v in self.par],
            "vcov": [[float(v) for v in row] for row in self.vcov],
            "rse": float(self.rse),
            "dof": int(self.dof),
            "bias_correction_value": float(self.bias_correction_value),
            "bias_correction_name": self.bias_correction_name,
            "x_transform": self.x_transform,
            "y_transform": self.y_transform,
            "predictor_max_value": [_json_float(v) for v in self.predictor_max_value],
            "response_max_value": _json_float(self.response_max_value),
            "model_group": int(self.model_group),
            "model_name": self.model_name,
            "model_id": int(self.model_id),
            "fit_stratum": self.fit_stratum,
            "n_train": None if self.n_train is None else int(self.n_train),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StratumModel:
        try:
            return cls(
                predict_stratum=str(d["predict_stratum"]),
                rh_index=tuple(d["rh_index"]),
                par=np.array(d["par"], dtype=np.float64),
                vcov=np.array(d["vcov"], dtype=np.float64),
                rse=float(d["rse"]),
                dof=int(d["dof"]),
                bias_correction_value=float(d["bias_correction_value"]),
                bias_correction_name=str(d.get("bias_correction_name", "Snowdon")),
                x_transform=str(d.get("x_transform", "sqrt")),
                y_transform=str(d.get("y_transform", "sqrt")),
                predictor_max_value=tuple(_from_json_float(v) for v in d.get("predictor_max_value", ())),
                response_max_value=_from_json_float(d.get("response_max_value")),
                model_group=int(d.get("model_group", 0)),
                model_name=str(d.get("model_name", "")),
                model_id=int(d.get("model_id", 0)),
                fit_stratum=str(d.get("fit_stratum", "")),
                n_train=None if d.get("n_train") is None else int(d["n_train"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            name = d.get("predict_stratum", "?") if isinstance(d, dict) else "?"
            raise ModelError(f"stratum model {name!r} is incomplete or malformed: {exc!r}") from exc


def _json_float(v: float) -> float | str:
    v = float(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _from_json_float(v: Any) -> float:
    if v is None:
        return math.inf
    if isinstance(v, str):
        return float(v)
    return float(v)


@dataclass
class ModelTable:
    """A set of per-stratum models plus the PFT/region look-up tables and global settings."""

    strata: dict[str, StratumModel]
    pft_lut: dict[int, str] = field(default_factory=dict)
    region_lut: dict[int, str] = field(default_factory=dict)
    predictor_offset_m: float = L4A_PREDICTOR_OFFSET_M
    response_offset: float = L4A_RESPONSE_OFFSET_MG_HA
    alpha: float = L4A_ALPHA
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.strata)

    def stratum_from_classes(self, pft_class, region_class) -> np.ndarray:
        """Prediction stratum names ``f"{pft}_{region}"`` from GEDI class codes ('' where unknown).

        ``pft_class`` and ``region_class`` are the L4A ``land_cover_data`` codes
        (MODIS MCD12Q1 Type 5 PFT; GEDI world region). A code absent from the
        look-up tables (e.g. 0 = water) gives '' (no stratum).
        """
        if not self.pft_lut or not self.region_lut:
            raise ModelError("this model table has no PFT/region look-up tables; give predict_stratum instead")
        pft = np.asarray(pft_class, dtype=np.float64).reshape(-1)
        region = np.asarray(region_class, dtype=np.float64).reshape(-1)
        if pft.shape != region.shape:
            raise ModelError(f"pft_class ({pft.size}) and region_class ({region.size}) differ in length")
        import pandas as pd

        pn = pd.Series(pft).map({float(k): v for k, v in self.pft_lut.items()})
        rn = pd.Series(region).map({float(k): v for k, v in self.region_lut.items()})
        both = pn.notna() & rn.notna()
        out = np.full(pft.size, "", dtype=object)
        out[both.to_numpy()] = (pn[both] + "_" + rn[both]).to_numpy(dtype=object)
        return out

    def to_payload(self) -> dict[str, Any]:
        return {
            "strata": [self.strata[k].to_dict() for k in sorted(self.strata)],
            "pft_lut": {str(k): v for k, v in sorted(self.pft_lut.items())},
            "region_lut": {str(k): v for k, v in sorted(self.region_lut.items())},
            "predictor_offset_m": float(self.predictor_offset_m),
            "response_offset": float(self.response_offset),
            "alpha": float(self.alpha),
            "provenance": self.provenance,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ModelTable:
        try:
            strata = {}
            for d in payload["strata"]:
                m = StratumModel.from_dict(d)
                strata[m.predict_stratum] = m
            return cls(
                strata=strata,
                pft_lut={int(k): str(v) for k, v in payload.get("pft_lut", {}).items()},
                region_lut={int(k): str(v) for k, v in payload.get("region_lut", {}).items()},
                predictor_offset_m=float(payload.get("predictor_offset_m", L4A_PREDICTOR_OFFSET_M)),
                response_offset=float(payload.get("response_offset", L4A_RESPONSE_OFFSET_MG_HA)),
                alpha=float(payload.get("alpha", L4A_ALPHA)),
                provenance=dict(payload.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"model table payload is malformed: {exc!r}") from exc


# --------------------------------------------------------------------------- reading a granule
def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
        return _s(value)
    return str(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_model_table(path: str | os.PathLike) -> ModelTable:
    """Read ``ANCILLARY/model_data``, ``pft_lut`` and ``region_lut`` from a GEDI L4A granule.

    Also reads ``predictor_offset``, ``response_offset`` and ``alpha`` (attributes
    of ``/BEAMxxxx/agbd_prediction``; L4A v2 defaults when absent) and records the
    provenance: granule file name and sha256, ``fileName``, ``PGEVersion``,
    ``VersionID``, ``creationDate`` and ``gedi_l4a_githash`` from
    ``METADATA/DatasetIdentification``.
    """
    from waveform.gedi import open_granule

    path = Path(path)
    with open_granule(path, "L4A") as g:
        h5 = g.h5
        for name in ("ANCILLARY/model_data", "ANCILLARY/pft_lut", "ANCILLARY/region_lut"):
            if name not in h5:
                raise MissingDatasetError(f"{path}: L4A granule has no {name} (needed for the model table)")
        try:
            md = h5["ANCILLARY/model_data"][:]
            pft = h5["ANCILLARY/pft_lut"][:]
            region = h5["ANCILLARY/region_lut"][:]
        except OSError as exc:
            raise GranuleError(f"{path}: reading ANCILLARY failed (truncated file?): {exc}") from exc
        needed = ("predict_stratum", "rh_index", "predictor_id", "par", "vcov", "rse", "dof",
                  "bias_correction_value", "npar", "x_transform", "y_transform")
        missing = [f for f in needed if f not in (md.dtype.names or ())]
        if missing:
            raise MissingDatasetError(f"{path}: ANCILLARY/model_data lacks fields {', '.join(missing)}")
        settings = {"predictor_offset": L4A_PREDICTOR_OFFSET_M, "response_offset": L4A_RESPONSE_OFFSET_MG_HA,
                    "alpha": L4A_ALPHA}
        for beam in g.beams:
            grp = h5[beam].get("agbd_prediction")
            if grp is not None:
                for key in settings:
                    if key in grp.attrs:
                        settings[key] = float(np.ravel(grp.attrs[key])[0])
                break
        meta = {}
        if "METADATA/DatasetIdentification" in h5:
            meta = {k: _s(v) for k, v in h5["METADATA/DatasetIdentification"].attrs.items()}

    strata: dict[str, StratumModel] = {}
    for row in md:
        name = _s(row["predict_stratum"])
        npar = int(row["npar"])
        pid = np.asarray(row["predictor_id"]).astype(int)
        rh = np.asarray(row["rh_index"]).astype(int)
        used = np.nonzero(pid > 0)[0]
        if len(used) != npar - 1:
            raise ModelFileError(f"{path}: stratum {name}: {len(used)} predictors but npar={npar}")
        # xvar column j holds the predictor whose predictor_id is j + 1
        order = used[np.argsort(pid[used])]
        pmax = np.asarray(row["predictor_max_value"], dtype=np.float64)[order] if "predictor_max_value" in md.dtype.names else ()
        strata[name] = StratumModel(
            predict_stratum=name,
            rh_index=tuple(int(v) for v in rh[order]),
            par=np.asarray(row["par"], dtype=np.float64)[:npar],
            vcov=np.asarray(row["vcov"], dtype=np.float64)[:npar, :npar],
            rse=float(row["rse"]),
            dof=int(row["dof"]),
            bias_correction_value=float(row["bias_correction_value"]),
            bias_correction_name=_s(row["bias_correction_name"]) if "bias_correction_name" in md.dtype.names else "",
            x_transform=_s(row["x_transform"]),
            y_transform=_s(row["y_transform"]),
            predictor_max_value=tuple(float(v) for v in pmax),
            response_max_value=float(row["response_max_value"]) if "response_max_value" in md.dtype.names else math.inf,
            model_group=int(row["model_group"]) if "model_group" in md.dtype.names else 0,
            model_name=_s(row["model_name"]) if "model_name" in md.dtype.names else "",
            model_id=int(row["model_id"]) if "model_id" in md.dtype.names else 0,
            fit_stratum=_s(row["fit_stratum"]) if "fit_stratum" in md.dtype.names else "",
        )
    provenance = {
        "source": "NASA GEDI L4A granule ANCILLARY/model_data",
        "granule_file": path.name,
        "granule_sha256": _sha256(path),
        "fileName": meta.get("fileName", path.name),
        "shortName": meta.get("shortName", ""),
        "PGEVersion": meta.get("PGEVersion", ""),
        "VersionID": meta.get("VersionID", ""),
        "creationDate": meta.get("creationDate", ""),
        "gedi_l4a_githash": meta.get("gedi_l4a_githash", ""),
        "citation": "Dubayah, R. et al. GEDI L4A Footprint Level Aboveground Biomass Density, Version 2.1. "
                    "ORNL DAAC, doi:10.3334/ORNLDAAC/2056; Kellner, J.R. et al. (2023) ATBD for GEDI "
                    "Footprint Aboveground Biomass Density, Earth Space Sci. 10, e2022EA002516.",
    }
    return ModelTable(
        strata=strata,
        pft_lut={int(r["pft_class"]): _s(r["pft_name"]) for r in pft},
        region_lut={int(r["region_class"]): _s(r["region_name"]) for r in region},
        predictor_offset_m=settings["predictor_offset"],
        response_offset=settings["response_offset"],
        alpha=settings["alpha"],
        provenance=provenance,
    )


# --------------------------------------------------------------------------- JSON envelope
def canonical_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys, no spaces, no NaN) whose sha256 identifies a payload."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as exc:
        raise ModelError(f"payload holds NaN or infinite numbers, which JSON cannot store: {exc}") from exc


def payload_sha256(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def envelope(fmt: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``{"format", "format_version", "payload", "payload_sha256", ...extra}``."""
    return {"format": fmt, "format_version": MODEL_FILE_VERSION, **extra, "payload": payload,
            "payload_sha256": payload_sha256(payload)}


def open_envelope(doc: Any, fmt: str, source: str) -> dict[str, Any]:
    """Check format name, version and checksum of an envelope; return its payload."""
    if not isinstance(doc, dict) or "format" not in doc:
        raise ModelFileError(f"{source} is not a sawa model file (no 'format' key)")
    if doc["format"] != fmt:
        raise ModelFileError(f"{source} is a {doc['format']!r} file, not {fmt!r}")
    if doc.get("format_version") != MODEL_FILE_VERSION:
        raise ModelFileError(f"{source} has format version {doc.get('format_version')!r}; "
                             f"this sawa reads version {MODEL_FILE_VERSION}")
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise ModelFileError(f"{source} has no payload object")
    expected = doc.get("payload_sha256")
    actual = payload_sha256(payload)
    if expected != actual:
        raise ModelFileError(f"{source} was modified after it was written: payload sha256 {actual} "
                             f"does not match the recorded {expected}")
    return payload


def write_model_table_json(table: ModelTable, path: str | os.PathLike) -> Path:
    """Write a model table as a checksummed JSON envelope (atomically)."""
    from waveform.outputs import write_text_atomic

    doc = envelope(MODEL_TABLE_FORMAT, table.to_payload())
    return write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")


def read_model_table_json(path: str | os.PathLike) -> ModelTable:
    """Read a table written by :func:`write_model_table_json` (format, version and sha256 checked)."""
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"model table {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not JSON: {exc}") from exc
    return ModelTable.from_payload(open_envelope(doc, MODEL_TABLE_FORMAT, str(path)))


_PACKAGED: ModelTable | None = None


def load_packaged_model_table() -> ModelTable:
    """NASA's L4A v2 model table as shipped with sawa (provenance in ``.provenance``)."""
    global _PACKAGED
    if _PACKAGED is None:
        if not PACKAGED_TABLE_PATH.exists():
            raise SawaFileError(f"the packaged L4A model table {PACKAGED_TABLE_PATH} is missing (broken install?)")
        _PACKAGED = read_model_table_json(PACKAGED_TABLE_PATH)
    return _PACKAGED


__all__ = [
    "StratumModel",
    "ModelTable",
    "read_model_table",
    "read_model_table_json",
    "write_model_table_json",
    "load_packaged_model_table",
    "canonical_json",
    "payload_sha256",
    "envelope",
    "open_envelope",
    "PACKAGED_TABLE_PATH",
]
