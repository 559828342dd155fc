"""Wall-to-wall AGB maps from footprint AGBD and optical/terrain covariate rasters.

1. :func:`fit_optical_model`: covariate rasters (tree cover, NDVI-like indices, land cover, DEM,
   slope, carbon products; any CRS and resolution) are aligned lazily on the target grid
   (:func:`fusion.align.align_to_grid`) and sampled at the target cell holding each footprint
   (the same values the map prediction will see); a scikit-learn regressor is fitted to the
   footprint AGBD (Mg/ha).
2. Uncertainty: residuals of a *spatially blocked* K-fold cross-validation (footprints grouped
   in square blocks of ``cv_block_m``, so neighbours along a track never sit on both sides of a
   split: random K-fold would be optimistic under spatial autocorrelation; Roberts et al. 2017,
   Ecography 40:913, doi:10.1111/ecog.02881). The RMS of the CV residuals is estimated in
   ``se_bins`` quantile bins of the CV prediction and interpolated linearly in the predicted AGB
   (heteroscedastic: errors grow with biomass). The SE layer is therefore the standard error of
   a *footprint-scale* (25 m) AGBD prediction from the covariates of that pixel; a pixel mean
   over a larger pixel varies less, so for pixel means it is conservative.
   We do not use the spread of the per-tree predictions of a random forest: it reflects only
   the variance of the ensemble, not the residual error, and is far too narrow as a prediction SE.
3. :func:`predict_map`: block by block (``block_px`` square windows via
   :func:`terrain.rasters.block_windows`), each block read from the warped stack, predicted and
   written into open GeoTIFFs (AGB and SE, float32 Mg/ha, nodata -9999 where any covariate is
   missing) inside :func:`waveform.outputs.atomic_path`; memory is one block of covariates.

Learners: ``"random-forest"`` (:class:`sklearn.ensemble.RandomForestRegressor`) and
``"gradient-boosting"`` (:class:`sklearn.ensemble.HistGradientBoostingRegressor`), created by a
small adapter here (:func:`make_learner`) until the shared wrappers of ``biomass/learners.py``
exist; any fitted-or-unfitted scikit-learn regressor instance is also accepted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from sklearn.base import clone

from waveform.errors import ModelError, NoOverlapError, SawaValueError

from .align import AlignedStack, align_to_grid, iter_blocks, open_block_writer
from .grid import GRID_NODATA, LONLAT_COLUMNS, GridSpec

log = logging.getLogger(__name__)

#: Learner names accepted by :func:`make_learner`.
LEARNERS = ("random-forest", "gradient-boosting")
#: Random-forest settings: 100 trees; leaves of >= 5 footprints smooth the noisy footprint
#: labels (GEDI footprint AGBD has ~50-100 % residual error) and bound the model size.
RF_PARAMS = {"n_estimators": 100, "min_samples_leaf": 5, "max_features": 1.0}
#: Histogram gradient boosting settings (scikit-learn defaults except the leaf size).
HGB_PARAMS = {"max_iter": 200, "learning_rate": 0.1, "min_samples_leaf": 20}
#: Default spatial CV block side (m): larger than the 600 m GEDI beam spacing, so whole
#: neighbouring track segments are held out together.
DEFAULT_CV_BLOCK_M = 2000.0
#: Default number of CV folds and of predicted-AGB bins of the residual SE model.
DEFAULT_CV_FOLDS = 5
DEFAULT_SE_BINS = 10
#: Minimum footprints per SE bin (fewer bins are used when there are fewer footprints).
MIN_PER_SE_BIN = 30
#: Metres per degree of latitude and of longitude at the equator (WGS84, rounded; for sizing
#: CV blocks on geographic grids only).
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQUATOR = 111_320.0
#: GDAL block cache (MB) while predicting a map. Blocks written to the two outputs stay in
#: GDAL's cache until evicted; its default (5 % of RAM) let a 10000 x 10000 map grow the process
#: by 1.4 GB, with 256 MB the peak stays ~250 MB above the fitted model whatever the map size
#: (plus GDAL's warp buffer, 64 MB per reprojected covariate).
PREDICT_GDAL_CACHE_MB = 256
#: Output nodata (same as the gridded product).
MAP_NODATA = GRID_NODATA


def _threads(n_jobs: int | None):
    """Limit OpenMP threads (HistGradientBoosting) to ``n_jobs`` (default 1).

    With a few thousand footprints, two OpenMP threads were 5x slower than one on the 2-core
    test machine (thread synchronisation per tree node dominates); pass ``n_jobs`` for large sets.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, n_jobs or 1), user_api="openmp")


def make_learner(learner: str | Any = "random-forest", seed: int = 0, n_jobs: int | None = None):
    """A scikit-learn regressor from a name in :data:`LEARNERS`, or a clone of an estimator instance."""
    if not isinstance(learner, str):
        if not (hasattr(learner, "fit") and hasattr(learner, "predict")):
            raise ModelError(f"learner {learner!r} is not a scikit-learn regressor (needs fit and predict)")
        return clone(learner)
    if learner == "random-forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(random_state=seed, n_jobs=n_jobs, **RF_PARAMS)
    if learner == "gradient-boosting":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=seed, **HGB_PARAMS)
    raise ModelError(f"unknown learner {learner!r}; use one of {LEARNERS} or a scikit-learn regressor")


@dataclass
class ResidualSE:
    """Standard error (Mg/ha) as a piecewise-linear function of the predicted AGB (Mg/ha)."""

    predicted_mg_ha: np.ndarray
    rmse_mg_ha: np.ndarray

    @classmethod
    def from_cv(cls, predicted: np.ndarray, observed: np.ndarray, n_bins: int = DEFAULT_SE_BINS) -> ResidualSE:
        predicted = np.asarray(predicted, dtype=np.float64)
        resid = np.asarray(observed, dtype=np.float64) - predicted
        n_bins = int(max(1, min(n_bins, predicted.size // MIN_PER_SE_BIN)))
        edges = np.quantile(predicted, np.linspace(0.0, 1.0, n_bins + 1))
        which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, n_bins - 1)
        centre = np.bincount(which, weights=predicted, minlength=n_bins)
        count = np.bincount(which, minlength=n_bins)
        sq = np.bincount(which, weights=resid * resid, minlength=n_bins)
        ok = count > 0
        return cls(centre[ok] / count[ok], np.sqrt(sq[ok] / count[ok]))

    def __call__(self, predicted: np.ndarray) -> np.ndarray:
        return np.interp(predicted, self.predicted_mg_ha, self.rmse_mg_ha)

    def as_dict(self) -> dict[str, list[float]]:
        return {"predicted_mg_ha": self.predicted_mg_ha.round(3).tolist(),
                "rmse_mg_ha": self.rmse_mg_ha.round(3).tolist()}


@dataclass
class OpticalModel:
    """A fitted covariates -> AGBD (Mg/ha) regressor, with its grid, layers and residual SE model."""

    learner: Any
    learner_name: str
    covariate_names: list[str]
    covariate_paths: dict[str, Path]
    resampling: dict[str, str]
    grid: GridSpec
    se_model: ResidualSE
    info: dict[str, Any] = field(default_factory=dict)
    #: source rasters as given to the fit (name -> path; a multi-band source gives several layers)
    sources: dict[str, Path] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """AGBD (Mg/ha, clipped at 0) for a (n, covariates) feature matrix."""
        x = np.asarray(features)
        if x.ndim != 2 or x.shape[1] != len(self.covariate_names):
            raise SawaValueError(f"features must be (n, {len(self.covariate_names)}) for covariates "
                                 f"{self.covariate_names}, got {x.shape}")
        return np.maximum(self.learner.predict(x), 0.0)

    def predict_se(self, predicted: np.ndarray) -> np.ndarray:
        return self.se_model(predicted)


# --- shots -------------------------------------------------------------------------------------
def _shots_frame(shots, agbd_column: str, quality_column: str | None) -> tuple[np.ndarray, ...]:
    """lon, lat, agbd arrays from a DataFrame/GeoDataFrame or a (Geo)Parquet path; counts dropped."""
    if isinstance(shots, (str, os.PathLike)):
        path = Path(shots)
        import pyarrow.parquet as pq

        from .grid import _open_parquet, lonlat_columns

        pf = _open_parquet(path)
        names = pf.schema_arrow.names
        pair = lonlat_columns(path, names)
        cols = [agbd_column] + (list(pair) if pair else ["geometry"])
        if quality_column and quality_column in names:
            cols.append(quality_column)
        if agbd_column not in names:
            raise SawaValueError(f"shot table {path} has no column {agbd_column!r}")
        table = pq.read_table(path, columns=list(dict.fromkeys(cols)))
        df = table.to_pandas()
        if pair is None:
            import shapely

            g = shapely.from_wkb(df["geometry"].to_numpy())
            df["longitude"], df["latitude"] = shapely.get_x(g), shapely.get_y(g)
            pair = ("longitude", "latitude")
        label = str(path)
    elif isinstance(shots, pd.DataFrame):
        df = shots
        label = "shots"
        pair = next(((a, b) for a, b in LONLAT_COLUMNS if a in df.columns and b in df.columns), None)
        if pair is None:
            if "geometry" in df.columns and hasattr(df, "to_crs"):
                gdf = df.to_crs("EPSG:4326") if df.crs is not None else df
                df = pd.DataFrame({agbd_column: gdf[agbd_column].to_numpy(), "longitude": gdf.geometry.x.to_numpy(),
                                   "latitude": gdf.geometry.y.to_numpy(),
                                   **({quality_column: gdf[quality_column].to_numpy()}
                                      if quality_column and quality_column in gdf.columns else {})})
                pair = ("longitude", "latitude")
            else:
                raise SawaValueError(f"shots have no longitude/latitude columns {LONLAT_COLUMNS} and no geometry")
        if agbd_column not in df.columns:
            raise SawaValueError(f"shots have no column {agbd_column!r}; columns: {list(df.columns)[:20]}")
    else:
        raise SawaValueError(f"shots must be a DataFrame/GeoDataFrame or a Parquet path, got {type(shots).__name__}")
    lon = df[pair[0]].to_numpy(dtype=np.float64)
    lat = df[pair[1]].to_numpy(dtype=np.float64)
    agbd = df[agbd_column].to_numpy(dtype=np.float64)
    keep = np.ones(agbd.size, dtype=bool)
    if quality_column and quality_column in df.columns:
        keep = df[quality_column].to_numpy().astype(bool)
    return lon, lat, agbd, keep, label


def _cv_block_px(grid: GridSpec, block_m: float) -> tuple[int, int]:
    rx, ry = grid.res
    if grid.is_lonlat:
        lat_c = 0.5 * (grid.bounds[1] + grid.bounds[3])
        mx = rx * M_PER_DEG_LON_EQUATOR * max(math.cos(math.radians(lat_c)), 1e-6)
        my = ry * M_PER_DEG_LAT
    else:
        mx, my = rx, ry
    return max(1, int(round(block_m / mx))), max(1, int(round(block_m / my)))


def fit_optical_model(
    shots,
    covariates: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    grid: GridSpec | str | os.PathLike | None = None,
    learner: str | Any = "random-forest",
    *,
    agbd_column: str = "agbd",
    quality_column: str | None = "quality",
    resampling: str | Sequence[str] | Mapping[str, str] = "auto",
    cv_folds: int = DEFAULT_CV_FOLDS,
    cv_block_m: float = DEFAULT_CV_BLOCK_M,
    se_bins: int = DEFAULT_SE_BINS,
    seed: int = 0,
    n_jobs: int | None = None,
) -> OpticalModel:
    """Fit covariates -> footprint AGBD (Mg/ha) on the target ``grid`` (default: grid of the first covariate).

    ``shots``: DataFrame/GeoDataFrame or GeoParquet path with AGBD and lon/lat (or geometry);
    rows with ``quality_column`` False (when present), NaN AGBD, outside the grid or with a
    missing covariate are dropped and counted in ``model.info``. Spatially blocked CV gives the
    accuracy figures (``info['cv_r2']``, ``info['cv_rmse_mg_ha']``) and the residual SE model.
    """
    from sklearn.model_selection import GroupKFold

    if grid is None:
        first = next(iter(covariates.values())) if isinstance(covariates, Mapping) else (
            covariates if isinstance(covariates, (str, os.PathLike)) else covariates[0])
        grid = GridSpec.like(first)
    elif not isinstance(grid, GridSpec):
        grid = GridSpec.like(grid)
    lon, lat, agbd, keep, label = _shots_frame(shots, agbd_column, quality_column)
    info: dict[str, Any] = {"n_shots": int(agbd.size), "n_quality_dropped": int((~keep).sum())}
    finite = keep & np.isfinite(agbd) & np.isfinite(lon) & np.isfinite(lat)
    info["n_nan_dropped"] = int((keep & ~finite).sum())
    lon, lat, agbd = lon[finite], lat[finite], agbd[finite]
    with align_to_grid(covariates, grid, resampling) as stack:
        names = stack.names
        x, y = grid.project_lonlat(lon, lat)
        flat = grid.cell_index(x, y)
        inside = flat >= 0
        info["n_outside_grid"] = int((~inside).sum())
        rows, cols = flat[inside] // grid.width, flat[inside] % grid.width
        feats = stack.sample_cells(rows, cols)
        layer_resampling = {layer.name: layer.resampling for layer in stack.layers}
        layer_paths = {layer.name: layer.path for layer in stack.layers}
        source_names = list(covariates) if isinstance(covariates, Mapping) else None
        sources: dict[str, Path] = {}
        for layer in stack.layers:   # one entry per source file, in order
            if Path(layer.path) not in sources.values():
                key = source_names[len(sources)] if source_names else Path(layer.path).stem
                sources[key] = Path(layer.path)
    agbd = agbd[inside]
    complete = np.isfinite(feats).all(axis=1)
    info["n_missing_covariate"] = int((~complete).sum())
    if info["n_missing_covariate"]:
        missing_by = {nm: int((~np.isfinite(feats[:, j])).sum()) for j, nm in enumerate(names)}
        log.info("%d footprints dropped for missing covariates: %s", info["n_missing_covariate"], missing_by)
        info["missing_by_covariate"] = missing_by
    feats, agbd, rows, cols = feats[complete], agbd[complete], rows[complete], cols[complete]
    info["n_train"] = int(agbd.size)
    if agbd.size < 2 * max(cv_folds, 2):
        raise NoOverlapError(
            f"only {agbd.size} footprints of {label} have AGBD and all covariates on the target grid "
            f"({info}); need at least {2 * max(cv_folds, 2)}")

    # spatially blocked cross-validation
    bx, by = _cv_block_px(grid, cv_block_m)
    groups = (rows // by) * ((grid.width + bx - 1) // bx) + cols // bx
    n_groups = int(np.unique(groups).size)
    if n_groups < 2:
        raise ModelError(f"all {agbd.size} training footprints fall in one {cv_block_m:g} m CV block; "
                         f"use a smaller cv_block_m")
    folds = min(cv_folds, n_groups)
    cv_pred = np.empty_like(agbd)
    t0 = time.perf_counter()
    with _threads(n_jobs):
        for train, test in GroupKFold(n_splits=folds).split(feats, agbd, groups):
            est = make_learner(learner, seed, n_jobs).fit(feats[train], agbd[train])
            cv_pred[test] = np.maximum(est.predict(feats[test]), 0.0)
    resid = agbd - cv_pred
    ss_tot = float(np.sum((agbd - agbd.mean()) ** 2))
    info.update(
        cv_folds=folds, cv_block_m=float(cv_block_m), cv_blocks=n_groups,
        cv_r2=float(1.0 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else float("nan"),
        cv_rmse_mg_ha=float(np.sqrt(np.mean(resid**2))), cv_bias_mg_ha=float(np.mean(cv_pred - agbd)),
        cv_seconds=round(time.perf_counter() - t0, 3),
    )
    se_model = ResidualSE.from_cv(cv_pred, agbd, se_bins)
    with _threads(n_jobs):
        final = make_learner(learner, seed, n_jobs).fit(feats, agbd)
    learner_name = learner if isinstance(learner, str) else type(learner).__name__
    info["n_jobs"] = n_jobs
    info["learner_params"] = {k: v for k, v in final.get_params().items() if isinstance(v, (int, float, str, bool))}
    return OpticalModel(final, learner_name, names, layer_paths, layer_resampling, grid, se_model, info, sources)


@dataclass
class MapResult:
    """What :func:`predict_map` wrote."""

    agb_path: Path
    se_path: Path
    grid: GridSpec
    n_pixels: int
    n_predicted: int
    agb_mean_mg_ha: float
    block_px: int
    max_block_bytes: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"agb_path": str(self.agb_path), "se_path": str(self.se_path), "grid": self.grid.as_dict(),
                "n_pixels": self.n_pixels, "n_predicted": self.n_predicted,
                "agb_mean_mg_ha": self.agb_mean_mg_ha, "block_px": self.block_px,
                "max_block_bytes": self.max_block_bytes, "seconds": self.seconds}


def default_se_path(out_path: str | os.PathLike) -> Path:
    """``agb.tif`` -> ``agb_se.tif``."""
    p = Path(out_path)
    return p.with_name(f"{p.stem}_se{p.suffix or '.tif'}")


def predict_map(
    model: OpticalModel,
    covariates: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | None,
    grid: GridSpec | str | os.PathLike | None,
    out_path: str | os.PathLike,
    se_out_path: str | os.PathLike | None = None,
    block_px: int = 512,
    tags: Mapping[str, str] | None = None,
    gdal_cache_mb: int | None = PREDICT_GDAL_CACHE_MB,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = False,
) -> MapResult:
    """Predict AGB (Mg/ha) and its SE on ``grid`` block by block; write two float32 GeoTIFFs.

    ``covariates``: the model's layers by name (mapping, or paths in the model's order); None
    reuses the training rasters. ``grid``: None = the training grid. ``se_out_path`` defaults
    to ``<out>_se.tif``. Pixels where any covariate is missing are nodata (-9999).
    Memory: one block of covariates plus GDAL's cache, set to ``gdal_cache_mb`` (None: GDAL's
    setting, ``GDAL_CACHEMAX``).

    ``workers`` > 1 (a LocalCluster) or ``scheduler`` (an existing Dask cluster): blocks are
    predicted as Dask tasks (:func:`fusion.parallel.run_tasks`), each opening the covariates
    itself, and written here as they arrive; the output is identical to the serial run.
    """
    if grid is None:
        grid = model.grid
    elif not isinstance(grid, GridSpec):
        grid = GridSpec.like(grid)
    # covariates are named per source file (a multi-band source gives several layers of the model)
    sources = model.sources or {nm: Path(model.covariate_paths[nm]) for nm in model.covariate_names}
    if covariates is None:
        covariates = dict(sources)
    elif isinstance(covariates, Mapping):
        extra = set(covariates) - set(sources)
        lacking = [nm for nm in sources if nm not in covariates]
        if extra or lacking:
            raise ModelError(f"covariates {sorted(covariates)} do not match the model's {list(sources)} "
                             f"(missing {lacking}, unknown {sorted(extra)})")
        covariates = {nm: covariates[nm] for nm in sources}
    else:
        covariates = list(covariates)
        if len(covariates) != len(sources):
            raise ModelError(f"{len(covariates)} covariate rasters for a model of {len(sources)} covariate "
                             f"sources {list(sources)}")
        covariates = dict(zip(sources, covariates, strict=True))
    first_layer: dict[Path, str] = {}
    for layer_name, path in model.covariate_paths.items():
        first_layer.setdefault(Path(path), layer_name)
    resampling = [model.resampling.get(first_layer.get(Path(sources[nm]), nm), "auto") for nm in covariates]
    if block_px <= 0:
        raise SawaValueError(f"block_px must be > 0, got {block_px}")
    se_out_path = Path(se_out_path) if se_out_path is not None else default_se_path(out_path)
    if Path(se_out_path).resolve() == Path(out_path).resolve():
        raise SawaValueError(f"AGB and SE outputs are the same file {out_path}")
    base_tags = {
        "UNITS": "Mg/ha",
        "LEARNER": model.learner_name,
        "COVARIATES": ",".join(model.covariate_names),
        "CV_R2": f"{model.info.get('cv_r2', float('nan')):.4f}",
        "CV_RMSE_MG_HA": f"{model.info.get('cv_rmse_mg_ha', float('nan')):.3f}",
        **(tags or {}),
    }
    t0 = time.perf_counter()
    env = {} if gdal_cache_mb is None else {"GDAL_CACHEMAX": int(gdal_cache_mb) * 2**20}
    with rasterio.Env(**env), align_to_grid(covariates, grid, resampling) as stack, \
            open_block_writer(out_path, grid, nodata=MAP_NODATA, band_names=["agb_mg_ha"],
                              tags={**base_tags, "DESCRIPTION": "predicted above-ground biomass density"}) as agb_dst, \
            open_block_writer(se_out_path, grid, nodata=MAP_NODATA, band_names=["agb_se_mg_ha"],
                              tags={**base_tags, "DESCRIPTION": "standard error of a footprint-scale AGBD "
                                    "prediction (spatial block CV residuals vs predicted AGB)",
                                    "SE_MODEL": str(model.se_model.as_dict())}) as se_dst:
        windows = list(iter_blocks(grid, block_px))
        sums = {"n": 0, "total": 0.0, "bytes": 0}

        def put(window, agb, se, ok) -> None:
            sums["bytes"] = max(sums["bytes"], agb.nbytes * 2 + ok.size * 4 * stack.count)
            sums["n"] += int(ok.sum())
            sums["total"] += float(agb[ok].sum(dtype=np.float64))
            agb_dst.write(np.where(ok, agb, MAP_NODATA).astype(np.float32), 1, window=window)
            se_dst.write(np.where(ok, se, MAP_NODATA).astype(np.float32), 1, window=window)

        if workers == 1 and not scheduler:
            for window in windows:
                with _threads(model.info.get("n_jobs")):
                    put(window, *_predict_block(model, stack, window))
        else:
            from functools import partial

            from .parallel import run_tasks

            task = partial(_predict_window_task, model, dict(covariates), resampling, grid, env)
            run_tasks(task, windows, scheduler=scheduler, workers=workers, progress=progress, desc="map blocks",
                      on_result=lambda i, res: put(windows[i], *res))
        n_pred, total, max_bytes = sums["n"], sums["total"], sums["bytes"]
    if n_pred == 0:
        log.warning("no pixel of %s has all covariates %s: the map is all nodata", out_path, model.covariate_names)
    return MapResult(Path(out_path), Path(se_out_path), grid, grid.width * grid.height, n_pred,
                     total / n_pred if n_pred else float("nan"), block_px, max_bytes,
                     round(time.perf_counter() - t0, 3))


def _predict_window_task(model: OpticalModel, covariates: dict, resampling, grid: GridSpec, env: dict,
                         window) -> tuple[np.ndarray, ...]:
    """One block on a Dask worker: open the covariates, predict, return (agb, se, ok)."""
    with rasterio.Env(**env), align_to_grid(covariates, grid, resampling) as stack, _threads(1):
        return _predict_block(model, stack, window)


def _predict_block(model: OpticalModel, stack: AlignedStack, window) -> tuple[np.ndarray, ...]:
    data = stack.read(window)  # (layers, h, w) float32
    ok = np.isfinite(data).all(axis=0)
    agb = np.zeros(ok.shape, dtype=np.float32)
    se = np.zeros(ok.shape, dtype=np.float32)
    if ok.any():
        feats = data[:, ok].T
        pred = model.predict(feats)
        agb[ok] = pred
        se[ok] = model.predict_se(pred)
    return agb, se, ok


__all__ = [
    "OpticalModel",
    "ResidualSE",
    "MapResult",
    "fit_optical_model",
    "predict_map",
    "make_learner",
    "default_se_path",
    "LEARNERS",
]
