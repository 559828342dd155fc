"""GeoTIFF writing and block iteration shared by terrain, fusion and the sample generator.

GeoTIFFs are written tiled (512 x 512), DEFLATE-compressed, with CRS, nodata and
internal overviews (COG-style layout that QGIS opens fast), atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from waveform.outputs import atomic_path

#: Internal tile size of written GeoTIFFs (pixels); GDAL's COG driver default.
TILE_SIZE_PX = 512
#: Smallest raster side for which overviews are built (pixels).
MIN_OVERVIEW_SIDE_PX = 1024


def write_geotiff(
    path: str | os.PathLike,
    array: np.ndarray,
    transform,
    crs,
    nodata: float | None = None,
    band_names: list[str] | None = None,
    overviews: bool = True,
    resampling: Resampling = Resampling.average,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write a 2-D (or 3-D band-first) array as a tiled, compressed GeoTIFF, atomically."""
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise ValueError(f"write_geotiff({path}): array must be 2-D or 3-D, got shape {array.shape}")
    count, height, width = data.shape
    tiled = height >= TILE_SIZE_PX and width >= TILE_SIZE_PX
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if np.issubdtype(data.dtype, np.floating) else 2,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=TILE_SIZE_PX, blockysize=TILE_SIZE_PX)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, name in enumerate(band_names or [], start=1):
                dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**tags)
            if overviews and max(height, width) >= MIN_OVERVIEW_SIDE_PX:
                factors = [f for f in (2, 4, 8, 16, 32) if max(height, width) // f >= TILE_SIZE_PX // 2]
                if factors:
                    dst.build_overviews(factors, resampling)
                    dst.update_tags(ns="rio_overview", resampling=resampling.name)
    return Path(path)


def block_windows(
    height: int, width: int, block_px: int = 1024, halo_px: int = 0
) -> Iterator[tuple[Window, Window, tuple[slice, slice]]]:
    """Iterate over blocks of a raster with a halo.

    Yields ``(core, padded, inner)``: ``core`` is the block to write, ``padded``
    the window to read (``core`` grown by ``halo_px`` and clipped to the
    raster), and ``inner`` the slices that cut ``core`` out of the padded read.
    """
    if block_px <= 0 or halo_px < 0:
        raise ValueError(f"block_px must be > 0 and halo_px >= 0, got {block_px}, {halo_px}")
    for row0 in range(0, height, block_px):
        for col0 in range(0, width, block_px):
            h = min(block_px, height - row0)
            w = min(block_px, width - col0)
            r0 = max(row0 - halo_px, 0)
            c0 = max(col0 - halo_px, 0)
            r1 = min(row0 + h + halo_px, height)
            c1 = min(col0 + w + halo_px, width)
            core = Window(col0, row0, w, h)
            padded = Window(c0, r0, c1 - c0, r1 - r0)
            inner = (slice(row0 - r0, row0 - r0 + h), slice(col0 - c0, col0 - c0 + w))
            yield core, padded, inner


__all__ = ["write_geotiff", "block_windows", "TILE_SIZE_PX"]
