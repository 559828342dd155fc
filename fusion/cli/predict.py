"""``sawa predict``: AGBD and its SE for every shot of a shot table (GeoParquet)."""

from __future__ import annotations

import click

from .options import output_opt

EPILOG = """\b
Examples:
  sawa predict --model gedi-l4a shots.parquet -o agbd.parquet
  sawa predict --model gedi-l4a --rh-suffix _sawa shots.parquet -o agbd_sawa.parquet
  sawa predict --model my_model.json shots.parquet -o agbd.parquet
"""


@click.command("predict", epilog=EPILOG)
@click.argument("shots", type=click.Path(exists=True, dir_okay=False))
@output_opt
@click.option("-m", "--model", "model", default="gedi-l4a", show_default=True,
              help="'gedi-l4a' (NASA's L4A v2 models shipped with sawa) or a model file from 'sawa fit' "
                   "(.json L4A-form, .skops learner).")
@click.option("--rh-suffix", "rh_suffix", default=None,
              help="Suffix of the RH columns for L4A-form models, e.g. _sawa for rh98_sawa (default: none).")
@click.option("--overwrite", is_flag=True, help="Replace prediction columns already in the table (e.g. agbd).")
def predict(shots, output, model, rh_suffix, overwrite):
    """Predict agbd and agbd_se (Mg/ha) for every shot of SHOTS (Parquet/GeoParquet).

    RH columns rh0..rh100 are in metres; NASA's model also needs predict_stratum
    or the GEDI pft_class + region_class codes. Every input row is kept;
    agbd_reason says why a shot has no prediction ('' = predicted).
    """
    from biomass.shots import predict_shot_file

    s = predict_shot_file(shots, output, model, rh_suffix=rh_suffix, overwrite=overwrite)
    click.echo(f"wrote {s['n_shots']} shots ({s['n_predicted']} predicted, mean agbd "
               f"{s['mean_agbd_mg_ha']:.1f} Mg/ha) to {s['output']} in {s['seconds']:.1f} s")
    others = {k: v for k, v in s["reasons"].items() if k != "ok"}
    if others:
        click.echo("not predicted: " + ", ".join(f"{k} {v}" for k, v in others.items()))
