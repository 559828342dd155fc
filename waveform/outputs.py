"""Atomic output writing, checksums and run manifests, used by every package.

Every output is written to a temporary file in the destination folder and
renamed into place (``os.replace`` is atomic on POSIX), so a crash or a full
disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import OutputError, SawaError

#: Read size for checksums (bytes).
_HASH_CHUNK_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception the temporary file is removed and the exception re-raised
    (a plain ``OSError`` becomes :class:`OutputError` naming ``path``; sawa errors, e.g. a
    :class:`~waveform.errors.GranuleError` from an input read inside the block, pass unchanged). The
    temporary name keeps the extension of ``path`` (GDAL/pyarrow pick drivers
    by extension).
    """
    final = Path(path)
    folder = final.parent if str(final.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable (writing {final.name})")
    ext = suffix if suffix is not None else "".join(final.suffixes[-1:])
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    os.unlink(tmp_name)  # writers (GDAL, pyarrow, h5py) create the file themselves
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"writer produced no file for {final}")
        os.replace(tmp, final)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, SawaError):  # OutputError, or an input error (SawaFileError is an OSError)
            raise
        raise OutputError(f"writing {final} failed: {exc.strerror or exc}") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for equal objects)."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of sawa and its main dependencies, for manifests."""
    from importlib import metadata

    names = ["sawa", "numpy", "numba", "h5py", "rasterio", "geopandas", "pyarrow", "scikit-learn", "pyproj"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(
    inputs: Mapping[str, str | os.PathLike] | None = None,
    parameters: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str | os.PathLike] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A run manifest: inputs and outputs with sha256, parameters and versions.

    The manifest holds no wall-clock time inside its checksummed parts, so two
    identical runs give identical ``inputs``/``outputs``/``parameters``.
    """
    def _files(m: Mapping[str, str | os.PathLike] | None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, p in (m or {}).items():
            p = Path(p)
            out[key] = {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        return out

    manifest = {
        "inputs": _files(inputs),
        "outputs": _files(outputs),
        "parameters": dict(parameters or {}),
        "versions": package_versions(),
        "written_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if extra:
        manifest.update(extra)
    return manifest


__all__ = [
    "atomic_path",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "sha256_file",
    "package_versions",
    "build_manifest",
]
