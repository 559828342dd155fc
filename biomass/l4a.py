"""L4A-form footprint AGBD models: per-stratum OLS on transformed RH, as NASA's GEDI L4A.

The model of one prediction stratum [L4A-ATBD, Duncanson2022]::

    x_k   = sqrt(RH_k + 100)                      RH_k in metres (``predictor_offset``)
    t     = par_0 + sum_k par_k * x_k             linear predictor, "fit units" (agbd_t)
    agbd  = C * t**2                              Mg/ha; C = bias_correction_value (Snowdon ratio)
    se_t  = sqrt(rse**2 + d' V d),  d = [1, x]    prediction SE in fit units (agbd_t_se)
    agbd_se = C * se_t**2                         Mg/ha (NASA L4A version 2 convention, below)
    PI    = C * (t -/+ t_{1-alpha/2, dof} * se_t)**2   (lower bound: no value where t - ... < 0)

Checked on the real L4A granule in ``../shared/reference`` (438 shots with
``agbd >= 0``, all ``GSW_NAs``): with the predictors rebuilt from ``xvar``
(RH98 = xvar**2 - 100 m) this reproduces ``agbd_t``, ``agbd_t_se``, ``agbd``,
``agbd_se`` and ``agbd_pi_lower/upper`` to float32 precision (see
``tests/biomass/test_l4a_granule.py`` and the package report). The SE in Mg/ha
that NASA writes in version 2 is the back-transform applied to the SE in fit
units, ``C * se_t**2`` (``se_method="l4a"``, the default, so that sawa matches
the product); ``se_method="delta"`` gives the first-order (delta-method) SE
``C * 2 |t| se_t`` instead.

NASA's rules, as the version 2 product applies them (verified on the granule):

* predictor and response limits (``predictor_max_value``, ``response_max_value``)
  are *not* applied: predictors above the calibration maximum are used as they
  are (the granule has RH98 up to 35.6 m against a GSW maximum of 21.8 m, and
  ``agbd`` up to 442 against ``response_max_value`` 192.6 Mg/ha), and the
  granule's ``predictor_limit_flag``/``response_limit_flag`` are 255 (not
  evaluated). sawa computes the flags (0 in bounds, 1 below, 2 above) so that
  users can filter, and changes no prediction because of them.
* a transformed value below zero is never squared: the granule writes no value
  (-9999) for ``agbd_pi_lower`` wherever ``t - t_q se_t < 0``. sawa applies the
  same rule to ``agbd`` itself: a negative linear predictor gives no AGBD and the
  reason ``negative_prediction`` (``negative_rule="zero"`` gives 0 Mg/ha
  instead). The reference granule has no shot with ``agbd_t < 0`` to confirm the
  product's handling of ``agbd`` in that case.

Bias corrections for user fits: ``snowdon`` (ratio of mean observed to mean
back-transformed fitted values, any transform) [Snowdon1991]; for a ``log``
response also ``baskerville`` (exp(rse**2 / 2)) [Baskerville1972] and ``duan``
(mean of exp(residuals), the smearing estimate) [Duan1983]; ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin

from waveform.errors import ModelError, StratumError

from .constants import (
    ALL_STRATA,
    FILL_THRESHOLD_M,
    L4A_ALPHA,
    L4A_PREDICTOR_OFFSET_M,
    L4A_RESPONSE_OFFSET_MG_HA,
    LIMIT_FLAG_NOT_EVALUATED,
    MIN_SHOTS_PER_STRATUM,
    RH_MEDIAN_MAX_PLAUSIBLE_M,
)
from .model_data import ModelTable, StratumModel, load_packaged_model_table

BIAS_CORRECTIONS = ("snowdon", "baskerville", "duan", "none")
SE_METHODS = ("l4a", "delta")
NEGATIVE_RULES = ("fill", "zero")

#: Output columns of :meth:`L4AModel.predict_frame`, with units.
PREDICTION_COLUMNS = {
    "predict_stratum": "prediction stratum used ('' if none)",
    "agbd": "above-ground biomass density (Mg/ha); NaN when not predicted (see agbd_reason)",
    "agbd_se": "prediction standard error of agbd (Mg/ha)",
    "agbd_t": "linear predictor in fit units (sqrt(Mg/ha) for a sqrt model)",
    "agbd_t_se": "prediction standard error in fit units",
    "agbd_pi_lower": "lower prediction bound (Mg/ha) at level 1 - alpha; NaN where undefined",
    "agbd_pi_upper": "upper prediction bound (Mg/ha) at level 1 - alpha",
    "predictor_limit_flag": "0 predictors within calibration range, 2 above, 255 not evaluated",
    "response_limit_flag": "0 within range, 1 negative linear predictor, 2 above response_max_value, 255 not evaluated",
    "agbd_reason": "'' when predicted, otherwise why not",
}


# --------------------------------------------------------------------------- transforms
def transform_x(rh_m: np.ndarray, name: str, offset_m: float) -> np.ndarray:
    """Transformed predictor from RH in metres (NaN outside the transform's domain)."""
    v = np.asarray(rh_m, dtype=np.float64) + offset_m
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "sqrt":
            return np.where(v >= 0, np.sqrt(np.where(v >= 0, v, 0.0)), np.nan)
        if name == "log":
            return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), np.nan)
        if name == "none":
            return np.asarray(rh_m, dtype=np.float64).copy()
    raise ModelError(f"unknown x_transform {name!r}")


def inverse_x(x: np.ndarray, name: str, offset_m: float) -> np.ndarray:
    """RH in metres from a transformed predictor (inverse of :func:`transform_x`)."""
    x = np.asarray(x, dtype=np.float64)
    if name == "sqrt":
        return x * x - offset_m
    if name == "log":
        return np.exp(x) - offset_m
    if name == "none":
        return x.copy()
    raise ModelError(f"unknown x_transform {name!r}")


def transform_y(y: np.ndarray, name: str, offset: float) -> np.ndarray:
    v = np.asarray(y, dtype=np.float64) + offset
    if name == "sqrt":
        return np.sqrt(v)
    if name == "log":
        return np.log(v)
    if name == "none":
        return v
    raise ModelError(f"unknown y_transform {name!r}")


def back_transform(t: np.ndarray, name: str) -> np.ndarray:
    """Inverse response transform without bias correction or offset (t**2, exp(t) or t)."""
    t = np.asarray(t, dtype=np.float64)
    if name == "sqrt":
        return t * t
    if name == "log":
        return np.exp(t)
    if name == "none":
        return t.copy()
    raise ModelError(f"unknown y_transform {name!r}")


def _back_transform_slope(t: np.ndarray, name: str) -> np.ndarray:
    if name == "sqrt":
        return 2.0 * np.abs(t)
    if name == "log":
        return np.exp(t)
    return np.ones_like(t)


def _can_be_negative(name: str) -> bool:
    return name in ("sqrt", "none")


# --------------------------------------------------------------------------- core maths
def predict_stratum_arrays(
    model: StratumModel,
    rh_m: np.ndarray,
    *,
    predictor_offset_m: float,
    response_offset: float,
    alpha: float,
    se_method: str = "l4a",
    negative_rule: str = "fill",
) -> dict[str, np.ndarray]:
    """All prediction outputs of one stratum model for an (n, p) array of RH predictors (m).

    Rows with a non-finite transformed predictor give NaN everywhere (callers
    set the reason). Returns a dict of arrays keyed like :data:`PREDICTION_COLUMNS`
    (without ``predict_stratum``/``agbd_reason``) plus ``negative`` (bool).
    """
    rh_m = np.asarray(rh_m, dtype=np.float64).reshape(len(rh_m), len(model.rh_index))
    x = transform_x(rh_m, model.x_transform, predictor_offset_m)
    n = x.shape[0]
    design = np.column_stack([np.ones(n), x])
    t = design @ model.par
    q = np.einsum("ij,jk,ik->i", design, model.vcov, design)
    se_t = np.sqrt(model.rse ** 2 + q)
    c = model.bias_correction_value
    ytr = model.y_transform
    agbd = c * back_transform(t, ytr) - response_offset
    if se_method == "l4a":
        agbd_se = c * back_transform(se_t, ytr)
    elif se_method == "delta":
        agbd_se = c * _back_transform_slope(t, ytr) * se_t
    else:
        raise ModelError(f"unknown se_method {se_method!r} (known: {', '.join(SE_METHODS)})")
    tq = float(stats.t.ppf(1.0 - alpha / 2.0, model.dof))
    lo_t = t - tq * se_t
    hi_t = t + tq * se_t
    pi_lower = c * back_transform(lo_t, ytr) - response_offset
    pi_upper = c * back_transform(hi_t, ytr) - response_offset
    negative = np.zeros(n, dtype=bool)
    if _can_be_negative(ytr):
        negative = t < 0
        pi_lower = np.where(lo_t >= 0, pi_lower, np.nan)
        pi_upper = np.where(hi_t >= 0, pi_upper, np.nan)
        if negative_rule == "fill":
            agbd = np.where(negative, np.nan, agbd)
            agbd_se = np.where(negative, np.nan, agbd_se)
        elif negative_rule == "zero":
            agbd = np.where(negative, 0.0, agbd)
        else:
            raise ModelError(f"unknown negative_rule {negative_rule!r} (known: {', '.join(NEGATIVE_RULES)})")
    pmax = np.asarray(model.predictor_max_value, dtype=np.float64)
    above = np.any(x > pmax[None, :], axis=1)
    pflag = np.where(above, 2, 0).astype(np.uint8)
    rflag = np.zeros(n, dtype=np.uint8)
    rflag[agbd > model.response_max_value] = 2
    rflag[negative] = 1
    bad = ~np.all(np.isfinite(x), axis=1)
    for arr in (t, se_t, agbd, agbd_se, pi_lower, pi_upper):
        arr[bad] = np.nan
    pflag[bad] = LIMIT_FLAG_NOT_EVALUATED
    rflag[bad] = LIMIT_FLAG_NOT_EVALUATED
    negative &= ~bad
    return {
        "agbd": agbd, "agbd_se": agbd_se, "agbd_t": t, "agbd_t_se": se_t,
        "agbd_pi_lower": pi_lower, "agbd_pi_upper": pi_upper,
        "predictor_limit_flag": pflag, "response_limit_flag": rflag, "negative": negative,
    }


def fit_stratum_ols(
    name: str,
    rh_m: np.ndarray,
    agbd_mg_ha: np.ndarray,
    rh_index: Sequence[int],
    *,
    x_transform: str = "sqrt",
    y_transform: str = "sqrt",
    bias_correction: str = "snowdon",
    predictor_offset_m: float = L4A_PREDICTOR_OFFSET_M,
    response_offset: float = L4A_RESPONSE_OFFSET_MG_HA,
    min_shots: int = MIN_SHOTS_PER_STRATUM,
) -> StratumModel:
    """OLS fit of one stratum: transformed AGBD on transformed RH (inputs already validated finite)."""
    rh_m = np.asarray(rh_m, dtype=np.float64).reshape(len(agbd_mg_ha), len(rh_index))
    y = np.asarray(agbd_mg_ha, dtype=np.float64)
    npar = len(rh_index) + 1
    n = y.size
    need = max(int(min_shots), npar + 1)
    if n < need:
        raise ModelError(
            f"stratum {name!r} has {n} calibration shots; at least {need} are needed to fit {npar} parameters "
            f"(min_shots_per_stratum={min_shots})"
        )
    x = transform_x(rh_m, x_transform, predictor_offset_m)
    bad_x = ~np.all(np.isfinite(x), axis=1)
    if bad_x.any():
        raise ModelError(f"stratum {name!r}: {int(bad_x.sum())} shots have RH outside the domain of "
                         f"x_transform={x_transform!r} with offset {predictor_offset_m} m")
    if bias_correction not in BIAS_CORRECTIONS:
        raise ModelError(f"unknown bias_correction {bias_correction!r} (known: {', '.join(BIAS_CORRECTIONS)})")
    if bias_correction in ("baskerville", "duan") and y_transform != "log":
        raise ModelError(f"bias_correction={bias_correction!r} is defined for a log response only; "
                         f"use 'snowdon' with y_transform={y_transform!r}")
    yt = transform_y(y, y_transform, response_offset)
    if not np.all(np.isfinite(yt)):
        raise ModelError(f"stratum {name!r}: AGBD values outside the domain of y_transform={y_transform!r}")
    design = np.column_stack([np.ones(n), x])
    rank = np.linalg.matrix_rank(design)
    if rank < npar:
        raise ModelError(f"stratum {name!r}: predictors {list(rh_index)} are collinear or constant "
                         f"(design rank {rank} < {npar})")
    par, *_ = np.linalg.lstsq(design, yt, rcond=None)
    fitted = design @ par
    resid = yt - fitted
    dof = n - npar
    rse = float(np.sqrt(np.sum(resid ** 2) / dof))
    vcov = rse ** 2 * np.linalg.inv(design.T @ design)
    if bias_correction == "snowdon":
        denom = float(np.mean(back_transform(fitted, y_transform)))
        c = float(np.mean(y + response_offset) / denom) if denom > 0 else 1.0
        cname = "Snowdon"
    elif bias_correction == "baskerville":
        c, cname = float(math.exp(rse ** 2 / 2.0)), "Baskerville"
    elif bias_correction == "duan":
        c, cname = float(np.mean(np.exp(resid))), "Duan"
    else:
        c, cname = 1.0, "none"
    return StratumModel(
        predict_stratum=name,
        rh_index=tuple(int(i) for i in rh_index),
        par=par, vcov=vcov, rse=rse, dof=dof,
        bias_correction_value=c, bias_correction_name=cname,
        x_transform=x_transform, y_transform=y_transform,
        predictor_max_value=tuple(float(v) for v in x.max(axis=0)),
        response_max_value=float(y.max()),
        model_name=f"sawa_{name}", fit_stratum=name, n_train=n,
    )


# --------------------------------------------------------------------------- estimator
class L4AModel(RegressorMixin, BaseEstimator):
    """GEDI L4A-form AGBD model: one OLS model per prediction stratum (scikit-learn estimator).

    Parameters
    ----------
    predictors : tuple of int or dict
        RH percentiles used as predictors (e.g. ``(50, 98)`` -> columns ``rh50``,
        ``rh98``), or a dict ``stratum -> tuple`` for per-stratum predictor sets.
    x_transform, y_transform : {"sqrt", "log", "none"}
        Transforms of the predictors (after adding ``predictor_offset_m``) and of AGBD.
    bias_correction : {"snowdon", "baskerville", "duan", "none"}
    predictor_offset_m : float
        Added to RH (m) before the transform (100 in NASA's L4A).
    response_offset : float
        Added to AGBD (Mg/ha) before the transform (0 in NASA's L4A).
    rh_suffix : str
        Suffix of the RH columns: ``""`` -> ``rh98``; ``"_sawa"`` -> ``rh98_sawa``.
    stratum_column : str
        Column of X holding the stratum name (used when ``strata`` is not given).
    min_shots_per_stratum : int
        Fewer calibration shots in a stratum is an error.
    alpha : float
        Prediction interval level 1 - alpha.
    se_method : {"l4a", "delta"}
        ``agbd_se`` as NASA's product (C * se_t**2 for a sqrt model) or by the delta method.
    negative_rule : {"fill", "zero"}
        Negative linear predictor: no AGBD with reason ``negative_prediction`` (fill), or 0 Mg/ha.

    After :meth:`fit` (or :meth:`from_model_table`), ``table_`` holds the
    per-stratum :class:`~biomass.model_data.StratumModel` objects.
    """

    def __init__(
        self,
        predictors: Sequence[int] | Mapping[str, Sequence[int]] = (50, 98),
        x_transform: str = "sqrt",
        y_transform: str = "sqrt",
        bias_correction: str = "snowdon",
        predictor_offset_m: float = L4A_PREDICTOR_OFFSET_M,
        response_offset: float = L4A_RESPONSE_OFFSET_MG_HA,
        rh_suffix: str = "",
        stratum_column: str = "predict_stratum",
        min_shots_per_stratum: int = MIN_SHOTS_PER_STRATUM,
        alpha: float = L4A_ALPHA,
        se_method: str = "l4a",
        negative_rule: str = "fill",
    ):
        self.predictors = predictors
        self.x_transform = x_transform
        self.y_transform = y_transform
        self.bias_correction = bias_correction
        self.predictor_offset_m = predictor_offset_m
        self.response_offset = response_offset
        self.rh_suffix = rh_suffix
        self.stratum_column = stratum_column
        self.min_shots_per_stratum = min_shots_per_stratum
        self.alpha = alpha
        self.se_method = se_method
        self.negative_rule = negative_rule

    # -- construction from NASA's table
    @classmethod
    def from_model_table(cls, table: ModelTable, **params: Any) -> L4AModel:
        """A fitted estimator that predicts with the models of ``table`` (e.g. NASA's)."""
        settings = {
            "predictors": {name: m.rh_index for name, m in table.strata.items()},
            "predictor_offset_m": table.predictor_offset_m,
            "response_offset": table.response_offset,
            "alpha": table.alpha,
        }
        settings.update(params)
        model = cls(**settings)
        model.table_ = table
        return model

    # -- helpers
    def _predictors_for(self, stratum: str) -> tuple[int, ...]:
        p = self.predictors
        if isinstance(p, Mapping):
            if stratum not in p:
                raise StratumError(f"no predictors given for stratum {stratum!r} "
                                   f"(predictors has strata: {', '.join(sorted(p)) or 'none'})")
            return tuple(int(i) for i in p[stratum])
        return tuple(int(i) for i in p)

    def _column(self, rh_index: int) -> str:
        return f"rh{int(rh_index)}{self.rh_suffix}"

    def _as_frame(self, X) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ModelError(f"X must be a DataFrame or a 2-D array, got shape {arr.shape}")
        if isinstance(self.predictors, Mapping):
            raise ModelError("with per-stratum predictors X must be a DataFrame with named RH columns")
        cols = [self._column(i) for i in self._predictors_for(ALL_STRATA)]
        if arr.shape[1] != len(cols):
            raise ModelError(f"X has {arr.shape[1]} columns; predictors {list(self.predictors)} need {len(cols)} "
                             f"({', '.join(cols)})")
        return pd.DataFrame(arr, columns=cols)

    def _resolve_strata(self, X: pd.DataFrame, strata, table: ModelTable | None) -> np.ndarray:
        n = len(X)
        if strata is not None:
            s = np.asarray(strata, dtype=object).reshape(-1)
            if s.size != n:
                raise ModelError(f"strata has {s.size} values for {n} shots")
        elif table is not None and list(table.strata) == [ALL_STRATA]:
            s = np.full(n, ALL_STRATA, dtype=object)  # one model for every shot, whatever the table's strata
        elif self.stratum_column in X.columns:
            s = X[self.stratum_column].to_numpy(dtype=object)
        elif "pft_class" in X.columns and "region_class" in X.columns and table is not None and table.pft_lut:
            s = table.stratum_from_classes(X["pft_class"].to_numpy(), X["region_class"].to_numpy())
        elif table is not None and len(table.strata) == 1:
            s = np.full(n, next(iter(table.strata)), dtype=object)
        elif table is None and not isinstance(self.predictors, Mapping):
            s = np.full(n, ALL_STRATA, dtype=object)
        elif table is None:
            raise ModelError(f"predictors are given per stratum but the calibration table has no "
                             f"{self.stratum_column!r} column: give the strata")
        else:
            known = ", ".join(sorted(table.strata)[:8])
            raise ModelError(
                f"the shot table has neither a {self.stratum_column!r} column nor pft_class + region_class "
                f"columns, and the model has several strata ({known}, ...): give the strata"
            )
        ser = pd.Series(s, dtype=object)
        is_bytes = ser.map(lambda v: isinstance(v, bytes))
        if is_bytes.any():
            ser[is_bytes] = ser[is_bytes].map(lambda v: v.decode("utf-8", "replace"))
        ser = ser.where(ser.notna(), "").astype(str).str.strip()
        return ser.to_numpy(dtype=object)

    def _check_units(self, X: pd.DataFrame, col: str, rows: np.ndarray) -> None:
        v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=np.float64)[rows]
        v = v[np.isfinite(v) & (v > FILL_THRESHOLD_M)]
        if v.size and float(np.median(v)) > RH_MEDIAN_MAX_PLAUSIBLE_M:
            raise ModelError(
                f"column {col} has median {float(np.median(v)):.1f}: RH must be in metres "
                f"(L2A rh_aN datasets are centimetres; divide by 100)"
            )

    # -- fit
    def fit(self, X, y, strata=None) -> L4AModel:
        """Fit one OLS model per stratum. ``y`` is AGBD in Mg/ha (e.g. field plots or simulated truth).

        Every shot must have a stratum, finite predictors and finite AGBD; a
        stratum with too few shots is an error naming it (nothing is dropped).
        """
        X = self._as_frame(X)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.size != len(X):
            raise ModelError(f"y has {y.size} values for {len(X)} shots")
        if y.size == 0:
            raise ModelError("cannot fit on an empty shot table")
        s = self._resolve_strata(X, strata, None)
        if (s == "").any():
            raise ModelError(f"{int((s == '').sum())} calibration shots have no stratum "
                             f"(first at row {int(np.nonzero(s == '')[0][0])})")
        bad_y = ~np.isfinite(y)
        if bad_y.any():
            raise ModelError(f"{int(bad_y.sum())} calibration shots have non-finite AGBD "
                             f"(first at row {int(np.nonzero(bad_y)[0][0])})")
        if np.any(y + self.response_offset < 0):
            raise ModelError(f"{int((y + self.response_offset < 0).sum())} calibration shots have negative AGBD")
        strata_models: dict[str, StratumModel] = {}
        for name in sorted(set(s)):
            rows = np.nonzero(s == name)[0]
            idx = self._predictors_for(name)
            cols = [self._column(i) for i in idx]
            missing = [c for c in cols if c not in X.columns]
            if missing:
                raise ModelError(f"stratum {name!r} needs columns {', '.join(missing)}, absent from the table")
            for c in cols:
                self._check_units(X, c, rows)
            rh = np.column_stack([pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64)[rows]
                                  for c in cols])
            bad = ~np.all(np.isfinite(rh) & (rh > FILL_THRESHOLD_M), axis=1)
            if bad.any():
                raise ModelError(f"stratum {name!r}: {int(bad.sum())} calibration shots have missing or fill "
                                 f"predictors ({', '.join(cols)}), first at row {int(rows[np.nonzero(bad)[0][0]])}")
            strata_models[name] = fit_stratum_ols(
                name, rh, y[rows], idx,
                x_transform=self.x_transform, y_transform=self.y_transform,
                bias_correction=self.bias_correction, predictor_offset_m=self.predictor_offset_m,
                response_offset=self.response_offset, min_shots=self.min_shots_per_stratum,
            )
        self.table_ = ModelTable(
            strata=strata_models,
            predictor_offset_m=float(self.predictor_offset_m),
            response_offset=float(self.response_offset),
            alpha=float(self.alpha),
            provenance={"source": "fitted by sawa (biomass.l4a.L4AModel.fit)", "n_train": int(y.size),
                        "rh_suffix": self.rh_suffix},
        )
        return self

    def _check_fitted(self) -> ModelTable:
        table = getattr(self, "table_", None)
        if table is None:
            raise ModelError("this L4AModel is not fitted: call fit() or L4AModel.from_model_table()")
        return table

    # -- predict
    def predict_frame(self, X, strata=None) -> pd.DataFrame:
        """Per-shot AGBD, SE, fit-unit values, intervals, limit flags and reason (index of X kept).

        Shots without a usable stratum or predictors get NaN and a reason:
        ``no_stratum``, ``unknown_stratum:NAME``, ``missing_predictor:COLS``
        (NaN), ``fill_predictor:COLS`` (GEDI fill such as -9999),
        ``predictor_out_of_domain:COLS`` (RH + offset outside the transform's
        domain), ``negative_prediction``. A required RH column absent from the
        table, or RH apparently in centimetres, is an error.
        """
        table = self._check_fitted()
        X = self._as_frame(X)
        n = len(X)
        s = self._resolve_strata(X, strata, table)
        out = {k: np.full(n, np.nan) for k in ("agbd", "agbd_se", "agbd_t", "agbd_t_se",
                                               "agbd_pi_lower", "agbd_pi_upper")}
        pflag = np.full(n, LIMIT_FLAG_NOT_EVALUATED, dtype=np.uint8)
        rflag = np.full(n, LIMIT_FLAG_NOT_EVALUATED, dtype=np.uint8)
        reason = np.full(n, "", dtype=object)
        reason[s == ""] = "no_stratum"
        present = sorted(set(s) - {""})
        unknown = [name for name in present if name not in table.strata]
        for name in unknown:
            reason[s == name] = f"unknown_stratum:{name}"
        # absent columns are an error naming the strata that need them
        absent: dict[str, list[str]] = {}
        for name in present:
            if name in table.strata:
                for i in table.strata[name].rh_index:
                    col = self._column(i)
                    if col not in X.columns:
                        absent.setdefault(col, []).append(f"{name} ({int((s == name).sum())} shots)")
        if absent:
            detail = "; ".join(f"{c} needed by {', '.join(v)}" for c, v in sorted(absent.items()))
            raise ModelError(f"the shot table lacks RH predictor columns: {detail}. RH columns are "
                             f"rh0..rh100 in metres (rh_suffix={self.rh_suffix!r}; use '_sawa' for SAWA metrics)")
        for name in present:
            if name not in table.strata:
                continue
            model = table.strata[name]
            rows = np.nonzero(s == name)[0]
            cols = [self._column(i) for i in model.rh_index]
            for c in cols:
                self._check_units(X, c, rows)
            rh = np.column_stack([pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64)[rows]
                                  for c in cols])
            fill = (rh <= FILL_THRESHOLD_M) & np.isfinite(rh)
            nan = ~np.isfinite(rh)
            rh_use = np.where(fill | nan, np.nan, rh)
            res = predict_stratum_arrays(
                model, rh_use, predictor_offset_m=table.predictor_offset_m,
                response_offset=table.response_offset, alpha=self.alpha,
                se_method=self.se_method, negative_rule=self.negative_rule,
            )
            xdom = ~np.isfinite(transform_x(rh_use, model.x_transform, table.predictor_offset_m))
            for k in out:
                out[k][rows] = res[k]
            pflag[rows] = res["predictor_limit_flag"]
            rflag[rows] = res["response_limit_flag"]
            flagged = nan.any(axis=1) | fill.any(axis=1) | xdom.any(axis=1)
            for j in np.nonzero(flagged)[0]:
                if nan[j].any():
                    kind, mask = "missing_predictor", nan[j]
                elif fill[j].any():
                    kind, mask = "fill_predictor", fill[j]
                else:
                    kind, mask = "predictor_out_of_domain", xdom[j]
                reason[rows[j]] = kind + ":" + ",".join(c for c, b in zip(cols, mask, strict=True) if b)
            if self.negative_rule == "fill":
                reason[rows[res["negative"] & ~flagged]] = "negative_prediction"
        frame = pd.DataFrame({"predict_stratum": s, **out, "predictor_limit_flag": pflag,
                              "response_limit_flag": rflag, "agbd_reason": reason}, index=X.index)
        return frame

    def predict(self, X, strata=None) -> np.ndarray:
        """AGBD (Mg/ha) per shot; NaN where it cannot be predicted (see :meth:`predict_frame`)."""
        return self.predict_frame(X, strata)["agbd"].to_numpy()

    def predict_se(self, X, strata=None) -> np.ndarray:
        """Prediction standard error of AGBD (Mg/ha) per shot."""
        return self.predict_frame(X, strata)["agbd_se"].to_numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def gedi_l4a_model(**params: Any) -> L4AModel:
    """NASA's GEDI L4A version 2 models (the table shipped with sawa), ready to predict."""
    return L4AModel.from_model_table(load_packaged_model_table(), **params)


__all__ = [
    "L4AModel",
    "gedi_l4a_model",
    "predict_stratum_arrays",
    "fit_stratum_ols",
    "transform_x",
    "inverse_x",
    "transform_y",
    "back_transform",
    "PREDICTION_COLUMNS",
    "BIAS_CORRECTIONS",
    "SE_METHODS",
    "NEGATIVE_RULES",
]
