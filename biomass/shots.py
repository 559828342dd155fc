"""Fit and predict biomass models over shot tables (the library side of ``sawa fit`` / ``sawa predict``).

A shot table is a (Geo)DataFrame or (Geo)Parquet file with one row per GEDI
shot: RH columns ``rh0`` ... ``rh100`` in metres (official L2A values, sawa's
own metrics, or SAWA metrics ``rhNN_sawa`` selected with ``rh_suffix="_sawa"``)
and, for NASA's model, either ``predict_stratum`` or the GEDI ``pft_class`` +
``region_class`` codes. :func:`predict_shots` keeps every input row and adds
``agbd`` and ``agbd_se`` (Mg/ha) and ``agbd_reason`` ('' = predicted); L4A-form
models also add ``agbd_t``, ``agbd_t_se``, ``agbd_pi_lower``, ``agbd_pi_upper``,
``predictor_limit_flag``, ``response_limit_flag`` (and ``predict_stratum`` when
it was derived from the class codes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waveform.errors import ModelError

from .constants import ALL_STRATA, GEDI_L4A_MODEL_NAME
from .l4a import L4AModel, gedi_l4a_model
from .learners import GradientBoostingAGB, RandomForestAGB

LEARNERS = ("l4a-form", "random-forest", "gradient-boosting")


def resolve_model(model: Any):
    """``"gedi-l4a"`` (NASA's shipped table), a model file path, or a fitted estimator."""
    if isinstance(model, str | os.PathLike):
        if str(model) == GEDI_L4A_MODEL_NAME:
            return gedi_l4a_model()
        from .modelio import load_model

        return load_model(model)
    if hasattr(model, "predict_frame"):
        return model
    raise ModelError(f"model must be {GEDI_L4A_MODEL_NAME!r}, a model file or a sawa estimator, "
                     f"got {type(model).__name__}")


def predict_shots(shots: pd.DataFrame, model: Any = GEDI_L4A_MODEL_NAME, *, rh_suffix: str | None = None,
                  strata=None, overwrite: bool = False) -> pd.DataFrame:
    """Every row of ``shots`` with the prediction columns added (see module docstring)."""
    est = resolve_model(model)
    if rh_suffix is not None:
        if isinstance(est, L4AModel):
            est.set_params(rh_suffix=rh_suffix)
        elif rh_suffix:
            raise ModelError("rh_suffix applies to L4A-form models; a learner uses the feature columns it "
                             f"was fitted on ({', '.join(getattr(est, 'feature_names_', []))})")
    if isinstance(est, L4AModel):
        frame = est.predict_frame(shots, strata=strata)
        if est.stratum_column in shots.columns and strata is None:
            frame = frame.drop(columns="predict_stratum")
    else:
        frame = est.predict_frame(shots)
        frame.index = shots.index
    clash = [c for c in frame.columns if c in shots.columns]
    if clash and not overwrite:
        raise ModelError(f"the shot table already has columns {', '.join(clash)}; rename them or overwrite=True "
                         f"(sawa predict --overwrite)")
    out = shots.copy()
    for col in frame.columns:
        out[col] = frame[col].to_numpy()
    return out


def read_shots(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet shot table (GeoDataFrame when it has GeoParquet metadata)."""
    from waveform.shot_table import parquet_metadata

    path = Path(path)
    if b"geo" in parquet_metadata(path):
        import geopandas as gpd

        return gpd.read_parquet(path)
    return pd.read_parquet(path)


def write_shots(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a (Geo)DataFrame to Parquet atomically (GeoParquet when it has a geometry)."""
    from waveform.outputs import atomic_path

    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    names = reasons.where(reasons != "", "ok").str.split(":").str[0]
    return {str(k): int(v) for k, v in names.value_counts().sort_index().items()}


def predict_shot_file(shots_path: str | os.PathLike, output: str | os.PathLike,
                      model: Any = GEDI_L4A_MODEL_NAME, *, rh_suffix: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Predict AGBD for every shot of a Parquet shot table; write all rows to ``output``."""
    t0 = time.perf_counter()
    shots = read_shots(shots_path)
    out = predict_shots(shots, model, rh_suffix=rh_suffix, overwrite=overwrite)
    write_shots(out, output)
    ok = out["agbd_reason"] == ""
    return {
        "input": str(shots_path), "output": str(output), "model": str(model) if isinstance(model, str | os.PathLike)
        else type(model).__name__,
        "n_shots": int(len(out)), "n_predicted": int(ok.sum()),
        "mean_agbd_mg_ha": float(np.nanmean(out.loc[ok, "agbd"])) if ok.any() else float("nan"),
        "reasons": _reason_counts(out["agbd_reason"]), "seconds": time.perf_counter() - t0,
    }


def fit_shots(shots: pd.DataFrame, target_col: str, learner: str = "l4a-form", *,
              predictors: Sequence[int] | Mapping[str, Sequence[int]] = (50, 98),
              features: Sequence[str] | None = None, rh_suffix: str = "",
              strata_col: str | None = None, query: str | None = None, **params: Any):
    """Fit a model on a shot table: ``target_col`` is the reference AGBD (Mg/ha).

    L4A form: one model per value of ``strata_col`` when given, else one model
    for all shots (stratum ``"all"``, applied to every shot at prediction).

    ``query`` (pandas ``DataFrame.query`` text, e.g. ``"quality"``) selects the
    calibration shots explicitly; otherwise every row is used and any missing
    value is an error naming the column.
    """
    if query:
        try:
            shots = shots.query(query)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad expression
            raise ModelError(f"query {query!r} failed on the shot table: {exc}") from exc
        if len(shots) == 0:
            raise ModelError(f"query {query!r} selects no shot")
    if target_col not in shots.columns:
        raise ModelError(f"the shot table has no target column {target_col!r}")
    y = pd.to_numeric(shots[target_col], errors="coerce").to_numpy(dtype=np.float64)
    if learner == "l4a-form":
        est = L4AModel(predictors=predictors, rh_suffix=rh_suffix,
                       stratum_column=strata_col or "predict_stratum", **params)
        if strata_col:
            if strata_col not in shots.columns:
                raise ModelError(f"the shot table has no strata column {strata_col!r}")
            strata = shots[strata_col].to_numpy(dtype=object)
        else:  # one model for all shots
            strata = np.full(len(shots), ALL_STRATA, dtype=object)
        return est.fit(shots, y, strata=strata)
    if learner in ("random-forest", "gradient-boosting"):
        if not features:
            raise ModelError(f"the {learner} learner needs feature columns (e.g. rh50,rh98,slope_deg)")
        cls = RandomForestAGB if learner == "random-forest" else GradientBoostingAGB
        return cls(feature_columns=list(features), **params).fit(shots, y)
    raise ModelError(f"unknown learner {learner!r} (known: {', '.join(LEARNERS)})")


def fit_shot_file(shots_path: str | os.PathLike, output: str | os.PathLike, target_col: str,
                  learner: str = "l4a-form", **kwargs: Any) -> dict[str, Any]:
    """Fit on a Parquet shot table and save the model (JSON for l4a-form, skops for learners)."""
    from .modelio import save_model

    t0 = time.perf_counter()
    shots = read_shots(shots_path)
    model = fit_shots(shots, target_col, learner, **kwargs)
    save_model(model, output)
    summary: dict[str, Any] = {"input": str(shots_path), "output": str(output), "learner": learner,
                               "seconds": time.perf_counter() - t0}
    if isinstance(model, L4AModel):
        summary["strata"] = {name: {"n": m.n_train, "rh_index": list(m.rh_index), "rse": m.rse,
                                    "bias_correction_value": m.bias_correction_value}
                             for name, m in model.table_.strata.items()}
        summary["n_train"] = int(sum(m.n_train or 0 for m in model.table_.strata.values()))
    else:
        summary["n_train"] = int(model.n_train_)
        summary["features"] = list(model.feature_names_)
        summary["rmse_mg_ha"] = float(model.rmse_)
    return summary


__all__ = [
    "resolve_model",
    "predict_shots",
    "predict_shot_file",
    "read_shots",
    "write_shots",
    "fit_shots",
    "fit_shot_file",
    "LEARNERS",
]
