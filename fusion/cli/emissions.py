"""``sawa emissions``: gross deforestation emissions from SRTM and TanDEM-X forest height loss."""

from __future__ import annotations

import click

from .options import output_dir_opt


@click.command("emissions", epilog="""\b
Examples:
  sawa emissions                              # on the simulated emissions sample world
  sawa emissions --srtm srtm.tif --tandemx tdx.tif --forest height2000.tif \\
      --regions regions.gpkg --shots gedi_rh98_agbd.parquet -o out/
""")
@click.option("--srtm", type=click.Path(exists=True, dir_okay=False), default=None, help="SRTM DEM (start date).")
@click.option("--tandemx", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TanDEM-X DEM (end date); its grid is the analysis grid.")
@click.option("--forest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Start-year forest mask (0/1) or canopy height raster (m).")
@click.option("--regions", type=click.Path(exists=True, dir_okay=False), default=None, help="Region polygons.")
@click.option("--region-field", default=None, help="Region name column (default: name/region/iso3...).")
@click.option("--shots", type=click.Path(exists=True, dir_okay=False), default=None,
              help="GEDI-like shot table (Parquet/CSV) with rh98 (m) and agbd (Mg/ha) for the height-AGB fit.")
@click.option("--tree-cover-loss", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Optional tree-cover-loss raster (0/1, or Hansen lossyear codes).")
@click.option("--srtm-date", default="2000-02-16", show_default=True)
@click.option("--tandemx-date", default="2013-01-01", show_default=True,
              help="Mean acquisition date of the TanDEM-X DEM.")
@click.option("--srtm-datum", type=click.Choice(["wgs84", "egm96", "egm2008"]), default="egm96", show_default=True)
@click.option("--tandemx-datum", type=click.Choice(["wgs84", "egm96", "egm2008"]), default="wgs84", show_default=True)
@click.option("--strict-datum", is_flag=True, help="Fail when datums differ and PROJ's geoid grid is missing.")
@click.option("--penetration-offset", type=float, default=None,
              help="C/X-band penetration difference (m); default: estimated over stable forest.")
@click.option("--min-loss", type=float, default=5.0, show_default=True, help="Minimum height loss (m).")
@click.option("--min-loss-fraction", type=float, default=0.5, show_default=True,
              help="Minimum height loss as a fraction of start height (with a height raster).")
@click.option("--min-patch-ha", type=float, default=0.5, show_default=True, help="Minimum deforested patch (ha).")
@click.option("--draws", type=click.IntRange(1, 5000), default=200, show_default=True, help="Monte Carlo draws.")
@click.option("--seed", type=int, default=0, show_default=True)
@output_dir_opt
def emissions(srtm, tandemx, forest, regions, region_field, shots, tree_cover_loss, srtm_date, tandemx_date,
              srtm_datum, tandemx_datum, strict_datum, penetration_offset, min_loss, min_loss_fraction,
              min_patch_ha, draws, seed, output):
    """Forest height loss SRTM -> TanDEM-X, deforested area, AGB loss and Tg C/yr per region."""
    from fusion.emissions import TOTAL_ROW, run_emissions

    required = {"--srtm": srtm, "--tandemx": tandemx, "--forest": forest, "--regions": regions, "--shots": shots}
    given = [k for k, v in required.items() if v is not None]
    if not given and tree_cover_loss is None:
        from data_samples.emissions_world import load_emissions_world

        world = load_emissions_world()
        click.echo(f"no inputs given: using the emissions sample world in {world.folder}")
        srtm, tandemx, forest, regions = world.srtm_path, world.tandemx_path, world.forest_height_path, world.regions_path
        shots, tree_cover_loss = world.shots_path, world.tree_cover_loss_path
    elif len(given) != len(required):
        missing = [k for k in required if k not in given]
        raise click.UsageError(f"missing {', '.join(missing)} (give all of {', '.join(required)}, or none for the sample world)")
    result = run_emissions(
        srtm, tandemx, forest, regions, output, shots=shots, tree_cover_loss=tree_cover_loss, srtm_date=srtm_date,
        tandemx_date=tandemx_date, srtm_datum=srtm_datum, tandemx_datum=tandemx_datum, strict_datum=strict_datum,
        penetration_offset_m=penetration_offset, min_loss_m=min_loss, min_loss_fraction=min_loss_fraction,
        min_patch_ha=min_patch_ha, region_field=region_field, n_draws=draws, seed=seed)
    c = result.coregistration
    click.echo(f"co-registration SRTM -> TanDEM-X: dx {c.dx_px:+.3f} px ({c.dx_m:+.1f} m), dy {c.dy_px:+.3f} px "
               f"({c.dy_m:+.1f} m), dz {c.dz_m:+.2f} m; NMAD {c.nmad_before_m:.2f} -> {c.nmad_after_m:.2f} m")
    click.echo(f"datum: {result.datum.note}")
    p = result.penetration
    click.echo(f"penetration offset ({p.source}): {p.offset_m:.2f} +/- {p.standard_error_m:.2f} m; "
               f"years between DEMs {result.years:.2f}")
    for _, row in result.table.iterrows():
        click.echo(f"  {row['region']:<24} deforested {row['deforested_area_ha']:10.1f} ha  "
                   f"{row['emissions_tg_c_per_yr']:.4g} Tg C/yr (5-95%: {row['emissions_p05_tg_c_per_yr']:.4g}-"
                   f"{row['emissions_p95_tg_c_per_yr']:.4g})" + ("  <- total" if row["region"] == TOTAL_ROW else ""))
    counts = result.counts
    click.echo(f"voids: SRTM {counts['srtm_void_px']} px, TanDEM-X {counts['tandemx_void_px']} px; "
               f"{counts['forest_not_assessed_px']} forest px not assessed")
    click.echo(f"outputs in {output}: " + ", ".join(p.name for p in result.paths.values()))
