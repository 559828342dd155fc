"""The ``sawa`` command line, in the style of rasterio's ``rio``.

One click group; each subcommand lives in its own module of this package and
is imported only when used (fast ``sawa --help``). To add a command, add one
line to :data:`COMMANDS` and a module exposing a click command.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from .options import verbose_quiet_options

#: subcommand name -> "module:attribute" (module relative to fusion.cli)
COMMANDS: dict[str, str] = {
    "audit": "audit:audit",
    "metrics": "metrics:metrics",
    "slope": "slope:slope", "study": "study:study",
    "download": "download:download",
    "sample": "sample:sample",
    "emissions": "emissions:emissions",
    "coregister": "coregister:coregister",
    "grid": "grid:grid",
    "map": "map:map_",
    "fit": "fit:fit", "predict": "predict:predict",
}

EPILOG = """\b
Examples:
  sawa audit                         # the whole carbon audit on the embedded sample world
  sawa metrics GRANULE.h5 -o shots.parquet
  sawa sample                        # regenerate the embedded sample world
"""


#: One-line help per subcommand, shown by ``sawa --help`` without importing the module.
SHORT_HELP: dict[str, str] = {
    "metrics": "Waveform metrics (ground, RH0-100, cover, LEE/TEE; SAWA with --dem) -> GeoParquet.",
    "sample": "Regenerate the embedded sample world.",
    "slope": "Slope/aspect GeoTIFF from DEM tiles (Horn, geodesic pixel size).",
    "study": "Accuracy studies against simulated truth (sawa study slope / sawa study biomass).",
    "fit": "Fit a biomass model on a shot table.",
    "predict": "Predict AGBD and its SE for every shot of a shot table.",
    "grid": "Grid footprint AGBD to cells with hybrid-inference SE -> GeoTIFF.",
    "map": "Wall-to-wall AGB map from footprints + optical rasters.",
    "audit": "The whole carbon audit (default: the embedded sample world).",
    "emissions": "Deforestation emissions from SRTM vs TanDEM-X forest height loss.",
    "coregister": "Co-register a DEM to a reference DEM (Nuth & Kaab 2011).",
    "download": "Search and fetch GEDI granules with earthaccess.",
}


class LazyGroup(click.Group):
    """A click group that imports subcommand modules on first use."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        return getattr(module, attr)


class SawaGroup(LazyGroup):
    """Turns exceptions into a one-line cause and exit code 1 (traceback with --verbose)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's single error boundary
            if ctx.obj and ctx.obj.get("verbosity", 0) > 0:
                raise
            click.echo(f"sawa: error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=SawaGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@verbose_quiet_options
@click.version_option(package_name="sawa")
@click.pass_context
def main(ctx: click.Context, verbosity: int) -> None:
    """sawa: GEDI waveforms + DEMs + optical products -> terrain-corrected biomass and carbon stocks."""
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbosity
    level = logging.WARNING - 10 * max(verbosity, -1)
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
