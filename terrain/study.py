"""Accuracy study of terrain corrections against simulated truth (``sawa study slope``).

Design
------
Each forest stand (canopy height 5-50 m, cover from :data:`~terrain.constants.STUDY_COVERS`,
crown shape ellipsoid / cone / cylinder) is simulated twice with
:func:`waveform.simulate.simulate_waveforms` (25 m footprint, the GEDI pulse,
noise 3 counts): on flat ground and on a plane of slope ``s`` drawn uniformly
inside its 5-degree bin (0-50 deg, >= 200 stands per bin), random aspect. The
*terrain-induced error* of a metric is its value on the slope minus its value
for the same stand on flat ground. Per metric (RH25/50/75/98) and bin:

* ``raw``: RH from the ground mode (:func:`waveform.metrics.compute_metrics`, a1);
* ``sawa``: the published SAWA metric ``H_p - Hg_p`` (:func:`terrain.sawa.sawa_metrics`);
* ``edge``: the edge-extent baseline: ``RH_p,flat ~ c0 + c1 RH_p + c2 LEE + c3 TEE
  + c4 TI`` (Lefsky 2005/2007 family, :func:`terrain.sawa.fit_edge_extent`) fitted by
  least squares with two-fold cross-validation over stands (each half predicted
  by the model of the other half), applied to both twins; TI = ``D tan(slope)``,
  the relief of a plane across the footprint;
* ``deconv``: sawa's improvement, RH of the terrain-deconvolved waveform
  (:func:`terrain.sawa.deconvolved_metrics`);
* ``sawa_tg`` (diagnostic, needs the simulator's truth): SAWA whose bare-ground
  models get the true ground energy instead of the waveform's ``rg`` estimate,
  which separates SAWA's two error sources (energy estimate vs the method).

``bias = mean(error)``, ``rmse = sqrt(mean(error^2))``, ``medae = median(|error|)``
(robust to the few stands whose ground is lost) over the stands where both
twins have the metric (``n_<method>`` counts them; stands without are reported,
not hidden). AGB: each stand's true AGB from :data:`~terrain.constants.STUDY_ALLOMETRY`;
for each method ``sqrt(AGB) = b0 + sum b_p RH_p`` (p = 25, 50, 75, 98, as GEDI L4A
models) is fitted on the flat twins and applied to the slope twins; RMSE (Mg/ha)
per bin.

Outputs in DIR: ``slope_study.csv`` (one row per metric and bin), ``slope_study_agb.csv``,
``slope_study_stands.parquet`` (per stand and method), ``slope_study.png``,
``slope_study_agb.png``, ``slope_study_summary.json`` (goals on bins >= 20 deg)
and ``manifest.json``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from waveform.errors import SawaValueError
from waveform.metrics import compute_metrics
from waveform.outputs import atomic_path, build_manifest, write_json_atomic

from .constants import (
    GOAL_BIAS_REDUCTION,
    GOAL_FLAT_ADDED_M,
    GOAL_RMSE_REDUCTION,
    STUDY_ALLOMETRY,
    STUDY_CANOPY_HEIGHT_RANGE_M,
    STUDY_COVERS,
    STUDY_CROWN_SHAPES,
    STUDY_METRICS,
    STUDY_SLOPE_EDGES_DEG,
    STUDY_STANDS_PER_BIN,
    STUDY_STEEP_FROM_DEG,
)
from .sawa import apply_edge_extent, deconvolved_metrics, fit_edge_extent, sawa_metrics

METHODS = ("raw", "sawa", "edge", "deconv", "sawa_tg")
METHOD_LABELS = {
    "raw": "raw RH (ground mode)",
    "sawa": "SAWA (Wang et al. 2019)",
    "edge": "edge-extent (Lefsky 2005/2007, fitted)",
    "deconv": "terrain-deconvolved RH (sawa)",
    "sawa_tg": "SAWA with the true ground energy (diagnostic)",
}


@dataclass(frozen=True)
class SlopeStudyConfig:
    """Parameters of the slope study (defaults: the full study)."""

    slope_edges_deg: tuple[float, ...] = STUDY_SLOPE_EDGES_DEG
    stands_per_bin: int = STUDY_STANDS_PER_BIN
    canopy_height_range_m: tuple[float, float] = STUDY_CANOPY_HEIGHT_RANGE_M
    covers: tuple[float, ...] = STUDY_COVERS
    crown_shapes: tuple[str, ...] = STUDY_CROWN_SHAPES
    metrics: tuple[int, ...] = STUDY_METRICS
    footprint_diameter_m: float = 25.0
    noise_sd: float = 3.0
    algorithm: str = "a1"
    #: sd (deg) of an error added to the slope handed to the corrections (DEM slope error); 0 = true slope
    slope_error_deg: float = 0.0
    seed: int = 20190217
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        edges = np.asarray(self.slope_edges_deg, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0 or edges[-1] >= 85:
            raise SawaValueError(f"slope_edges_deg must increase within [0, 85) degrees, got {self.slope_edges_deg}")
        if self.stands_per_bin < 4:
            raise SawaValueError(f"stands_per_bin must be >= 4, got {self.stands_per_bin}")
        lo, hi = self.canopy_height_range_m
        if not (0 < lo < hi):
            raise SawaValueError(f"canopy_height_range_m must be (low, high) with 0 < low < high, got {(lo, hi)}")
        if not self.covers or any(not (0 < c < 1) for c in self.covers):
            raise SawaValueError(f"covers must be in (0, 1), got {self.covers}")
        if self.slope_error_deg < 0:
            raise SawaValueError(f"slope_error_deg must be >= 0, got {self.slope_error_deg}")


@dataclass
class SlopeStudyResult:
    table: pd.DataFrame  # one row per (metric, bin)
    agb: pd.DataFrame  # one row per bin
    stands: pd.DataFrame  # one row per stand
    summary: dict
    paths: dict[str, Path] = field(default_factory=dict)


def _draw_stands(cfg: SlopeStudyConfig, rng: np.random.Generator) -> pd.DataFrame:
    edges = np.asarray(cfg.slope_edges_deg, dtype=np.float64)
    n_bins = edges.size - 1
    n = n_bins * cfg.stands_per_bin
    bin_index = np.repeat(np.arange(n_bins), cfg.stands_per_bin)
    lo, hi = edges[bin_index], edges[bin_index + 1]
    slope = rng.uniform(lo, hi)
    h_lo, h_hi = cfg.canopy_height_range_m
    a, b, c = STUDY_ALLOMETRY
    height = rng.uniform(h_lo, h_hi, n)
    cover = np.asarray(cfg.covers)[rng.integers(0, len(cfg.covers), n)]
    shape = np.asarray(cfg.crown_shapes, dtype=object)[rng.integers(0, len(cfg.crown_shapes), n)]
    given = slope + (rng.normal(0.0, cfg.slope_error_deg, n) if cfg.slope_error_deg > 0 else 0.0)
    return pd.DataFrame({
        "stand": np.arange(n, dtype=np.int64),
        "bin": bin_index,
        "slope_bin_deg": lo,
        "slope_deg": slope,
        "slope_given_deg": np.clip(given, 0.0, 89.0),
        "aspect_deg": rng.uniform(0.0, 360.0, n),
        "canopy_height_m": height,
        "cover": cover,
        "crown_shape": shape,
        "agb_mg_ha": a * height**b * cover**c,
        "fold": rng.integers(0, 2, n),
    })


def _simulate_and_measure(stands: pd.DataFrame, cfg: SlopeStudyConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Per stand and twin (flat, slope): raw RH, LEE/TEE, SAWA and deconvolved RH."""
    from waveform.simulate import simulate_waveforms

    pct = list(cfg.metrics)
    cols: dict[str, np.ndarray] = {}
    n = len(stands)
    for twin in ("flat", "slope"):
        for p in pct:
            for m in ("raw", "sawa", "deconv", "sawa_tg"):
                cols[f"{m}{p}_{twin}"] = np.full(n, np.nan)
        cols[f"lee_{twin}"] = np.full(n, np.nan)
        cols[f"tee_{twin}"] = np.full(n, np.nan)
        cols[f"reason_{twin}"] = np.full(n, "", dtype=object)
        cols[f"sawa_reason_{twin}"] = np.full(n, "", dtype=object)
        cols[f"deconv_reason_{twin}"] = np.full(n, "", dtype=object)
    for shape in cfg.crown_shapes:
        idx = np.flatnonzero(stands["crown_shape"].to_numpy() == shape)
        if idx.size == 0:
            continue
        s = stands.iloc[idx]
        for twin in ("flat", "slope"):
            slope_true = np.zeros(idx.size) if twin == "flat" else s["slope_deg"].to_numpy()
            slope_given = np.zeros(idx.size) if twin == "flat" else s["slope_given_deg"].to_numpy()
            sim = simulate_waveforms(
                500.0, s["canopy_height_m"].to_numpy(), s["cover"].to_numpy(), slope_true,
                s["aspect_deg"].to_numpy(), crown_shape=shape, footprint_diameter_m=cfg.footprint_diameter_m,
                noise_sd=cfg.noise_sd, shot_number=s["stand"].to_numpy().astype(np.uint64),
                rng=int(rng.integers(0, 2**31 - 1)),
            )
            tx_sigma = sim.tx_params["tx_egsigma"].to_numpy(np.float64)
            m = compute_metrics(sim.batch, cfg.algorithm)
            sw = sawa_metrics(sim.batch, slope_given, cfg.footprint_diameter_m, tx_sigma, pct,
                              algorithm=cfg.algorithm, metrics=m)
            tg = sawa_metrics(sim.batch, slope_given, cfg.footprint_diameter_m, tx_sigma, pct,
                              algorithm=cfg.algorithm, metrics=m,
                              ground_energy=sim.truth["ground_energy"].to_numpy(np.float64))
            dc = deconvolved_metrics(sim.batch, slope_given, cfg.footprint_diameter_m, tx_sigma, pct,
                                     algorithm=cfg.algorithm, metrics=m)
            for p in pct:
                cols[f"raw{p}_{twin}"][idx] = m.rh[:, p]
                cols[f"sawa{p}_{twin}"][idx] = sw[f"rh{p}_sawa"].to_numpy()
                cols[f"deconv{p}_{twin}"][idx] = dc[f"rh{p}_deconv"].to_numpy()
                cols[f"sawa_tg{p}_{twin}"][idx] = tg[f"rh{p}_sawa"].to_numpy()
            cols[f"lee_{twin}"][idx] = m.lee_m
            cols[f"tee_{twin}"][idx] = m.tee_m
            cols[f"reason_{twin}"][idx] = m.reason_names()
            cols[f"sawa_reason_{twin}"][idx] = sw["sawa_reason"].to_numpy()
            cols[f"deconv_reason_{twin}"][idx] = dc["deconv_reason"].to_numpy()
    return pd.concat([stands.reset_index(drop=True), pd.DataFrame(cols)], axis=1)


def _edge_extent_cv(df: pd.DataFrame, cfg: SlopeStudyConfig) -> pd.DataFrame:
    """Edge-extent corrected RH for both twins, two-fold cross-validated over stands."""
    d = cfg.footprint_diameter_m
    ti_slope = d * np.tan(np.radians(df["slope_given_deg"].to_numpy()))
    ti_flat = np.zeros(len(df))
    out = {}
    for p in cfg.metrics:
        target = df[f"raw{p}_flat"].to_numpy()
        flat_val = np.full(len(df), np.nan)
        slope_val = np.full(len(df), np.nan)
        for fold in (0, 1):
            train = (df["fold"].to_numpy() != fold)
            test = ~train
            # training rows: both twins (flat twins teach the model to leave flat waveforms alone)
            metric = np.concatenate([df[f"raw{p}_slope"].to_numpy()[train], df[f"raw{p}_flat"].to_numpy()[train]])
            lee = np.concatenate([df["lee_slope"].to_numpy()[train], df["lee_flat"].to_numpy()[train]])
            tee = np.concatenate([df["tee_slope"].to_numpy()[train], df["tee_flat"].to_numpy()[train]])
            ti = np.concatenate([ti_slope[train], ti_flat[train]])
            y = np.concatenate([target[train], target[train]])
            model = fit_edge_extent(y, metric, lee, tee, ti, features=("metric", "lee_m", "tee_m", "relief_m"))
            slope_val[test] = apply_edge_extent(model, df[f"raw{p}_slope"].to_numpy()[test],
                                                df["lee_slope"].to_numpy()[test], df["tee_slope"].to_numpy()[test],
                                                ti_slope[test])
            flat_val[test] = apply_edge_extent(model, df[f"raw{p}_flat"].to_numpy()[test],
                                               df["lee_flat"].to_numpy()[test], df["tee_flat"].to_numpy()[test],
                                               ti_flat[test])
        out[f"edge{p}_flat"] = flat_val
        out[f"edge{p}_slope"] = slope_val
    return pd.concat([df, pd.DataFrame(out, index=df.index)], axis=1)


def _bias_rmse(err: np.ndarray) -> tuple[int, float, float]:
    e = err[np.isfinite(err)]
    if e.size == 0:
        return 0, float("nan"), float("nan")
    return int(e.size), float(e.mean()), float(np.sqrt(np.mean(e**2)))


def _table(df: pd.DataFrame, cfg: SlopeStudyConfig) -> pd.DataFrame:
    rows = []
    edges = np.asarray(cfg.slope_edges_deg)
    for p in cfg.metrics:
        for b in range(edges.size - 1):
            sel = df["bin"].to_numpy() == b
            row = {"metric": f"RH{p}", "slope_deg": float(edges[b]), "n": int(sel.sum())}
            for m in METHODS:
                err = df[f"{m}{p}_slope"].to_numpy()[sel] - df[f"{m}{p}_flat"].to_numpy()[sel]
                k, bias, rmse = _bias_rmse(err)
                row[f"bias_{m}_m"] = bias
                row[f"rmse_{m}_m"] = rmse
                fin = np.abs(err[np.isfinite(err)])
                row[f"medae_{m}_m"] = float(np.median(fin)) if fin.size else float("nan")
                row[f"n_{m}"] = k
            rows.append(row)
    table = pd.DataFrame(rows)
    order = ["metric", "slope_deg", "n", "bias_raw_m", "bias_sawa_m", "rmse_raw_m", "rmse_sawa_m",
             "bias_edge_m", "rmse_edge_m", "bias_deconv_m", "rmse_deconv_m", "bias_sawa_tg_m", "rmse_sawa_tg_m",
             "medae_raw_m", "medae_sawa_m", "medae_edge_m", "medae_deconv_m", "medae_sawa_tg_m",
             "n_raw", "n_sawa", "n_edge", "n_deconv", "n_sawa_tg"]
    return table[order]


def _agb(df: pd.DataFrame, cfg: SlopeStudyConfig) -> tuple[pd.DataFrame, dict]:
    """AGB models fitted on flat twins, applied to slope twins: RMSE (Mg/ha) per bin and method."""
    pct = list(cfg.metrics)
    truth = df["agb_mg_ha"].to_numpy()
    y = np.sqrt(truth)
    edges = np.asarray(cfg.slope_edges_deg)
    preds: dict[str, dict[str, np.ndarray]] = {}
    coefs = {}
    for m in METHODS:
        xf = np.column_stack([np.ones(len(df))] + [df[f"{m}{p}_flat"].to_numpy() for p in pct])
        xs = np.column_stack([np.ones(len(df))] + [df[f"{m}{p}_slope"].to_numpy() for p in pct])
        ok = np.all(np.isfinite(xf), axis=1)
        if ok.sum() < xf.shape[1] + 2:
            preds[m] = {"flat": np.full(len(df), np.nan), "slope": np.full(len(df), np.nan)}
            continue
        beta, *_ = np.linalg.lstsq(xf[ok], y[ok], rcond=None)
        coefs[m] = [float(v) for v in beta]
        preds[m] = {"flat": np.maximum(xf @ beta, 0.0) ** 2, "slope": np.maximum(xs @ beta, 0.0) ** 2}
    rows = []
    for b in range(edges.size - 1):
        sel = df["bin"].to_numpy() == b
        row = {"slope_deg": float(edges[b]), "n": int(sel.sum()), "agb_mean_mg_ha": float(truth[sel].mean())}
        for m in METHODS:
            k, bias, rmse = _bias_rmse(preds[m]["slope"][sel] - truth[sel])
            row[f"rmse_{m}_mg_ha"] = rmse
            row[f"bias_{m}_mg_ha"] = bias
            row[f"n_{m}"] = k
            _, _, rmse_flat = _bias_rmse(preds[m]["flat"][sel] - truth[sel])
            row[f"rmse_{m}_flat_twin_mg_ha"] = rmse_flat
        rows.append(row)
    return pd.DataFrame(rows), coefs


def _reduction(raw: float, new: float) -> float:
    if not (np.isfinite(raw) and np.isfinite(new)) or raw == 0:
        return float("nan")
    return 1.0 - abs(new) / abs(raw)


def _summary(df: pd.DataFrame, table: pd.DataFrame, agb: pd.DataFrame, cfg: SlopeStudyConfig) -> dict:
    steep = df["slope_bin_deg"].to_numpy() >= STUDY_STEEP_FROM_DEG
    flat_bin = df["bin"].to_numpy() == 0
    out: dict = {"steep_from_deg": STUDY_STEEP_FROM_DEG, "n_steep_stands": int(steep.sum()), "metrics": {},
                 "goals": {"bias_reduction": GOAL_BIAS_REDUCTION, "rmse_reduction": GOAL_RMSE_REDUCTION,
                           "flat_added_m": GOAL_FLAT_ADDED_M}}
    for p in cfg.metrics:
        entry: dict = {}
        errs = {m: df[f"{m}{p}_slope"].to_numpy() - df[f"{m}{p}_flat"].to_numpy() for m in METHODS}
        _, b_raw, r_raw = _bias_rmse(errs["raw"][steep])
        _, fb_raw, fr_raw = _bias_rmse(errs["raw"][flat_bin])
        for m in METHODS:
            k, b, r = _bias_rmse(errs[m][steep])
            _, fb, fr = _bias_rmse(errs[m][flat_bin])
            rows = table[(table["metric"] == f"RH{p}") & (table["slope_deg"] >= STUDY_STEEP_FROM_DEG)]
            per_bin_bias = [_reduction(a, c) for a, c in zip(rows["bias_raw_m"], rows[f"bias_{m}_m"], strict=True)]
            per_bin_rmse = [_reduction(a, c) for a, c in zip(rows["rmse_raw_m"], rows[f"rmse_{m}_m"], strict=True)]
            e = {
                "n_steep": k, "bias_steep_m": b, "rmse_steep_m": r,
                "bias_reduction_pooled": _reduction(b_raw, b), "rmse_reduction_pooled": _reduction(r_raw, r),
                "bias_reduction_min_bin": float(np.nanmin(per_bin_bias)) if per_bin_bias else float("nan"),
                "rmse_reduction_min_bin": float(np.nanmin(per_bin_rmse)) if per_bin_rmse else float("nan"),
                "flat_bin_bias_m": fb, "flat_bin_rmse_m": fr,
                "flat_bin_added_bias_m": abs(fb) - abs(fb_raw), "flat_bin_added_rmse_m": fr - fr_raw,
            }
            if m != "raw":
                # value on exactly flat ground minus the raw RH of the same waveform (definition offset)
                d = df[f"{m}{p}_flat"].to_numpy() - df[f"raw{p}_flat"].to_numpy()
                d = d[np.isfinite(d)]
                e["flat_twin_minus_raw_mean_m"] = float(d.mean()) if d.size else float("nan")
                e["meets_goals"] = bool(
                    np.isfinite(e["bias_reduction_pooled"]) and e["bias_reduction_pooled"] >= GOAL_BIAS_REDUCTION
                    and e["rmse_reduction_pooled"] >= GOAL_RMSE_REDUCTION
                    and e["flat_bin_added_rmse_m"] <= GOAL_FLAT_ADDED_M
                    and e["flat_bin_added_bias_m"] <= GOAL_FLAT_ADDED_M
                )
            entry[m] = e
        out["metrics"][f"RH{p}"] = entry
    steep_agb = agb[agb["slope_deg"] >= STUDY_STEEP_FROM_DEG]
    out["agb_rmse_steep_mean_mg_ha"] = {m: float(steep_agb[f"rmse_{m}_mg_ha"].mean()) for m in METHODS}
    out["agb_rmse_flat_bin_mg_ha"] = {m: float(agb[f"rmse_{m}_mg_ha"].iloc[0]) for m in METHODS}
    reasons = {}
    for col in ("reason_slope", "sawa_reason_slope", "deconv_reason_slope"):
        reasons[col] = {str(k): int(v) for k, v in df[col].value_counts().items()}
    out["reasons"] = reasons
    return out


def _plot(table: pd.DataFrame, agb: pd.DataFrame, cfg: SlopeStudyConfig, png: Path, png_agb: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [f"RH{p}" for p in cfg.metrics]
    colors = {"raw": "0.3", "sawa": "tab:orange", "edge": "tab:green", "deconv": "tab:blue", "sawa_tg": "tab:red"}
    fig, axes = plt.subplots(2, len(metrics), figsize=(4 * len(metrics), 7), sharex=True, squeeze=False)
    step = float(np.diff(cfg.slope_edges_deg).mean())
    for j, name in enumerate(metrics):
        t = table[table["metric"] == name]
        x = t["slope_deg"].to_numpy() + step / 2.0
        for m in METHODS:
            ls = "--" if m == "sawa_tg" else "-"
            axes[0, j].plot(x, t[f"bias_{m}_m"], ls, marker="o", ms=3, color=colors[m], label=METHOD_LABELS[m])
            axes[1, j].plot(x, t[f"rmse_{m}_m"], ls, marker="o", ms=3, color=colors[m], label=METHOD_LABELS[m])
        axes[0, j].axhline(0.0, color="k", lw=0.5)
        axes[0, j].set_title(f"{name}: terrain-induced error")
        axes[1, j].set_xlabel("slope (deg, bin centre)")
    axes[0, 0].set_ylabel("bias: slope - flat twin (m)")
    axes[1, 0].set_ylabel("RMSE (m)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Slope study: {cfg.stands_per_bin} stands per bin, footprint {cfg.footprint_diameter_m:g} m, "
                 f"slope error sd {cfg.slope_error_deg:g} deg", fontsize=10)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = agb["slope_deg"].to_numpy() + step / 2.0
    for m in METHODS:
        ax.plot(x, agb[f"rmse_{m}_mg_ha"], "--" if m == "sawa_tg" else "-", marker="o", ms=3, color=colors[m],
                label=METHOD_LABELS[m])
    ax.set_xlabel("slope (deg, bin centre)")
    ax.set_ylabel("AGB RMSE (Mg/ha)")
    ax.set_title("AGB model fitted on flat stands, applied on slopes", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_agb) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_slope_study(output_dir: str | os.PathLike | None = None, config: SlopeStudyConfig | None = None,
                    progress: bool = False) -> SlopeStudyResult:
    """Run the slope study; write its files into ``output_dir`` (none written when None)."""
    cfg = config or SlopeStudyConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    stands = _draw_stands(cfg, rng)
    df = _simulate_and_measure(stands, cfg, rng)
    df = _edge_extent_cv(df, cfg)
    table = _table(df, cfg)
    agb, coefs = _agb(df, cfg)
    summary = _summary(df, table, agb, cfg)
    summary["agb_model_coefficients"] = coefs
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    result = SlopeStudyResult(table=table, agb=agb, stands=df, summary=summary)
    if output_dir is None:
        return result
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from waveform.errors import OutputError

        raise OutputError(f"cannot create output folder {out}: {exc}") from None
    paths = {
        "table": out / "slope_study.csv",
        "agb": out / "slope_study_agb.csv",
        "stands": out / "slope_study_stands.parquet",
        "plot": out / "slope_study.png",
        "plot_agb": out / "slope_study_agb.png",
        "summary": out / "slope_study_summary.json",
    }
    with atomic_path(paths["table"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(paths["agb"]) as tmp:
        agb.to_csv(tmp, index=False, float_format="%.3f")
    with atomic_path(paths["stands"]) as tmp:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(tmp, index=False)
    _plot(table, agb, cfg, paths["plot"], paths["plot_agb"])
    write_json_atomic(paths["summary"], summary)
    params = {k: v for k, v in asdict(cfg).items()}
    manifest = build_manifest(inputs={}, parameters=params, outputs={k: v for k, v in paths.items()})
    paths["manifest"] = out / "manifest.json"
    write_json_atomic(paths["manifest"], manifest)
    result.paths = paths
    return result


def format_summary(summary: dict) -> str:
    """A short text table of the goal check (for the CLI)."""
    lines = [f"bins >= {summary['steep_from_deg']:g} deg ({summary['n_steep_stands']} stands): "
             "|bias| and RMSE reduction vs raw (pooled); flat bin added RMSE"]
    for metric, entry in summary["metrics"].items():
        parts = []
        for m in ("sawa", "edge", "deconv", "sawa_tg"):
            e = entry[m]
            parts.append(f"{m} {100 * e['bias_reduction_pooled']:.0f}%/{100 * e['rmse_reduction_pooled']:.0f}% "
                         f"(flat {e['flat_bin_added_rmse_m']:+.2f} m{' OK' if e.get('meets_goals') else ''})")
        raw = entry["raw"]
        lines.append(f"  {metric}: raw bias {raw['bias_steep_m']:+.2f} m rmse {raw['rmse_steep_m']:.2f} m | "
                     + "; ".join(parts))
    agb = summary["agb_rmse_steep_mean_mg_ha"]
    lines.append("  AGB RMSE on steep bins (Mg/ha): " + ", ".join(f"{m} {v:.1f}" for m, v in agb.items()))
    return "\n".join(lines)


__all__ = ["run_slope_study", "SlopeStudyConfig", "SlopeStudyResult", "format_summary", "METHODS"]
