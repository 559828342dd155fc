"""``sawa coregister``: Nuth & Kääb (2011) co-registration of one DEM to a reference DEM."""

from __future__ import annotations

import json

import click


@click.command("coregister", epilog="""\b
Examples:
  sawa coregister tandemx.tif srtm.tif                  # print the shift
  sawa coregister tandemx.tif srtm.tif --json           # {"dx_px":..,"dy_px":..,"dx_m":..,"dy_m":..,"dz_m":..}
  sawa coregister tandemx.tif srtm.tif -o srtm_aligned.tif --ref-datum wgs84 --dem-datum egm96
""")
@click.argument("ref", type=click.Path(exists=True, dir_okay=False))
@click.argument("dem", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), default=None,
              help="Write DEM aligned on REF's grid (float32 GeoTIFF).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object with dx_px, dy_px, dx_m, dy_m, dz_m.")
@click.option("--stable-mask", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Raster, non-zero = stable terrain used for the fit (default: all valid pixels).")
@click.option("--ref-datum", type=click.Choice(["wgs84", "egm96", "egm2008"]), default=None,
              help="Vertical datum of REF (wgs84 = ellipsoidal heights).")
@click.option("--dem-datum", type=click.Choice(["wgs84", "egm96", "egm2008"]), default=None,
              help="Vertical datum of DEM.")
@click.option("--strict-datum", is_flag=True,
              help="Fail if the datums differ and PROJ's geoid grid is missing (default: absorb in dz).")
@click.option("--vertical", type=click.Choice(["median", "plane"]), default="median", show_default=True,
              help="Vertical correction: one bias, or bias + tilt.")
@click.option("--max-iterations", type=click.IntRange(1, 100), default=15, show_default=True)
@click.option("--tolerance-px", type=click.FloatRange(min=1e-6), default=0.005, show_default=True,
              help="Stop when the shift update is below this (pixels of REF).")
def coregister(ref, dem, output, as_json, stable_mask, ref_datum, dem_datum, strict_datum, vertical,
               max_iterations, tolerance_px):
    """Estimate the shift (x east, y north, z up) to apply to DEM to align it with REF.

    DEM is warped onto REF's grid first (any CRS); shifts are in REF pixels and metres.
    """
    from terrain.coregister import coregister_files

    result = coregister_files(ref, dem, output_path=output, stable_mask_path=stable_mask, ref_datum=ref_datum,
                              dem_datum=dem_datum, strict_datum=strict_datum, vertical=vertical,
                              max_iterations=max_iterations, tolerance_px=tolerance_px)
    if as_json:
        click.echo(json.dumps(result.shift_dict()))
        return
    click.echo(f"shift to apply to {dem} to align it with {ref}:")
    click.echo(f"  x (east)  {result.dx_px:+.3f} px  {result.dx_m:+.2f} m")
    click.echo(f"  y (north) {result.dy_px:+.3f} px  {result.dy_m:+.2f} m")
    click.echo(f"  z (up)    {result.dz_m:+.2f} m" + (f"  (plane, {vertical})" if vertical == "plane" else ""))
    click.echo(f"pixel {result.pixel_width_m:.2f} x {result.pixel_height_m:.2f} m; {result.n_stable_px} stable px; "
               f"NMAD {result.nmad_before_m:.2f} -> {result.nmad_after_m:.2f} m; {len(result.iterations)} iteration(s)"
               + ("" if result.converged else " (NOT converged)"))
    if result.datum is not None:
        click.echo(f"datum: {result.datum.note}")
    if output:
        click.echo(f"aligned DEM written to {output}")
