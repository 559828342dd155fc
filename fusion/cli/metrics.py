"""``sawa metrics``: L1B granules -> GeoParquet shot table (ground, RH0-100, cover, LEE/TEE; SAWA with --dem).

With ``--dem`` every chunk of shots is annotated by :func:`terrain.sawa.annotate_terrain`
(the ``on_chunk`` hook of :func:`waveform.stream.write_metrics`): footprint slope, aspect,
relief and DEM elevation, the slope-adaptive metrics ``rhNN_sawa`` [Wang2019] and the
terrain-deconvolved ``rhNN_deconv``, beside the uncorrected ``rhNN``; the wiring is
:mod:`terrain.granule_terrain`, shared with ``sawa audit``.
"""

from __future__ import annotations

from pathlib import Path

import click

from terrain.granule_terrain import check_dem_overlap, terrain_hook

from .options import dem_opt, output_opt, quiet_opt, show_progress

EPILOG = """\b
Examples:
  sawa metrics GEDI01_B_...h5 -o shots.parquet
  sawa metrics a.h5 b.h5 -o shots.parquet --algorithm a5
  sawa metrics GEDI01_B_...h5 --l2a GEDI02_A_...h5 --algorithm l2a -o shots.parquet
  sawa metrics GEDI01_B_...h5 --dem tile1.tif --dem tile2.tif -o shots.parquet   # + slope, SAWA, deconvolution
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
@dem_opt
@click.option("--footprint-diameter", "footprint_diameter_m", type=click.FloatRange(min=0, min_open=True),
              default=None, help="With --dem: 1/e^2 footprint diameter in m. Default: GEDI's 25 m.")
@click.option("--no-deconv", "no_deconv", is_flag=True,
              help="With --dem: skip the terrain deconvolution (rhNN_deconv columns); SAWA columns are still added.")
@quiet_opt
def metrics(granules, output, l2a, algorithm, beams, chunk_shots, dem, footprint_diameter_m, no_deconv, quiet):
    """Waveform metrics of every shot of GEDI L1B GRANULES, written to one GeoParquet file.

    Each granule is streamed beam by beam in chunks through sawa's numba
    kernels (ground elevation, RH0-RH100, canopy top, waveform extent,
    LEE/TEE, energy, cover). Shots that cannot be processed are kept, with a
    reason. The output is EPSG:4326 GeoParquet readable by geopandas and duckdb.

    With --dem (repeat for several tiles; they are mosaicked) each shot also
    gets slope_deg, aspect_deg, relief_m, dem_elevation_m and terrain_reason
    from the DEM under its footprint, the slope-adaptive metrics rhNN_sawa
    (Wang et al. 2019) with sawa_reason, and the terrain-deconvolved rhNN_deconv
    with deconv_reason. The DEM must overlap the shots.
    """
    from waveform.constants import FOOTPRINT_DIAMETER_M
    from waveform.stream import DEFAULT_STREAM_CHUNK_SHOTS, write_metrics

    granules = list(granules)
    kwargs = dict(
        algorithm=algorithm,
        chunk_shots=chunk_shots or DEFAULT_STREAM_CHUNK_SHOTS,
        progress=show_progress(quiet),
        l2a_paths=list(l2a) or None,
        beams=list(beams) or None,
    )
    if dem:
        from terrain.dem import dem_paths, open_dem
        from waveform.stream import granule_settings

        diameter = float(footprint_diameter_m or FOOTPRINT_DIAMETER_M)
        counts: dict[str, dict[str, int]] = {}
        settings = granule_settings(Path(l2a[0])) if l2a else None
        with open_dem(dem_paths(dem)) as d:
            missing = check_dem_overlap(d, granules, kwargs["beams"])
            for name in missing:
                click.echo(f"warning: DEM {d.name} does not overlap any shot of granule {name}; "
                           "its terrain columns will be NaN", err=True)
            summary = write_metrics(
                granules, output, on_chunk=terrain_hook(d, diameter, not no_deconv, counts, settings),
                with_tx=True,
                metadata={"dem": [str(p) for p in d.paths], "dem_vertical_datum": d.vertical_datum,
                          "dem_datum_source": d.datum_source, "footprint_diameter_m": diameter,
                          "deconvolve": not no_deconv},
                **kwargs,
            )
    else:
        if footprint_diameter_m is not None or no_deconv:
            raise click.UsageError("--footprint-diameter and --no-deconv need --dem")
        summary = write_metrics(granules, output, **kwargs)
    n = summary["n_shots"]
    click.echo(
        f"wrote {n} shots ({summary['n_quality']} with quality) to {summary['output']} "
        f"in {summary['seconds']:.1f} s ({summary['shots_per_second']:.0f} shots/s)"
    )
    others = {k: v for k, v in summary["reasons"].items() if k != "ok"}
    if others:
        click.echo("not ok: " + ", ".join(f"{k} {v}" for k, v in others.items()))
    if dem:
        for col, tally in counts.items():
            click.echo(f"{col}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
