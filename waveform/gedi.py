"""Readers for GEDI L1B, L2A, L2B and L4A granules in NASA's HDF5 layout.

Layout (GEDI L1B/L2A/L2B user guides and data dictionaries, LP DAAC; L4A user
guide, ORNL DAAC): one group per beam, ``BEAM0000`` ... ``BEAM1011`` (the first
four are coverage beams, the last four full-power beams), per-shot datasets of
equal length, and ``METADATA/DatasetIdentification`` attributes naming the
product (``shortName`` GEDI_L1B, GEDI_L2A, GEDI_L2B, GEDI_L4A), ``PGEVersion``
and ``VersionID``.

L1B waveforms are stored flat in ``rxwaveform`` and addressed with the
**1-based** ``rx_sample_start_index`` and ``rx_sample_count``; readers turn
them into 0-based :class:`~waveform.batch.RaggedBatch` offsets once.

Both release 1 (``..._02_003_01.h5``) and release 2 (``..._V002.h5``) files
are read; :attr:`Granule.version` says which. Fill values (-9999, float32 max,
the dataset's ``_FillValue``) become NaN in float columns and in waveform samples
(such shots then get the metric reason ``nonfinite_samples``); a damaged file raises
:class:`~waveform.errors.GranuleError` naming it, never a raw h5py error.

Memory is bounded: :func:`iter_l1b` reads one beam at a time, in chunks of
``chunk_shots`` shots, and reads only the slice of ``rxwaveform`` those shots
use.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .batch import RaggedBatch
from .constants import BEAM_NAMES, COVERAGE_BEAMS, FILL_VALUES
from .errors import (
    GranuleError,
    MissingBeamError,
    MissingDatasetError,
    SawaError,
    SawaFileError,
    WrongProductError,
)

#: METADATA shortName -> product code.
_SHORT_NAMES = {"GEDI_L1B": "L1B", "GEDI_L2A": "L2A", "GEDI_L2B": "L2B", "GEDI_L4A": "L4A"}
#: File-name prefix -> product code (used when METADATA is absent).
_NAME_PREFIXES = {"GEDI01_B": "L1B", "GEDI02_A": "L2A", "GEDI02_B": "L2B", "GEDI04_A": "L4A"}
_BEAM_RE = re.compile(r"^BEAM\d{4}$")
#: Relative tolerance when comparing float32-stored values with fill values.
_FILL_RTOL = 1e-6
#: Default number of shots read at once by :func:`iter_l1b` (bounded memory: at
#: ~1400 float32 samples per shot this is ~280 MB of waveforms at most).
DEFAULT_CHUNK_SHOTS = 50_000


@contextlib.contextmanager
def _damaged(path, what: str = "") -> Iterator[None]:
    """Turn h5py's errors on a damaged file (KeyError/RuntimeError/OSError from a corrupted object
    header, symbol table or heap) into a :class:`GranuleError` naming the file; sawa errors pass."""
    try:
        yield
    except SawaError:
        raise
    except (KeyError, RuntimeError, OSError) as exc:
        where = f" ({what})" if what else ""
        raise GranuleError(f"{path}: the HDF5 structure is damaged{where} (corrupted granule?): {exc}") from exc


# --------------------------------------------------------------------------- granule
class Granule:
    """An open GEDI granule (use as a context manager).

    Attributes: ``path``, ``product`` ("L1B", "L2A", "L2B", "L4A"), ``version``
    (release, "001"/"002" from PGE/VersionID and file name), ``beams`` (beam
    group names present, sorted), ``file_name`` (the full granule's name from
    METADATA, which differs from ``path`` for subsets).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise SawaFileError(f"GEDI granule {self.path} does not exist")
        if self.path.is_dir():
            raise SawaFileError(f"GEDI granule {self.path} is a folder, not an HDF5 file")
        if self.path.stat().st_size == 0:
            raise GranuleError(f"GEDI granule {self.path} is empty (0 bytes)")
        if not h5py.is_hdf5(self.path):
            raise GranuleError(f"{self.path} is not an HDF5 file (no HDF5 signature)")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise GranuleError(f"{self.path} cannot be opened as HDF5 (truncated or corrupted?): {exc}") from exc
        try:
            with _damaged(self.path, "root group or METADATA"):
                self.product, self.version, self.file_name = self._identify()
                self.beams = sorted(k for k in self.h5.keys() if _BEAM_RE.match(k))
        except Exception:
            self.h5.close()
            raise

    # -- identification
    def _identify(self) -> tuple[str, str, str]:
        attrs = {}
        try:
            if "METADATA/DatasetIdentification" in self.h5:
                attrs = {k: _attr_str(v) for k, v in self.h5["METADATA/DatasetIdentification"].attrs.items()}
        except (OSError, KeyError) as exc:
            raise GranuleError(f"{self.path}: METADATA/DatasetIdentification unreadable ({exc})") from exc
        file_name = attrs.get("fileName", self.path.name)
        product = _SHORT_NAMES.get(attrs.get("shortName", ""))
        if product is None:
            for prefix, code in _NAME_PREFIXES.items():
                if file_name.startswith(prefix) or self.path.name.startswith(prefix):
                    product = code
                    break
        if product is None:
            raise WrongProductError(
                f"{self.path} is not a GEDI L1B/L2A/L2B/L4A granule "
                f"(shortName={attrs.get('shortName', 'absent')!r}, name {self.path.name!r})"
            )
        if "_V002" in file_name or attrs.get("VersionID") == "02":
            version = "002"
        else:
            version = "001"
        return product, version, file_name

    def require(self, product: str) -> Granule:
        if self.product != product:
            raise WrongProductError(f"{self.path} is a GEDI {self.product} granule, but a {product} granule is needed")
        return self

    def beam(self, name: str) -> h5py.Group:
        with _damaged(self.path, f"beam {name}"):
            if name not in self.h5 or not _BEAM_RE.match(name):
                raise MissingBeamError(
                    f"{self.path}: beam {name!r} is not in this granule (beams present: {', '.join(self.beams) or 'none'})"
                )
            return self.h5[name]

    def has(self, beam: str, name: str) -> bool:
        """True when ``beam/name`` exists (a damaged file raises :class:`GranuleError`)."""
        group = self.beam(beam)
        with _damaged(self.path, f"{beam}/{name}"):
            return name in group

    def select_beams(self, beams: Iterable[str] | str | None) -> list[str]:
        if beams is None:
            return list(self.beams)
        if isinstance(beams, str):
            beams = [beams]
        out = []
        for b in beams:
            if b not in BEAM_NAMES:
                raise MissingBeamError(f"{self.path}: {b!r} is not a GEDI beam name (expected one of {', '.join(BEAM_NAMES)})")
            self.beam(b)
            out.append(b)
        return out

    def n_shots(self, beam: str) -> int:
        return int(self.dataset(beam, "shot_number").shape[0])

    def dataset(self, beam: str, name: str) -> h5py.Dataset:
        group = self.beam(beam)
        if not self.has(beam, name):
            raise MissingDatasetError(f"{self.path}: beam {beam} has no dataset {name!r} ({self.product} reader needs it)")
        with _damaged(self.path, f"{beam}/{name}"):
            ds = group[name]
        if not isinstance(ds, h5py.Dataset):
            raise MissingDatasetError(f"{self.path}: {beam}/{name} is a group, not a dataset")
        return ds

    def read(self, beam: str, name: str, sel=slice(None), fill_to_nan: bool = True) -> np.ndarray:
        """Read ``beam/name[sel]``; float fill values become NaN."""
        ds = self.dataset(beam, name)
        try:
            values = ds[sel]
        except OSError as exc:
            raise GranuleError(f"{self.path}: reading {beam}/{name} failed (truncated or corrupted file?): {exc}") from exc
        if fill_to_nan and values.dtype.kind == "f":
            with _damaged(self.path, f"attributes of {beam}/{name}"):
                declared = ds.attrs.get("_FillValue")
            values = _fill_to_nan(values, declared)
        return values

    def read_optional(self, beam: str, name: str, n: int, sel=slice(None), dtype=np.float64) -> np.ndarray:
        """Like :meth:`read`, but an absent dataset gives NaN (recorded by callers as missing)."""
        if self.has(beam, name):
            return self.read(beam, name, sel)
        return np.full(n, np.nan, dtype=dtype)

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> Granule:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Granule({str(self.path)!r}, product={self.product}, version={self.version}, beams={self.beams})"


def open_granule(path: str | os.PathLike, product: str | None = None) -> Granule:
    """Open a GEDI granule; with ``product`` given, check it is that product."""
    g = Granule(path)
    if product is not None:
        try:
            g.require(product)
        except Exception:
            g.close()
            raise
    return g


def _attr_str(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


def _fill_to_nan(values: np.ndarray, declared_fill=None) -> np.ndarray:
    values = np.array(values, dtype=values.dtype, copy=True)
    fills = list(FILL_VALUES)
    if declared_fill is not None:
        fills.append(float(np.ravel(declared_fill)[0]))
    mask = np.zeros(values.shape, dtype=bool)
    for fill in fills:
        mask |= np.isclose(values, fill, rtol=_FILL_RTOL, atol=0.0)
    mask |= ~np.isfinite(values)
    if mask.any():
        values[mask] = np.nan
    return values


# --------------------------------------------------------------------------- L1B
#: L1B per-shot datasets read into the shot table: column -> dataset path in the beam group.
L1B_SHOT_FIELDS = {
    "latitude_bin0": "geolocation/latitude_bin0",
    "longitude_bin0": "geolocation/longitude_bin0",
    "latitude_lastbin": "geolocation/latitude_lastbin",
    "longitude_lastbin": "geolocation/longitude_lastbin",
    "elevation_bin0": "geolocation/elevation_bin0",
    "elevation_lastbin": "geolocation/elevation_lastbin",
    "degrade": "geolocation/degrade",
    "digital_elevation_model": "geolocation/digital_elevation_model",
    "noise_mean_corrected": "noise_mean_corrected",
    "noise_stddev_corrected": "noise_stddev_corrected",
    "stale_return_flag": "stale_return_flag",
    "delta_time": "delta_time",
}
#: Optional L1B fields (absent in some versions/subsets -> NaN, listed in ``shots.attrs['missing']``).
L1B_OPTIONAL_FIELDS = {
    "tx_egsigma": "tx_egsigma",
    "tx_egamplitude": "tx_egamplitude",
    "tx_gloc": "tx_gloc",
    "rx_energy": "rx_energy",
}


@dataclass
class L1BChunk:
    """A chunk of L1B shots of one beam (or several, after :func:`read_l1b`)."""

    batch: RaggedBatch
    shots: pd.DataFrame
    tx: RaggedBatch | None = None
    path: str = ""
    beam: str = ""

    def __len__(self) -> int:
        return self.batch.n_shots


def _ragged_slice(
    g: Granule, beam: str, data_name: str, start_name: str, count_name: str, i0: int, i1: int,
    shot_number: np.ndarray, bin0: np.ndarray, lastbin: np.ndarray,
) -> RaggedBatch:
    start1 = g.read(beam, start_name, slice(i0, i1)).astype(np.int64)
    count = g.read(beam, count_name, slice(i0, i1)).astype(np.int32)
    n_samples = g.dataset(beam, data_name).shape[0]
    where = f"{g.path}: {beam}"
    if start1.size:
        bad = np.flatnonzero((start1 < 1) & (count > 0))
        if bad.size:
            k = int(bad[0])
            raise GranuleError(
                f"{where}: shot {int(shot_number[k])} has {start_name}={int(start1[k])}; GEDI indices are 1-based (>= 1)"
            )
        end = start1 + count - 1  # 1-based inclusive last sample
        bad = np.flatnonzero(end > n_samples)
        if bad.size:
            k = int(bad[0])
            raise GranuleError(
                f"{where}: shot {int(shot_number[k])} needs {data_name} samples {int(start1[k])}..{int(end[k])} "
                f"but the dataset has {n_samples} (truncated granule?)"
            )
        nonempty = count > 0
        s0 = int(start1[nonempty].min()) - 1 if nonempty.any() else 0
        s1 = int((start1 + count)[nonempty].max()) - 1 if nonempty.any() else 0
    else:
        s0 = s1 = 0
    samples = g.read(beam, data_name, slice(s0, s1), fill_to_nan=False).astype(np.float32, copy=False)
    samples = _sample_fills_to_nan(g, beam, data_name, samples)
    start0 = np.where(count > 0, start1 - 1 - s0, 0).astype(np.int64)
    return RaggedBatch(
        samples=np.ascontiguousarray(samples),
        start=start0,
        count=count,
        elevation_bin0=bin0,
        elevation_lastbin=lastbin,
        shot_number=shot_number,
        source=f"{g.path.name}:{beam}",
    )


def _sample_fills_to_nan(g: Granule, beam: str, data_name: str, samples: np.ndarray) -> np.ndarray:
    """Waveform samples equal to a GEDI fill value (or the dataset's ``_FillValue``) become NaN.

    The metric kernels then give such shots the reason ``nonfinite_samples`` instead of
    reading -9999 or 3.4e38 counts as signal. Exact float32 comparisons: one pass per fill value.
    """
    with _damaged(g.path, f"attributes of {beam}/{data_name}"):
        declared = g.dataset(beam, data_name).attrs.get("_FillValue")
    fills = {np.float32(f) for f in FILL_VALUES}
    if declared is not None:
        fills.add(np.float32(np.ravel(declared)[0]))
    mask = np.zeros(samples.shape, dtype=bool)
    for fill in sorted(fills):
        mask |= samples == fill
    if mask.any():
        samples = np.array(samples, dtype=np.float32, copy=True)
        samples[mask] = np.nan
    return samples


def _beam_power(g: Granule, beam: str) -> str:
    group = g.beam(beam)
    with _damaged(g.path, f"attributes of {beam}"):
        desc = _attr_str(group.attrs.get("description", "")).lower()
    if "coverage" in desc:
        return "coverage"
    if "full" in desc:
        return "full"
    return "coverage" if beam in COVERAGE_BEAMS else "full"


def iter_l1b(
    path: str | os.PathLike,
    beams: Iterable[str] | str | None = None,
    chunk_shots: int = DEFAULT_CHUNK_SHOTS,
    with_tx: bool = False,
) -> Iterator[L1BChunk]:
    """Stream an L1B granule beam by beam in chunks of at most ``chunk_shots`` shots.

    Each chunk carries a :class:`RaggedBatch` of received waveforms (0-based
    offsets into a compact sample array), the per-shot table (see
    :data:`L1B_SHOT_FIELDS`) and optionally the transmit waveforms. A beam with
    zero shots yields one empty chunk (zero shots is valid, not an error).
    """
    if chunk_shots < 1:
        raise ValueError(f"chunk_shots must be >= 1, got {chunk_shots}")
    with open_granule(path, "L1B") as g, _damaged(g.path):
        for beam in g.select_beams(beams):
            n = g.n_shots(beam)
            power = _beam_power(g, beam)
            bounds = list(range(0, n, chunk_shots)) or [0]
            for i0 in bounds:
                i1 = min(i0 + chunk_shots, n)
                yield _read_l1b_chunk(g, beam, power, i0, i1, with_tx)


def _read_l1b_chunk(g: Granule, beam: str, power: str, i0: int, i1: int, with_tx: bool) -> L1BChunk:
    sel = slice(i0, i1)
    shot_number = g.read(beam, "shot_number", sel).astype(np.uint64)
    columns: dict[str, np.ndarray] = {"shot_number": shot_number}
    for col, name in L1B_SHOT_FIELDS.items():
        columns[col] = g.read(beam, name, sel)
    missing = []
    for col, name in L1B_OPTIONAL_FIELDS.items():
        if g.has(beam, name):
            columns[col] = g.read(beam, name, sel)
        else:
            columns[col] = np.full(i1 - i0, np.nan)
            missing.append(name)
    bin0 = np.asarray(columns["elevation_bin0"], dtype=np.float64)
    lastbin = np.asarray(columns["elevation_lastbin"], dtype=np.float64)
    batch = _ragged_slice(g, beam, "rxwaveform", "rx_sample_start_index", "rx_sample_count", i0, i1,
                          shot_number, bin0, lastbin)
    tx = None
    if with_tx:
        # The transmit pulse has no elevations; bin0/lastbin carry its sample index range.
        tx_count = g.read(beam, "tx_sample_count", sel).astype(np.float64)
        tx = _ragged_slice(g, beam, "txwaveform", "tx_sample_start_index", "tx_sample_count", i0, i1,
                           shot_number, np.zeros(i1 - i0), np.maximum(tx_count - 1.0, 0.0))
    shots = pd.DataFrame(columns)
    shots.insert(1, "beam", beam)
    shots.insert(2, "power", power)
    shots["rx_sample_count"] = batch.count
    shots.attrs["missing"] = missing
    shots.attrs["source"] = str(g.path)
    shots.attrs["version"] = g.version
    return L1BChunk(batch=batch, shots=shots, tx=tx, path=str(g.path), beam=beam)


def read_l1b(
    path: str | os.PathLike, beams: Iterable[str] | str | None = None, with_tx: bool = False
) -> L1BChunk:
    """Read the chosen beams (all by default) of an L1B granule as one chunk.

    For small granules and subsets; use :func:`iter_l1b` for full granules.
    """
    chunks = list(iter_l1b(path, beams=beams, chunk_shots=DEFAULT_CHUNK_SHOTS, with_tx=with_tx))
    return concat_chunks(chunks)


def concat_chunks(chunks: list[L1BChunk]) -> L1BChunk:
    """Concatenate L1B chunks (shots in the given order) into one."""
    if not chunks:
        raise ValueError("concat_chunks needs at least one chunk")
    batch = _concat_batches([c.batch for c in chunks])
    tx = _concat_batches([c.tx for c in chunks]) if all(c.tx is not None for c in chunks) else None
    shots = pd.concat([c.shots for c in chunks], ignore_index=True)
    shots.attrs = dict(chunks[0].shots.attrs)
    return L1BChunk(batch=batch, shots=shots, tx=tx, path=chunks[0].path, beam=",".join(dict.fromkeys(c.beam for c in chunks)))


def _concat_batches(batches: list[RaggedBatch]) -> RaggedBatch:
    offsets = np.cumsum([0] + [b.samples.shape[0] for b in batches[:-1]])
    return RaggedBatch(
        samples=np.concatenate([b.samples for b in batches]).astype(np.float32, copy=False),
        start=np.concatenate([b.start + off for b, off in zip(batches, offsets, strict=True)]).astype(np.int64),
        count=np.concatenate([b.count for b in batches]).astype(np.int32),
        elevation_bin0=np.concatenate([b.elevation_bin0 for b in batches]),
        elevation_lastbin=np.concatenate([b.elevation_lastbin for b in batches]),
        shot_number=np.concatenate([b.shot_number for b in batches]).astype(np.uint64),
        source=batches[0].source.split(":")[0],
    )


# --------------------------------------------------------------------------- L2A
#: L2A per-shot fields: column -> dataset path (required).
L2A_FIELDS = {
    "elev_lowestmode": "elev_lowestmode",
    "lat_lowestmode": "lat_lowestmode",
    "lon_lowestmode": "lon_lowestmode",
    "elev_highestreturn": "elev_highestreturn",
    "quality_flag": "quality_flag",
    "sensitivity": "sensitivity",
    "selected_algorithm": "selected_algorithm",
    "degrade_flag": "degrade_flag",
    "num_detectedmodes": "num_detectedmodes",
}
#: Optional L2A fields (NaN when absent; listed in ``attrs['missing']``).
L2A_OPTIONAL_FIELDS = {
    "digital_elevation_model": "digital_elevation_model",
    "solar_elevation": "solar_elevation",
    "landsat_treecover": "land_cover_data/landsat_treecover",
    "surface_flag": "surface_flag",
    "delta_time": "delta_time",
}
RH_COLUMNS = [f"rh{i}" for i in range(101)]


def read_l2a(path: str | os.PathLike, beams: Iterable[str] | str | None = None) -> pd.DataFrame:
    """Per-shot L2A table: ``shot_number``, ``beam``, ``rh0``..``rh100`` (m) and :data:`L2A_FIELDS`."""
    frames = []
    with open_granule(path, "L2A") as g, _damaged(g.path):
        for beam in g.select_beams(beams):
            n = g.n_shots(beam)
            cols: dict[str, np.ndarray] = {"shot_number": g.read(beam, "shot_number").astype(np.uint64)}
            for col, name in L2A_FIELDS.items():
                cols[col] = g.read(beam, name)
            missing = []
            for col, name in L2A_OPTIONAL_FIELDS.items():
                if g.has(beam, name):
                    cols[col] = g.read(beam, name)
                else:
                    cols[col] = np.full(n, np.nan)
                    missing.append(name)
            rh = g.read(beam, "rh")
            if rh.ndim != 2 or rh.shape != (n, 101):
                raise GranuleError(f"{g.path}: {beam}/rh has shape {rh.shape}, expected ({n}, 101)")
            df = pd.DataFrame(cols)
            df.insert(1, "beam", beam)
            df = pd.concat([df, pd.DataFrame(rh.astype(np.float64), columns=RH_COLUMNS)], axis=1)
            df.attrs["missing"] = missing
            frames.append(df)
        version = g.version
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["shot_number", "beam"])
    out.attrs = {"source": str(path), "version": version, "missing": sorted({m for f in frames for m in f.attrs["missing"]})}
    return out


def read_l2a_settings(path: str | os.PathLike, beam: str) -> dict[int, dict[str, float]]:
    """Values of each L2A algorithm setting group: ``{N: {name: value}}`` from ``rx_processing_aN/ancillary``."""
    out: dict[int, dict[str, float]] = {}
    with open_granule(path, "L2A") as g, _damaged(g.path):
        group = g.beam(beam)
        for key in group:
            m = re.fullmatch(r"rx_processing_a(\d+)", key)
            if not m or "ancillary" not in group[key]:
                continue
            anc = group[key]["ancillary"]
            out[int(m.group(1))] = {name: float(np.ravel(anc[name][()])[0]) for name in anc}
    if not out:
        raise MissingDatasetError(f"{path}: beam {beam} has no rx_processing_aN/ancillary setting groups")
    return dict(sorted(out.items()))


def read_l2a_processing(path: str | os.PathLike, beam: str, algorithm: int) -> pd.DataFrame:
    """Per-shot intermediate results of L2A algorithm ``algorithm`` (1-D datasets of ``rx_processing_aN``).

    2-D datasets (``rx_modelocs``, ``rx_cumulative``, ...) are returned as
    arrays in ``df.attrs['arrays']``.
    """
    with open_granule(path, "L2A") as g, _damaged(g.path):
        name = f"rx_processing_a{int(algorithm)}"
        group = g.beam(beam)
        if name not in group:
            raise MissingDatasetError(f"{g.path}: beam {beam} has no group {name}")
        cols, arrays = {}, {}
        for key, ds in group[name].items():
            if not isinstance(ds, h5py.Dataset):
                continue
            values = g.read(beam, f"{name}/{key}")
            if values.ndim == 1:
                cols[key] = values
            else:
                arrays[key] = values
    df = pd.DataFrame(cols)
    df.attrs["arrays"] = arrays
    return df


# --------------------------------------------------------------------------- L2B
L2B_FIELDS = {
    "cover": "cover",
    "pai": "pai",
    "fhd_normal": "fhd_normal",
    "rh100": "rh100",
    "rg": "rg",
    "rv": "rv",
    "omega": "omega",
    "l2a_quality_flag": "l2a_quality_flag",
    "l2b_quality_flag": "l2b_quality_flag",
    "selected_l2a_algorithm": "selected_l2a_algorithm",
}


def read_l2b(path: str | os.PathLike, beams: Iterable[str] | str | None = None) -> pd.DataFrame:
    """Per-shot L2B table (cover, PAI, rg/rv energies, flags); ``rh100`` converted from cm to m."""
    frames = []
    with open_granule(path, "L2B") as g, _damaged(g.path):
        for beam in g.select_beams(beams):
            n = g.n_shots(beam)
            cols: dict[str, np.ndarray] = {"shot_number": g.read(beam, "shot_number").astype(np.uint64)}
            for col, name in L2B_FIELDS.items():
                cols[col] = g.read_optional(beam, name, n)
            cols["rh100"] = np.where(np.isfinite(cols["rh100"].astype(float)), cols["rh100"].astype(float) / 100.0, np.nan)
            df = pd.DataFrame(cols)
            df.insert(1, "beam", beam)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["shot_number", "beam"])


# --------------------------------------------------------------------------- L4A
L4A_FIELDS = {
    "agbd": "agbd",
    "agbd_se": "agbd_se",
    "agbd_t": "agbd_t",
    "agbd_t_se": "agbd_t_se",
    "agbd_pi_lower": "agbd_pi_lower",
    "agbd_pi_upper": "agbd_pi_upper",
    "l4_quality_flag": "l4_quality_flag",
    "l2_quality_flag": "l2_quality_flag",
    "selected_algorithm": "selected_algorithm",
    "lat_lowestmode": "lat_lowestmode",
    "lon_lowestmode": "lon_lowestmode",
    "elev_lowestmode": "elev_lowestmode",
    "sensitivity": "sensitivity",
    "degrade_flag": "degrade_flag",
}
L4A_OPTIONAL_FIELDS = {
    "pft_class": "land_cover_data/pft_class",
    "region_class": "land_cover_data/region_class",
    "landsat_treecover": "land_cover_data/landsat_treecover",
    "predictor_limit_flag": "predictor_limit_flag",
    "response_limit_flag": "response_limit_flag",
    "delta_time": "delta_time",
}


def read_l4a(path: str | os.PathLike, beams: Iterable[str] | str | None = None) -> pd.DataFrame:
    """Per-shot L4A table: AGBD (Mg/ha), SE, flags, stratum, PFT/region classes and predictors ``xvar0..3``.

    ``agbd`` = -9999 (no prediction) becomes NaN.
    """
    frames = []
    with open_granule(path, "L4A") as g, _damaged(g.path):
        for beam in g.select_beams(beams):
            n = g.n_shots(beam)
            cols: dict[str, np.ndarray] = {"shot_number": g.read(beam, "shot_number").astype(np.uint64)}
            for col, name in L4A_FIELDS.items():
                cols[col] = g.read(beam, name)
            missing = []
            for col, name in L4A_OPTIONAL_FIELDS.items():
                if g.has(beam, name):
                    cols[col] = g.read(beam, name)
                else:
                    cols[col] = np.full(n, np.nan)
                    missing.append(name)
            stratum = g.read(beam, "predict_stratum")
            cols["predict_stratum"] = np.array([_attr_str(s) for s in stratum], dtype=object)
            df = pd.DataFrame(cols)
            df.insert(1, "beam", beam)
            if g.has(beam, "xvar"):
                xvar = g.read(beam, "xvar")
                xvar = xvar.reshape(n, -1)
                for j in range(xvar.shape[1]):
                    df[f"xvar{j}"] = xvar[:, j].astype(np.float64)
            else:
                missing.append("xvar")
            df.attrs["missing"] = missing
            frames.append(df)
        version = g.version
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["shot_number", "beam"])
    out.attrs = {"source": str(path), "version": version, "missing": sorted({m for f in frames for m in f.attrs["missing"]})}
    return out


# --------------------------------------------------------------------------- joins
def join_products(left: pd.DataFrame, right: pd.DataFrame, suffixes: tuple[str, str] = ("", "_r"),
                  how: str = "inner") -> pd.DataFrame:
    """Join two per-shot tables on ``shot_number`` (uint64, exact).

    Duplicate shot numbers in either table are an error. The result's
    ``attrs['unmatched']`` counts shots of each side without a partner.
    """
    for side, df in (("left", left), ("right", right)):
        if "shot_number" not in df:
            raise KeyError(f"{side} table has no 'shot_number' column")
        dup = df["shot_number"].duplicated()
        if dup.any():
            raise ValueError(f"{side} table has duplicate shot_number {int(df['shot_number'][dup].iloc[0])}")
    lk = left["shot_number"].astype(np.uint64)
    rk = right["shot_number"].astype(np.uint64)
    merged = left.assign(shot_number=lk).merge(right.assign(shot_number=rk), on="shot_number", how=how,
                                                suffixes=suffixes, validate="one_to_one")
    merged.attrs["unmatched"] = {
        "left": int((~lk.isin(rk)).sum()),
        "right": int((~rk.isin(lk)).sum()),
    }
    return merged


__all__ = [
    "Granule",
    "open_granule",
    "L1BChunk",
    "iter_l1b",
    "read_l1b",
    "concat_chunks",
    "read_l2a",
    "read_l2a_settings",
    "read_l2a_processing",
    "read_l2b",
    "read_l4a",
    "join_products",
    "RH_COLUMNS",
    "DEFAULT_CHUNK_SHOTS",
]
