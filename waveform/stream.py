"""Stream L1B granules beam by beam, in shot chunks, through the metric kernels.

:func:`stream_metrics` yields one GeoDataFrame per chunk with the shot-table
columns of :mod:`waveform.shot_table`; :func:`write_metrics` writes them to
one GeoParquet file row group by row group, so memory stays bounded by the
chunk size whatever the granule size.

With ``l2a_paths`` the official L2A values are joined by shot number and
added side by side (``l2a_*`` columns); ``algorithm="l2a"`` then processes
each shot with the setting group L2A selected for it (``selected_algorithm``;
shots without an L2A match or with selection 0 use a1, see ``l2a_matched``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .algorithms import L2A_ALGORITHMS, AlgorithmSettings, get_algorithm, settings_from_l2a
from .errors import MissingDatasetError, SawaValueError
from .gedi import L1BChunk, iter_l1b, open_granule
from .metrics import REASON_NAMES, WaveformMetrics, compute_metrics
from .shot_table import RH_COLUMNS, ShotTableWriter

#: Shots per chunk when streaming (~25k x 1400 samples x 4 B = 140 MB of waveforms at most).
DEFAULT_STREAM_CHUNK_SHOTS = 25_000

#: RH percentiles copied from L2A when ``l2a_paths`` is given.
L2A_RH_SIDE = (0, 10, 25, 50, 75, 90, 95, 98, 100)
#: Columns added with ``l2a_paths``.
L2A_SIDE_COLUMNS = (
    "l2a_matched", "l2a_ground_elevation", "l2a_canopy_top_elevation", "l2a_quality_flag",
    "l2a_selected_algorithm", "l2a_sensitivity", *[f"l2a_rh{k}" for k in L2A_RH_SIDE],
)

OnChunk = Callable[[L1BChunk, Any], Any]
log = logging.getLogger(__name__)


def _as_paths(paths: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


class _L2AIndex:
    """Per-beam L2A values from one or more L2A granules, loaded one beam at a time."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self._beam: str | None = None
        self._table: pd.DataFrame | None = None
        for p in self.paths:
            with open_granule(p, "L2A"):
                pass

    def _load(self, beam: str) -> pd.DataFrame:
        frames = []
        rh_idx = list(L2A_RH_SIDE)
        for p in self.paths:
            with open_granule(p, "L2A") as g:
                if beam not in g.beams:
                    continue
                rh = np.asarray(g.dataset(beam, "rh")[:, rh_idx], dtype=np.float64)
                rh[~np.isfinite(rh) | (rh <= -9999.0) | (np.abs(rh) > 1e30)] = np.nan  # fill values
                cols = {
                    "shot_number": g.read(beam, "shot_number").astype(np.uint64),
                    "l2a_ground_elevation": g.read(beam, "elev_lowestmode").astype(np.float64),
                    "l2a_canopy_top_elevation": g.read(beam, "elev_highestreturn").astype(np.float64),
                    "l2a_quality_flag": g.read(beam, "quality_flag").astype(np.int16),
                    "l2a_selected_algorithm": g.read(beam, "selected_algorithm").astype(np.int16),
                    "l2a_sensitivity": g.read(beam, "sensitivity").astype(np.float64),
                }
                for j, k in enumerate(L2A_RH_SIDE):
                    cols[f"l2a_rh{k}"] = rh[:, j].astype(np.float64)
                frames.append(pd.DataFrame(cols))
        if not frames:
            return pd.DataFrame({"shot_number": np.zeros(0, np.uint64)})
        table = pd.concat(frames, ignore_index=True).drop_duplicates("shot_number")
        return table.set_index("shot_number")

    def lookup(self, beam: str, shot_number: np.ndarray) -> pd.DataFrame:
        if beam != self._beam:
            self._table = self._load(beam)
            self._beam = beam
        table = self._table
        out = table.reindex(pd.Index(shot_number.astype(np.uint64), name="shot_number"))
        matched = np.isin(shot_number.astype(np.uint64), table.index.to_numpy(np.uint64))
        out = out.reset_index(drop=True)
        out.insert(0, "l2a_matched", matched)
        for col in L2A_SIDE_COLUMNS:
            if col not in out:
                out[col] = np.nan
        return out[list(L2A_SIDE_COLUMNS)]


def _interp(a0: np.ndarray, a1: np.ndarray, frac: np.ndarray) -> np.ndarray:
    return a0 + (a1 - a0) * frac


def chunk_frame(chunk: L1BChunk, m: WaveformMetrics, granule: str):
    """Shot-table GeoDataFrame of one L1B chunk and its metrics."""
    import geopandas as gpd

    shots = chunk.shots
    count = chunk.batch.count.astype(np.float64)
    denom = np.maximum(count - 1.0, 1.0)
    # position of the ground sample; without a ground, the middle of the waveform
    frac = np.where(np.isfinite(m.ground_index), m.ground_index / denom, 0.5)
    lat = _interp(shots["latitude_bin0"].to_numpy(np.float64), shots["latitude_lastbin"].to_numpy(np.float64), frac)
    lon = _interp(shots["longitude_bin0"].to_numpy(np.float64), shots["longitude_lastbin"].to_numpy(np.float64), frac)
    degrade = np.nan_to_num(shots["degrade"].to_numpy(np.float64), nan=0).astype(np.uint8)
    stale = np.nan_to_num(shots["stale_return_flag"].to_numpy(np.float64), nan=0).astype(np.uint8)
    names = np.array([REASON_NAMES.get(c, f"code_{c}") for c in range(256)], dtype=object)[m.reason]
    ok = m.reason == 0
    names = np.where(ok & (stale != 0), "stale_return", names)
    names = np.where(ok & (degrade != 0), "degraded", names)
    cols: dict[str, Any] = {
        "shot_number": m.shot_number,
        "beam": shots["beam"].to_numpy(dtype=object),
        "granule": np.full(len(m), granule, dtype=object),
        "latitude": lat,
        "longitude": lon,
        "ground_elevation": m.ground_elevation_m,
        "canopy_top_elevation": m.canopy_top_elevation_m,
    }
    rh = m.rh.astype(np.float32)
    for k, c in enumerate(RH_COLUMNS):
        cols[c] = rh[:, k]
    cols.update({
        "waveform_extent": m.waveform_extent_m.astype(np.float32),
        "lee": m.lee_m.astype(np.float32),
        "tee": m.tee_m.astype(np.float32),
        "cover": m.cover.astype(np.float32),
        "energy_total": m.energy_total.astype(np.float32),
        "n_modes": m.n_modes.astype(np.int16),
        "algorithm": m.algorithm,
        "quality": ok & (degrade == 0) & (stale == 0),
        "reason": names,
        "elevation_bin0": chunk.batch.elevation_bin0,
        "elevation_lastbin": chunk.batch.elevation_lastbin,
        "ground_index": m.ground_index.astype(np.float32),
        "noise_mean": m.noise_mean.astype(np.float32),
        "noise_stddev_corrected": shots["noise_stddev_corrected"].to_numpy(np.float32),
        "degrade": degrade,
        "stale_return_flag": stale,
        "digital_elevation_model": shots["digital_elevation_model"].to_numpy(np.float32),
        "tx_egsigma": shots["tx_egsigma"].to_numpy(np.float32),
        "delta_time": shots["delta_time"].to_numpy(np.float64),
    })
    frame = pd.DataFrame(cols)
    geometry = gpd.points_from_xy(lon, lat, crs="EPSG:4326")
    return gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")


def granule_settings(path: str | os.PathLike) -> dict[int, AlgorithmSettings] | None:
    """The setting groups stored in an L2A granule, or None (built-in constants) if it has none."""
    try:
        return settings_from_l2a(Path(path))
    except (MissingDatasetError, SawaValueError) as exc:
        log.warning("%s: no usable rx_processing_aN/ancillary settings (%s); using the built-in a1-a6", path, exc)
        return None


def _resolve_algorithm(algorithm, l2a: _L2AIndex | None):
    if isinstance(algorithm, str) and algorithm.strip().lower() in ("l2a", "selected"):
        if l2a is None:
            raise SawaValueError("algorithm 'l2a' (L2A's selected group per shot) needs l2a_paths (--l2a on the command line)")
        return "l2a"
    return get_algorithm(algorithm) if not isinstance(algorithm, AlgorithmSettings) else algorithm


class _Prefetch:
    """Iterate ``iterator`` in a background thread, ``depth`` items ahead (bounded memory).

    HDF5 reading and decompression of the next chunk overlap with the kernels
    (which release the GIL) and the Parquet writer. Exceptions are re-raised in
    the consumer; closing the consumer stops the thread.
    """

    _DONE = object()

    def __init__(self, iterator, depth: int = 1):
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(iterator,), daemon=True, name="sawa-l1b-reader")
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put((True, item)):
                    return
            self._put((True, self._DONE))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((False, exc))

    def __iter__(self):
        try:
            while True:
                ok, item = self._queue.get()
                if not ok:
                    raise item
                if item is self._DONE:
                    return
                yield item
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def _chunks(paths: Sequence[Path], beams, chunk_shots: int, with_tx: bool = False) -> Iterator[tuple[Path, L1BChunk]]:
    for path in paths:
        for chunk in iter_l1b(path, beams=beams, chunk_shots=chunk_shots, with_tx=with_tx):
            yield path, chunk


def count_shots(paths: Iterable[str | os.PathLike], beams=None) -> int:
    """Total number of shots in the chosen beams of L1B granules (for progress bars)."""
    total = 0
    for p in _as_paths(paths):
        with open_granule(p, "L1B") as g:
            total += sum(g.n_shots(b) for b in g.select_beams(beams))
    return total


def stream_metrics(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    algorithm: str | int | AlgorithmSettings = "a1",
    chunk_shots: int = DEFAULT_STREAM_CHUNK_SHOTS,
    progress: bool = False,
    l2a_paths: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    on_chunk: OnChunk | None = None,
    beams: Iterable[str] | str | None = None,
    prefetch: bool = True,
    with_tx: bool = False,
) -> Iterator:
    """Yield one shot-table GeoDataFrame per chunk of ``chunk_shots`` shots of each beam.

    ``algorithm``: a setting group for all shots ("a1".."a6"/1..6/settings) or
    "l2a" for L2A's per-shot selection (needs ``l2a_paths``). ``on_chunk``
    (callable ``(L1BChunk, GeoDataFrame) -> GeoDataFrame``) may add columns.
    ``prefetch`` reads the next chunk in a background thread while this one is
    processed (at most one chunk ahead). ``with_tx`` also reads the transmit
    waveforms (``L1BChunk.tx``, for ``on_chunk`` hooks that model the pulse).
    """
    import geopandas as gpd
    from tqdm.auto import tqdm

    l1b = _as_paths(paths)
    if not l1b:
        raise SawaValueError("stream_metrics needs at least one L1B granule path")
    if int(chunk_shots) < 1:
        raise SawaValueError(f"chunk_shots must be >= 1, got {chunk_shots}")
    l2a_list = _as_paths(l2a_paths)
    l2a = _L2AIndex(l2a_list) if l2a_list else None
    alg = _resolve_algorithm(algorithm, l2a)
    table = granule_settings(l2a_list[0]) if l2a_list else None
    total = count_shots(l1b, beams) if progress else None
    with tqdm(total=total, unit="shot", disable=not progress, desc="sawa metrics", smoothing=0.1) as bar:
        source = _chunks(l1b, beams, int(chunk_shots), bool(with_tx))
        if prefetch:
            source = _Prefetch(source, depth=1)
        for path, chunk in source:
            n = len(chunk)
            side = l2a.lookup(chunk.beam, chunk.batch.shot_number) if l2a is not None else None
            if alg == "l2a":
                sel = side["l2a_selected_algorithm"].to_numpy(np.float64)
                known = list(table) if table else [g.number for g in L2A_ALGORITHMS.values()]
                valid = np.isfinite(sel) & np.isin(sel, known)
                shot_alg: Any = np.where(valid, sel, 1).astype(np.int64)
            else:
                shot_alg = alg
            m = compute_metrics(
                chunk.batch, shot_alg,
                chunk.shots["noise_mean_corrected"].to_numpy(np.float64),
                chunk.shots["noise_stddev_corrected"].to_numpy(np.float64),
                settings=table,
            )
            frame = chunk_frame(chunk, m, path.name)
            if side is not None:
                for col in side.columns:
                    frame[col] = side[col].to_numpy()
            if on_chunk is not None:
                frame = on_chunk(chunk, frame)
                if not isinstance(frame, gpd.GeoDataFrame):
                    raise SawaValueError(f"on_chunk must return a GeoDataFrame, got {type(frame).__name__}")
            bar.update(n)
            yield frame


def write_metrics(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    output: str | os.PathLike,
    algorithm: str | int | AlgorithmSettings = "a1",
    chunk_shots: int = DEFAULT_STREAM_CHUNK_SHOTS,
    progress: bool = False,
    l2a_paths: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    on_chunk: OnChunk | None = None,
    beams: Iterable[str] | str | None = None,
    with_tx: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Stream granules into one GeoParquet shot table at ``output`` (atomic).

    ``on_chunk``/``beams``/``with_tx``: as :func:`stream_metrics`;
    ``metadata``: extra entries for the file's ``sawa_shot_table`` metadata
    (e.g. what an ``on_chunk`` hook used). Returns a summary: output path,
    shots written, shots with quality, counts per reason, seconds, shots per second.
    """
    t0 = time.perf_counter()
    l1b = _as_paths(paths)
    algo_name = algorithm if isinstance(algorithm, str) else getattr(algorithm, "name", str(algorithm))
    file_metadata = {
        "inputs": [str(p) for p in l1b],
        "l2a_inputs": [str(p) for p in _as_paths(l2a_paths)],
        "algorithm": str(algo_name),
        "chunk_shots": int(chunk_shots),
        **dict(metadata or {}),
    }
    # check the inputs before the writer opens: inside it, an input OSError would read as an output error
    if not l1b:
        raise SawaValueError("write_metrics needs at least one L1B granule path")
    for p in l1b:
        with open_granule(p, "L1B") as g:
            g.select_beams(beams)
    for p in _as_paths(l2a_paths):
        with open_granule(p, "L2A"):
            pass
    _resolve_algorithm(algorithm, _as_paths(l2a_paths) or None)
    reasons: dict[str, int] = {}
    n_quality = 0
    with ShotTableWriter(output, metadata=file_metadata) as writer:
        for frame in stream_metrics(l1b, algorithm=algorithm, chunk_shots=chunk_shots, progress=progress,
                                    l2a_paths=l2a_paths, on_chunk=on_chunk, beams=beams, with_tx=with_tx):
            writer.write(frame)
            n_quality += int(frame["quality"].sum())
            for name, c in frame["reason"].value_counts().items():
                reasons[str(name)] = reasons.get(str(name), 0) + int(c)
        n_rows = writer.n_rows
    seconds = time.perf_counter() - t0
    return {
        "output": str(output),
        "n_shots": n_rows,
        "n_quality": n_quality,
        "reasons": dict(sorted(reasons.items())),
        "seconds": seconds,
        "shots_per_second": n_rows / seconds if seconds > 0 else float("nan"),
    }


#: (sawa column, L2A column) pairs compared by :func:`l2a_agreement`.
AGREEMENT_METRICS = {
    "ground": ("ground_elevation", "l2a_ground_elevation"),
    "rh50": ("rh50", "l2a_rh50"),
    "rh98": ("rh98", "l2a_rh98"),
}


def agreement_table(frame: pd.DataFrame, quality_only: bool = True) -> pd.DataFrame:
    """Median and MAD of (sawa - L2A) per beam and overall, from a frame with ``l2a_*`` columns.

    MAD is the unscaled median absolute deviation from the median (m).
    ``quality_only`` keeps shots with L2A ``quality_flag == 1``.
    """
    df = frame[frame["l2a_matched"].astype(bool)]
    if quality_only:
        df = df[df["l2a_quality_flag"] == 1]
    rows = []
    groups = [(b, g) for b, g in df.groupby("beam", sort=True)] + [("all", df)]
    for beam, g in groups:
        row: dict[str, Any] = {"beam": beam, "n": len(g)}
        for name, (ours, theirs) in AGREEMENT_METRICS.items():
            d = (g[ours].astype(np.float64) - g[theirs].astype(np.float64)).to_numpy()
            d = d[np.isfinite(d)]
            med = float(np.median(d)) if d.size else float("nan")
            row[f"{name}_median_m"] = med
            row[f"{name}_mad_m"] = float(np.median(np.abs(d - med))) if d.size else float("nan")
            row[f"{name}_max_abs_m"] = float(np.max(np.abs(d))) if d.size else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def l2a_agreement(
    l1b_paths: str | os.PathLike | Iterable[str | os.PathLike],
    l2a_paths: str | os.PathLike | Iterable[str | os.PathLike],
    beams: Iterable[str] | str | None = None,
    quality_only: bool = True,
) -> pd.DataFrame:
    """sawa vs NASA L2A on real shots, each with the setting group L2A selected.

    Returns :func:`agreement_table` (per beam and ``all``) of ground elevation,
    RH50 and RH98 differences (sawa - L2A, m) on shots with L2A
    ``quality_flag == 1``.
    """
    frames = [f.drop(columns="geometry") for f in
              stream_metrics(l1b_paths, algorithm="l2a", l2a_paths=l2a_paths, beams=beams)]
    frame = pd.concat(frames, ignore_index=True)
    return agreement_table(frame, quality_only=quality_only)


__all__ = [
    "stream_metrics",
    "write_metrics",
    "chunk_frame",
    "count_shots",
    "DEFAULT_STREAM_CHUNK_SHOTS",
    "L2A_SIDE_COLUMNS",
    "L2A_RH_SIDE",
    "l2a_agreement",
    "agreement_table",
    "AGREEMENT_METRICS",
]
