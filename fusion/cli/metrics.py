"""``sawa metrics``: L1B granules -> GeoParquet shot table (ground, RH0-100, cover, LEE/TEE)."""

from __future__ import annotations

import click

from .options import output_opt, quiet_opt, show_progress

EPILOG = """\b
Examples:
  sawa metrics GEDI01_B_...h5 -o shots.parquet
  sawa metrics a.h5 b.h5 -o shots.parquet --algorithm a5
  sawa metrics GEDI01_B_...h5 --l2a GEDI02_A_...h5 --algorithm l2a -o shots.parquet
"""


@click.command("metrics", epilog=EPILOG)
@click.argument("granules", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@output_opt
@click.option("--l2a", "l2a", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Matching L2A granule(s): add official values side by side (l2a_* columns). Repeatable.")
@click.option("-a", "--algorithm", "algorithm", default="a1", show_default=True,
              help="L2A setting group a1..a6 (or 1..6), or 'l2a' for the group L2A selected per shot (needs --l2a).")
@click.option("--beam", "beams", multiple=True, help="Only these beams (BEAMxxxx). Repeatable. Default: all.")
@click.option("--chunk-shots", "chunk_shots", type=click.IntRange(min=1), default=None,
              help="Shots processed at once per beam (bounds memory). Default: 25000.")
@quiet_opt
def metrics(granules, output, l2a, algorithm, beams, chunk_shots, quiet):
    """Waveform metrics of every shot of GEDI L1B GRANULES, written to one GeoParquet file.

    Each granule is streamed beam by beam in chunks through sawa's numba
    kernels (ground elevation, RH0-RH100, canopy top, waveform extent,
    LEE/TEE, energy, cover). Shots that cannot be processed are kept, with a
    reason. The output is EPSG:4326 GeoParquet readable by geopandas and duckdb.
    """
    from waveform.stream import DEFAULT_STREAM_CHUNK_SHOTS, write_metrics

    summary = write_metrics(
        list(granules),
        output,
        algorithm=algorithm,
        chunk_shots=chunk_shots or DEFAULT_STREAM_CHUNK_SHOTS,
        progress=show_progress(quiet),
        l2a_paths=list(l2a) or None,
        beams=list(beams) or None,
    )
    n = summary["n_shots"]
    click.echo(
        f"wrote {n} shots ({summary['n_quality']} with quality) to {summary['output']} "
        f"in {summary['seconds']:.1f} s ({summary['shots_per_second']:.0f} shots/s)"
    )
    others = {k: v for k, v in summary["reasons"].items() if k != "ok"}
    if others:
        click.echo("not ok: " + ", ".join(f"{k} {v}" for k, v in others.items()))
