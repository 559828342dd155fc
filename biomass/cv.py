"""Spatial block cross-validation of AGBD models, reported overall and by terrain-slope bin.

Neighbouring GEDI shots (60 m apart along a track) share forest and terrain, so
a random split puts near-duplicates of every test shot in the training set and
flatters the model. Spatial block CV [Roberts2017] instead cuts the study area
into square blocks of ``block_km`` (in a local Lambert azimuthal equal-area
projection centred on the shots, so blocks are true squares in metres at any
latitude) and holds out whole blocks: folds are ``GroupKFold`` over block ids.
A random K-fold split is computed only as a labelled comparison
(``scheme = "random_split (comparison only)"``).

Metrics (on the shots a model could predict; the others are counted in
``n_unpredicted``, never dropped silently): ``r2`` = 1 - SS_res/SS_tot,
``rmse`` (Mg/ha), ``bias`` = mean(predicted - true) (Mg/ha), ``rmse_pct`` =
100 rmse / mean(true). Rows: ``slope_bin = "all"`` and 5-degree slope bins
(``"0-5"``, ``"5-10"``, ...; ``"unknown"`` for shots without slope).

:func:`compare_metric_sets` fits the same learner on different feature sets
(e.g. uncorrected RH metrics vs SAWA metrics) and reports RMSE by slope bin
both ways, as a table and a PNG plot.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold

from waveform.errors import ModelError, SawaValueError

from .constants import DEFAULT_BLOCK_KM, DEFAULT_N_SPLITS, SLOPE_BIN_WIDTH_DEG

SPATIAL_SCHEME = "spatial_block"
RANDOM_SCHEME = "random_split (comparison only)"
SUMMARY_COLUMNS = ["scheme", "slope_bin", "n", "n_unpredicted", "r2", "rmse", "bias", "rmse_pct"]


# --------------------------------------------------------------------------- blocks and bins
def project_local_m(lon_deg, lat_deg) -> tuple[np.ndarray, np.ndarray]:
    """Easting/northing (m) in a Lambert azimuthal equal-area projection centred on the points."""
    from pyproj import Transformer

    lon = np.asarray(lon_deg, dtype=np.float64).reshape(-1)
    lat = np.asarray(lat_deg, dtype=np.float64).reshape(-1)
    if lon.shape != lat.shape:
        raise SawaValueError(f"lon ({lon.size}) and lat ({lat.size}) differ in length")
    bad = ~(np.isfinite(lon) & np.isfinite(lat)) | (np.abs(lat) > 90) | (np.abs(lon) > 360)
    if bad.any():
        raise SawaValueError(f"{int(bad.sum())} shots have missing or invalid coordinates "
                             f"(first at position {int(np.nonzero(bad)[0][0])})")
    if lon.size == 0:
        return lon.copy(), lat.copy()
    lon0 = math.degrees(math.atan2(np.mean(np.sin(np.radians(lon))), np.mean(np.cos(np.radians(lon)))))
    lat0 = float(np.mean(lat))
    tr = Transformer.from_crs(
        "EPSG:4326", f"+proj=laea +lat_0={lat0:.6f} +lon_0={lon0:.6f} +datum=WGS84 +units=m +no_defs",
        always_xy=True,
    )
    x, y = tr.transform(lon, lat)
    return np.asarray(x), np.asarray(y)


def spatial_block_ids(lon_deg, lat_deg, block_km: float = DEFAULT_BLOCK_KM) -> np.ndarray:
    """Integer id (0..n_blocks-1) of the ``block_km`` square block holding each shot."""
    if not (block_km > 0 and math.isfinite(block_km)):
        raise SawaValueError(f"block_km must be a positive number, got {block_km}")
    x, y = project_local_m(lon_deg, lat_deg)
    size = block_km * 1000.0
    bx = np.floor(x / size).astype(np.int64)
    by = np.floor(y / size).astype(np.int64)
    _, ids = np.unique(np.column_stack([bx, by]), axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def slope_bin_labels(slope_deg, width_deg: float = SLOPE_BIN_WIDTH_DEG) -> np.ndarray:
    """Labels ``"0-5"``, ``"5-10"``, ... of ``width_deg`` slope bins; ``"unknown"`` for NaN."""
    s = np.asarray(slope_deg, dtype=np.float64).reshape(-1)
    out = np.full(s.size, "unknown", dtype=object)
    ok = np.isfinite(s) & (s >= 0)
    lo = np.floor(s[ok] / width_deg) * width_deg
    out[ok] = [f"{a:g}-{a + width_deg:g}" for a in lo]
    return out


def _bin_sort_key(label: str) -> float:
    if label == "all":
        return -1.0
    if label == "unknown":
        return math.inf
    return float(label.split("-")[0])


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """n, r2, rmse, bias (pred - true) and rmse_pct of the finite pairs."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    n = int(t.size)
    if n == 0:
        return {"n": 0, "r2": math.nan, "rmse": math.nan, "bias": math.nan, "rmse_pct": math.nan}
    err = p - t
    rmse = float(np.sqrt(np.mean(err ** 2)))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else math.nan
    mean_t = float(t.mean())
    return {"n": n, "r2": r2, "rmse": rmse, "bias": float(err.mean()),
            "rmse_pct": 100.0 * rmse / mean_t if mean_t != 0 else math.nan}


def summarize_predictions(predictions: pd.DataFrame, slope_width_deg: float = SLOPE_BIN_WIDTH_DEG) -> pd.DataFrame:
    """Metrics per scheme, overall (``slope_bin = "all"``) and per slope bin."""
    rows = []
    for scheme, grp in predictions.groupby("scheme", sort=False):
        bins = grp["slope_bin"] if "slope_bin" in grp else pd.Series("unknown", index=grp.index)
        for label, sub in [("all", grp), *sorted(grp.groupby(bins), key=lambda kv: _bin_sort_key(kv[0]))]:
            m = regression_metrics(sub["y_true"], sub["y_pred"])
            rows.append({"scheme": scheme, "slope_bin": label, **m,
                         "n_unpredicted": int((~np.isfinite(sub["y_pred"].to_numpy(dtype=float))).sum())})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------- CV
@dataclass
class CVResult:
    """Out-of-fold predictions (one row per shot and scheme) and their summary table."""

    predictions: pd.DataFrame
    summary: pd.DataFrame
    block_km: float
    n_blocks: int
    n_splits: int


def _take(X, idx):
    if isinstance(X, pd.DataFrame):
        return X.iloc[idx]
    return np.asarray(X)[idx]


def _fit_predict(estimator, X, y, strata, train, test) -> tuple[np.ndarray, np.ndarray]:
    model = clone(estimator)
    kwargs = {} if strata is None else {"strata": strata[train]}
    model.fit(_take(X, train), y[train], **kwargs)
    pkw = {} if strata is None else {"strata": strata[test]}
    if hasattr(model, "predict_frame"):
        frame = model.predict_frame(_take(X, test), **pkw)
        return frame["agbd"].to_numpy(dtype=np.float64), frame["agbd_reason"].to_numpy(dtype=object)
    pred = np.asarray(model.predict(_take(X, test), **pkw), dtype=np.float64)
    return pred, np.where(np.isfinite(pred), "", "not_predicted").astype(object)


def spatial_block_cv(
    estimator,
    X,
    y,
    lon_deg,
    lat_deg,
    *,
    slope_deg=None,
    strata=None,
    block_km: float = DEFAULT_BLOCK_KM,
    n_splits: int = DEFAULT_N_SPLITS,
    random_comparison: bool = True,
    random_state: int = 0,
    slope_width_deg: float = SLOPE_BIN_WIDTH_DEG,
) -> CVResult:
    """Spatial block K-fold CV of ``estimator`` (and, labelled, a random K-fold for comparison).

    ``y`` is the reference AGBD (Mg/ha); ``strata`` (optional) is passed to
    ``fit``/``predict_frame`` of L4A-form models. Returns out-of-fold predictions
    (``scheme``, ``fold``, ``block``, ``y_true``, ``y_pred``, ``reason``,
    ``slope_deg``, ``slope_bin``; index = row position in X) and the summary.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = y.size
    if len(X) != n:
        raise ModelError(f"X has {len(X)} shots but y has {n}")
    if not np.all(np.isfinite(y)):
        raise ModelError(f"{int((~np.isfinite(y)).sum())} shots have a non-finite reference AGBD")
    if n_splits < 2:
        raise ModelError(f"n_splits must be >= 2, got {n_splits}")
    blocks = spatial_block_ids(lon_deg, lat_deg, block_km)
    n_blocks = int(blocks.max()) + 1 if n else 0
    if n_blocks < n_splits:
        raise ModelError(f"{n_blocks} spatial blocks of {block_km:g} km cannot make {n_splits} folds: "
                         f"use smaller blocks or fewer folds")
    if strata is not None:
        strata = np.asarray(strata, dtype=object).reshape(-1)
        if strata.size != n:
            raise ModelError(f"strata has {strata.size} values for {n} shots")
    slope = (np.full(n, np.nan) if slope_deg is None else np.asarray(slope_deg, dtype=np.float64).reshape(-1))
    if slope.size != n:
        raise ModelError(f"slope_deg has {slope.size} values for {n} shots")
    schemes: list[tuple[str, Any]] = [(SPATIAL_SCHEME, GroupKFold(n_splits=n_splits).split(np.zeros(n), y, blocks))]
    if random_comparison:
        schemes.append((RANDOM_SCHEME, KFold(n_splits=n_splits, shuffle=True,
                                             random_state=random_state).split(np.zeros(n))))
    frames = []
    for scheme, splits in schemes:
        pred = np.full(n, np.nan)
        reason = np.full(n, "", dtype=object)
        fold = np.full(n, -1, dtype=np.int64)
        for k, (train, test) in enumerate(splits):
            try:
                p, r = _fit_predict(estimator, X, y, strata, train, test)
            except ModelError as exc:
                raise ModelError(f"{scheme} fold {k}: {exc}") from exc
            pred[test], reason[test], fold[test] = p, r, k
        frames.append(pd.DataFrame({
            "scheme": scheme, "fold": fold, "block": blocks, "y_true": y, "y_pred": pred,
            "reason": reason, "slope_deg": slope, "slope_bin": slope_bin_labels(slope, slope_width_deg),
        }))
    predictions = pd.concat(frames, ignore_index=False)
    return CVResult(predictions=predictions, summary=summarize_predictions(predictions, slope_width_deg),
                    block_km=float(block_km), n_blocks=n_blocks, n_splits=n_splits)


# --------------------------------------------------------------------------- metric sets
_RH_COL = re.compile(r"^rh(\d+)(.*)$")


def make_learner(learner: str | Callable[[list[str]], Any], columns: Sequence[str],
                 params: Mapping[str, Any] | None = None):
    """An unfitted estimator for a feature set: ``"random-forest"``, ``"gradient-boosting"``,
    ``"l4a-form"`` (columns must all be ``rhNN<suffix>`` with one suffix) or a factory ``f(columns)``."""
    from .l4a import L4AModel
    from .learners import GradientBoostingAGB, RandomForestAGB

    params = dict(params or {})
    columns = list(columns)
    if callable(learner):
        return learner(columns)
    if learner == "random-forest":
        return RandomForestAGB(feature_columns=columns, **params)
    if learner == "gradient-boosting":
        return GradientBoostingAGB(feature_columns=columns, **params)
    if learner == "l4a-form":
        parsed = [_RH_COL.match(c) for c in columns]
        if not all(parsed) or len({m.group(2) for m in parsed}) != 1:
            raise ModelError(f"the l4a-form learner needs RH columns rhNN with one common suffix, got {columns}")
        return L4AModel(predictors=tuple(int(m.group(1)) for m in parsed), rh_suffix=parsed[0].group(2), **params)
    raise ModelError(f"unknown learner {learner!r} (random-forest, gradient-boosting, l4a-form or a factory)")


@dataclass
class MetricSetComparison:
    """RMSE (and R2, bias) by slope bin for each feature set; the per-set CV results; the plot path."""

    table: pd.DataFrame
    results: dict[str, CVResult]
    plot_path: Path | None
    table_path: Path | None


def compare_metric_sets(
    shots: pd.DataFrame,
    truth_col: str = "agb_mg_ha",
    sets: Mapping[str, Sequence[str]] | None = None,
    *,
    learner: str | Callable[[list[str]], Any] = "random-forest",
    learner_params: Mapping[str, Any] | None = None,
    block_km: float = DEFAULT_BLOCK_KM,
    n_splits: int = DEFAULT_N_SPLITS,
    lon_col: str = "lon",
    lat_col: str = "lat",
    slope_col: str = "slope_deg",
    random_comparison: bool = True,
    random_state: int = 0,
    plot_path: str | os.PathLike | None = None,
    table_path: str | os.PathLike | None = None,
    title: str | None = None,
) -> MetricSetComparison:
    """Cross-validate one learner on several feature sets and compare AGB RMSE by slope bin.

    ``sets`` maps a label to feature columns, e.g. ``{"raw": ["rh50", "rh98"],
    "sawa": ["rh50_sawa", "rh98_sawa"]}`` (default: those two). Shots missing a
    feature of a set, the truth, coordinates or slope raise an error naming the
    column (no shot is silently left out). The table has one row per set,
    scheme and slope bin (columns ``metric_set`` + :data:`SUMMARY_COLUMNS`);
    with ``plot_path`` a PNG of RMSE by slope bin is written, with
    ``table_path`` the table as CSV (both atomically).
    """
    if sets is None:
        sets = {"raw": ["rh50", "rh98"], "sawa": ["rh50_sawa", "rh98_sawa"]}
    if not sets:
        raise ModelError("sets is empty: give at least one feature set")
    needed = {truth_col, lon_col, lat_col, slope_col, *[c for cols in sets.values() for c in cols]}
    missing = sorted(c for c in needed if c not in shots.columns)
    if missing:
        raise ModelError(f"the shot table lacks columns {', '.join(missing)}")
    y = pd.to_numeric(shots[truth_col], errors="coerce").to_numpy(dtype=np.float64)
    results: dict[str, CVResult] = {}
    tables = []
    for label, cols in sets.items():
        cols = list(cols)
        feats = shots[cols].apply(pd.to_numeric, errors="coerce")
        bad = feats.isna()
        if bad.any().any():
            counts = {c: int(v) for c, v in bad.sum().items() if v}
            raise ModelError(f"feature set {label!r}: shots with missing values in "
                             + ", ".join(f"{c} ({v})" for c, v in counts.items())
                             + "; filter the table first (e.g. on the reason columns)")
        est = make_learner(learner, cols, learner_params)
        res = spatial_block_cv(
            est, shots[cols].reset_index(drop=True), y, shots[lon_col].to_numpy(), shots[lat_col].to_numpy(),
            slope_deg=shots[slope_col].to_numpy(), block_km=block_km, n_splits=n_splits,
            random_comparison=random_comparison, random_state=random_state,
        )
        results[label] = res
        tables.append(res.summary.assign(metric_set=label))
    table = pd.concat(tables, ignore_index=True)[["metric_set", *SUMMARY_COLUMNS]]
    out_table = None
    if table_path is not None:
        from waveform.outputs import write_text_atomic

        out_table = write_text_atomic(table_path, table.to_csv(index=False, float_format="%.4f"))
    out_plot = None
    if plot_path is not None:
        out_plot = plot_rmse_by_slope(table, plot_path, title=title or
                                      f"AGB RMSE by terrain slope ({block_km:g} km spatial block CV, {n_splits} folds)")
    return MetricSetComparison(table=table, results=results, plot_path=out_plot, table_path=out_table)


def plot_rmse_by_slope(table: pd.DataFrame, path: str | os.PathLike, title: str = "AGB RMSE by slope") -> Path:
    """PNG: RMSE (Mg/ha) per slope bin, one line per metric set (random split dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waveform.outputs import atomic_path

    data = table[(table["slope_bin"] != "all") & (table["slope_bin"] != "unknown")]
    bins = sorted(data["slope_bin"].unique(), key=_bin_sort_key)
    pos = {b: i for i, b in enumerate(bins)}
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(data["metric_set"]))}
    for (label, scheme), grp in data.groupby(["metric_set", "scheme"], sort=False):
        grp = grp.sort_values("slope_bin", key=lambda s: s.map(_bin_sort_key))
        spatial = scheme == SPATIAL_SCHEME
        name = f"{label} (spatial block CV)" if spatial else f"{label}, {RANDOM_SCHEME}"
        ax.plot([pos[b] for b in grp["slope_bin"]], grp["rmse"], "-" if spatial else "--",
                marker="o" if spatial else "x", color=colours[label], alpha=1.0 if spatial else 0.6, label=name)
    ax.set_xticks(range(len(bins)))
    ax.set_xticklabels(bins)
    ax.set_xlabel("terrain slope (degrees)")
    ax.set_ylabel("AGB RMSE (Mg/ha)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


__all__ = [
    "project_local_m",
    "spatial_block_ids",
    "slope_bin_labels",
    "regression_metrics",
    "summarize_predictions",
    "spatial_block_cv",
    "CVResult",
    "make_learner",
    "compare_metric_sets",
    "MetricSetComparison",
    "plot_rmse_by_slope",
    "SPATIAL_SCHEME",
    "RANDOM_SCHEME",
    "SUMMARY_COLUMNS",
]
