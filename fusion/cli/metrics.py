"""``sawa metrics``: L1B granules -> GeoParquet shot table (ground, RH0-100, cover, LEE/TEE; SAWA with --dem).

With ``--dem`` every chunk of shots is annotated by :func:`terrain.sawa.annotate_terrain`
(the ``on_chunk`` hook of :func:`waveform.stream.write_metrics`): footprint slope, aspect,
relief and DEM elevation, the slope-adaptive metrics ``rhNN_sawa`` [Wang2019] and the
terrain-deconvolved ``rhNN_deconv``, beside the uncorrected ``rhNN``. The wiring lives here
because ``waveform`` must not import ``terrain``; the stream only gets generic hooks
(``on_chunk``, ``with_tx``, ``metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from .options import dem_opt, output_opt, quiet_opt, show_progress

EPILOG = """\b
Examples:
  sawa metrics GEDI01_B_...h5 -o shots.parquet
  sawa metrics a.h5 b.h5 -o shots.parquet --algorithm a5
  sawa metrics GEDI01_B_...h5 --l2a GEDI02_A_...h5 --algorithm l2a -o shots.parquet
  sawa metrics GEDI01_B_...h5 --dem tile1.tif --dem tile2.tif -o shots.parquet   # + slope, SAWA, deconvolution
"""


def shot_positions(path, beams=None) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude of every shot of the chosen beams of an L1B granule (midpoint of the
    waveform's first and last bin, between which the ground return lies)."""
    from waveform.gedi import L1B_SHOT_FIELDS, open_granule

    lons, lats = [], []
    with open_granule(path, "L1B") as g:
        for beam in g.select_beams(beams):
            lon0, lon1, lat0, lat1 = (np.asarray(g.read(beam, L1B_SHOT_FIELDS[f"{axis}_{end}"]), np.float64)
                                      for axis in ("longitude", "latitude") for end in ("bin0", "lastbin"))
            lons.append(0.5 * (lon0 + lon1))
            lats.append(0.5 * (lat0 + lat1))
    if not lons:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(lons), np.concatenate(lats)


def check_dem_overlap(dem, granules: Sequence, beams=None) -> list[str]:
    """Raise :class:`~waveform.errors.NoOverlapError` naming the DEM and the granules when no shot
    of any granule lies on the DEM; return the names of granules that miss it (others do not)."""
    from terrain.dem import overlap_check
    from waveform.errors import NoOverlapError

    missing: list[str] = []
    all_lon, all_lat = [], []
    for path in granules:
        lon, lat = shot_positions(path, beams)
        all_lon.append(lon)
        all_lat.append(lat)
        try:
            overlap_check(dem, lon, lat)
        except NoOverlapError:
            missing.append(Path(path).name)
    if len(missing) == len(granules):
        lon, lat = np.concatenate(all_lon), np.concatenate(all_lat)
        names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        try:
            overlap_check(dem, lon, lat)
        except NoOverlapError as exc:
            raise NoOverlapError(f"{exc} of granule{'s' if len(missing) > 1 else ''} {names}") from None
        raise NoOverlapError(f"DEM {dem.name} does not overlap any shot of granule(s) {names}")  # pragma: no cover
    return missing


def terrain_columns(deconvolve: bool = True) -> list[tuple[str, type]]:
    """The columns :func:`terrain.sawa.annotate_terrain` adds, in its order, with their dtypes."""
    from terrain.constants import SAWA_PERCENTILES
    from terrain.sawa import TERRAIN_TABLE_COLUMNS, sawa_columns

    cols: list[tuple[str, type]] = [(c, object if c.endswith("_reason") else np.float32) for c in TERRAIN_TABLE_COLUMNS]
    cols += [(c, np.float32) for c in sawa_columns(SAWA_PERCENTILES)] + [("sawa_reason", object)]
    if deconvolve:
        cols += [(f"rh{p}_deconv", np.float32) for p in SAWA_PERCENTILES] + [("deconv_reason", object)]
    return cols


def _empty_terrain_columns(frame, deconvolve: bool):
    out = frame.copy()
    for name, dtype in terrain_columns(deconvolve):
        out[name] = np.zeros(0, dtype=dtype)
    return out


def terrain_hook(dem, footprint_diameter_m: float, deconvolve: bool, counts: dict | None = None,
                 settings=None):
    """The ``on_chunk`` hook adding terrain, SAWA and deconvolution columns to each chunk's frame.

    ``counts`` (optional) collects, per reason column, the number of shots per reason.
    ``settings``: the L2A granule's setting-group table (``--l2a``), used by the corrections too.
    """
    from terrain.sawa import annotate_terrain

    def on_chunk(chunk, frame):
        if len(frame) == 0:  # a beam without shots: same columns, no rows
            return _empty_terrain_columns(frame, deconvolve)
        out = annotate_terrain(frame, chunk.batch, dem, footprint_diameter_m, tx=chunk.tx, deconvolve=deconvolve,
                               settings=settings)
        if counts is not None:
            for col in ("terrain_reason", "sawa_reason", "deconv_reason"):
                if col in out.columns:
                    tally = counts.setdefault(col, {})
                    for name, c in out[col].value_counts().items():
                        tally[str(name)] = tally.get(str(name), 0) + int(c)
        return out

    return on_chunk


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
