"""``sawa grid``: footprint AGBD -> grid cells with GEDI L4B-style hybrid-inference SE (GeoTIFF)."""

from __future__ import annotations

import click

from .options import output_opt


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() in ("", "none") else value


@click.command("grid", epilog="""\b
Examples:
  sawa grid shots.parquet --res 0.01 -o agbd_0p01.tif            # 0.01 deg cells, EPSG:4326
  sawa grid shots.parquet --equal-area 1000 -o agbd_1km.tif      # 1 km cells, EASE-Grid 2.0 (EPSG:6933)
  sawa grid shots.parquet --l4b -o agbd_l4b.tif                  # exactly the GEDI L4B 1 km cells
  sawa grid shots.parquet --like ref.tif --se-column none -o g.tif
\b
Bands: 1 mean AGBD (Mg/ha), 2 SE (Mg/ha), 3 shots, 4 tracks, 5 model variance, 6 sampling variance;
nodata -9999 where a cell has fewer than --min-shots shots or --min-tracks tracks.
""")
@click.argument("shots", type=click.Path(exists=True, dir_okay=False))
@click.option("--res", "res_deg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cell size in degrees (EPSG:4326).")
@click.option("--equal-area", "res_m", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cell size in metres on EASE-Grid 2.0 (EPSG:6933).")
@click.option("--l4b", is_flag=True, help="The GEDI L4B 1 km cells (EASE-Grid 2.0, 1000.895 m).")
@click.option("--like", "like", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use the grid (CRS, transform, size) of this raster.")
@click.option("--bounds", nargs=4, type=float, default=None, metavar="W S E N",
              help="Grid extent in degrees (default: the footprints' extent).")
@click.option("--agbd-column", default="agbd", show_default=True, help="Footprint AGBD column (Mg/ha).")
@click.option("--se-column", default="agbd_se", show_default=True,
              help="Per-footprint model SE column (Mg/ha), or 'none'.")
@click.option("--track-columns", default="granule,beam", show_default=True,
              help="Columns identifying a ground track (comma-separated), or 'none' (shots independent).")
@click.option("--quality-column", default="quality", show_default=True,
              help="Boolean filter column, used when present; 'none' to ignore.")
@click.option("--min-shots", type=click.IntRange(1), default=3, show_default=True)
@click.option("--min-tracks", type=click.IntRange(1), default=2, show_default=True,
              help="Minimum tracks per cell (with track columns).")
@click.option("--batch-rows", type=click.IntRange(1000), default=200_000, show_default=True,
              help="Rows read at a time (bounded memory).")
@output_opt
def grid(shots, res_deg, res_m, l4b, like, bounds, agbd_column, se_column, track_columns, quality_column,
         min_shots, min_tracks, batch_rows, output):
    """Grid footprint AGBD of a shot table (GeoParquet) into cells: mean, SE, shot and track counts."""
    import numpy as np

    from fusion.grid import GridSpec, grid_shot_table, shot_table_bounds

    chosen = [name for name, v in (("--res", res_deg), ("--equal-area", res_m), ("--l4b", l4b or None),
                                   ("--like", like)) if v is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --res, --equal-area, --l4b, --like"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    if like is not None:
        spec = GridSpec.like(like)
    else:
        extent = tuple(bounds) if bounds else shot_table_bounds(shots, batch_rows)
        if res_deg is not None:
            spec = GridSpec.geographic(res_deg, extent)
        elif res_m is not None:
            spec = GridSpec.equal_area(res_m, extent)
        else:
            spec = GridSpec.gedi_l4b(extent)
    tracks = _none(track_columns)
    result = grid_shot_table(
        shots, spec, agbd_column=agbd_column, se_column=_none(se_column),
        track_columns=[c.strip() for c in tracks.split(",")] if tracks else None,
        quality_column=_none(quality_column), min_shots=min_shots, min_tracks=min_tracks if tracks else None,
        batch_rows=batch_rows)
    result.write(output)
    c = result.counts
    est = np.isfinite(result.mean)
    click.echo(f"grid {spec.height} x {spec.width} cells of {spec.res[0]:g} ({spec.crs.to_string()}); "
               f"{int((result.n_shots > 0).sum())} cells with shots, {int(est.sum())} estimated")
    click.echo(f"shots: {c['read']} read, {c['used']} used, {c.get('quality_dropped', 0)} quality-filtered, "
               f"{c['nan_dropped']} NaN, {c['outside_grid']} outside the grid")
    if est.any():
        se = result.se[est & np.isfinite(result.se)]
        click.echo(f"mean AGBD {np.nanmean(result.mean):.1f} Mg/ha over estimated cells; median SE "
                   f"{np.median(se) if se.size else float('nan'):.1f} Mg/ha; model variance: {result.model_variance}")
    click.echo(f"written {output}")
