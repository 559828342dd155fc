"""Save and load biomass models without ever unpickling arbitrary code.

* L4A-form models (:class:`biomass.l4a.L4AModel`) are plain JSON: an envelope
  ``{"format": "sawa-biomass-model", "format_version": 1, "kind": "l4a-form",
  "payload": {...}, "payload_sha256": ...}`` whose payload holds the estimator
  parameters and the per-stratum table (predictors, transforms, ``par``,
  ``vcov``, ``rse``, ``dof``, bias correction, limits, provenance). The sha256
  of the canonical payload (sorted keys, no spaces) is checked on load, so an
  edited coefficient is detected.
* scikit-learn learners (:mod:`biomass.learners`) are written with skops
  (``.skops``, a zip of JSON + numpy arrays, no pickle). On load, the types the
  file would construct are listed with ``skops.io.get_untrusted_types`` and
  refused unless every one is on :data:`TRUSTED_SKOPS_TYPES` or is a
  scikit-learn type; the loaded object must be a sawa learner.

A file of any other kind (pickle, joblib, text, a JSON of another format, a
damaged zip) raises :class:`~waveform.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from waveform.errors import ModelError, ModelFileError, SawaFileError
from waveform.outputs import atomic_path, write_text_atomic

from .constants import MODEL_FILE_FORMAT
from .l4a import L4AModel
from .learners import GradientBoostingAGB, RandomForestAGB
from .model_data import ModelTable, envelope, open_envelope

#: Non-default types a sawa skops file may construct (besides ``sklearn.*`` types).
TRUSTED_SKOPS_TYPES = frozenset({
    "biomass.learners.RandomForestAGB",
    "biomass.learners.GradientBoostingAGB",
})
LEARNER_CLASSES = (RandomForestAGB, GradientBoostingAGB)
_ZIP_MAGIC = b"PK\x03\x04"


def _jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "predictors":
            if isinstance(value, Mapping):
                value = {str(k): [int(i) for i in v] for k, v in value.items()}
            else:
                value = [int(i) for i in value]
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    return out


def _params_from_json(params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    pred = out.get("predictors")
    if isinstance(pred, Mapping):
        out["predictors"] = {str(k): tuple(int(i) for i in v) for k, v in pred.items()}
    elif pred is not None:
        out["predictors"] = tuple(int(i) for i in pred)
    return out


#: Zip entry time of skops files written with ``stamp=None`` (the zip format's earliest date).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_model(model, path: str | os.PathLike, stamp: str | None = "now") -> Path:
    """Write a fitted model: L4A-form as checksummed JSON, learners as skops (atomically).

    ``stamp``: "now" records the writing time (JSON ``written_utc``, skops zip entry times);
    None writes none, so that equal models give byte-identical files (reruns of a pipeline).
    """
    path = Path(path)
    if isinstance(model, L4AModel):
        if path.suffix.lower() != ".json":
            raise ModelError(f"L4A-form models are saved as JSON: name the file *.json, not {path.name}")
        table = getattr(model, "table_", None)
        if table is None:
            raise ModelError("cannot save an unfitted L4AModel")
        payload = {
            "kind": "l4a-form",
            "params": _jsonable_params(model.get_params(deep=False)),
            "table": table.to_payload(),
            "sawa_version": _sawa_version(),
        }
        if stamp is not None:
            payload["written_utc"] = (_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                                      if stamp == "now" else str(stamp))
        doc = envelope(MODEL_FILE_FORMAT, payload, kind="l4a-form")
        return write_text_atomic(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
    if isinstance(model, LEARNER_CLASSES):
        if path.suffix.lower() != ".skops":
            raise ModelError(f"{type(model).__name__} models are saved with skops: name the file *.skops, "
                             f"not {path.name}")
        if getattr(model, "model_", None) is None:
            raise ModelError(f"cannot save an unfitted {type(model).__name__}")
        import skops.io as sio

        with atomic_path(path) as tmp:
            sio.dump(model, tmp)
            if stamp is None:
                _reproducible_zip(tmp)
        return path
    raise ModelError(f"cannot save a {type(model).__name__}: sawa saves L4AModel, RandomForestAGB "
                     f"and GradientBoostingAGB models")


def _reproducible_zip(path: Path) -> None:
    """Rewrite a skops zip reproducibly: entries dated :data:`ZIP_EPOCH`, object ids renumbered.

    skops names array files and marks shared objects with ``id()`` of the object (a memory
    address, different in every process). Every such number (``"__id__": N`` and ``N.npy``) is
    replaced by its rank of first appearance in ``schema.json``, consistently, so references
    still match; content is unchanged.
    """
    import re
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = {info.filename: (info, src.read(info)) for info in src.infolist()}
    schema_name = "schema.json"
    number: dict[str, str] = {}
    pattern = re.compile(r'("__id__": )([0-9]+)|([0-9]+)(\.npy)')

    def renumber(mt: re.Match) -> str:
        old = mt.group(2) or mt.group(3)
        new = number.setdefault(old, str(len(number) + 1))  # JSON numbers: no leading zeros
        return f"{mt.group(1)}{new}" if mt.group(2) else f"{new}{mt.group(4)}"

    if schema_name in entries:
        text = pattern.sub(renumber, entries[schema_name][1].decode("utf-8"))
        entries[schema_name] = (entries[schema_name][0], text.encode("utf-8"))

    def new_name(name: str) -> str:
        stem, dot, ext = name.partition(".")
        return f"{number[stem]}.{ext}" if dot and ext == "npy" and stem in number else name

    with zipfile.ZipFile(path, "w") as dst:
        for name in sorted(entries, key=new_name):
            info, data = entries[name]
            fixed = zipfile.ZipInfo(new_name(name), date_time=ZIP_EPOCH)
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            dst.writestr(fixed, data)


def _sawa_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sawa")
    except metadata.PackageNotFoundError:
        return "unknown"


def load_model(path: str | os.PathLike):
    """Load a model written by :func:`save_model` (JSON or skops), refusing anything else."""
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"model file {path} does not exist")
    if path.is_dir():
        raise SawaFileError(f"model file {path} is a folder")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(_ZIP_MAGIC):
        return _load_skops(path)
    if head.lstrip()[:1] == b"{":
        return _load_json(path)
    raise ModelFileError(
        f"{path} is neither a sawa JSON model nor a skops file (first bytes {head[:8]!r}); "
        f"sawa never loads pickle/joblib files"
    )


def _load_json(path: Path) -> L4AModel:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from exc
    payload = open_envelope(doc, MODEL_FILE_FORMAT, str(path))
    if payload.get("kind") != "l4a-form":
        raise ModelFileError(f"{path}: unknown model kind {payload.get('kind')!r} (expected 'l4a-form')")
    try:
        params = _params_from_json(payload["params"])
        model = L4AModel(**params)
        model.table_ = ModelTable.from_payload(payload["table"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: model payload is incomplete: {exc!r}") from exc
    except ModelError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return model


def _load_skops(path: Path):
    import skops.io as sio

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise ModelFileError(f"{path} is damaged: member {bad} fails its CRC check (file modified?)")
        untrusted = sio.get_untrusted_types(file=path)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse means: not a usable skops file
        raise ModelFileError(f"{path} is not a readable skops model file: {exc}") from exc
    refused = [t for t in untrusted if t not in TRUSTED_SKOPS_TYPES and not t.startswith("sklearn.")]
    if refused:
        raise ModelFileError(f"{path} would construct types outside sawa's allow-list: {', '.join(refused)}; "
                             f"refusing to load it")
    try:
        model = sio.load(path, trusted=list(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path} cannot be loaded by skops: {exc}") from exc
    if not isinstance(model, LEARNER_CLASSES):
        raise ModelFileError(f"{path} holds a {type(model).__module__}.{type(model).__name__}, "
                             f"not a sawa learner (RandomForestAGB / GradientBoostingAGB)")
    if getattr(model, "model_", None) is None or not hasattr(model, "rmse_"):
        raise ModelFileError(f"{path} holds an unfitted or incomplete {type(model).__name__}")
    return model


__all__ = ["save_model", "load_model", "TRUSTED_SKOPS_TYPES"]
