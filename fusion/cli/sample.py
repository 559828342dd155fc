"""``sawa sample``: (re)generate the embedded sample world and print what was written."""

from __future__ import annotations

import click


@click.command("sample", epilog="""\b
Examples:
  sawa sample                 # regenerate into the cache ($SAWA_SAMPLE_DIR or ~/.cache/sawa/sample_world/v1)
  sawa sample -o world/       # write it to ./world (replacing a previous world there)
""")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: the sample-world cache folder).")
@click.option("--no-verify", is_flag=True, help="Do not compare the files with the committed checksums.")
def sample(output, no_verify):
    """Regenerate the embedded sample world (DEM, forest truth, optical rasters, countries, GEDI L1B, truth)."""
    from data_samples.generate import format_summary, generate_sample_world, verify_world

    world = generate_sample_world(output, overwrite=True,
                                  report=lambda step: click.echo(f"writing {step} ...", err=True))
    if not no_verify:
        for note in verify_world(world.root):
            click.echo(f"note: {note}", err=True)
        click.echo("all files match the committed checksums", err=True)
    click.echo(format_summary(world))
