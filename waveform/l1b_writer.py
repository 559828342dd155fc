"""Write waveforms to HDF5 in the layout of a real GEDI L1B granule.

The layout and dtypes mirror the release-1 L1B granule
``GEDI01_B_2019108080338_O01964_T05337_02_003_01`` (reference subset, read with
h5py) and the GEDI L1B data dictionary: one ``BEAMxxxx`` group per beam (attribute
``description`` "Coverage beam" / "Full power beam"), the received waveforms
stored flat in ``rxwaveform`` (float32) and addressed by the **1-based**
``rx_sample_start_index`` (uint64) and ``rx_sample_count`` (uint16), likewise the
transmit waveforms in ``txwaveform`` / ``tx_sample_start_index`` /
``tx_sample_count``, per-shot datasets at the beam root and in ``geolocation/``,
and the ``METADATA/DatasetIdentification`` attributes that name the product.
:func:`waveform.gedi.read_l1b` reads such a file back exactly.

Files are byte-for-byte reproducible: no HDF5 object timestamps
(``track_times=False`` on every dataset and group), a fixed ``creationDate``,
fixed chunking and gzip level, and writing in a fixed order. They are written
atomically (:func:`waveform.outputs.atomic_path`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from .batch import RaggedBatch
from .constants import BEAM_NAMES, COVERAGE_BEAMS
from .errors import SawaValueError
from .outputs import atomic_path

#: Fixed creation date written by default (reproducible files).
DEFAULT_CREATION_DATE = "2000-01-01T00:00:00.000000Z"
#: gzip level and maximum chunk length (elements) used by the real granule.
GZIP_LEVEL = 4
MAX_CHUNK = 100_000
#: Fill value of float fields in GEDI products (float32 max is the other one).
FLOAT_FILL = -9999.0

#: Beam group -> (beam number as in the ``beam`` dataset, ``channel``), as in the reference L1B.
BEAM_NUMBER_CHANNEL = {
    "BEAM0000": (0, 0), "BEAM0001": (1, 0), "BEAM0010": (2, 1), "BEAM0011": (3, 1),
    "BEAM0101": (5, 2), "BEAM0110": (6, 3), "BEAM1000": (8, 4), "BEAM1011": (11, 5),
}

#: Per-shot datasets: path in the beam group -> (dtype, shots-table column, default or None=required).
#: Dtypes are those of the reference granule.
SHOT_DATASETS: dict[str, tuple[str, str, float | None]] = {
    "geolocation/latitude_bin0": ("f8", "latitude_bin0", None),
    "geolocation/longitude_bin0": ("f8", "longitude_bin0", None),
    "geolocation/latitude_lastbin": ("f8", "latitude_lastbin", np.nan),  # NaN -> copy of bin0
    "geolocation/longitude_lastbin": ("f8", "longitude_lastbin", np.nan),
    "geolocation/degrade": ("i1", "degrade", 0),
    "geolocation/digital_elevation_model": ("f4", "digital_elevation_model", FLOAT_FILL),
    "geolocation/local_beam_elevation": ("f4", "local_beam_elevation", np.pi / 2),  # rad; nadir
    "geolocation/local_beam_azimuth": ("f4", "local_beam_azimuth", 0.0),
    "noise_mean_corrected": ("f8", "noise_mean_corrected", np.nan),  # NaN -> from the waveform
    "noise_stddev_corrected": ("f8", "noise_stddev_corrected", np.nan),
    "stale_return_flag": ("u1", "stale_return_flag", 0),
    "rx_energy": ("f8", "rx_energy", np.nan),
    "tx_egsigma": ("f4", "tx_egsigma", FLOAT_FILL),
    "tx_egamplitude": ("f4", "tx_egamplitude", FLOAT_FILL),
    "tx_gloc": ("f4", "tx_gloc", FLOAT_FILL),
}
#: Samples at the top of each waveform used for the default noise mean / sd (above any return
#: in simulated waveforms).
NOISE_SAMPLES = 64


def _string_attr(obj: h5py.HLObject, name: str, value: str) -> None:
    """A 1-element variable-length UTF-8 string array attribute, like the real granules."""
    obj.attrs.create(name, np.array([value], dtype=object), dtype=h5py.string_dtype("utf-8"))


def _create_group(parent: h5py.Group, name: str) -> h5py.Group:
    """A group without modification times (reproducible bytes)."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    gid = h5py.h5g.create(parent.id, name.encode("utf-8"), gcpl=gcpl)
    return h5py.Group(gid)


def _write(group: h5py.Group, name: str, data: np.ndarray, dtype: str | np.dtype) -> None:
    data = np.ascontiguousarray(np.asarray(data).astype(dtype, copy=False))
    kwargs: dict = {"track_times": False}
    if data.size:
        kwargs.update(chunks=(min(data.shape[0], MAX_CHUNK),) + data.shape[1:], compression="gzip",
                      compression_opts=GZIP_LEVEL)
    group.create_dataset(name, data=data, **kwargs)


def _column(shots: pd.DataFrame, col: str, default, n: int, where: str) -> np.ndarray:
    if col in shots.columns:
        return shots[col].to_numpy()
    if default is None:
        raise SawaValueError(f"write_l1b: {where}: the shots table has no column {col!r} (required)")
    return np.full(n, default, dtype=np.float64)


def _check_batch_shots(batch: RaggedBatch, shots: pd.DataFrame, where: str) -> None:
    if len(shots) != batch.n_shots:
        raise SawaValueError(f"write_l1b: {where}: {batch.n_shots} waveforms but {len(shots)} rows in the shots table")
    if "shot_number" in shots.columns:
        sn = shots["shot_number"].to_numpy().astype(np.uint64)
        bad = np.flatnonzero(sn != batch.shot_number)
        if bad.size:
            k = int(bad[0])
            raise SawaValueError(
                f"write_l1b: {where}: shot table row {k} has shot_number {int(sn[k])}, the waveform batch "
                f"{int(batch.shot_number[k])}"
            )
    if batch.n_shots and int(batch.count.max()) > np.iinfo(np.uint16).max:
        k = int(np.argmax(batch.count))
        raise SawaValueError(
            f"write_l1b: {where}: shot {int(batch.shot_number[k])} has {int(batch.count[k])} samples; "
            f"L1B rx_sample_count is uint16 (<= 65535)"
        )


def _flat(batch: RaggedBatch) -> tuple[np.ndarray, np.ndarray]:
    """Samples back to back in shot order and their 1-based start indices."""
    count = batch.count.astype(np.int64)
    start1 = np.ones(batch.n_shots, dtype=np.uint64)
    if batch.n_shots:
        start1[1:] = (np.cumsum(count[:-1]) + 1).astype(np.uint64)
    compact = np.all(batch.start == (start1.astype(np.int64) - 1)) and batch.samples.shape[0] == int(count.sum())
    samples = batch.samples if compact else batch.take(np.arange(batch.n_shots)).samples
    return samples, start1


def write_l1b(
    path: str | os.PathLike,
    beams: Mapping[str, tuple[RaggedBatch, pd.DataFrame]],
    tx: Mapping[str, RaggedBatch] | None = None,
    *,
    file_name: str | None = None,
    creation_date: str = DEFAULT_CREATION_DATE,
    pge_version: str = "003",
    version_id: str = "01",
    abstract: str | None = None,
) -> Path:
    """Write beams of waveforms as a GEDI L1B granule at ``path`` (atomically); return the path.

    ``beams`` maps a beam group name (``BEAM0000`` ... ``BEAM1011``) to
    ``(batch, shots)``: the received waveforms (:class:`RaggedBatch`; elevations
    from ``elevation_bin0``/``elevation_lastbin``, shot numbers from
    ``shot_number``) and a per-shot table with at least ``latitude_bin0``,
    ``longitude_bin0`` and ``delta_time`` (s since 2018-01-01). Optional columns
    (see :data:`SHOT_DATASETS`) default to: lastbin lat/lon = bin0, ``degrade`` 0,
    ``digital_elevation_model`` -9999, ``noise_mean_corrected`` /
    ``noise_stddev_corrected`` = mean / sd of the first 64 samples,
    ``stale_return_flag`` 0, ``rx_energy`` = sum of (samples - noise mean),
    ``tx_egsigma`` / ``tx_egamplitude`` / ``tx_gloc`` -9999. ``tx`` maps beams to
    transmit waveforms (``txwaveform`` is written only for beams given there).

    ``file_name`` (default: the name of ``path``) goes to
    ``METADATA/DatasetIdentification/fileName``; ``creation_date`` is fixed by
    default so equal inputs give equal bytes.
    """
    path = Path(path)
    if not beams:
        raise SawaValueError(f"write_l1b({path}): no beams given")
    for beam in beams:
        if beam not in BEAM_NAMES:
            raise SawaValueError(f"write_l1b({path}): {beam!r} is not a GEDI beam name ({', '.join(BEAM_NAMES)})")
    for beam in tx or {}:
        if beam not in beams:
            raise SawaValueError(f"write_l1b({path}): transmit waveforms given for {beam}, which has no receive waveforms")
    name = file_name or path.name
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            _string_attr(f, "short_name", "GEDI_L1B")
            for beam in sorted(beams):
                batch, shots = beams[beam]
                _write_beam(f, beam, batch, shots, None if tx is None else tx.get(beam), f"{path.name}:{beam}")
            meta = _create_group(f, "METADATA")
            ident = _create_group(meta, "DatasetIdentification")
            attrs = {
                "PGEVersion": pge_version,
                "VersionID": version_id,
                "abstract": abstract or (
                    "The GEDI L1A and L1B standard data product contains precise latitude, longitude, and height "
                    "above the reference ellipsoid of the laser shot received bounce point for all laser shots."
                ),
                "characterSet": "utf8",
                "creationDate": creation_date,
                "credit": "Written by sawa (waveform.l1b_writer) in the GEDI L1B layout.",
                "fileName": name,
                "language": "eng",
                "originatorOrganizationName": "sawa",
                "purpose": "Geolocated waveforms in the GEDI L1B layout.",
                "shortName": "GEDI_L1B",
                "spatialRepresentationType": "along-track",
                "status": "onGoing",
                "topicCategory": "geoscientificInformation",
                "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sawa:{name}:{creation_date}")),
            }
            for key in sorted(attrs):
                _string_attr(ident, key, attrs[key])
    return path


def _write_beam(f: h5py.File, beam: str, batch: RaggedBatch, shots: pd.DataFrame, tx: RaggedBatch | None,
                where: str) -> None:
    _check_batch_shots(batch, shots, where)
    n = batch.n_shots
    g = _create_group(f, beam)
    _string_attr(g, "description", "Coverage beam" if beam in COVERAGE_BEAMS else "Full power beam")
    geo = _create_group(g, "geolocation")
    _string_attr(geo, "description", "Geolocation")

    samples, start1 = _flat(batch)
    count = batch.count.astype(np.int64)
    _write(g, "rxwaveform", samples, "f4")
    _write(g, "rx_sample_start_index", start1, "u8")
    _write(g, "rx_sample_count", count, "u2")

    shot_number = batch.shot_number.astype(np.uint64)
    delta_time = _column(shots, "delta_time", None, n, where).astype(np.float64)
    beam_no, channel = BEAM_NUMBER_CHANNEL[beam]
    _write(g, "shot_number", shot_number, "u8")
    _write(g, "beam", np.full(n, beam_no), "u2")
    _write(g, "channel", np.full(n, channel), "u1")
    _write(g, "delta_time", delta_time, "f8")
    master_int = np.floor(delta_time)
    _write(g, "master_int", master_int, "u4")
    _write(g, "master_frac", delta_time - master_int, "f8")
    _write(geo, "shot_number", shot_number, "u8")
    _write(geo, "delta_time", delta_time, "f8")
    _write(geo, "elevation_bin0", batch.elevation_bin0, "f8")
    _write(geo, "elevation_lastbin", batch.elevation_lastbin, "f8")

    # noise statistics from the top samples when not given
    head = np.zeros((n, 0))
    if n:
        k = np.minimum(count, NOISE_SAMPLES)
        idx = (start1.astype(np.int64) - 1)[:, None] + np.arange(NOISE_SAMPLES)[None, :]
        valid = np.arange(NOISE_SAMPLES)[None, :] < k[:, None]
        head = np.where(valid, samples[np.minimum(idx, max(samples.shape[0] - 1, 0))].astype(np.float64), np.nan)
    values: dict[str, np.ndarray] = {}
    for ds_name, (_dtype, col, default) in SHOT_DATASETS.items():
        values[ds_name] = _column(shots, col, default, n, where).astype(np.float64)
    for suffix in ("latitude", "longitude"):
        last, bin0 = values[f"geolocation/{suffix}_lastbin"], values[f"geolocation/{suffix}_bin0"]
        values[f"geolocation/{suffix}_lastbin"] = np.where(np.isnan(last), bin0, last)
    with np.errstate(all="ignore"):
        noise_mean = values["noise_mean_corrected"]
        if n and np.isnan(noise_mean).any():
            noise_mean = np.where(np.isnan(noise_mean), np.nanmean(head, axis=1), noise_mean)
        noise_sd = values["noise_stddev_corrected"]
        if n and np.isnan(noise_sd).any():
            noise_sd = np.where(np.isnan(noise_sd), np.nanstd(head, axis=1, ddof=1), noise_sd)
        energy = values["rx_energy"]
        if n and np.isnan(energy).any():
            sums = np.add.reduceat(samples.astype(np.float64), (start1 - 1).astype(np.int64)) if samples.size else np.zeros(n)
            sums = np.where(count > 0, sums, 0.0)
            energy = np.where(np.isnan(energy), sums - count * noise_mean, energy)
    values["noise_mean_corrected"] = noise_mean
    values["noise_stddev_corrected"] = noise_sd
    values["rx_energy"] = energy
    for ds_name, (dtype, _, _) in SHOT_DATASETS.items():
        parent, _, leaf = ds_name.rpartition("/")
        _write(geo if parent == "geolocation" else g, leaf, values[ds_name], dtype)

    if tx is not None:
        if tx.n_shots != n or not np.array_equal(tx.shot_number, shot_number):
            raise SawaValueError(f"write_l1b: {where}: transmit waveforms do not match the received shots (count or shot numbers)")
        tx_samples, tx_start1 = _flat(tx)
        _write(g, "txwaveform", tx_samples, "f4")
        _write(g, "tx_sample_start_index", tx_start1, "u8")
        _write(g, "tx_sample_count", tx.count.astype(np.int64), "u2")


def gedi_shot_numbers(orbit: int, beam: str, shot_index: np.ndarray, sub_orbit_granule: int = 1) -> np.ndarray:
    """GEDI-like shot numbers: ``orbit * 10**13 + beam_number * 10**11 + granule * 10**9 + index``.

    Real GEDI shot numbers start with the orbit number followed by the beam number
    (e.g. 19640513500108370: orbit 1964, beam 05); the remaining digits here hold
    the sub-orbit granule and a running shot index (< 10**9), so numbers are unique
    per orbit and beam.
    """
    idx = np.asarray(shot_index, dtype=np.uint64)
    if idx.size and int(idx.max()) >= 10**9:
        raise SawaValueError(f"gedi_shot_numbers: shot index {int(idx.max())} >= 10**9")
    if not (0 <= orbit < 1_000_000 and 0 <= sub_orbit_granule < 100):
        raise SawaValueError(f"gedi_shot_numbers: orbit {orbit} or granule {sub_orbit_granule} out of range")
    beam_no = BEAM_NUMBER_CHANNEL[beam][0]
    base = np.uint64(orbit) * np.uint64(10**13) + np.uint64(beam_no) * np.uint64(10**11) \
        + np.uint64(sub_orbit_granule) * np.uint64(10**9)
    return base + idx


__all__ = ["write_l1b", "gedi_shot_numbers", "BEAM_NUMBER_CHANNEL", "SHOT_DATASETS", "DEFAULT_CREATION_DATE"]
