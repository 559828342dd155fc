"""``sawa slope``: slope and aspect GeoTIFF from DEM tiles (Horn 3x3, metric pixel spacing)."""

from __future__ import annotations

import click

from .options import output_opt, quiet_opt, show_progress

EPILOG = """\b
Examples:
  sawa slope srtm_N39E040.hgt -o slope.tif
  sawa slope tile1.tif tile2.tif tile3.tif -o slope.tif       # tiles mosaicked on the fly
  sawa slope @tiles.txt -o slope.tif                           # one DEM path per line
  sawa slope dem_ft.tif --z-units ft -o slope.tif
"""


@click.command("slope", epilog=EPILOG)
@click.argument("dems", nargs=-1, required=True)
@output_opt
@click.option("--block-px", "block_px", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Edge of the processing blocks (pixels); memory ~ a few blocks.")
@click.option("--no-edges", "no_edges", is_flag=True,
              help="Leave the outermost DEM pixels nodata (GDAL's default) instead of extrapolating one pixel.")
@click.option("--z-units", "z_units", default=None,
              help="Elevation unit of the DEM (m, ft, cm, ...) when the file does not say.")
@click.option("--grid-distances", "grid_distances", is_flag=True,
              help="Projected DEMs: use grid distances (no point scale factor correction).")
@quiet_opt
def slope(dems, output, block_px, no_edges, z_units, grid_distances, quiet):
    """Slope and aspect (degrees) of DEMS into a 2-band GeoTIFF (slope_deg, aspect_deg).

    Horn's 3x3 gradient with the metric pixel size of every row (geodesic on
    the ellipsoid for geographic DEMs, so the spacing shrinks with latitude);
    aspect is the downslope azimuth clockwise from north (NaN on flat ground).
    DEMS are GeoTIFF/.hgt/VRT files in any CRS (nodata honoured); several are
    mosaicked; ``@list.txt`` reads paths from a file. Processed in blocks with a
    one-pixel halo, so any DEM size fits in memory.
    """
    from terrain.dem import dem_paths, open_dem
    from terrain.slope import write_slope_aspect

    paths = dem_paths(dems)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise click.BadParameter(f"DEM file(s) not found: {', '.join(missing)}", param_hint="DEMS")
    with open_dem(paths, z_units=z_units, scale_factor_correction=not grid_distances) as dem:
        summary = write_slope_aspect(dem, output, block_px=block_px, compute_edges=not no_edges,
                                     progress=show_progress(quiet))
        click.echo(
            f"wrote {summary['output']}: {summary['width']} x {summary['height']} px in {summary['blocks']} block(s); "
            f"slope {summary['slope_min_deg']:.1f}-{summary['slope_max_deg']:.1f} deg (mean "
            f"{summary['slope_mean_deg']:.1f}); vertical datum {dem.vertical_datum} ({dem.datum_source})"
        )
