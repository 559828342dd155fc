"""AGB accuracy by terrain slope with uncorrected, SAWA and terrain-deconvolved metrics (table logic).

Given a shot table with a reference AGBD column (Mg/ha), coordinates, a terrain
slope and three families of relative-height columns -- uncorrected ``rhNN``,
SAWA ``rhNN_sawa`` [Wang2019] and terrain-deconvolved ``rhNN_deconv`` (sawa's
improvement, :func:`terrain.sawa.deconvolved_metrics`) -- :func:`run_study`
fits the same learner on each *metric set* and cross-validates it with
:func:`biomass.cv.compare_metric_sets`: spatial block CV [Roberts2017] is the
result; a random K-fold split is reported beside it only as a labelled
comparison (``cv = "random_split (comparison only)"``), because neighbouring
shots share forest and terrain and a random split flatters every model.

Metric sets (:data:`METRIC_SETS`): the RH percentiles :data:`DEFAULT_PERCENTILES`
with the set's suffix; learners that accept arbitrary features (random forest,
gradient boosting) also get the terrain covariates :data:`TERRAIN_COVARIATES`
(DEM slope and relief) in *every* set, so that the uncorrected set may learn an
empirical terrain correction of its own. The L4A model form (OLS of
sqrt(AGBD) on sqrt(RH + 100 m)) takes RH columns only, as NASA's L4A.

All sets are evaluated on the same shots: shots lacking the truth, coordinates,
slope or any feature of any set are left out of every set and listed with a
reason (:attr:`BiomassStudy.excluded`; counts in the summary), never dropped
silently.

The table (:data:`STUDY_COLUMNS`) has one row per metric set, CV kind and slope
bin (``"all"`` and 5-degree bins of ``slope_col``); the summary adds pooled
figures on steep terrain (``slope >= STEEP_SLOPE_DEG``). This module only needs
the table: the sample-world pipeline that computes the metrics lives in
:mod:`fusion.biomass_study` (biomass does not import terrain).

Sources
-------
[Wang2019] Wang, Y. et al. (2019) Slope-adaptive waveform metrics of large footprint lidar for
    estimation of forest aboveground biomass. Remote Sens. Environ. 224, 386-400.
[Roberts2017] Roberts, D.R. et al. (2017) Cross-validation strategies for data with temporal, spatial,
    hierarchical, or phylogenetic structure. Ecography 40, 913-929.
[Duncanson2022] Duncanson, L. et al. (2022) Aboveground biomass density models for NASA's Global
    Ecosystem Dynamics Investigation (GEDI) lidar mission. Remote Sens. Environ. 270, 112845.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waveform.errors import ModelError, OutputError

from .constants import DEFAULT_BLOCK_KM, DEFAULT_N_SPLITS, SLOPE_BIN_WIDTH_DEG
from .cv import (
    RANDOM_SCHEME,
    SPATIAL_SCHEME,
    SUMMARY_COLUMNS,
    compare_metric_sets,
    regression_metrics,
)

#: Metric set label -> suffix of its RH columns.
METRIC_SETS: dict[str, str] = {"raw": "", "sawa": "_sawa", "deconv": "_deconv"}
#: What each metric set is (for tables, plots and the summary).
METRIC_SET_DESCRIPTIONS: dict[str, str] = {
    "raw": "uncorrected relative heights rhNN (ground mode reference)",
    "sawa": "slope-adaptive waveform metrics rhNN_sawa [Wang2019]",
    "deconv": "relative heights of the terrain-deconvolved waveform rhNN_deconv (sawa)",
}
#: RH percentiles of every metric set: RH25/50/75/98, the metrics of the slope study
#: (:mod:`terrain.study`) and predictors of GEDI L4A models [Duncanson2022]; all are SAWA percentiles.
DEFAULT_PERCENTILES: tuple[int, ...] = (25, 50, 75, 98)
#: Terrain covariates added to every metric set of learners that take arbitrary features.
TERRAIN_COVARIATES: tuple[str, ...] = ("slope_deg", "relief_m")
#: Learners of the study (names of :func:`biomass.cv.make_learner`); only the first takes RH columns only.
LEARNERS: tuple[str, ...] = ("l4a-form", "random-forest", "gradient-boosting")
RH_ONLY_LEARNERS = ("l4a-form",)
#: Default parameters per learner. ``negative_rule="zero"``: a negative linear predictor of the
#: L4A form (bare ground) is 0 Mg/ha, so that every shot gets a prediction (AGBD cannot be negative).
DEFAULT_LEARNER_PARAMS: dict[str, dict[str, Any]] = {"l4a-form": {"negative_rule": "zero"}}
#: Slope (deg) from which terrain counts as steep in the summary (the slope study's goal bins).
STEEP_SLOPE_DEG = 20.0

#: CV kinds as written in the ``cv`` column.
CV_SPATIAL = SPATIAL_SCHEME
CV_RANDOM = RANDOM_SCHEME
#: Columns of the study table; rmse_pct = 100 rmse / mean(reference AGBD); n_unpredicted: shots of
#: the bin the model gave no prediction (left out of n and the metrics).
STUDY_COLUMNS = ["metric_set", "cv", "slope_bin", "n", "r2", "rmse_mg_ha", "bias_mg_ha", "rmse_pct", "n_unpredicted"]
#: Columns of the per-shot prediction table.
PREDICTION_COLUMNS = ["metric_set", "cv", "shot_number", "fold", "block", "slope_deg", "slope_bin",
                      "y_true", "y_pred", "reason"]

#: Output file names in the study folder.
OUTPUT_FILES = {
    "table": "biomass_study.csv",
    "plot": "biomass_study.png",
    "summary": "biomass_study_summary.json",
    "predictions": "biomass_study_predictions.parquet",
    "excluded": "biomass_study_excluded.csv",
}


def metric_set_columns(
    learner: str = "l4a-form",
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    covariates: Sequence[str] | None = TERRAIN_COVARIATES,
    sets: Sequence[str] = tuple(METRIC_SETS),
) -> dict[str, list[str]]:
    """Feature columns of each metric set: ``rhNN<suffix>`` for ``percentiles`` plus, for learners
    that take arbitrary features, ``covariates``.

    >>> metric_set_columns("random-forest", (50, 98))["sawa"]
    ['rh50_sawa', 'rh98_sawa', 'slope_deg', 'relief_m']
    >>> metric_set_columns("l4a-form", (50, 98))["deconv"]
    ['rh50_deconv', 'rh98_deconv']
    """
    pct = [int(p) for p in percentiles]
    if not pct or any(float(q) != p or not 0 <= p <= 100 for p, q in zip(pct, percentiles, strict=True)):
        raise ModelError(f"percentiles must be integers in 0..100, got {list(percentiles)}")
    unknown = [s for s in sets if s not in METRIC_SETS]
    if unknown:
        raise ModelError(f"unknown metric set(s) {unknown}; choose from {list(METRIC_SETS)}")
    extra = [] if (learner in RH_ONLY_LEARNERS or not covariates) else list(covariates)
    return {s: [f"rh{p}{METRIC_SETS[s]}" for p in pct] + extra for s in sets}


@dataclass
class BiomassStudy:
    """Result of :func:`run_study`: table, per-shot out-of-fold predictions, excluded shots, summary."""

    table: pd.DataFrame
    predictions: pd.DataFrame
    excluded: pd.DataFrame
    summary: dict
    sets: dict[str, list[str]]
    paths: dict[str, Path] = field(default_factory=dict)


def usable_shots(shots: pd.DataFrame, sets: Mapping[str, Sequence[str]], *, truth_col: str, lon_col: str,
                 lat_col: str, slope_col: str, id_col: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``shots`` into those usable by every set and the excluded ones (``id_col``, ``exclude_reason``).

    A shot is excluded when its truth, coordinates, slope or any feature of any
    set is missing or not finite; the reason names the columns (``missing:COL,COL``).
    """
    needed = list(dict.fromkeys([truth_col, lon_col, lat_col, slope_col, *[c for cols in sets.values() for c in cols]]))
    absent = [c for c in [*needed, id_col] if c not in shots.columns]
    if absent:
        raise ModelError(f"the shot table lacks columns {', '.join(absent)} (needed by the biomass study)")
    values = shots[needed].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    rows = np.flatnonzero(bad.any(axis=1))
    reasons = ["missing:" + ",".join(c for c, b in zip(needed, bad[i], strict=True) if b) for i in rows]
    excluded = pd.DataFrame({id_col: shots[id_col].to_numpy()[rows], "exclude_reason": reasons})
    keep = shots.iloc[np.flatnonzero(~bad.any(axis=1))]
    return keep, excluded


def _cv_table(comparison_table: pd.DataFrame) -> pd.DataFrame:
    t = comparison_table.rename(columns={"scheme": "cv", "rmse": "rmse_mg_ha", "bias": "bias_mg_ha"})
    missing = [c for c in STUDY_COLUMNS if c not in t.columns]
    if missing:  # pragma: no cover - guards a change of biomass.cv.SUMMARY_COLUMNS
        raise ModelError(f"biomass.cv summary lacks {missing} (has {list(SUMMARY_COLUMNS)})")
    return t[STUDY_COLUMNS].reset_index(drop=True)


def _pooled(pred: pd.DataFrame) -> dict[str, float]:
    m = regression_metrics(pred["y_true"], pred["y_pred"])
    return {"n": m["n"], "r2": m["r2"], "rmse_mg_ha": m["rmse"], "bias_mg_ha": m["bias"],
            "n_unpredicted": int((~np.isfinite(pred["y_pred"].to_numpy(dtype=float))).sum())}


def _change_pct(base: float, new: float) -> float:
    return 100.0 * (new - base) / base if base and math.isfinite(base) and math.isfinite(new) else math.nan


def run_study(
    shots: pd.DataFrame,
    *,
    learner: str = "l4a-form",
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    covariates: Sequence[str] | None = TERRAIN_COVARIATES,
    sets: Sequence[str] = tuple(METRIC_SETS),
    learner_params: Mapping[str, Any] | None = None,
    block_km: float = DEFAULT_BLOCK_KM,
    n_splits: int = DEFAULT_N_SPLITS,
    random_comparison: bool = True,
    random_state: int = 0,
    truth_col: str = "agb_mg_ha",
    lon_col: str = "longitude",
    lat_col: str = "latitude",
    slope_col: str = "slope_deg",
    id_col: str = "shot_number",
    steep_slope_deg: float = STEEP_SLOPE_DEG,
) -> BiomassStudy:
    """Cross-validate ``learner`` on each metric set; AGB R2, RMSE and bias overall and by slope bin.

    ``shots``: one row per shot with ``truth_col`` (reference AGBD, Mg/ha),
    ``lon_col``/``lat_col`` (deg), ``slope_col`` (deg; used for the bins and, for
    feature learners, as a covariate), ``id_col`` and the RH columns of the sets.
    ``learner_params`` update :data:`DEFAULT_LEARNER_PARAMS`. Returns a
    :class:`BiomassStudy`; nothing is written (see :func:`write_study`).
    """
    if learner not in LEARNERS:
        raise ModelError(f"unknown learner {learner!r}; choose from {', '.join(LEARNERS)}")
    t0 = time.perf_counter()
    cols = metric_set_columns(learner, percentiles, covariates, sets)
    data, excluded = usable_shots(shots, cols, truth_col=truth_col, lon_col=lon_col, lat_col=lat_col,
                                  slope_col=slope_col, id_col=id_col)
    if len(data) < 2 * n_splits:
        raise ModelError(f"only {len(data)} of {len(shots)} shots have every column the study needs "
                         f"({len(excluded)} excluded); too few for {n_splits}-fold CV")
    params = {**DEFAULT_LEARNER_PARAMS.get(learner, {}), **dict(learner_params or {})}
    comp = compare_metric_sets(
        data, truth_col, cols, learner=learner, learner_params=params, block_km=block_km, n_splits=n_splits,
        lon_col=lon_col, lat_col=lat_col, slope_col=slope_col, random_comparison=random_comparison,
        random_state=random_state,
    )
    table = _cv_table(comp.table)
    ids = data[id_col].to_numpy()
    frames = []
    for label, res in comp.results.items():
        p = res.predictions
        pos = p.index.to_numpy()  # row position in ``data``
        frames.append(pd.DataFrame({
            "metric_set": label, "cv": p["scheme"].to_numpy(), id_col: ids[pos], "fold": p["fold"].to_numpy(),
            "block": p["block"].to_numpy(), "slope_deg": p["slope_deg"].to_numpy(),
            "slope_bin": p["slope_bin"].to_numpy(), "y_true": p["y_true"].to_numpy(),
            "y_pred": p["y_pred"].to_numpy(), "reason": p["reason"].to_numpy(),
        }))
    predictions = pd.concat(frames, ignore_index=True)
    predictions = predictions[[id_col if c == "shot_number" else c for c in PREDICTION_COLUMNS]]

    first = next(iter(comp.results.values()))
    results: dict[str, dict] = {}
    for (label, cv), grp in predictions.groupby(["metric_set", "cv"], sort=False):
        steep = grp[grp["slope_deg"] >= steep_slope_deg]
        results.setdefault(label, {})[cv] = {"all": _pooled(grp), "steep": _pooled(steep)}
    change = {}
    if "raw" in results:
        for label in results:
            if label == "raw":
                continue
            change[label] = {cv: {part: _change_pct(results["raw"][cv][part]["rmse_mg_ha"], v[part]["rmse_mg_ha"])
                                  for part in ("all", "steep")}
                             for cv, v in results[label].items()}
    reasons = excluded["exclude_reason"].value_counts().to_dict() if len(excluded) else {}
    summary = {
        "learner": learner,
        "learner_params": params,
        "percentiles": [int(p) for p in percentiles],
        "feature_columns": cols,
        "metric_sets": {s: METRIC_SET_DESCRIPTIONS[s] for s in cols},
        "truth_column": truth_col,
        "slope_column": slope_col,
        "slope_bin_width_deg": SLOPE_BIN_WIDTH_DEG,
        "block_km": float(block_km),
        "n_blocks": first.n_blocks,
        "n_splits": int(n_splits),
        "cv_primary": CV_SPATIAL,
        "cv_comparison": CV_RANDOM if random_comparison else None,
        "random_state": int(random_state),
        "n_shots_input": int(len(shots)),
        "n_shots_used": int(len(data)),
        "n_shots_excluded": int(len(excluded)),
        "excluded_reasons": {str(k): int(v) for k, v in reasons.items()},
        "steep_slope_deg": float(steep_slope_deg),
        "n_steep_shots": int((data[slope_col].to_numpy(dtype=float) >= steep_slope_deg).sum()),
        "results": results,
        "rmse_change_vs_raw_pct": change,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return BiomassStudy(table=table, predictions=predictions, excluded=excluded, summary=summary, sets=cols)


def plot_study(study: BiomassStudy, path: str | os.PathLike, title: str | None = None) -> Path:
    """PNG of AGB RMSE by slope bin, one line per metric set (spatial block CV solid, random split dashed)."""
    from .cv import plot_rmse_by_slope

    t = study.table.rename(columns={"cv": "scheme", "rmse_mg_ha": "rmse"})
    s = study.summary
    title = title or (f"AGB RMSE by terrain slope: {s['learner']}, {s['block_km']:g} km spatial block CV "
                      f"({s['n_splits']} folds, {s['n_shots_used']} shots)")
    return plot_rmse_by_slope(t, path, title=title)


def write_study(study: BiomassStudy, output_dir: str | os.PathLike, *, extra_summary: Mapping[str, Any] | None = None,
                title: str | None = None) -> dict[str, Path]:
    """Write the table (CSV), plot (PNG), summary (JSON), per-shot predictions (Parquet) and excluded
    shots (CSV) into ``output_dir``, each atomically; ``extra_summary`` is merged into the JSON."""
    from waveform.outputs import atomic_path, write_json_atomic, write_text_atomic

    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc}") from None
    paths = {k: out / v for k, v in OUTPUT_FILES.items()}
    write_text_atomic(paths["table"], study.table.to_csv(index=False, float_format="%.4f"))
    plot_study(study, paths["plot"], title=title)
    with atomic_path(paths["predictions"]) as tmp:
        study.predictions.astype({"reason": str}).to_parquet(tmp, index=False)
    write_text_atomic(paths["excluded"], study.excluded.to_csv(index=False))
    if extra_summary:
        study.summary.update(dict(extra_summary))
    study.summary["outputs"] = {k: p.name for k, p in paths.items()}
    write_json_atomic(paths["summary"], study.summary)
    study.paths = paths
    return paths


def rmse_pivot(table: pd.DataFrame, cv: str = CV_SPATIAL) -> pd.DataFrame:
    """RMSE (Mg/ha) by slope bin (rows, in bin order, ``all`` first) and metric set (columns), with n."""
    t = table[table["cv"] == cv]
    piv = t.pivot_table(index="slope_bin", columns="metric_set", values="rmse_mg_ha", sort=False)
    piv = piv[[c for c in dict.fromkeys(t["metric_set"]) if c in piv.columns]]
    n = t.groupby("slope_bin", sort=False)["n"].max()
    piv.insert(0, "n", n.reindex(piv.index).to_numpy())
    return piv


def format_study(study: BiomassStudy) -> str:
    """Text tables of RMSE by slope bin for both CV kinds, and the steep-terrain summary (for the CLI)."""
    s = study.summary
    lines = [f"{s['learner']} on {s['n_shots_used']} shots ({s['n_shots_excluded']} excluded), "
             f"{s['block_km']:g} km blocks ({s['n_blocks']}), {s['n_splits']} folds; AGB RMSE (Mg/ha) by slope bin"]
    for cv in dict.fromkeys(study.table["cv"]):
        lines.append(f"[{cv}]")
        lines.append(rmse_pivot(study.table, cv).to_string(float_format=lambda v: f"{v:.1f}"))
    for cv in dict.fromkeys(study.table["cv"]):
        parts = []
        for label, r in s["results"].items():
            st = r[cv]["steep"]
            parts.append(f"{label} {st['rmse_mg_ha']:.1f}")
        lines.append(f"slope >= {s['steep_slope_deg']:g} deg ({s['n_steep_shots']} shots), {cv}: RMSE "
                     + ", ".join(parts) + " Mg/ha")
    return "\n".join(lines)


__all__ = [
    "run_study",
    "write_study",
    "plot_study",
    "format_study",
    "rmse_pivot",
    "metric_set_columns",
    "usable_shots",
    "BiomassStudy",
    "METRIC_SETS",
    "METRIC_SET_DESCRIPTIONS",
    "DEFAULT_PERCENTILES",
    "TERRAIN_COVARIATES",
    "LEARNERS",
    "STEEP_SLOPE_DEG",
    "STUDY_COLUMNS",
    "PREDICTION_COLUMNS",
    "OUTPUT_FILES",
    "CV_SPATIAL",
    "CV_RANDOM",
]
