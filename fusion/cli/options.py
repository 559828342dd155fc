"""Option definitions shared by all ``sawa`` subcommands (as in ``rasterio.rio.options``)."""

from __future__ import annotations

import click


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    return value


def verbose_quiet_options(f):
    """``-v/--verbose`` (repeatable) and ``-q/--quiet``, combined into ``verbosity``."""
    f = click.option("-q", "--quiet", "quiet", count=True, help="Less output (no progress bars).")(f)
    f = click.option("-v", "--verbose", "verbose", count=True, help="More output; full tracebacks on error.")(f)

    def wrapper(*args, verbose: int = 0, quiet: int = 0, **kwargs):
        return f(*args, verbosity=verbose - quiet, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    wrapper.__click_params__ = getattr(f, "__click_params__", [])
    return wrapper


def get_verbosity(ctx: click.Context | None = None) -> int:
    """Verbosity of the root ``sawa`` group (-1 quiet, 0 normal, >0 verbose)."""
    ctx = ctx or click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and "verbosity" in ctx.obj:
            return int(ctx.obj["verbosity"])
        ctx = ctx.parent
    return 0


def show_progress(quiet_flag: bool = False) -> bool:
    """Whether to draw tqdm bars: not with --quiet, and only on a terminal."""
    import sys

    return not quiet_flag and get_verbosity() >= 0 and sys.stderr.isatty()


output_opt = click.option(
    "-o", "--output", "output", type=click.Path(dir_okay=False, writable=True), required=True,
    help="Output file (written atomically).",
)
output_dir_opt = click.option(
    "-o", "--output", "output", type=click.Path(file_okay=False), default="sawa_out", show_default=True,
    help="Output folder (created if absent).",
)
quiet_opt = click.option("--quiet", "quiet", is_flag=True, help="No progress bar.")
dem_opt = click.option(
    "--dem", "dem", type=click.Path(exists=True, dir_okay=False), multiple=True,
    help="DEM file(s) (GeoTIFF, .hgt, VRT); several are mosaicked. Repeat the option for each tile.",
)
scheduler_opt = click.option(
    "--scheduler", "scheduler", default=None,
    help="Dask scheduler address (tcp://HOST:PORT); default: a LocalCluster sized to this machine.",
)
