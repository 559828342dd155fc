"""``sawa study``: accuracy studies against simulated truth (``sawa study slope``, ``sawa study biomass``)."""

from __future__ import annotations

import click

from .options import output_dir_opt, quiet_opt

EPILOG = """\b
Examples:
  sawa study slope -o study_out                       # the full study (10 bins x 200 stands)
  sawa study slope -o quick --stands-per-bin 20
  sawa study slope -o robust --slope-error-deg 2      # DEM slope errors of 2 deg (sd)
  sawa study biomass -o biomass_out                   # AGB RMSE by slope: raw vs SAWA vs deconvolved metrics
  sawa study biomass -o rf --learner random-forest --block-km 3
"""


@click.group("study", epilog=EPILOG)
def study():
    """Accuracy studies of sawa's corrections against simulated truth."""


@study.command("slope", epilog=EPILOG)
@output_dir_opt
@click.option("--stands-per-bin", "stands_per_bin", type=click.IntRange(min=4), default=200, show_default=True,
              help="Simulated stands per 5-degree slope bin.")
@click.option("--max-slope", "max_slope", type=click.FloatRange(5, 80), default=50.0, show_default=True,
              help="Upper edge of the last slope bin (deg).")
@click.option("--slope-error-deg", "slope_error_deg", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Standard deviation of an error added to the slope given to the corrections (DEM error).")
@click.option("--seed", type=int, default=20190217, show_default=True)
def slope(output, stands_per_bin, max_slope, slope_error_deg, seed):
    """Terrain-induced error of RH25/50/75/98: raw vs SAWA vs edge-extent vs deconvolution.

    Each stand is simulated on flat ground and on a slope; the error is the
    slope value minus the flat value. Writes OUTPUT/slope_study.csv (one row
    per metric and bin), slope_study_agb.csv, slope_study.png, per-stand
    Parquet, a JSON summary of the goals on bins >= 20 deg, and manifest.json.
    """
    import numpy as np

    from terrain.study import SlopeStudyConfig, format_summary, run_slope_study

    edges = tuple(float(v) for v in np.arange(0.0, max_slope + 1e-9, 5.0))
    if edges[-1] < max_slope:
        edges = edges + (float(max_slope),)
    cfg = SlopeStudyConfig(slope_edges_deg=edges, stands_per_bin=stands_per_bin, slope_error_deg=slope_error_deg,
                           seed=seed)
    result = run_slope_study(output, cfg)
    click.echo(f"{len(result.stands)} stands in {result.summary['seconds']:.0f} s; wrote {result.paths['table']}")
    click.echo(format_summary(result.summary))


@study.command("biomass", epilog=EPILOG)
@output_dir_opt
@click.option("--learner", type=click.Choice(["l4a-form", "random-forest", "gradient-boosting"]), default="l4a-form",
              show_default=True,
              help="AGBD model: NASA's L4A form (RH only) or an ML learner (RH + DEM slope and relief).")
@click.option("--block-km", "block_km", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Edge of the spatial CV blocks (km). Default: 5.")
@click.option("--folds", "n_splits", type=click.IntRange(min=2), default=None, help="CV folds. Default: 5.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random-split comparison (and learners).")
@quiet_opt
def biomass(output, learner, block_km, n_splits, seed, quiet):
    """AGB accuracy on the sample world: uncorrected vs SAWA vs terrain-deconvolved metrics.

    Computes the metrics of every sample-world shot (DEM slope, SAWA with the
    measured pulse, terrain deconvolution), joins the true AGB per shot and
    cross-validates the same learner on each metric set (RH25/50/75/98 of the
    set) with spatial block CV; a random split is reported as a labelled
    comparison only. Writes OUTPUT/biomass_study.csv (R2, RMSE, bias overall and
    by 5-degree slope bin), biomass_study.png, biomass_study_summary.json,
    per-shot predictions and manifest.json.
    """
    from biomass.constants import DEFAULT_BLOCK_KM, DEFAULT_N_SPLITS
    from biomass.study import format_study
    from fusion.biomass_study import run_biomass_study

    from .options import show_progress

    params = {"random_state": seed} if learner != "l4a-form" else None
    result = run_biomass_study(output, learner=learner, block_km=block_km or DEFAULT_BLOCK_KM,
                               n_splits=n_splits or DEFAULT_N_SPLITS, random_state=seed, learner_params=params,
                               progress=show_progress(quiet))
    click.echo(format_study(result))
    click.echo(f"wrote {result.paths['table']}, {result.paths['plot'].name}, {result.paths['summary'].name}")
