"""``sawa map``: wall-to-wall AGB (and SE) from footprint AGBD and optical covariate rasters."""

from __future__ import annotations

from pathlib import Path

import click

from .options import output_opt


def _named(values: tuple[str, ...], what: str) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (name = file stem) -> {name: path}."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            name, path = Path(v).stem, v
        if not Path(path).is_file():
            raise click.BadParameter(f"{path} does not exist", param_hint=what)
        if name in out:
            raise click.BadParameter(f"two covariates named {name!r}; use NAME=PATH", param_hint=what)
        out[name] = path
    return out


@click.command("map", epilog="""\b
Examples:
  sawa map shots.parquet --optical treecover.tif --optical ndvi.tif --like ref.tif -o agb.tif
  sawa map shots.parquet --optical tc=treecover.tif --optical dem=dem.tif --res 0.001 \\
      --resampling landcover=mode --learner gradient-boosting -o agb.tif
\b
Writes AGB (Mg/ha) to -o and its SE to --se-output (default <output>_se.tif).
""")
@click.argument("shots", type=click.Path(exists=True, dir_okay=False))
@click.option("--optical", "optical", multiple=True, required=True, metavar="[NAME=]PATH",
              help="Covariate raster (tree cover, NDVI, land cover, DEM, slope...); repeat for each.")
@click.option("--like", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Target grid of this raster (default: the first --optical raster's grid).")
@click.option("--res", "res_deg", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Target cell size in degrees (EPSG:4326) over --bounds or the first raster's extent.")
@click.option("--equal-area", "res_m", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Target cell size in metres on EASE-Grid 2.0 (EPSG:6933).")
@click.option("--bounds", nargs=4, type=float, default=None, metavar="W S E N", help="Target extent (degrees).")
@click.option("--resampling", multiple=True, metavar="NAME=METHOD",
              help="Resampling of one covariate (nearest, bilinear, average, mode, ...; default auto).")
@click.option("--learner", type=click.Choice(["random-forest", "gradient-boosting"]), default="random-forest",
              show_default=True)
@click.option("--agbd-column", default="agbd", show_default=True)
@click.option("--quality-column", default="quality", show_default=True, help="Boolean filter column if present.")
@click.option("--se-output", type=click.Path(dir_okay=False), default=None, help="SE raster path.")
@click.option("--block-px", type=click.IntRange(16), default=512, show_default=True,
              help="Prediction block size (pixels); memory ~ block_px^2 x covariates.")
@click.option("--cv-folds", type=click.IntRange(2), default=5, show_default=True)
@click.option("--cv-block-m", type=click.FloatRange(min=0, min_open=True), default=2000.0, show_default=True,
              help="Spatial CV block side (m).")
@click.option("--seed", type=int, default=0, show_default=True)
@output_opt
def map_(shots, optical, like, res_deg, res_m, bounds, resampling, learner, agbd_column, quality_column, se_output,
         block_px, cv_folds, cv_block_m, seed, output):
    """Fit covariates -> footprint AGBD, then predict AGB and SE on every pixel of the target grid."""
    from fusion.grid import GridSpec
    from fusion.optical import fit_optical_model, predict_map

    covariates = _named(optical, "--optical")
    methods = {}
    for item in resampling:
        name, sep, method = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=METHOD", param_hint="--resampling")
        methods[name] = method
    if sum(v is not None for v in (like, res_deg, res_m)) > 1:
        raise click.UsageError("give at most one of --like, --res, --equal-area")
    if like is not None:
        grid = GridSpec.like(like)
    elif res_deg is not None or res_m is not None:
        if bounds:
            extent = tuple(bounds)
        else:
            import rasterio
            from rasterio.warp import transform_bounds

            with rasterio.open(next(iter(covariates.values()))) as ds:
                extent = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
        grid = GridSpec.geographic(res_deg, extent) if res_deg is not None else GridSpec.equal_area(res_m, extent)
    else:
        grid = GridSpec.like(next(iter(covariates.values())))
    quality = None if quality_column.lower() in ("", "none") else quality_column
    model = fit_optical_model(shots, covariates, grid, learner=learner, agbd_column=agbd_column,
                              quality_column=quality, resampling=methods or "auto", cv_folds=cv_folds,
                              cv_block_m=cv_block_m, seed=seed)
    i = model.info
    click.echo(f"trained {learner} on {i['n_train']} footprints ({i['n_shots']} read, {i['n_quality_dropped']} "
               f"quality-filtered, {i['n_nan_dropped']} NaN, {i['n_outside_grid']} outside the grid, "
               f"{i['n_missing_covariate']} without all covariates)")
    click.echo(f"spatial {i['cv_folds']}-fold CV ({i['cv_blocks']} blocks of {cv_block_m:g} m): R2 {i['cv_r2']:.3f}, "
               f"RMSE {i['cv_rmse_mg_ha']:.1f} Mg/ha, bias {i['cv_bias_mg_ha']:+.1f} Mg/ha")
    click.echo("covariates: " + ", ".join(f"{n} ({model.resampling[n]})" for n in model.covariate_names))
    res = predict_map(model, covariates, grid, output, se_output, block_px=block_px)
    click.echo(f"map {grid.height} x {grid.width} px ({grid.crs.to_string()}): {res.n_predicted} predicted, "
               f"mean {res.agb_mean_mg_ha:.1f} Mg/ha; {res.seconds:.1f} s in {block_px}-px blocks")
    click.echo(f"written {res.agb_path} and {res.se_path}")
