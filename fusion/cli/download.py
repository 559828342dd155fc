"""``sawa download``: search and fetch GEDI granules by bounding box or country and date range."""

from __future__ import annotations

import click

from .options import show_progress


@click.command("download", epilog="""\b
Examples:
  sawa download --product L1B --product L4A --bbox -44.2 -13.8 -44.1 -13.7 \\
      --start 2019-04-18 --end 2019-05-01 -o granules/
  sawa download --product L2A --country BRA --countries ne_110m_admin_0_countries.gpkg \\
      --start 2020-01-01 --end 2020-01-31 -o granules/
""")
@click.option("--product", "products", multiple=True, required=True,
              type=click.Choice(["L1B", "L2A", "L2B", "L4A"]), help="GEDI product(s) to fetch.")
@click.option("--bbox", nargs=4, type=float, default=None, help="west south east north (degrees).")
@click.option("--country", default=None, help="ISO 3166 alpha-3 code; its bounding box is searched.")
@click.option("--countries", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Admin-0 polygon file for --country (e.g. Natural Earth admin-0 GeoPackage).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True, help="First day (YYYY-MM-DD).")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Last day (YYYY-MM-DD).")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), required=True, help="Download folder.")
@click.option("--mirror", type=click.Path(exists=True, file_okay=False), default=None,
              help="Fetch from a local folder of granules instead of NASA Earthdata.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def download(products, bbox, country, countries, start, end, output, mirror, quiet):
    """Search and fetch GEDI granules (resumable; complete files are skipped; sizes/checksums verified)."""
    from fusion.download import LocalSource, country_bbox
    from fusion.download import download as run

    if (bbox is None) == (country is None):
        raise click.UsageError("give exactly one of --bbox or --country")
    if country is not None:
        if countries is None:
            raise click.UsageError("--country needs --countries PATH (an admin-0 polygon file)")
        bbox = country_bbox(country, countries)
    source = LocalSource(mirror) if mirror else None
    results = run(list(products), tuple(bbox), start.date(), end.date(), output, source=source,
                  progress=show_progress(quiet))
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    click.echo(f"{len(results)} granule(s) in {output}: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none found"))
