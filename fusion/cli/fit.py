"""``sawa fit``: fit a biomass model on a shot table with reference AGBD."""

from __future__ import annotations

import click

from .options import output_opt

EPILOG = """\b
Examples:
  sawa fit plots.parquet --target agbd_field -o model.json                      # L4A form, rh50 + rh98
  sawa fit shots.parquet --target agb_mg_ha --predictors 98 --rh-suffix _sawa -o sawa_model.json
  sawa fit shots.parquet --target agb_mg_ha --learner random-forest \\
      --features rh50_sawa,rh98_sawa,cover,slope_deg -o rf.skops
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated RH percentiles such as 50,98, got {text!r}") from exc


@click.command("fit", epilog=EPILOG)
@click.argument("shots", type=click.Path(exists=True, dir_okay=False))
@output_opt
@click.option("--target", "target", required=True, help="Column with the reference AGBD (Mg/ha).")
@click.option("--learner", "learner", type=click.Choice(["l4a-form", "random-forest", "gradient-boosting"]),
              default="l4a-form", show_default=True)
@click.option("--predictors", "predictors", default="50,98", show_default=True,
              help="RH percentiles of the L4A-form model.")
@click.option("--rh-suffix", "rh_suffix", default="", help="RH column suffix, e.g. _sawa (L4A form).")
@click.option("--strata-col", "strata_col", default=None,
              help="Column with the stratum of each shot, one model per stratum (L4A form; default: one model for all).")
@click.option("--features", "features", default=None,
              help="Comma-separated feature columns (random-forest / gradient-boosting).")
@click.option("--query", "query", default=None, help="Select calibration shots, e.g. 'quality'.")
@click.option("--seed", "seed", type=int, default=0, show_default=True, help="Random seed of the learners.")
def fit(shots, output, target, learner, predictors, rh_suffix, strata_col, features, query, seed):
    """Fit a biomass model on SHOTS (Parquet) and save it to OUTPUT (.json or .skops)."""
    from biomass.shots import fit_shot_file

    kwargs = {"query": query}
    if learner == "l4a-form":
        kwargs.update(predictors=_ints(predictors), rh_suffix=rh_suffix, strata_col=strata_col)
    else:
        kwargs.update(features=[c.strip() for c in (features or "").split(",") if c.strip()], random_state=seed)
    s = fit_shot_file(shots, output, target, learner, **kwargs)
    if "strata" in s:
        for name, m in s["strata"].items():
            click.echo(f"stratum {name}: n={m['n']} rh{m['rh_index']} rse={m['rse']:.3f} "
                       f"C={m['bias_correction_value']:.4f}")
    else:
        click.echo(f"{learner} on {', '.join(s['features'])}: out-of-sample RMSE {s['rmse_mg_ha']:.2f} Mg/ha")
    click.echo(f"fitted on {s['n_train']} shots; wrote {s['output']} in {s['seconds']:.1f} s")
