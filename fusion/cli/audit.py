"""``sawa audit``: the whole carbon audit (default: the embedded sample world)."""

from __future__ import annotations

import click

from .options import get_verbosity, quiet_opt, scheduler_opt, show_progress

EPILOG = """\b
Examples:
  sawa audit                                 # the embedded sample world -> ./sawa_out
  sawa audit -o audit_out --workers 1        # serial, no Dask cluster
  sawa audit --config audit.toml             # your granules, DEM tiles, optical rasters, polygons
  sawa audit --config audit.toml --scheduler tcp://10.0.0.5:8786
  sawa audit --print-config > audit.toml     # every parameter with its default
"""


@click.command("audit", epilog=EPILOG)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Audit TOML file (see --print-config); none: the embedded sample world with the defaults.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: [run] output, sawa_out).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Dask LocalCluster workers for the granule stage; 1 = serial; 0 = one per core.")
@scheduler_opt
@click.option("--fresh", is_flag=True, help="Ignore completed stages of an earlier run in the output folder.")
@click.option("--print-config", is_flag=True, help="Print the configuration (defaults or --config) as TOML and exit.")
@quiet_opt
def audit(config_path, output, workers, scheduler, fresh, print_config, quiet):
    """Waveforms -> metrics -> terrain correction -> biomass -> maps -> carbon -> country totals -> report.

    Writes OUTPUT/country_totals.csv, agb_map.tif (+ _se, + _uncorrected), gridded_agb.tif,
    footprints.parquet, rejects.parquet + reject_counts.csv, PNG plots, report.md/.html and
    manifest.json. A rerun in the same folder skips completed stages (crash-resume).
    """
    from ..config import config_to_toml, load_config
    from ..pipeline import run_audit

    cfg = load_config(config_path)
    if print_config:
        click.echo(config_to_toml(cfg))
        return
    verbosity = -1 if quiet else get_verbosity()
    echo = (lambda s: None) if verbosity < 0 else click.echo
    res = run_audit(cfg, output, workers=workers, scheduler=scheduler, progress=show_progress(quiet), fresh=fresh,
                    echo=echo)
    if verbosity < 0:
        return
    click.echo(f"shots: {res.n_input_shots} in = " + " + ".join(f"{k} {v}" for k, v in res.reject_counts.items()))
    cols = [c for c in ("iso3", "agb_pg", "agb_se_pg", "carbon_pg", "agb_uncorrected_pg", "true_agb_pg", "error_pct",
                        "error_uncorrected_pct", "fao_agb_pg", "gedi_agb_pg") if c in res.totals.columns]
    click.echo(res.totals[cols].to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    click.echo(f"report: {res.paths['html']}  ({res.summary['seconds']:.0f} s)")
