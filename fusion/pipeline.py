"""``sawa audit``: the whole carbon audit, from GEDI waveforms to national carbon stocks.

Stages (each a crash-resumable task recorded in ``OUT/run_state.json``; outputs are written
atomically, a rerun skips every stage whose inputs, parameters and outputs are unchanged):

1. **metrics** (one task per granule, on Dask when ``[run] workers != 1``): waveform metrics
   (ground, RH0-100, cover, LEE/TEE) streamed beam by beam, plus terrain under each footprint
   (slope, aspect, relief from the DEM) and the terrain-corrected metrics: SAWA (``rhNN_sawa``)
   and sawa's terrain deconvolution (``rhNN_deconv``) -> ``shots/<granule>.parquet``.
2. **accounting**: every input shot is either *accepted* (``footprints.parquet``) or *rejected*
   with a reason code (``rejects.parquet``, ``reject_counts.csv``); accepted + rejected = input.
3. **calibration**: flat-ground plots of known AGB simulated with the GEDI simulator
   (:mod:`fusion.calibration`), or the user's calibration table.
4. **biomass**: one model per metric set, fitted on the calibration plots: the corrected set
   (``[terrain] correction``, default ``deconv``) and the uncorrected RH; footprint AGBD and SE.
5. **grid**: GEDI L4B-style hybrid-inference cell means of footprint AGBD -> ``gridded_agb.tif``.
6. **maps**: optical fusion (covariate rasters -> footprint AGBD) -> wall-to-wall
   ``agb_map.tif`` + ``agb_map_se.tif`` (corrected) and ``agb_map_uncorrected.tif``.
7. **totals**: zonal totals per polygon (exact fractional coverage, geodesic areas), carbon
   (IPCC carbon fraction and root:shoot), comparison with FAO FRA and GEDI reference totals ->
   ``country_totals.csv``; the GEDI latitude-band total of the map.
8. **report**: PNG plots, ``report.md`` / ``report.html`` and ``manifest.json``.

With no inputs configured the audit runs on the embedded sample world
(:func:`data_samples.load_sample_world`), whose true country totals are added to the table.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from waveform.errors import ConfigError
from waveform.outputs import build_manifest, write_json_atomic

from .config import AuditConfig, config_to_toml, load_config
from .runs import RunState

log = logging.getLogger(__name__)

#: Column suffix of each terrain correction (``[terrain] correction``).
CORRECTION_SUFFIX = {"deconv": "_deconv", "sawa": "_sawa", "none": ""}
#: Reason column of each correction's metrics.
CORRECTION_REASON = {"deconv": "deconv_reason", "sawa": "sawa_reason", "none": None}
#: Per-shot reasons of the correction kernels under which the corrected metrics are still valid
#: (terrain/sawa.py: "flat" = no deconvolution needed; "weak_ground" = modelled ground end clipped).
CORRECTION_OK = {"ok", "flat", "weak_ground"}
#: Reference directory beside the checkout (``../shared/reference``), used for the FAO table when
#: the configuration names none; ``$SAWA_REFERENCE_DIR`` overrides it.
DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
FAO_RELATIVE_PATH = Path("fao") / "FRACarbonStock.csv"
#: Footprint table columns kept from the metrics stage (besides the RH columns).
FOOTPRINT_KEEP = ("shot_number", "beam", "granule", "longitude", "latitude", "ground_elevation", "cover",
                  "lee", "tee", "quality", "slope_deg", "aspect_deg", "relief_m", "dem_elevation_m", "geometry")


@dataclass
class AuditInputs:
    granules: list[Path]
    dem: list[Path]
    optical: dict[str, Path]
    polygons: Path
    polygon_id: str
    polygon_name: str
    fao: Path | None
    gedi_l4b: Path | None
    calibration: Path | None
    allometry: Any = None
    true_totals: pd.DataFrame | None = None
    carbon_factors: Path | None = None  # a user's factor table ([carbon] factors); None: the shipped one

    def files(self) -> dict[str, Path]:
        out = {f"granule:{p.name}": p for p in self.granules}
        out.update({f"dem:{p.name}": p for p in self.dem})
        out.update({f"optical:{k}": p for k, p in self.optical.items()})
        out["polygons"] = self.polygons
        for key in ("fao", "gedi_l4b", "calibration", "carbon_factors"):
            p = getattr(self, key)
            if p is not None:
                out[key] = p
        return out


@dataclass
class AuditResult:
    output_dir: Path
    paths: dict[str, Path]
    totals: pd.DataFrame
    reject_counts: dict[str, int]
    n_input_shots: int
    n_accepted: int
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- inputs
def resolve_inputs(cfg: AuditConfig, report: Callable[[str], None] | None = None) -> AuditInputs:
    """The audit's input files: from the configuration, or the embedded sample world when it names no granules."""
    from .calibration import Allometry

    i = cfg.inputs
    b = cfg.biomass
    allometry = Allometry(b["allometry_a"], b["allometry_b"], b["allometry_c"])
    fao = i["fao"] or _default_fao()
    if not i["granules"]:
        if i["dem"] or i["optical"] or i["polygons"]:
            raise ConfigError("[inputs] names DEM/optical/polygons but no granules; give granules too "
                              "(or nothing at all for the embedded sample world)")
        from data_samples import load_sample_world

        world = load_sample_world()
        countries = world.read_countries()
        true = pd.DataFrame({"iso3": countries["iso3"], "true_agb_pg": countries["true_agb_pg"]})
        if report:
            report(f"embedded sample world: {world.root}")
        return AuditInputs(list(world.granule_paths), [Path(world.dem_path)], dict(world.optical_paths),
                           Path(world.countries_path), "iso3", "name", fao, None, i["calibration"],
                           allometry, true, carbon_factors=cfg.carbon["factors"])
    missing = [k for k in ("dem", "optical", "polygons") if not i[k]]
    if missing:
        raise ConfigError(f"[inputs] {', '.join(missing)} must be given with granules (a real audit needs a DEM, "
                          f"optical covariate rasters and polygons)")
    return AuditInputs(list(i["granules"]), list(i["dem"]), dict(i["optical"]), i["polygons"], i["polygon_id"],
                       i["polygon_name"], fao, i["gedi_l4b"], i["calibration"], allometry,
                       carbon_factors=cfg.carbon["factors"])


def _default_fao() -> Path | None:
    base = Path(os.environ.get("SAWA_REFERENCE_DIR", DEFAULT_REFERENCE_DIR))
    p = base / FAO_RELATIVE_PATH
    return p if p.is_file() else None


# --------------------------------------------------------------------------- stage 1: metrics
def _metrics_task(task: dict[str, Any]) -> dict[str, Any]:
    """One granule -> shot table with metrics, terrain and corrected metrics (runs on a Dask worker)."""
    from terrain.dem import open_dem
    from terrain.granule_terrain import terrain_hook
    from waveform.stream import write_metrics

    with open_dem(task["dem"]) as dem:
        summary = write_metrics(task["granule"], task["output"], algorithm=task["algorithm"],
                                chunk_shots=task["chunk_shots"], with_tx=True,
                                on_chunk=terrain_hook(dem, task["footprint_diameter_m"], deconvolve=True))
    return {"n_shots": summary["n_shots"], "reasons": summary["reasons"], "seconds": round(summary["seconds"], 2)}


# --------------------------------------------------------------------------- stage 2: accounting
def classify_shots(shots: pd.DataFrame, correction: str, min_quality: bool = True) -> np.ndarray:
    """Reject reason per shot ('' = accepted), first failing rule wins.

    Rules, in order: waveform processing reason (``waveform:<reason>``), ``stale_return``,
    ``degrade_flag``, ``low_quality`` (sawa's quality flag, when ``min_quality``), terrain
    (``terrain:<reason>``, e.g. ``terrain:outside_dem`` = no DEM), the corrected metrics
    (``<correction>:<reason>``) and, for the uncorrected metrics, any missing RH.
    """
    n = len(shots)
    reason = np.full(n, "", dtype=object)

    def put(mask, text):
        mask = np.asarray(mask, dtype=bool) & (reason == "")
        if isinstance(text, str):
            reason[mask] = text
        else:
            reason[mask] = np.asarray(text, dtype=object)[mask]

    wave = shots["reason"].astype(str).to_numpy()
    put(wave != "ok", np.char.add("waveform:", wave.astype(str)).astype(object))
    if "stale_return_flag" in shots.columns:
        put(shots["stale_return_flag"].fillna(0).to_numpy() != 0, "stale_return")
    if "degrade" in shots.columns:
        put(shots["degrade"].fillna(0).to_numpy() != 0, "degrade_flag")
    if min_quality and "quality" in shots.columns:
        put(~shots["quality"].fillna(False).to_numpy(bool), "low_quality")
    terr = shots["terrain_reason"].astype(str).to_numpy() if "terrain_reason" in shots.columns else np.full(n, "ok")
    put(terr != "ok", np.char.add("terrain:", terr.astype(str)).astype(object))
    col = CORRECTION_REASON[correction]
    if col is not None:
        cr = shots[col].astype(str).to_numpy()
        put(~np.isin(cr, list(CORRECTION_OK)), np.char.add(f"{correction}:", cr.astype(str)).astype(object))
    return reason


# --------------------------------------------------------------------------- stage 4: biomass
def _features(cfg: AuditConfig, suffix: str) -> list[str]:
    return [f"{c}{suffix}" if c.startswith("rh") else c for c in cfg.biomass["predictors"]]


def fit_biomass_model(cfg: AuditConfig, calibration: pd.DataFrame, suffix: str):
    """A biomass model on the calibration plots using the metric set with column ``suffix``."""
    from biomass.l4a import L4AModel
    from biomass.learners import GradientBoostingAGB, RandomForestAGB

    kind = cfg.biomass["model"]
    feats = _features(cfg, suffix)
    missing = [c for c in feats if c not in calibration.columns]
    if missing:
        raise ConfigError(f"[biomass] predictors {missing} are not columns of the calibration table "
                          f"(has {', '.join(c for c in calibration.columns if not c.startswith('rh'))}, rh*)")
    ok = np.isfinite(calibration[feats].to_numpy(np.float64)).all(axis=1)
    ok &= np.isfinite(calibration["agbd_true_mg_ha"].to_numpy(np.float64))
    cal = calibration.loc[ok]
    y = cal["agbd_true_mg_ha"].to_numpy(np.float64)
    seed = cfg.run["seed"]
    if kind == "random-forest":
        return RandomForestAGB(feature_columns=feats, random_state=seed).fit(cal, y)
    if kind == "gradient-boosting":
        return GradientBoostingAGB(feature_columns=feats, random_state=seed).fit(cal, y)
    if kind == "l4a-form":
        rh = [int(c[2:].split("_")[0]) for c in cfg.biomass["predictors"] if c.startswith("rh")]
        if not rh:
            raise ConfigError("[biomass] model = 'l4a-form' needs RH predictors (e.g. ['rh50', 'rh98'])")
        est = L4AModel(predictors=tuple(rh), rh_suffix=suffix)
        return est.fit(cal, y, strata=np.full(len(cal), "all", dtype=object))
    raise ConfigError(f"[biomass] model {kind!r} cannot be fitted on calibration plots")


def predict_footprints(model, shots: pd.DataFrame) -> pd.DataFrame:
    """``agbd``, ``agbd_se`` (Mg/ha) and ``agbd_reason`` for each shot (the model knows its metric columns)."""
    from biomass.l4a import L4AModel

    if isinstance(model, L4AModel):   # one stratum ("all") for every shot, as fitted on the calibration plots
        frame = model.predict_frame(shots, strata=np.full(len(shots), "all", dtype=object))
        frame.index = shots.index
        reason_col = "agbd_reason" if "agbd_reason" in frame.columns else "reason"
        out = frame[["agbd", "agbd_se"]].copy()
        out["agbd_reason"] = frame[reason_col].to_numpy() if reason_col in frame.columns else ""
        return out
    return model.predict_frame(shots)


# --------------------------------------------------------------------------- the audit
class _Stages:
    """Bookkeeping of one audit run: stage skip/redo with :class:`RunState`."""

    def __init__(self, out: Path, fresh: bool, echo: Callable[[str], None]):
        self.out = out
        self.state = RunState(out)
        if fresh:
            self.state.tasks = {}
        self.echo = echo

    def run(self, name: str, inputs: dict[str, Path], params: dict[str, Any], outputs: list[Path],
            func: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        if self.state.is_done(name, inputs, params):
            self.echo(f"  {name}: done before, skipped")
            return self.state.info(name)
        t0 = time.perf_counter()
        info = func() or {}
        info = {**info, "seconds": round(time.perf_counter() - t0, 2)}
        self.state.mark_done(name, inputs, params, outputs, info)
        self.echo(f"  {name}: {info['seconds']:.1f} s")
        return info


def run_audit(config: AuditConfig | str | os.PathLike | None = None, output: str | os.PathLike | None = None, *,
              workers: int | None = None, scheduler: str | None = None, progress: bool = False,
              fresh: bool = False, echo: Callable[[str], None] | None = None) -> AuditResult:
    """Run the carbon audit (module docstring); returns the totals table and the output paths.

    ``config``: an :class:`AuditConfig`, a TOML path, or None (defaults: the embedded sample
    world). ``output``/``workers``/``scheduler`` override ``[run]``. ``fresh`` ignores the run
    state of an earlier run in the same folder (otherwise completed stages are skipped).
    """
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    if output is not None:
        cfg.run["output"] = str(output)
    if workers is not None:
        cfg.run["workers"] = int(workers)
    if scheduler is not None:
        cfg.run["scheduler"] = scheduler
    echo = echo or (lambda s: log.info(s))
    out = Path(cfg.run["output"]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    inputs = resolve_inputs(cfg, echo)
    stale = remove_stale_temporaries(out)
    if stale:
        echo(f"removed {stale} temporary files left by an interrupted run")
    stages = _Stages(out, fresh, echo)
    correction = cfg.terrain["correction"]
    suffix = CORRECTION_SUFFIX[correction]
    from waveform.outputs import write_text_atomic

    write_text_atomic(out / "audit_config.toml", config_to_toml(cfg))

    # 1. metrics per granule ------------------------------------------------------------------
    from .parallel import default_workers, run_tasks

    shots_dir = out / "shots"
    shots_dir.mkdir(exist_ok=True)
    metric_params = {"algorithm": cfg.waveform["algorithm"], "chunk_shots": cfg.waveform["chunk_shots"],
                     "footprint_diameter_m": cfg.terrain["footprint_diameter_m"]}
    dem_inputs = {f"dem:{i}": p for i, p in enumerate(inputs.dem)}
    todo, shot_files = [], []
    for g in inputs.granules:
        target = shots_dir / f"{Path(g).stem}.parquet"
        shot_files.append(target)
        if not stages.state.is_done(f"metrics:{g.name}", {"granule": g, **dem_inputs}, metric_params):
            todo.append({"granule": str(g), "output": str(target), "dem": [str(p) for p in inputs.dem], **metric_params})
    echo(f"metrics: {len(inputs.granules)} granules, {len(todo)} to process")
    if todo:
        from terrain.dem import open_dem
        from terrain.granule_terrain import check_dem_overlap

        with open_dem(inputs.dem) as dem:   # no shot of any granule on the DEM: an error before any work
            for name in check_dem_overlap(dem, [Path(t["granule"]) for t in todo]):
                echo(f"warning: DEM {dem.name} does not overlap granule {name}: its shots will be rejected "
                     "as terrain:outside_dem")
        n_workers = cfg.run["workers"]
        if not cfg.run["scheduler"] and n_workers == 0:
            n_workers = min(default_workers(), len(todo))
        def record(i: int, res: dict[str, Any]) -> None:   # each granule is resumable on its own
            g = Path(todo[i]["granule"])
            stages.state.mark_done(f"metrics:{g.name}", {"granule": g, **dem_inputs}, metric_params,
                                   [Path(todo[i]["output"])], res)
            echo(f"  metrics:{g.name}: {res['n_shots']} shots, {res['seconds']:.1f} s")

        run_tasks(_metrics_task, todo, scheduler=cfg.run["scheduler"] or None, workers=max(n_workers, 1),
                  progress=progress, desc="granules", on_result=record)
    # 2. accounting -----------------------------------------------------------------------------
    foot_path, counts_path = out / "footprints_metrics.parquet", out / "reject_counts.csv"
    rej_metrics_path, rej_biomass_path, rej_path = (out / "rejects_metrics.parquet", out / "rejects_biomass.parquet",
                                                    out / "rejects.parquet")
    acc_inputs = {f"shots:{p.name}": p for p in shot_files}
    acc_params = {"correction": correction, "min_quality": cfg.biomass["min_quality"]}

    def accounting():
        import geopandas as gpd

        frames = [gpd.read_parquet(p) for p in shot_files]
        shots = pd.concat(frames, ignore_index=True)
        reason = classify_shots(shots, correction, cfg.biomass["min_quality"])
        _write_parquet(shots.loc[reason == ""], foot_path)
        rej = pd.DataFrame({"shot_number": shots["shot_number"].to_numpy(np.uint64), "beam": shots["beam"].to_numpy(),
                            "granule": shots["granule"].to_numpy(), "stage": [r.split(":")[0] for r in reason],
                            "reason": reason})
        _write_parquet(rej.loc[reason != ""].reset_index(drop=True), rej_metrics_path)
        return {"n_input": len(shots), "n_accepted": int((reason == "").sum())}

    stages.run("accounting", acc_inputs, acc_params, [foot_path, rej_metrics_path], accounting)

    # 3. calibration --------------------------------------------------------------------------
    cal_path = out / "calibration_plots.parquet"
    cal_params = {"allometry": inputs.allometry.as_dict(), "n_plots": cfg.biomass["calibration_plots"],
                  "seed": cfg.run["seed"], "footprint_diameter_m": cfg.terrain["footprint_diameter_m"]}
    cal_inputs = {"calibration": inputs.calibration} if inputs.calibration else {}

    def calibration():
        if inputs.calibration is not None:
            cal = _read_calibration(inputs.calibration, cfg)
        else:
            from .calibration import simulate_calibration_plots

            cal = simulate_calibration_plots(inputs.allometry, n_plots=cfg.biomass["calibration_plots"],
                                             seed=cfg.run["seed"],
                                             footprint_diameter_m=cfg.terrain["footprint_diameter_m"])
        _write_parquet(cal, cal_path)
        return {"n_plots": len(cal)}

    stages.run("calibration", cal_inputs, cal_params, [cal_path], calibration)

    # 4. biomass per metric set -------------------------------------------------------------
    sets = {"corrected": suffix, "uncorrected": ""} if suffix else {"uncorrected": ""}
    fp_path = out / "footprints.parquet"
    models_dir = out / "models"
    bio_params = {"model": cfg.biomass["model"], "predictors": cfg.biomass["predictors"], "sets": sets,
                  "seed": cfg.run["seed"]}

    def biomass():
        import geopandas as gpd

        from biomass.modelio import save_model

        shots = gpd.read_parquet(foot_path)
        cal = pd.read_parquet(cal_path)
        info = {}
        reasons = np.full(len(shots), "", dtype=object)
        for name, suf in sets.items():
            model = fit_biomass_model(cfg, cal, suf)
            models_dir.mkdir(exist_ok=True)
            ext = ".json" if cfg.biomass["model"] == "l4a-form" else ".skops"
            save_model(model, models_dir / f"agbd_{name}{ext}", stamp=None)
            pred = predict_footprints(model, shots)
            tag = "" if name == "corrected" or not suffix else "_uncorrected"
            shots[f"agbd{tag}"] = pred["agbd"].to_numpy(np.float64)
            shots[f"agbd_se{tag}"] = pred["agbd_se"].to_numpy(np.float64)
            info[name] = {"n_predicted": int(np.isfinite(pred["agbd"]).sum()),
                          "mean_agbd_mg_ha": float(np.nanmean(pred["agbd"]))}
            why = pred["agbd_reason"].astype(str).to_numpy()
            bad = ~np.isfinite(pred["agbd"].to_numpy(np.float64))
            reasons[bad & (reasons == "")] = np.char.add(f"biomass:{name}:", why[bad & (reasons == "")].astype(str))
        # a shot without AGBD for either metric set leaves the footprints for the rejects, with the model's reason
        kept = reasons == ""
        rej = pd.DataFrame({"shot_number": shots["shot_number"].to_numpy(np.uint64), "beam": shots["beam"].to_numpy(),
                            "granule": shots["granule"].to_numpy(), "stage": "biomass", "reason": reasons})
        _write_parquet(shots.loc[kept].reset_index(drop=True), fp_path)
        _write_parquet(rej.loc[~kept].reset_index(drop=True), rej_biomass_path)
        info["n_rejected"] = int((~kept).sum())
        return info

    bio_info = stages.run("biomass", {"footprints": foot_path, "calibration": cal_path}, bio_params,
                          [fp_path, rej_biomass_path], biomass)

    # 5. L4B-style gridded means ----------------------------------------------------------------
    from .grid import GridSpec, grid_footprints

    grid_path = out / "gridded_agb.tif"
    grid_params = {"resolution_deg": cfg.grid["resolution_deg"], "min_shots": cfg.grid["min_shots"]}
    poly_bounds = _polygon_bounds(inputs.polygons)

    def gridded():
        shots = pd.read_parquet(fp_path, columns=["longitude", "latitude", "granule", "beam", "agbd", "agbd_se"])
        grid = GridSpec.geographic(cfg.grid["resolution_deg"], poly_bounds)
        track = (shots["granule"].astype(str) + "/" + shots["beam"].astype(str)).to_numpy()
        g = grid_footprints(shots["longitude"].to_numpy(), shots["latitude"].to_numpy(), shots["agbd"].to_numpy(),
                            shots["agbd_se"].to_numpy(), track_id=track, grid=grid, min_shots=cfg.grid["min_shots"])
        g.write(grid_path)
        return {"cells_with_estimate": int(np.isfinite(g.mean).sum()), **{k: int(v) for k, v in g.counts.items()}}

    stages.run("grid", {"footprints": fp_path}, grid_params, [grid_path], gridded)

    # 6. optical fusion maps --------------------------------------------------------------------
    from .optical import fit_optical_model, predict_map

    covariates = dict(inputs.optical)
    if cfg.fusion["terrain_covariates"]:
        slope_path = out / "terrain_slope_aspect.tif"

        def slope_raster():
            from terrain.slope import write_slope_aspect

            write_slope_aspect(inputs.dem, slope_path, progress=progress)
            return {}

        stages.run("terrain_covariates", dem_inputs, {"dem": [p.name for p in inputs.dem]}, [slope_path], slope_raster)
        if "terrain" in covariates:
            raise ConfigError("[inputs] optical has a raster named 'terrain', the name of the DEM slope/aspect "
                              "covariate; rename it")
        covariates["terrain"] = slope_path
    map_params = {"learner": cfg.fusion["learner"], "resolution_deg": cfg.fusion["resolution_deg"],
                  "block_px": cfg.fusion["block_px"], "seed": cfg.run["seed"], "covariates": sorted(covariates)}
    map_inputs = {"footprints": fp_path, **{f"covariate:{k}": p for k, p in covariates.items()}}
    maps = {"corrected": (out / "agb_map.tif", out / "agb_map_se.tif", "agbd")}
    if suffix:
        maps["uncorrected"] = (out / "agb_map_uncorrected.tif", out / "agb_map_uncorrected_se.tif", "agbd_uncorrected")
    else:
        maps = {"uncorrected": (out / "agb_map.tif", out / "agb_map_se.tif", "agbd")}
    map_grid = GridSpec.geographic(cfg.fusion["resolution_deg"], poly_bounds)

    def fusion_maps():
        shots = pd.read_parquet(fp_path, columns=["longitude", "latitude", *[m[2] for m in maps.values()]])
        info = {}
        for name, (agb_path, se_path, col) in maps.items():
            model = fit_optical_model(shots, covariates, map_grid, cfg.fusion["learner"], agbd_column=col,
                                      quality_column=None, seed=cfg.run["seed"], n_jobs=1)
            n_blocks = -(-map_grid.width // cfg.fusion["block_px"]) * -(-map_grid.height // cfg.fusion["block_px"])
            block_workers = 1 if n_blocks == 1 else (cfg.run["workers"] or default_workers())
            res = predict_map(model, None, None, agb_path, se_path, block_px=cfg.fusion["block_px"],
                              tags={"METRICS": name, "TERRAIN_CORRECTION": correction if name == "corrected" else "none"},
                              workers=block_workers, scheduler=cfg.run["scheduler"] or None, progress=progress)
            info[name] = {"cv_r2": model.info["cv_r2"], "cv_rmse_mg_ha": model.info["cv_rmse_mg_ha"],
                          "n_train": model.info["n_train"], "n_pixels_predicted": res.n_predicted,
                          "agb_mean_mg_ha": res.agb_mean_mg_ha}
        return info

    map_outputs = [p for m in maps.values() for p in m[:2]]
    map_info = stages.run("maps", map_inputs, map_params, map_outputs, fusion_maps)

    # 7. totals -----------------------------------------------------------------------------------
    totals_path = out / "country_totals.csv"
    band_path = out / "band_totals.csv"
    tot_params = {"ecozone": cfg.carbon["ecozone"], "id": inputs.polygon_id, "name": inputs.polygon_name}
    tot_inputs = {"polygons": inputs.polygons, **{f"map:{p.name}": p for p in map_outputs}}
    if inputs.fao:
        tot_inputs["fao"] = inputs.fao
    # a user's factor table and continent/origin: recorded only when set (defaults leave the state as before)
    if inputs.carbon_factors:
        tot_inputs["carbon_factors"] = inputs.carbon_factors
    for key in ("continent", "origin"):
        if cfg.carbon.get(key):
            tot_params[key] = cfg.carbon[key]

    def totals():
        table, band = country_totals(inputs, cfg, maps)
        from .report import write_table_csv

        write_table_csv(table, totals_path)
        write_table_csv(band, band_path)
        return {"countries": len(table)}

    stages.run("totals", tot_inputs, tot_params, [totals_path, band_path], totals)
    table = pd.read_csv(totals_path, keep_default_na=False, na_values=[""])

    # 8. report -----------------------------------------------------------------------------------
    _write_parquet(pd.concat([pd.read_parquet(rej_metrics_path), pd.read_parquet(rej_biomass_path)],
                             ignore_index=True), rej_path)
    counts = reject_counts(rej_path, shot_files)
    from .report import write_table_csv

    write_table_csv(counts, counts_path)
    stage_status = {k: {"status": v.get("status"), "outputs": v.get("outputs", {})}
                    for k, v in sorted(stages.state.tasks.items())}
    manifest = build_manifest(inputs.files(), cfg.as_dict(), extra={"stages": stage_status})
    report_manifest = {k: v for k, v in manifest.items() if k != "written_utc"}
    report_paths = write_audit_report(out, inputs, cfg, table, counts, maps, bio_info, map_info, report_manifest)
    paths = {"country_totals": totals_path, "band_totals": band_path, "footprints": fp_path, "rejects": rej_path,
             "reject_counts": counts_path, "gridded": grid_path, **report_paths,
             **{f"map_{k}": v[0] for k, v in maps.items()}, **{f"map_{k}_se": v[1] for k, v in maps.items()}}
    manifest["outputs"] = build_manifest(outputs=paths)["outputs"]   # inputs were hashed once, above
    paths["manifest"] = write_json_atomic(out / "manifest.json", manifest)
    n_input = int(counts["shots"].sum())
    n_acc = int(counts.loc[counts["reason"] == "accepted", "shots"].sum())
    summary = {"seconds": round(time.perf_counter() - t_start, 1), "biomass": bio_info, "maps": map_info}
    return AuditResult(out, paths, table, dict(zip(counts["reason"], counts["shots"], strict=True)), n_input,
                       n_acc, summary)


# --------------------------------------------------------------------------- helpers
#: Name pattern of the temporary files of :func:`waveform.outputs.atomic_path` (``.NAME.XXXX.tmpEXT``).
TEMPORARY_PATTERN = ".*.tmp*"


def remove_stale_temporaries(out: Path) -> int:
    """Delete temporaries a killed run left in ``out`` (never renamed into place, so never outputs)."""
    n = 0
    for p in list(out.glob(TEMPORARY_PATTERN)) + list(out.glob(f"*/{TEMPORARY_PATTERN}")):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """GeoParquet when the frame has geometry, else Parquet; atomic."""
    import geopandas as gpd

    from waveform.outputs import atomic_path

    with atomic_path(path) as tmp:
        if isinstance(frame, gpd.GeoDataFrame):
            frame.to_parquet(tmp, index=False)
        else:
            pd.DataFrame(frame).to_parquet(tmp, index=False)


def _read_calibration(path: Path, cfg: AuditConfig) -> pd.DataFrame:
    cal = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    if "agbd_true_mg_ha" not in cal.columns:
        raise ConfigError(f"calibration table {path} has no 'agbd_true_mg_ha' column (reference AGBD, Mg/ha)")
    for c in list(cal.columns):   # flat-ground plots: corrected metrics equal the raw ones when not given
        if c.startswith("rh") and c[2:].isdigit():
            for suf in ("_sawa", "_deconv"):
                if f"{c}{suf}" not in cal.columns:
                    cal[f"{c}{suf}"] = cal[c]
    return cal


def _polygon_bounds(path: Path) -> tuple[float, float, float, float]:
    import geopandas as gpd

    g = gpd.read_file(path)
    if g.crs is None:
        raise ConfigError(f"polygons {path} have no CRS")
    return tuple(float(v) for v in g.to_crs("EPSG:4326").total_bounds)


def country_totals(inputs: AuditInputs, cfg: AuditConfig, maps: dict[str, tuple[Path, Path, str]]
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-polygon totals of the maps joined with FAO, GEDI and (sample world) true totals."""
    from .carbon import CarbonFactors, default_factors
    from .references import compare_totals, gedi_l4b_totals, gedi_reference_by_iso3, read_fao_fra
    from .zonal import latitude_band_total, load_countries, zonal_totals

    polys = load_countries(inputs.polygons)
    factors = CarbonFactors.load(inputs.carbon_factors) if inputs.carbon_factors else default_factors()
    carbon = {"zone": cfg.carbon["ecozone"], "factors": factors,
              "continent": cfg.carbon.get("continent") or None, "origin": cfg.carbon.get("origin") or None}
    main = "corrected" if "corrected" in maps else "uncorrected"
    agb_path, se_path, _ = maps[main]
    ours = zonal_totals(agb_path, polys, inputs.polygon_id, se_path, name_col=inputs.polygon_name, **carbon)
    if inputs.polygon_id != "iso3":
        ours = ours.rename(columns={inputs.polygon_id: "iso3"})
    fao = read_fao_fra(inputs.fao) if inputs.fao else None
    if inputs.gedi_l4b is not None:   # the user's GEDI L4B-style grid, summed over the same polygons
        gedi = gedi_l4b_totals(inputs.gedi_l4b, polys, id_col=inputs.polygon_id, name_col=inputs.polygon_name)
        gedi = gedi.rename(columns={inputs.polygon_id: "iso3"})
    else:                             # the published figures shipped in fusion/data/gedi_reference_totals.csv
        gedi = gedi_reference_by_iso3().reset_index().rename(columns={"agb_pg": "gedi_agb_pg"})
    table = compare_totals(ours, fao, gedi[["iso3", "gedi_agb_pg"]])
    extra = ["agb_mean_mg_ha", "agb_mean_se_mg_ha", "polygon_area_ha", "mapped_area_ha", "coverage_fraction",
             "agc_pg", "bgc_pg", "warnings"]
    table = table.merge(ours[["iso3", *[c for c in extra if c in ours.columns]]], on="iso3", how="left")
    if "uncorrected" in maps and main == "corrected":
        raw = zonal_totals(maps["uncorrected"][0], polys, inputs.polygon_id, maps["uncorrected"][1],
                           name_col=inputs.polygon_name, **carbon)
        raw = raw.rename(columns={inputs.polygon_id: "iso3"})
        table = table.merge(raw[["iso3", "agb_pg", "carbon_pg"]].rename(
            columns={"agb_pg": "agb_uncorrected_pg", "carbon_pg": "carbon_uncorrected_pg"}), on="iso3", how="left")
        table["terrain_effect_pct"] = 100.0 * (table["agb_uncorrected_pg"] / table["agb_pg"] - 1.0)
    if inputs.true_totals is not None:
        table = table.merge(inputs.true_totals, on="iso3", how="left")
        table["error_pct"] = 100.0 * (table["agb_pg"] / table["true_agb_pg"] - 1.0)
        if "agb_uncorrected_pg" in table.columns:
            table["error_uncorrected_pct"] = 100.0 * (table["agb_uncorrected_pg"] / table["true_agb_pg"] - 1.0)
    band_rows = []
    for name, (p, s, _) in maps.items():
        row = latitude_band_total(p, se_raster=s, **carbon)
        band_rows.append({"metrics": name, "region": row["region"], "agb_pg": row["agb_pg"],
                          "agb_se_pg": row["agb_se_pg"], "carbon_pg": row["carbon_pg"],
                          "mapped_area_ha": row["mapped_area_ha"]})
    return table, pd.DataFrame(band_rows)


def reject_counts(rejects_path: Path, shot_files: list[Path]) -> pd.DataFrame:
    """Shots per outcome (``accepted`` and each reject reason); the sum is the input count."""
    import pyarrow.parquet as pq

    n_in = sum(pq.ParquetFile(p).metadata.num_rows for p in shot_files)
    rej = pd.read_parquet(rejects_path, columns=["reason"])
    counts = rej["reason"].value_counts().sort_index()
    rows = [{"reason": "accepted", "shots": n_in - int(counts.sum())}]
    rows += [{"reason": str(k), "shots": int(v)} for k, v in counts.items()]
    out = pd.DataFrame(rows)
    out.attrs["n_input"] = n_in
    return out


def write_audit_report(out: Path, inputs: AuditInputs, cfg: AuditConfig, table: pd.DataFrame,
                       counts: pd.DataFrame, maps, bio_info: dict, map_info: dict,
                       manifest: dict | None = None) -> dict[str, Path]:
    """PNG plots and the Markdown/HTML report."""
    from .references import read_gedi_reference_totals
    from .report import plot_agb_map, plot_difference_map, plot_totals_bar, write_report
    from .zonal import load_countries

    polys = load_countries(inputs.polygons)
    main = "corrected" if "corrected" in maps else "uncorrected"
    figs = {}
    figs["AGB map (terrain-corrected)" if main == "corrected" else "AGB map"] = plot_agb_map(
        maps[main][0], out / "agb_map.png", polys, title=f"AGB, {cfg.terrain['correction']}-corrected metrics")
    figs["AGB standard error"] = plot_agb_map(maps[main][1], out / "agb_se_map.png", polys,
                                              title="AGB standard error (footprint scale)")
    figs["Ours vs FAO FRA 2020 vs GEDI per country"] = plot_totals_bar(table, out / "totals_bar.png")
    if "uncorrected" in maps and main == "corrected":
        figs["Terrain-corrected minus uncorrected AGB"] = plot_difference_map(
            maps["corrected"][0], maps["uncorrected"][0], out / "difference_map.png", polys,
            title=f"{cfg.terrain['correction']}-corrected minus uncorrected AGB")
    cols = [c for c in ("iso3", "name", "agb_pg", "agb_se_pg", "carbon_pg", "agb_uncorrected_pg", "terrain_effect_pct",
                        "true_agb_pg", "error_pct", "error_uncorrected_pct", "fao_agb_pg", "diff_fao_pct",
                        "gedi_agb_pg", "diff_gedi_pct", "agb_mean_mg_ha", "coverage_fraction") if c in table.columns]
    refs = read_gedi_reference_totals()
    # sorted keys: a fresh run and a resumed run (info read back from run_state.json) give the same report
    model_rows = [{"metric set": k, **dict(sorted(v.items()))} for k, v in sorted((bio_info or {}).items())
                  if isinstance(v, dict)]
    map_rows = [{"map": k, **dict(sorted(v.items()))} for k, v in sorted((map_info or {}).items())
                if isinstance(v, dict)]
    notes = {
        "Terrain correction": f"{cfg.terrain['correction']} (rhNN{CORRECTION_SUFFIX[cfg.terrain['correction']]}); "
                              "uncorrected = RH from the ground mode.",
        "Biomass model": f"{cfg.biomass['model']} on {', '.join(cfg.biomass['predictors'])}, fitted on "
                         + ("the user's calibration table" if inputs.calibration else
                            f"{cfg.biomass['calibration_plots']} simulated flat-ground plots with "
                            f"AGB = {inputs.allometry.a:g} H^{inputs.allometry.b:g} cover^{inputs.allometry.c:g}"),
        "Carbon": f"carbon fraction and root:shoot of the ecological zone '{cfg.carbon['ecozone']}' "
                  + (f"({inputs.carbon_factors}" if inputs.carbon_factors else "(fusion/data/carbon_factors.csv, IPCC")
                  + "".join(f", {k} {cfg.carbon[k]}" for k in ("continent", "origin") if cfg.carbon.get(k)) + ")",
        "Shot accounting": f"{int(counts['shots'].sum())} input shots = "
                           + " + ".join(f"{r} {s}" for r, s in zip(counts['reason'], counts['shots'], strict=True)),
    }
    if inputs.fao is None:
        notes["FAO FRA"] = "no FAO FRA table found ([inputs] fao, or ../shared/reference/fao/FRACarbonStock.csv)"
    if inputs.true_totals is not None:
        notes["Sample world"] = ("the embedded sample world: fictional countries (no FAO/GEDI figures); "
                                 "true_agb_pg is the known truth, error_pct our error against it")
    tables = {"Country totals": table[cols], "Shot accounting": counts,
              "Biomass models": pd.DataFrame(model_rows), "Optical fusion": pd.DataFrame(map_rows),
              "Published reference totals (cited)": refs}
    figs = {**figs, **_extra_figures(out, table)}
    return write_report(out, tables, figs, manifest, title="sawa carbon audit", notes=notes, stamp=None)


def _extra_figures(out: Path, table: pd.DataFrame) -> dict[str, Path]:
    """Sample world: corrected vs uncorrected vs true AGB per country."""
    if "true_agb_pg" not in table.columns or table["true_agb_pg"].isna().all():
        return {}
    from .report import _new_figure, _save

    series = [("true", "true_agb_pg", "#636363"), ("terrain-corrected", "agb_pg", "#2b8cbe")]
    if "agb_uncorrected_pg" in table.columns:
        series.append(("uncorrected", "agb_uncorrected_pg", "#e34a33"))
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(table))
    width = 0.8 / len(series)
    for k, (label, col, color) in enumerate(series):
        err = table["agb_se_pg"].to_numpy(float) if col == "agb_pg" and "agb_se_pg" in table.columns else None
        ax.bar(x + (k - (len(series) - 1) / 2) * width, table[col].to_numpy(float), width, label=label, color=color,
               yerr=None if err is None else np.nan_to_num(err), capsize=2)
    ax.set_xticks(x)
    ax.set_xticklabels(table["iso3"].astype(str))
    ax.set_ylabel("AGB (Pg)")
    ax.set_title("AGB per country against the known truth")
    ax.legend()
    return {"Corrected and uncorrected totals against the truth": _save(fig, out / "truth_bar.png")}


__all__ = ["AuditInputs", "AuditResult", "classify_shots", "country_totals", "fit_biomass_model", "reject_counts",
           "resolve_inputs", "run_audit"]
