"""Machine-learning AGBD learners on shot tables, with the interface of :class:`biomass.l4a.L4AModel`.

:class:`RandomForestAGB` and :class:`GradientBoostingAGB` wrap scikit-learn's
``RandomForestRegressor`` and ``GradientBoostingRegressor`` on named feature
columns of a shot table: waveform metrics (``rh50``, ``rh98``, ``cover``, ...),
SAWA metrics (``rh98_sawa``, ...) and terrain covariates (``slope_deg``, ...).
They offer ``fit(X, y)``, ``predict(X)``, ``predict_se(X)``, ``predict_frame(X)``
(AGBD, SE and a per-shot reason) and scikit-learn's ``get_params``/``set_params``.

``predict_se`` is the model's out-of-sample root mean square error (Mg/ha), the
same for every shot: the out-of-bag RMSE for the random forest (each training
shot predicted by the trees that did not see it), and for gradient boosting the
RMSE on a held-out ``se_holdout_fraction`` of the training shots of a model
fitted on the rest (the returned model is then refitted on all shots). For the
random forest, :meth:`RandomForestAGB.predict_spread` gives the per-shot
standard deviation of the tree predictions as a relative indicator.

Shots with a missing (NaN) feature get no prediction and the reason
``missing_feature:COLS``; in ``fit`` any missing value or target is an error.
Without ``feature_columns`` every numeric column of the training table is a feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

from waveform.errors import ModelError


class _ShotLearner(RegressorMixin, BaseEstimator):
    """Common feature handling of the learners (subclasses build ``model_``)."""

    feature_columns: Sequence[str] | None

    def _features(self, X, fitting: bool) -> tuple[np.ndarray, list[str], pd.Index]:
        if isinstance(X, pd.DataFrame):
            if not fitting:
                cols = list(self.feature_names_)
            elif self.feature_columns is not None:
                cols = list(self.feature_columns)
            else:  # every numeric column
                cols = [str(c) for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
            missing = [c for c in cols if c not in X.columns]
            if missing:
                raise ModelError(f"the shot table lacks feature columns {', '.join(missing)} "
                                 f"(model features: {', '.join(cols)})")
            values = np.column_stack([pd.to_numeric(X[c], errors="coerce").to_numpy(dtype=np.float64)
                                      for c in cols]) if cols else np.empty((len(X), 0))
            return values, cols, X.index
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise ModelError(f"X must be a DataFrame or a 2-D array, got shape {arr.shape}")
        if fitting:
            cols = list(self.feature_columns) if self.feature_columns is not None else [
                f"x{j}" for j in range(arr.shape[1])]
        else:
            cols = list(self.feature_names_)
        if arr.shape[1] != len(cols):
            raise ModelError(f"X has {arr.shape[1]} columns; the model uses {len(cols)} ({', '.join(cols)})")
        return arr, cols, pd.RangeIndex(arr.shape[0])

    def _fit_checks(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        values, cols, _ = self._features(X, fitting=True)
        if not cols:
            raise ModelError("no feature columns to fit on")
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.size != values.shape[0]:
            raise ModelError(f"y has {y.size} values for {values.shape[0]} shots")
        if y.size < 2:
            raise ModelError(f"cannot fit a learner on {y.size} shots")
        bad = ~np.isfinite(values)
        if bad.any():
            counts = {c: int(n) for c, n in zip(cols, bad.sum(axis=0), strict=True) if n}
            raise ModelError(f"{int(bad.any(axis=1).sum())} training shots have missing features: "
                             + ", ".join(f"{c} ({n})" for c, n in counts.items()))
        if not np.all(np.isfinite(y)):
            raise ModelError(f"{int((~np.isfinite(y)).sum())} training shots have a non-finite target")
        self.feature_names_ = cols
        self.n_features_in_ = len(cols)
        self.n_train_ = int(y.size)
        return values, y

    def _check_fitted(self) -> None:
        if getattr(self, "model_", None) is None:
            raise ModelError(f"this {type(self).__name__} is not fitted: call fit() first")

    def predict_frame(self, X) -> pd.DataFrame:
        """``agbd`` (Mg/ha), ``agbd_se`` (Mg/ha) and ``agbd_reason`` ('' when predicted) per shot."""
        self._check_fitted()
        values, cols, index = self._features(X, fitting=False)
        n = values.shape[0]
        ok = np.all(np.isfinite(values), axis=1)
        agbd = np.full(n, np.nan)
        if ok.any():
            agbd[ok] = self.model_.predict(values[ok])
        se = np.where(ok, self.rmse_, np.nan)
        reason = np.full(n, "", dtype=object)
        for i in np.nonzero(~ok)[0]:
            reason[i] = "missing_feature:" + ",".join(c for c, v in zip(cols, values[i], strict=True)
                                                      if not np.isfinite(v))
        return pd.DataFrame({"agbd": agbd, "agbd_se": se, "agbd_reason": reason}, index=index)

    def predict(self, X) -> np.ndarray:
        """AGBD (Mg/ha) per shot; NaN for shots with a missing feature."""
        return self.predict_frame(X)["agbd"].to_numpy()

    def predict_se(self, X) -> np.ndarray:
        """Out-of-sample RMSE (Mg/ha) per predicted shot (see module docstring)."""
        return self.predict_frame(X)["agbd_se"].to_numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class RandomForestAGB(_ShotLearner):
    """Random-forest AGBD learner on named shot-table features (scikit-learn ``RandomForestRegressor``)."""

    def __init__(self, feature_columns: Sequence[str] | None = None, n_estimators: int = 200,
                 max_features: float | str | None = 1.0 / 3.0, min_samples_leaf: int = 5,
                 max_depth: int | None = None, random_state: int | None = 0, n_jobs: int | None = 1):
        self.feature_columns = feature_columns
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y) -> RandomForestAGB:
        values, y = self._fit_checks(X, y)
        if self.n_estimators < 10:
            raise ModelError(f"n_estimators={self.n_estimators}: the out-of-bag SE needs at least 10 trees")
        model = RandomForestRegressor(
            n_estimators=self.n_estimators, max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf, max_depth=self.max_depth,
            oob_score=True, bootstrap=True, random_state=self.random_state, n_jobs=self.n_jobs,
        )
        import warnings

        with warnings.catch_warnings():
            # shots that are in-bag for every tree have no OOB prediction: excluded below
            warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
            model.fit(values, y)
        in_bag = np.zeros(y.size, dtype=np.int64)
        for sample in model.estimators_samples_:
            in_bag[np.unique(sample)] += 1
        ok = in_bag < len(model.estimators_)
        if ok.sum() < 2:
            raise ModelError("too few out-of-bag shots to estimate the random forest's SE; use more trees")
        oob = model.oob_prediction_
        self.rmse_ = float(np.sqrt(np.mean((oob[ok] - y[ok]) ** 2)))
        self.model_ = model
        return self

    def predict_spread(self, X) -> np.ndarray:
        """Per-shot standard deviation (Mg/ha) of the individual tree predictions."""
        self._check_fitted()
        values, _, _ = self._features(X, fitting=False)
        ok = np.all(np.isfinite(values), axis=1)
        out = np.full(values.shape[0], np.nan)
        if ok.any():
            per_tree = np.stack([t.predict(values[ok]) for t in self.model_.estimators_])
            out[ok] = per_tree.std(axis=0)
        return out


class GradientBoostingAGB(_ShotLearner):
    """Gradient-boosting AGBD learner on named shot-table features (``GradientBoostingRegressor``)."""

    def __init__(self, feature_columns: Sequence[str] | None = None, n_estimators: int = 200,
                 learning_rate: float = 0.05, max_depth: int = 3, subsample: float = 0.8,
                 min_samples_leaf: int = 5, se_holdout_fraction: float = 0.2, random_state: int | None = 0):
        self.feature_columns = feature_columns
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.min_samples_leaf = min_samples_leaf
        self.se_holdout_fraction = se_holdout_fraction
        self.random_state = random_state

    def _new(self) -> GradientBoostingRegressor:
        return GradientBoostingRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, max_depth=self.max_depth,
            subsample=self.subsample, min_samples_leaf=self.min_samples_leaf, random_state=self.random_state,
        )

    def fit(self, X, y) -> GradientBoostingAGB:
        values, y = self._fit_checks(X, y)
        if not 0.0 < self.se_holdout_fraction < 1.0:
            raise ModelError(f"se_holdout_fraction must be in (0, 1), got {self.se_holdout_fraction}")
        n = y.size
        n_hold = max(1, int(round(n * self.se_holdout_fraction)))
        if n - n_hold < 2:
            raise ModelError(f"{n} shots are too few for a held-out SE estimate")
        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(n)
        hold, train = perm[:n_hold], perm[n_hold:]
        probe = self._new().fit(values[train], y[train])
        self.rmse_ = float(np.sqrt(np.mean((probe.predict(values[hold]) - y[hold]) ** 2)))
        self.model_ = self._new().fit(values, y)
        return self


__all__ = ["RandomForestAGB", "GradientBoostingAGB"]
