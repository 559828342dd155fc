"""Biomass study on the sample world: AGB accuracy by slope with raw, SAWA and deconvolved metrics.

``sawa study biomass`` answers: on the embedded sample world (where every
shot's true AGB is known), how accurate is AGB estimated from uncorrected
waveform metrics, from SAWA metrics [Wang2019] and from sawa's
terrain-deconvolved metrics, overall and by terrain slope, under spatial block
cross-validation?

Pipeline (:func:`sample_world_shots`): every shot of the world's simulated L1B
granules is read with its transmit waveform (:func:`waveform.gedi.iter_l1b`,
``with_tx=True``), processed as :func:`waveform.stream.stream_metrics` does
(:func:`waveform.metrics.compute_metrics` with the granule's corrected noise,
:func:`waveform.stream.chunk_frame`), and annotated with the world's DEM by
:func:`terrain.sawa.annotate_terrain` (DEM ``slope_deg``/``relief_m`` over the
footprint, ``rhNN_sawa`` with the measured pulse shape, ``rhNN_deconv``). The
per-shot truth (``truth.parquet``, keyed by the unique GEDI ``shot_number``) is
joined one-to-one: every granule shot must have a truth row with the same
granule and beam and, for the whole world, every truth row a shot; otherwise an
error names the shot. Truth columns are ``agb_mg_ha`` (the reference AGBD) and
``true_*``.

(``stream_metrics`` itself is not used: the study selects shot subsets and
gathers the beams of a granule into large batches, because the deconvolution
kernel batches shots and per-beam chunks of a subset cost several times more.)

:func:`run_biomass_study` then runs :func:`biomass.study.run_study` (the table
logic; see there for metric sets, covariates and CV) and writes the outputs of
:data:`biomass.study.OUTPUT_FILES` plus ``manifest.json`` into the output folder.

[Wang2019] Wang, Y. et al. (2019) Slope-adaptive waveform metrics of large footprint lidar for
    estimation of forest aboveground biomass. Remote Sens. Environ. 224, 386-400.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biomass.constants import DEFAULT_BLOCK_KM, DEFAULT_N_SPLITS
from biomass.study import (
    DEFAULT_PERCENTILES,
    TERRAIN_COVARIATES,
    BiomassStudy,
    run_study,
    write_study,
)
from waveform.constants import FOOTPRINT_DIAMETER_M
from waveform.errors import SawaFileError, SawaValueError

#: Truth columns joined to the shot table: truth name -> shot-table name.
TRUTH_JOIN_COLUMNS = {
    "agb_mg_ha": "agb_mg_ha",
    "canopy_height_m": "true_canopy_height_m",
    "cover": "true_cover",
    "slope_deg": "true_slope_deg",
    "aspect_deg": "true_aspect_deg",
    "ground_elevation_m": "true_ground_elevation_m",
    "iso3": "iso3",
    "power": "power",
}
#: Shots per chunk when reading the sample world's granules.
SAMPLE_CHUNK_SHOTS = 5_000


def _select(chunk, wanted: set[int] | None):
    """The chunk restricted to the shots in ``wanted`` (None: all); None when no shot is left."""
    if wanted is None:
        return chunk
    keep = np.flatnonzero(np.isin(chunk.batch.shot_number, np.fromiter(wanted, np.uint64, len(wanted))))
    if keep.size == 0:
        return None
    if keep.size == len(chunk):
        return chunk
    from waveform.gedi import L1BChunk

    shots = chunk.shots.iloc[keep].reset_index(drop=True)
    shots.attrs = dict(chunk.shots.attrs)
    return L1BChunk(batch=chunk.batch.take(keep), shots=shots,
                    tx=chunk.tx.take(keep) if chunk.tx is not None else None, path=chunk.path, beam=chunk.beam)


def _batches(paths: Sequence[os.PathLike], wanted: set[int] | None, chunk_shots: int):
    """(path, chunk) of the wanted shots with their transmit waveforms; the beams of a granule are
    gathered into chunks of about ``chunk_shots`` shots (fewer, larger batches: the SAWA and
    deconvolution kernels batch shots, so small per-beam chunks of a subset would cost more)."""
    from waveform.gedi import concat_chunks, iter_l1b

    for path in paths:
        buf: list = []
        n = 0
        for chunk in iter_l1b(path, chunk_shots=chunk_shots, with_tx=True):
            chunk = _select(chunk, wanted)
            if chunk is None or len(chunk) == 0:
                continue
            buf.append(chunk)
            n += len(chunk)
            if n >= chunk_shots:
                yield path, (concat_chunks(buf) if len(buf) > 1 else buf[0])
                buf, n = [], 0
        if buf:
            yield path, (concat_chunks(buf) if len(buf) > 1 else buf[0])


def join_truth(shots: pd.DataFrame, truth: pd.DataFrame, *, complete: bool = True, where: str = "sample world"):
    """Join per-shot truth to a shot table by ``shot_number`` (one-to-one), checking granule and beam.

    Every shot must have exactly one truth row with the same ``granule`` and
    ``beam``; with ``complete`` every truth row must also have a shot. Adds the
    columns of :data:`TRUTH_JOIN_COLUMNS`. Raises :class:`SawaFileError` naming
    the first shot that does not match.
    """
    sn = shots["shot_number"].to_numpy().astype(np.uint64)
    dup = pd.Index(sn).duplicated()
    if dup.any():
        raise SawaFileError(f"{where}: shot {int(sn[dup][0])} occurs more than once in the granules")
    t = truth.copy()
    t["shot_number"] = t["shot_number"].to_numpy().astype(np.uint64)
    tdup = t["shot_number"].duplicated()
    if tdup.any():
        raise SawaFileError(f"{where}: shot {int(t['shot_number'][tdup].iloc[0])} occurs more than once in the truth")
    t = t.set_index("shot_number")
    missing = ~np.isin(sn, t.index.to_numpy())
    if missing.any():
        k = int(np.flatnonzero(missing)[0])
        raise SawaFileError(f"{where}: shot {int(sn[k])} ({shots['granule'].iloc[k]} {shots['beam'].iloc[k]}) has no "
                            f"truth row ({int(missing.sum())} shot(s) without truth)")
    if complete and len(t) != len(sn):
        extra = np.setdiff1d(t.index.to_numpy(), sn)
        raise SawaFileError(f"{where}: truth shot {int(extra[0])} ({t.loc[extra[0], 'granule']} "
                            f"{t.loc[extra[0], 'beam']}) is in no granule ({extra.size} truth row(s) without a shot)")
    tr = t.loc[sn]
    for col in ("granule", "beam"):
        if col in tr.columns and col in shots.columns:
            bad = tr[col].to_numpy(dtype=object) != shots[col].to_numpy(dtype=object)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise SawaFileError(f"{where}: shot {int(sn[k])} is in {col} {shots[col].iloc[k]!r} of the granules "
                                    f"but {tr[col].iloc[k]!r} in the truth")
    out = shots.copy()
    for src, dst in TRUTH_JOIN_COLUMNS.items():
        if src in tr.columns:
            out[dst] = tr[src].to_numpy()
    return out


def sample_world_shots(
    world=None,
    *,
    algorithm: str | int = "a1",
    shot_numbers: Iterable[int] | None = None,
    footprint_diameter_m: float = FOOTPRINT_DIAMETER_M,
    chunk_shots: int = SAMPLE_CHUNK_SHOTS,
    progress: bool = False,
):
    """Shot table of the sample world: metrics, terrain annotation (SAWA, deconvolution) and truth.

    ``world``: a :class:`data_samples.SampleWorld` (default: ``load_sample_world()``);
    ``shot_numbers``: only these shots (all must exist; for quick runs and
    tests). Returns a GeoDataFrame (EPSG:4326), one row per shot in granule,
    beam and shot order, with the columns of ``sawa metrics`` plus
    ``slope_deg``, ``aspect_deg``, ``relief_m``, ``dem_elevation_m``,
    ``terrain_reason``, ``rhNN_sawa``, ``sawa_reason``, ``rhNN_deconv``,
    ``deconv_reason`` and the truth columns (:data:`TRUTH_JOIN_COLUMNS`).
    """
    import geopandas as gpd
    from tqdm.auto import tqdm

    from terrain.dem import open_dem
    from terrain.sawa import annotate_terrain
    from waveform.metrics import compute_metrics
    from waveform.stream import chunk_frame

    if world is None:
        from data_samples import load_sample_world

        world = load_sample_world()
    if not world.granule_paths:
        raise SawaFileError(f"sample world {world.root}: no granules in {world.root / 'granules'}")
    wanted = None
    if shot_numbers is not None:
        wanted = {int(s) for s in shot_numbers}
        if not wanted:
            raise SawaValueError("shot_numbers is empty: give at least one shot or None for all")
    truth = world.read_truth()
    total = len(truth) if wanted is None else len(wanted)
    frames = []
    with open_dem(world.dem_path) as dem, tqdm(total=total, unit="shot", disable=not progress,
                                                 desc="sample world shots") as bar:
        for path, chunk in _batches(world.granule_paths, wanted, int(chunk_shots)):
            m = compute_metrics(chunk.batch, algorithm,
                                chunk.shots["noise_mean_corrected"].to_numpy(np.float64),
                                chunk.shots["noise_stddev_corrected"].to_numpy(np.float64))
            frame = chunk_frame(chunk, m, Path(path).name)
            frames.append(annotate_terrain(frame, chunk.batch, dem, footprint_diameter_m, tx=chunk.tx))
            bar.update(len(chunk))
    if not frames:
        raise SawaValueError(f"none of the {len(wanted or ())} requested shots is in the sample world's granules")
    shots = pd.concat(frames, ignore_index=True)
    if wanted is not None:
        found = set(shots["shot_number"].to_numpy().astype(np.uint64).tolist())
        absent = sorted(wanted - found)
        if absent:
            raise SawaValueError(f"shot {absent[0]} is not in the sample world's granules ({len(absent)} requested "
                                 f"shot(s) absent)")
    shots = join_truth(shots, truth, complete=wanted is None, where=f"sample world {world.root}")
    return gpd.GeoDataFrame(shots, geometry="geometry", crs="EPSG:4326")


def run_biomass_study(
    output_dir: str | os.PathLike | None,
    world=None,
    learner: str = "l4a-form",
    block_km: float = DEFAULT_BLOCK_KM,
    *,
    n_splits: int = DEFAULT_N_SPLITS,
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    covariates: Sequence[str] | None = TERRAIN_COVARIATES,
    learner_params: Mapping[str, Any] | None = None,
    random_state: int = 0,
    algorithm: str | int = "a1",
    shots: pd.DataFrame | None = None,
    shot_numbers: Iterable[int] | None = None,
    progress: bool = False,
) -> BiomassStudy:
    """Compare raw, SAWA and deconvolved metric sets for AGB on the sample world; write the outputs.

    Writes into ``output_dir`` (nothing when None): ``biomass_study.csv``
    (metric_set, cv, slope_bin, n, r2, rmse_mg_ha, bias_mg_ha, rmse_pct,
    n_unpredicted), ``biomass_study.png`` (RMSE by slope bin, one line per
    metric set and CV kind), ``biomass_study_summary.json``,
    ``biomass_study_predictions.parquet`` (out-of-fold prediction per shot,
    set and CV kind), ``biomass_study_excluded.csv`` and ``manifest.json``,
    each atomically. ``shots``: a table from :func:`sample_world_shots` to
    reuse (otherwise it is computed, optionally for ``shot_numbers`` only).
    """
    from waveform.outputs import build_manifest, write_json_atomic

    if world is None:
        from data_samples import load_sample_world

        world = load_sample_world()
    t0 = time.perf_counter()
    if shots is None:
        shots = sample_world_shots(world, algorithm=algorithm, shot_numbers=shot_numbers, progress=progress)
    seconds_shots = time.perf_counter() - t0
    study = run_study(shots, learner=learner, percentiles=percentiles, covariates=covariates,
                      learner_params=learner_params, block_km=block_km, n_splits=n_splits,
                      random_state=random_state)
    ds = (shots["slope_deg"].to_numpy(float) - shots["true_slope_deg"].to_numpy(float)
          if "true_slope_deg" in shots.columns else np.array([np.nan]))
    extra = {
        "world": {"root": str(world.root), "version": world.version, "seed": world.seed,
                  "granules": [Path(p).name for p in world.granule_paths], "dem": Path(world.dem_path).name,
                  "truth": Path(world.truth_path).name},
        "waveform_algorithm": str(algorithm),
        "slope_source": "DEM slope over the footprint (terrain.sawa.annotate_terrain); bins use it",
        "dem_minus_true_slope_deg": {"median": float(np.nanmedian(ds)), "max_abs": float(np.nanmax(np.abs(ds)))},
        "seconds_shots": round(seconds_shots, 1),
    }
    study.summary.update(extra)
    if output_dir is None:
        return study
    paths = write_study(study, output_dir)
    params = {"learner": learner, "block_km": block_km, "n_splits": n_splits, "percentiles": list(percentiles),
              "covariates": list(covariates or ()), "learner_params": study.summary["learner_params"],
              "random_state": random_state, "algorithm": str(algorithm),
              "n_shots": int(len(shots)), "subset": shot_numbers is not None}
    inputs = {"dem": world.dem_path, "truth": world.truth_path,
              **{f"granule_{i}": p for i, p in enumerate(world.granule_paths)}}
    manifest = build_manifest(inputs=inputs, parameters=params, outputs=paths)
    paths["manifest"] = Path(output_dir) / "manifest.json"
    write_json_atomic(paths["manifest"], manifest)
    study.paths = paths
    return study


__all__ = ["sample_world_shots", "run_biomass_study", "join_truth", "TRUTH_JOIN_COLUMNS"]
