"""Covariate rasters of any CRS and resolution, aligned lazily on one target grid.

:func:`align_to_grid` opens one :class:`rasterio.vrt.WarpedVRT` per source onto the target
:class:`~fusion.grid.GridSpec`; nothing is warped until a window is read, and GDAL warps only
that window, so a stack over a continent reads in bounded memory. Source nodata is honoured
(GDAL excludes it from the resampling kernel) and every pixel without data, including pixels
outside a source's extent, reads as NaN (float32 working type).

Resampling per source: ``"average"`` for area means when the source is finer than the target
(optical products onto a coarser map grid), ``"bilinear"`` for smooth upsampling, ``"nearest"``
or ``"mode"`` for categorical rasters (land cover: averaging class codes is meaningless).
``"auto"`` (default) picks ``average`` when the source pixel is smaller than the target pixel
and ``bilinear`` otherwise; categorical sources must be named explicitly.

:func:`open_block_writer` writes a raster block by block inside
:func:`waveform.outputs.atomic_path`, with the layout of :func:`terrain.rasters.write_geotiff`
(tiles of :data:`~terrain.rasters.TILE_SIZE_PX`, DEFLATE, predictor, internal overviews).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from terrain.rasters import MIN_OVERVIEW_SIDE_PX, TILE_SIZE_PX, block_windows
from waveform.errors import NoOverlapError, RasterError, SawaFileError, SawaValueError
from waveform.outputs import atomic_path

from .grid import GridSpec

#: Resampling methods accepted per source (GDAL warp kernels).
RESAMPLING_METHODS = ("auto", "nearest", "bilinear", "cubic", "average", "mode", "min", "max", "med")
#: GDAL warp approximation error (source pixels). A negligible tolerance makes GDAL transform
#: every pixel exactly, so a window reads the same values as the same pixels of a whole-raster
#: read (maps independent of the block size); GDAL's default 0.125 px linearises the transform
#: per window row and differs by up to ~0.1 px between windows. Cost: ~5 Mpx/s per layer for a
#: reprojected source (measured, UTM -> EPSG:4326); 0 itself is rejected by WarpedVRT.
WARP_TOLERANCE_PX = 1e-9
#: Block size (pixels) used when sampling the stack at points.
POINT_BLOCK_PX = 512


@dataclass(frozen=True)
class AlignedBand:
    """One layer of an :class:`AlignedStack`: source file, band, name and resampling used."""

    name: str
    path: Path
    band: int
    resampling: str
    src_crs: str
    src_res: tuple[float, float]


class AlignedStack:
    """Rasters warped lazily onto ``grid``; read windows as (layers, rows, cols) float32, NaN = no data.

    Use as a context manager (closes the datasets) or call :meth:`close`.
    """

    def __init__(self, grid: GridSpec, layers: list[AlignedBand], vrts: list[WarpedVRT],
                 datasets: list[rasterio.io.DatasetReader], index: list[tuple[int, int]]) -> None:
        self.grid = grid
        self.layers = layers
        self._vrts = vrts
        self._datasets = datasets
        #: layer i -> (index of its WarpedVRT, band number)
        self._index = index

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def count(self) -> int:
        return len(self.layers)

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def transform(self):
        return self.grid.transform

    @property
    def crs(self):
        return self.grid.crs

    def read(self, window: Window | None = None) -> np.ndarray:
        """Layers of ``window`` of the target grid (whole grid if None) as float32, NaN = no data."""
        if window is None:
            window = Window(0, 0, self.width, self.height)
        window = Window(int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if (window.col_off < 0 or window.row_off < 0 or window.col_off + window.width > self.width
                or window.row_off + window.height > self.height):
            raise SawaValueError(f"window {window} is outside the target grid of {self.height} x {self.width} px")
        out = np.empty((self.count, window.height, window.width), dtype=np.float32)
        for i, (v, band) in enumerate(self._index):
            out[i] = self._vrts[v].read(band, window=window, out_dtype="float32")
        return out

    def sample_cells(self, rows: np.ndarray, cols: np.ndarray, block_px: int = POINT_BLOCK_PX) -> np.ndarray:
        """Layer values (n, layers) at target-grid cells (``rows``, ``cols``), reading block by block.

        Only blocks holding at least one cell are read, so memory is one block of layers.
        """
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if rows.shape != cols.shape or rows.ndim != 1:
            raise SawaValueError(f"rows and cols must be 1-D of one length, got {rows.shape}, {cols.shape}")
        bad = (rows < 0) | (rows >= self.height) | (cols < 0) | (cols >= self.width)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise SawaValueError(f"cell (row {rows[k]}, col {cols[k]}) is outside the target grid "
                                 f"of {self.height} x {self.width} px")
        out = np.full((rows.size, self.count), np.nan, dtype=np.float32)
        if rows.size == 0:
            return out
        brow, bcol = rows // block_px, cols // block_px
        nbc = (self.width + block_px - 1) // block_px
        block_id = brow * nbc + bcol
        order = np.argsort(block_id, kind="stable")
        ids, starts = np.unique(block_id[order], return_index=True)
        ends = np.append(starts[1:], order.size)
        for bid, s, e in zip(ids, starts, ends, strict=True):
            r0, c0 = int(bid // nbc) * block_px, int(bid % nbc) * block_px
            h, w = min(block_px, self.height - r0), min(block_px, self.width - c0)
            data = self.read(Window(c0, r0, w, h))
            sel = order[s:e]
            out[sel] = data[:, rows[sel] - r0, cols[sel] - c0].T
        return out

    def sample_lonlat(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values (n, layers) at the target-grid cells holding lon/lat points; and the inside mask.

        Points outside the grid get NaN rows and ``inside`` False.
        """
        x, y = self.grid.project_lonlat(lon, lat)
        flat = self.grid.cell_index(x, y)
        inside = flat >= 0
        out = np.full((flat.size, self.count), np.nan, dtype=np.float32)
        if inside.any():
            out[inside] = self.sample_cells(flat[inside] // self.width, flat[inside] % self.width)
        return out, inside

    def close(self) -> None:
        for v in self._vrts:
            v.close()
        for d in self._datasets:
            d.close()
        self._vrts, self._datasets = [], []

    def __enter__(self) -> AlignedStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AlignedStack({self.names}, grid={self.grid!r})"


def _source_list(sources) -> list[tuple[str | None, Path]]:
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if isinstance(sources, Mapping):
        return [(str(k), Path(v)) for k, v in sources.items()]
    return [(None, Path(s)) for s in sources]


def _pixel_size_in(grid: GridSpec, crs) -> tuple[float, float]:
    """Target pixel size expressed in the units of ``crs`` (from transformed bounds)."""
    w, s, e, n = transform_bounds(grid.crs.to_wkt(), crs, *grid.bounds, densify_pts=21)
    return ((e - w) / grid.width, (n - s) / grid.height)


def align_to_grid(
    sources: Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | str | os.PathLike,
    target: GridSpec | str | os.PathLike,
    resampling: str | Sequence[str] | Mapping[str, str] = "auto",
    names: Sequence[str] | None = None,
) -> AlignedStack:
    """Open ``sources`` (paths, or name -> path) warped onto ``target`` (GridSpec or reference raster).

    Every band of every source becomes a layer named after the mapping key or file stem (plus
    ``_b<N>`` for multi-band files). ``resampling``: one method for all, one per source, or a
    mapping source name -> method (others ``auto``). Raises :class:`NoOverlapError` naming the
    source when it does not overlap the target grid.
    """
    grid = target if isinstance(target, GridSpec) else GridSpec.like(target)
    items = _source_list(sources)
    if not items:
        raise SawaValueError("align_to_grid needs at least one source raster")
    if names is not None:
        if len(names) != len(items):
            raise SawaValueError(f"{len(names)} names for {len(items)} sources")
        items = [(str(nm), p) for nm, (_, p) in zip(names, items, strict=True)]
    source_names = [nm if nm is not None else p.stem for nm, p in items]
    if len(set(source_names)) != len(source_names):
        raise SawaValueError(f"source names must be unique, got {source_names}; pass names= or a mapping")
    if isinstance(resampling, str):
        methods = [resampling] * len(items)
    elif isinstance(resampling, Mapping):
        unknown = set(resampling) - set(source_names)
        if unknown:
            raise SawaValueError(f"resampling given for unknown source(s) {sorted(unknown)}; sources: {source_names}")
        methods = [resampling.get(nm, "auto") for nm in source_names]
    else:
        methods = list(resampling)
        if len(methods) != len(items):
            raise SawaValueError(f"{len(methods)} resampling methods for {len(items)} sources")
    for nm, m in zip(source_names, methods, strict=True):
        if m not in RESAMPLING_METHODS:
            raise SawaValueError(f"resampling {m!r} for source {nm} is not one of {RESAMPLING_METHODS}")

    datasets, vrts, layers, index = [], [], [], []
    try:
        for (nm, path), method in zip(zip(source_names, (p for _, p in items), strict=True), methods, strict=True):
            if not path.is_file():
                raise SawaFileError(f"covariate raster {path} ({nm}) does not exist")
            try:
                ds = rasterio.open(path)
            except rasterio.errors.RasterioIOError as exc:
                raise SawaFileError(f"cannot open covariate raster {path} ({nm}): {exc}") from exc
            datasets.append(ds)
            if ds.crs is None:
                raise RasterError(f"covariate raster {path} ({nm}) has no CRS")
            w, s, e, n = transform_bounds(ds.crs, grid.crs.to_wkt(), *ds.bounds, densify_pts=21)
            gw, gs, ge, gn = grid.bounds
            if w >= ge or e <= gw or s >= gn or n <= gs:
                raise NoOverlapError(
                    f"covariate raster {path} ({nm}) does not overlap the target grid "
                    f"{tuple(round(v, 6) for v in grid.bounds)} ({grid.crs.to_string()})")
            tx, ty = _pixel_size_in(grid, ds.crs)
            if method == "auto":
                method = "average" if (abs(ds.res[0]) < tx and abs(ds.res[1]) < ty) else "bilinear"
            # a fixed kernel scale (target pixels per source pixel): otherwise GDAL derives it from
            # each window's source/target sizes and windows differ slightly from a full read
            scale = {"XSCALE": repr(abs(ds.res[0]) / tx), "YSCALE": repr(abs(ds.res[1]) / ty)}
            vrt = WarpedVRT(ds, crs=grid.crs.to_wkt(), transform=grid.transform, width=grid.width,
                            height=grid.height, resampling=Resampling[method], nodata=np.nan, dtype="float32",
                            tolerance=WARP_TOLERANCE_PX, **scale)
            vrts.append(vrt)
            for b in range(1, ds.count + 1):
                desc = ds.descriptions[b - 1] if ds.count > 1 else None
                lname = nm if ds.count == 1 else f"{nm}_{desc or f'b{b}'}"
                layers.append(AlignedBand(lname, path, b, method, ds.crs.to_string(), tuple(ds.res)))
                index.append((len(vrts) - 1, b))
    except BaseException:
        for v in vrts:
            v.close()
        for d in datasets:
            d.close()
        raise
    return AlignedStack(grid, layers, vrts, datasets, index)


@contextlib.contextmanager
def open_block_writer(path: str | os.PathLike, grid: GridSpec, count: int = 1, dtype: str = "float32",
                      nodata: float | None = None, band_names: Sequence[str] | None = None,
                      tags: Mapping[str, str] | None = None, overviews: bool = True,
                      overview_resampling: Resampling = Resampling.average) -> Iterator[rasterio.io.DatasetWriter]:
    """An open GeoTIFF on ``grid`` to fill with ``dst.write(block, window=...)``; renamed into place on success.

    Same layout as :func:`terrain.rasters.write_geotiff`; overviews are built after the last
    block (GDAL reads the file back through its block cache, bounded memory).
    """
    tiled = grid.height >= TILE_SIZE_PX and grid.width >= TILE_SIZE_PX
    profile = {
        "driver": "GTiff", "height": grid.height, "width": grid.width, "count": count, "dtype": dtype,
        "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": nodata, "compress": "deflate",
        "predictor": 3 if np.issubdtype(np.dtype(dtype), np.floating) else 2, "BIGTIFF": "IF_SAFER",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=TILE_SIZE_PX, blockysize=TILE_SIZE_PX)
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(band_names or [], start=1):
                dst.set_band_description(i, name)
            if tags:
                dst.update_tags(**tags)
            yield dst
            side = max(grid.height, grid.width)
            if overviews and side >= MIN_OVERVIEW_SIDE_PX:
                factors = [f for f in (2, 4, 8, 16, 32) if side // f >= TILE_SIZE_PX // 2]
                if factors:
                    dst.build_overviews(factors, overview_resampling)
                    dst.update_tags(ns="rio_overview", resampling=overview_resampling.name)


def iter_blocks(grid: GridSpec, block_px: int) -> Iterator[Window]:
    """Windows of ``block_px`` x ``block_px`` covering ``grid`` (:func:`terrain.rasters.block_windows`)."""
    for core, _, _ in block_windows(grid.height, grid.width, block_px=block_px, halo_px=0):
        yield core


__all__ = ["AlignedStack", "AlignedBand", "align_to_grid", "open_block_writer", "iter_blocks",
           "RESAMPLING_METHODS"]
