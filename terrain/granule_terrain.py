"""Terrain under the shots of L1B granules: DEM overlap checks and the ``on_chunk`` hook that adds
terrain, SAWA and deconvolution columns to each streamed chunk (``sawa metrics --dem``, ``sawa audit``).

It lives in ``terrain`` (which may import ``waveform``) because ``waveform`` must not import
``terrain``: :func:`waveform.stream.write_metrics` only offers generic hooks (``on_chunk``,
``with_tx``, ``metadata``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


__all__ = ["check_dem_overlap", "shot_positions", "terrain_columns", "terrain_hook"]
