"""DEMs as users have them: one file or many tiles read as one mosaic, any CRS, nodata honoured.

:func:`open_dem` takes one path or a list of paths (GeoTIFF, SRTM ``.hgt``, GDAL
VRT, anything GDAL reads) and returns a :class:`DEM` that reads windows in
metres with NaN for nodata, never the whole raster:

* one file: opened directly (a rotated or south-up file through a north-up
  :class:`rasterio.vrt.WarpedVRT`);
* several tiles in one CRS: a GDAL VRT mosaic written in memory (one
  ``ComplexSource`` per tile with its own nodata; the grid of the finest tile,
  bilinear resampling where resolutions differ), so windows are read tile by
  tile by GDAL;
* tiles in different CRSs: each tile behind a :class:`~rasterio.vrt.WarpedVRT`
  into the first tile's CRS and every window assembled with
  :func:`rasterio.merge.merge` (bounded by the window).

Vertical datum
--------------
GEDI heights are ellipsoidal (WGS84) [GEDI-L2A]; SRTM and NASADEM are EGM96
orthometric heights [Farr2007], the Copernicus DEM EGM2008 [CopDEM], the
TanDEM-X DEM ellipsoidal [TDX-DEM] (sources in :mod:`terrain.constants`). The
datum of a DEM is taken, in this order, from the caller, from the CRS (a
compound CRS's vertical part, or a 3-D geographic CRS = ellipsoidal), from
the file's tags (GDAL ``DTED_VerticalDatum``: ``E08`` = EGM2008, ``E96`` =
EGM96; a ``VERTICAL_DATUM`` tag) and from the file name (``.hgt``/``srtm`` =
EGM96, ``copernicus``/``cop30`` = EGM2008, ``tdm1_dem``/``tandem`` =
ellipsoid); :attr:`DEM.vertical_datum` and :attr:`DEM.datum_source` say which.
:meth:`DEM.to_ellipsoidal` converts geoid heights (h = H + N) with pyproj only
when the geoid grid (``us_nga_egm96_15.tif``/``us_nga_egm08_25.tif``) is
installed locally; pyproj's "ballpark" fallback would silently return H
unchanged, so without the grid it reports ``geoid_grid_unavailable`` per shot
(or raises :class:`~waveform.errors.DatumError` with ``strict=True``). Network
access is never enabled. Slope, aspect and relief do not depend on the
datum (the geoid undulation changes by < 1e-4 m per m).
:func:`compare_with_gedi` measures the offset between DEM and GEDI ground
heights, the empirical check of a datum mismatch.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from waveform.errors import DatumError, NoOverlapError, RasterError, SawaFileError, SawaValueError

from .constants import (
    DATUM_OFFSET_WARN_M,
    DTED_VERTICAL_DATUMS,
    EGM96,
    EGM2008,
    ELLIPSOID,
    GEOID_DATUMS,
    MAX_PLAUSIBLE_PIXEL_DEG,
    MIN_PLAUSIBLE_PIXEL_M,
    NAME_HINTS,
    PLAUSIBLE_ELEVATION_RANGE_M,
    UNKNOWN_DATUM,
    VERTICAL_EPSG,
    WGS84_3D_EPSG,
    Z_UNITS_TO_M,
)

PathLike = str | os.PathLike
KNOWN_DATUMS = (ELLIPSOID, EGM96, EGM2008, UNKNOWN_DATUM)


# --------------------------------------------------------------------------- datum detection
def _datum_from_text(text: str) -> str | None:
    t = text.lower()
    if "egm2008" in t or "egm08" in t or "egm 2008" in t:
        return EGM2008
    if "egm96" in t or "egm 96" in t:
        return EGM96
    if "ellipsoid" in t or t.strip() in ("wgs84", "wgs 84", "wgs-84"):
        return ELLIPSOID
    return None


def _datum_from_crs(crs) -> tuple[str | None, str]:
    """(datum, explanation) from a rasterio CRS: compound vertical part or 3-D geographic."""
    if crs is None:
        return None, ""
    from pyproj import CRS as PCRS

    try:
        pcrs = PCRS.from_wkt(crs.to_wkt())
    except Exception:  # noqa: BLE001 - an exotic CRS without a vertical part
        return None, ""
    if pcrs.is_compound:
        for sub in pcrs.sub_crs_list:
            if sub.is_vertical:
                code = sub.to_epsg()
                for datum, epsg in VERTICAL_EPSG.items():
                    if code == epsg:
                        return datum, f"compound CRS vertical part {sub.name} (EPSG:{code})"
                guess = _datum_from_text(sub.name)
                if guess:
                    return guess, f"compound CRS vertical part {sub.name}"
                return UNKNOWN_DATUM, f"compound CRS vertical part {sub.name} (not EGM96/EGM2008/ellipsoid)"
    if pcrs.is_geographic and len(pcrs.axis_info) == 3:
        return ELLIPSOID, f"3-D geographic CRS {pcrs.name} (ellipsoidal heights)"
    return None, ""


def detect_vertical_datum(path: PathLike, crs=None, tags: dict | None = None) -> tuple[str, str]:
    """Vertical datum of a DEM file and the evidence: ``(datum, source)``.

    ``datum`` is one of ``"WGS84_ellipsoid"``, ``"EGM96"``, ``"EGM2008"`` or
    ``"unknown"``; ``source`` says what it was read from (CRS, tag, file name).
    """
    datum, why = _datum_from_crs(crs)
    if datum is not None:
        return datum, why
    tags = tags or {}
    dted = str(tags.get("DTED_VerticalDatum", "")).strip().upper()
    if dted in DTED_VERTICAL_DATUMS:
        return DTED_VERTICAL_DATUMS[dted], f"tag DTED_VerticalDatum={dted}"
    for key in ("VERTICAL_DATUM", "VERTICAL_CS", "vertical_datum", "VERT_DATUM"):
        if key in tags:
            guess = _datum_from_text(str(tags[key]))
            if guess:
                return guess, f"tag {key}={tags[key]!r}"
    name = Path(str(path)).name.lower()
    for hint, hint_datum in NAME_HINTS:
        if hint in name:
            return hint_datum, f"file name contains {hint!r}"
    return UNKNOWN_DATUM, "no vertical CRS, datum tag or known file name"


def _z_units(src, crs, tags: dict) -> tuple[float | None, str]:
    """(metres per DEM unit, source) from band units, tags or a compound CRS; None when not stated."""
    candidates = []
    try:
        unit = src.units[0] if src.units else None
    except Exception:  # noqa: BLE001 - drivers without unit support
        unit = None
    if unit:
        candidates.append((unit, "band unit"))
    for key in ("UNITS", "units", "UNIT", "ZUNITS"):
        if key in tags:
            candidates.append((str(tags[key]), f"tag {key}"))
    if crs is not None:
        from pyproj import CRS as PCRS

        try:
            pcrs = PCRS.from_wkt(crs.to_wkt())
            if pcrs.is_compound:
                for sub in pcrs.sub_crs_list:
                    if sub.is_vertical and sub.axis_info:
                        candidates.append((sub.axis_info[0].unit_name, "vertical CRS axis unit"))
        except Exception:  # noqa: BLE001
            pass
    for text, where in candidates:
        key = text.strip().lower()
        if key in Z_UNITS_TO_M:
            return Z_UNITS_TO_M[key], f"{where} {text!r}"
        if key:
            raise RasterError(
                f"DEM {src.name}: elevation unit {text!r} ({where}) is not one of "
                f"{', '.join(sorted(Z_UNITS_TO_M))}; pass z_units= to open_dem"
            )
    return None, "not stated (metres assumed)"


# --------------------------------------------------------------------------- mosaics
def _vrt_xml(sources: list[dict], crs_wkt: str, transform: Affine, width: int, height: int) -> str:
    """A GDAL VRT mosaic (Float64, NaN nodata) of north-up ``sources`` in one CRS."""
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(crs_wkt)}</SRS>",
        f"  <GeoTransform>{transform.c:.17g}, {transform.a:.17g}, 0, {transform.f:.17g}, 0, {transform.e:.17g}</GeoTransform>",
        '  <VRTRasterBand dataType="Float64" band="1">',
        "    <NoDataValue>nan</NoDataValue>",
    ]
    for s in sources:
        t: Affine = s["transform"]
        x_off = (t.c - transform.c) / transform.a
        y_off = (t.f - transform.f) / transform.e
        x_size = s["width"] * t.a / transform.a
        y_size = s["height"] * t.e / transform.e
        nodata = s["nodata"]
        nodata_xml = f"      <NODATA>{nodata!r}</NODATA>\n" if nodata is not None else ""
        lines.append(
            '    <ComplexSource resampling="bilinear">\n'
            f'      <SourceFilename relativeToVRT="0">{escape(s["path"])}</SourceFilename>\n'
            "      <SourceBand>1</SourceBand>\n"
            f'      <SrcRect xOff="0" yOff="0" xSize="{s["width"]}" ySize="{s["height"]}"/>\n'
            f'      <DstRect xOff="{x_off:.10f}" yOff="{y_off:.10f}" xSize="{x_size:.10f}" ySize="{y_size:.10f}"/>\n'
            f"{nodata_xml}"
            "    </ComplexSource>"
        )
    lines += ["  </VRTRasterBand>", "</VRTDataset>"]
    return "\n".join(lines)


def _union_grid(infos: list[dict]) -> tuple[Affine, int, int]:
    """Grid covering all tiles at the finest resolution, aligned on the first finest tile."""
    res_x = min(i["transform"].a for i in infos)
    res_y = min(-i["transform"].e for i in infos)
    ref = min(infos, key=lambda i: (i["transform"].a, -i["transform"].e))["transform"]
    west = min(i["bounds"][0] for i in infos)
    south = min(i["bounds"][1] for i in infos)
    east = max(i["bounds"][2] for i in infos)
    north = max(i["bounds"][3] for i in infos)
    # snap to the reference tile's pixel grid (tolerance 1e-6 pixel for float noise)
    west = ref.c + math.floor((west - ref.c) / res_x + 1e-6) * res_x
    north = ref.f - math.floor((ref.f - north) / res_y + 1e-6) * res_y
    width = int(math.ceil((east - west) / res_x - 1e-6))
    height = int(math.ceil((north - south) / res_y - 1e-6))
    return Affine(res_x, 0.0, west, 0.0, -res_y, north), width, height


def _is_north_up(t: Affine) -> bool:
    return t.b == 0.0 and t.d == 0.0 and t.a > 0.0 and t.e < 0.0


@dataclass
class DEM:
    """A DEM (one file or a mosaic) read window by window; heights in metres, nodata as NaN.

    Do not build directly: use :func:`open_dem`. Use as a context manager or call
    :meth:`close`.
    """

    paths: list[Path]
    crs: object
    transform: Affine
    width: int
    height: int
    vertical_datum: str
    datum_source: str
    z_to_m: float
    z_units_source: str
    _reader: object = field(repr=False)
    _closers: list = field(default_factory=list, repr=False)
    _merge_sources: list | None = field(default=None, repr=False)
    _nodata: float | None = field(default=None, repr=False)
    #: projected CRS: divide grid distances by the point scale factor (true ground distances)
    scale_factor_correction: bool = True

    # ---------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        if len(self.paths) == 1:
            return str(self.paths[0])
        return f"mosaic of {len(self.paths)} tiles ({self.paths[0].name}, ...)"

    @property
    def is_geographic(self) -> bool:
        return bool(self.crs.is_geographic)

    @property
    def res(self) -> tuple[float, float]:
        return self.transform.a, -self.transform.e

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        west, north = self.transform.c, self.transform.f
        return west, north + self.transform.e * self.height, west + self.transform.a * self.width, north

    @property
    def is_geoid(self) -> bool:
        return self.vertical_datum in GEOID_DATUMS

    # ---------------------------------------------------------------- reading
    def read(self, window: Window) -> np.ndarray:
        """Heights (float64 m) of ``window``; pixels outside the DEM or nodata are NaN.

        The window may extend beyond the raster (it is clipped and padded with NaN).
        """
        row0, col0 = int(window.row_off), int(window.col_off)
        h, w = int(window.height), int(window.width)
        out = np.full((h, w), np.nan)
        r0, c0 = max(row0, 0), max(col0, 0)
        r1, c1 = min(row0 + h, self.height), min(col0 + w, self.width)
        if r1 <= r0 or c1 <= c0:
            return out
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        if self._merge_sources is not None:
            data = self._read_merged(inner)
        else:
            data = self._reader.read(1, window=inner, out_dtype=np.float64)
            if self._nodata is not None and not np.isnan(self._nodata):
                data[data == self._nodata] = np.nan
        if self.z_to_m != 1.0:
            data = data * self.z_to_m
        out[r0 - row0:r1 - row0, c0 - col0:c1 - col0] = data
        return out

    def _read_merged(self, window: Window) -> np.ndarray:
        from rasterio.merge import merge

        left, top = self.transform @ (window.col_off, window.row_off)
        right, bottom = self.transform @ (window.col_off + window.width, window.row_off + window.height)
        arr, _ = merge(
            self._merge_sources, bounds=(left, bottom, right, top), res=self.res, nodata=np.nan,
            dtype="float64", resampling=Resampling.bilinear,
        )
        data = arr[0]
        # merge rounds the output shape; cut or pad to the window
        out = np.full((int(window.height), int(window.width)), np.nan)
        hh, ww = min(out.shape[0], data.shape[0]), min(out.shape[1], data.shape[1])
        out[:hh, :ww] = data[:hh, :ww]
        return out

    # ---------------------------------------------------------------- coordinates
    def from_lonlat(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """EPSG:4326 longitude/latitude -> DEM CRS x/y (arrays)."""
        lon = np.asarray(lon, dtype=np.float64)
        lat = np.asarray(lat, dtype=np.float64)
        if self.crs.to_epsg() == 4326:
            return lon.copy(), lat.copy()
        from pyproj import Transformer

        tr = Transformer.from_crs("EPSG:4326", self.crs.to_wkt(), always_xy=True)
        x, y = tr.transform(lon, lat)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def to_lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """DEM CRS x/y -> EPSG:4326 longitude/latitude."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if self.crs.to_epsg() == 4326:
            return x.copy(), y.copy()
        from pyproj import Transformer

        tr = Transformer.from_crs(self.crs.to_wkt(), "EPSG:4326", always_xy=True)
        lon, lat = tr.transform(x, y)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def fractional_rowcol(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of CRS points; pixel centres are at integer + 0.5."""
        inv = ~self.transform
        col, row = inv @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)

    def geod(self):
        """A :class:`pyproj.Geod` on the DEM CRS's ellipsoid (WGS84 when the CRS has none)."""
        from pyproj import CRS as PCRS
        from pyproj import Geod

        ell = PCRS.from_wkt(self.crs.to_wkt()).ellipsoid
        if ell is None:
            return Geod(ellps="WGS84")
        if ell.inverse_flattening:
            return Geod(a=ell.semi_major_metre, rf=ell.inverse_flattening)
        return Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)  # a sphere

    def linear_unit_m(self) -> float:
        """Metres per CRS unit of a projected DEM (1 for metre CRSs, 0.3048 for feet)."""
        factor = self.crs.linear_units_factor[1] if not self.is_geographic else float("nan")
        return float(factor)

    def row_spacing_m(self, rows: np.ndarray, col: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Metric spacing for a 3x3 stencil centred on each of ``rows`` (pixel-row indices).

        Returns ``(dist_ew, dist_ns)``: the distance (m) between the centres of the
        pixels left and right of a pixel of that row (two columns apart) and between
        the centres of the rows above and below (two rows apart). Geographic CRS:
        geodesic distances on the CRS's ellipsoid (:class:`pyproj.Geod`), which
        depend on latitude. Projected CRS: pixel size x the CRS's linear unit,
        divided by the point scale factor at ``col`` (the middle column when None)
        when pyproj can compute it and :attr:`scale_factor_correction` is True
        (e.g. UTM: k = 0.9996 on the central meridian, so ground distances are
        0.04 % longer than grid distances).
        """
        rows = np.asarray(rows, dtype=np.float64)
        res_x, res_y = self.res
        if self.is_geographic:
            geod = self.geod()
            lon0 = self.transform.c + res_x * (self.width / 2.0)
            lat = self.transform.f - res_y * (rows + 0.5)
            ones = np.full(rows.shape, lon0)
            _, _, d_ew = geod.inv(ones - res_x, lat, ones + res_x, lat)
            lat_n = np.clip(lat + res_y, -90.0, 90.0)
            lat_s = np.clip(lat - res_y, -90.0, 90.0)
            _, _, d_ns = geod.inv(ones, lat_s, ones, lat_n)
            return np.asarray(d_ew, dtype=np.float64), np.asarray(d_ns, dtype=np.float64)
        unit = self.linear_unit_m()
        k_par = np.ones(rows.shape)
        k_mer = np.ones(rows.shape)
        if not self.scale_factor_correction:
            return 2.0 * res_x * unit / k_par, 2.0 * res_y * unit / k_mer
        try:
            from pyproj import Proj

            proj = Proj(self.crs.to_wkt())
            c = self.width / 2.0 if col is None else float(col)
            x = self.transform.c + res_x * c
            y = self.transform.f - res_y * (rows + 0.5)
            lon, lat = self.to_lonlat(np.full(rows.shape, x), y)
            f = proj.get_factors(lon, lat)
            kp = np.asarray(f.parallel_scale, dtype=np.float64)
            km = np.asarray(f.meridional_scale, dtype=np.float64)
            ok = np.isfinite(kp) & np.isfinite(km) & (kp > 0) & (km > 0)
            k_par = np.where(ok, kp, 1.0)
            k_mer = np.where(ok, km, 1.0)
        except Exception:  # noqa: BLE001 - CRSs pyproj cannot compute factors for: no correction
            pass
        return 2.0 * res_x * unit / k_par, 2.0 * res_y * unit / k_mer

    # ---------------------------------------------------------------- datum
    def to_ellipsoidal(self, lon, lat, height_m, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """DEM heights -> WGS84 ellipsoidal heights; returns ``(h_m, reason)``.

        ``reason`` (object array): ``"ok"``, ``"geoid_grid_unavailable"`` (the
        geoid model grid is not installed; h is NaN) or ``"unknown_datum"``.
        With ``strict=True`` those raise :class:`DatumError` instead.
        """
        h = np.asarray(height_m, dtype=np.float64)
        reason = np.full(h.shape, "ok", dtype=object)
        if self.vertical_datum == ELLIPSOID:
            return h.copy(), reason
        if self.vertical_datum == UNKNOWN_DATUM:
            if strict:
                raise DatumError(
                    f"DEM {self.name}: vertical datum unknown ({self.datum_source}); pass vertical_datum= "
                    f"('{ELLIPSOID}', '{EGM96}', '{EGM2008}') to compare with GEDI's ellipsoidal heights"
                )
            reason[:] = "unknown_datum"
            return np.full(h.shape, np.nan), reason
        transformer = geoid_transformer(self.vertical_datum)
        if transformer is None:
            if strict:
                raise DatumError(
                    f"DEM {self.name} has {self.vertical_datum} geoid heights ({self.datum_source}) but the "
                    f"geoid grid is not installed in {_proj_data_dir()} (network disabled); GEDI heights are "
                    "ellipsoidal, so h = H + N cannot be computed. Install the PROJ grid "
                    f"({GEOID_GRIDS[self.vertical_datum]}) or use an ellipsoidal DEM."
                )
            reason[:] = "geoid_grid_unavailable"
            return np.full(h.shape, np.nan), reason
        _, _, out = transformer.transform(np.asarray(lon, np.float64), np.asarray(lat, np.float64), h)
        out = np.asarray(out, dtype=np.float64)
        reason[~np.isfinite(out)] = "geoid_grid_unavailable"
        return out, reason

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        for c in reversed(self._closers):
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing twice is harmless
                pass
        self._closers.clear()

    def __enter__(self) -> DEM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """Plain summary (for logs and manifests)."""
        return {
            "dem": self.name, "crs": self.crs.to_string(), "width": self.width, "height": self.height,
            "res": self.res, "bounds": self.bounds, "vertical_datum": self.vertical_datum,
            "datum_source": self.datum_source, "z_to_m": self.z_to_m, "z_units_source": self.z_units_source,
        }


#: PROJ grid file per geoid datum (cdn.proj.org names).
GEOID_GRIDS = {EGM96: "us_nga_egm96_15.tif", EGM2008: "us_nga_egm08_25.tif"}


def _proj_data_dir() -> str:
    import pyproj

    return pyproj.datadir.get_data_dir()


def geoid_transformer(datum: str):
    """A pyproj Transformer (lon, lat, H) -> (lon, lat, h) for a geoid datum, or None without its grid.

    Only transformations that use the geoid grid are accepted (pyproj's "ballpark"
    fallback returns H unchanged). Never downloads: pyproj network stays off.
    """
    if datum not in VERTICAL_EPSG:
        return None
    from pyproj.transformer import TransformerGroup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = TransformerGroup(f"EPSG:4326+{VERTICAL_EPSG[datum]}", f"EPSG:{WGS84_3D_EPSG}", always_xy=True)
    if not group.best_available:
        return None
    for t in group.transformers:
        if "ballpark" not in t.description.lower():
            return t
    return None


def _open_one(path: Path):
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        if not path.exists():
            raise SawaFileError(f"DEM file {path} does not exist") from None
        raise SawaFileError(f"DEM file {path} cannot be read as a raster: {exc}") from None


def _info(path: Path, src) -> dict:
    if src.crs is None:
        raise RasterError(
            f"DEM {path} has no CRS: its pixels cannot be placed under GEDI shots. Assign one "
            "(e.g. gdal_edit.py -a_srs EPSG:4326) or use the original tile"
        )
    if src.count < 1:
        raise RasterError(f"DEM {path} has no band")
    return {
        "path": str(path.resolve()), "transform": src.transform, "width": src.width, "height": src.height,
        "nodata": src.nodata, "bounds": tuple(src.bounds), "crs": src.crs, "tags": src.tags(),
    }


def _check_pixel_size(path_text: str, crs, transform: Affine) -> None:
    res_x, res_y = abs(transform.a), abs(transform.e)
    if crs.is_geographic:
        if max(res_x, res_y) > MAX_PLAUSIBLE_PIXEL_DEG:
            raise SawaValueError(
                f"DEM {path_text}: pixel size {res_x:g} x {res_y:g} degrees in a geographic CRS is implausible "
                "for slopes (metre coordinates in a degree CRS?); fix the CRS"
            )
    else:
        unit = crs.linear_units_factor[1]
        if min(res_x, res_y) * unit < MIN_PLAUSIBLE_PIXEL_M:
            raise SawaValueError(
                f"DEM {path_text}: pixel size {res_x:g} x {res_y:g} {crs.linear_units} in a projected CRS is "
                f"below {MIN_PLAUSIBLE_PIXEL_M} m (degree coordinates in a metre CRS?); slopes would all be "
                "~90 degrees. Fix the CRS"
            )


def open_dem(
    paths: PathLike | Sequence[PathLike],
    vertical_datum: str | None = None,
    z_units: str | None = None,
    scale_factor_correction: bool = True,
) -> DEM:
    """Open one DEM file or several tiles as one :class:`DEM` (windowed reads, NaN nodata).

    ``vertical_datum`` overrides detection (``"WGS84_ellipsoid"``, ``"EGM96"``,
    ``"EGM2008"``, ``"unknown"``); ``z_units`` overrides the elevation unit
    (``"m"``, ``"ft"``, ``"cm"``, ...; default: from the file, else metres).
    ``scale_factor_correction`` (projected CRSs): use ground distances (grid
    distance / point scale factor) for slopes; False uses grid distances.
    Raises :class:`~waveform.errors.SawaFileError` for missing/unreadable files,
    :class:`~waveform.errors.RasterError` for a DEM without CRS,
    :class:`~waveform.errors.SawaValueError` for implausible pixel sizes.
    """
    if isinstance(paths, (str, os.PathLike)):
        path_list = [Path(paths)]
    else:
        path_list = [Path(p) for p in paths]
    if not path_list:
        raise SawaValueError("open_dem needs at least one DEM path")
    if vertical_datum is not None and vertical_datum not in KNOWN_DATUMS:
        raise SawaValueError(f"vertical_datum must be one of {', '.join(KNOWN_DATUMS)}, got {vertical_datum!r}")
    if z_units is not None and z_units.strip().lower() not in Z_UNITS_TO_M:
        raise SawaValueError(f"z_units must be one of {', '.join(sorted(Z_UNITS_TO_M))}, got {z_units!r}")
    closers: list = []
    try:
        sources = [_open_one(p) for p in path_list]
        closers.extend(sources)
        infos = [_info(p, s) for p, s in zip(path_list, sources, strict=True)]
        # datum: every tile must agree (a mosaic of SRTM and TanDEM-X tiles mixes datums)
        datums = [detect_vertical_datum(p, s.crs, i["tags"]) for p, s, i in zip(path_list, sources, infos, strict=True)]
        if vertical_datum is not None:
            datum, datum_src = vertical_datum, "given by the caller"
        else:
            kinds = {d for d, _ in datums}
            if len(kinds) > 1:
                listing = "; ".join(f"{p.name}: {d} ({w})" for p, (d, w) in zip(path_list, datums, strict=True))
                raise DatumError(f"DEM tiles mix vertical datums: {listing}. Convert them to one datum first")
            datum, datum_src = datums[0]
        if z_units is not None:
            z_to_m, z_src = Z_UNITS_TO_M[z_units.strip().lower()], "given by the caller"
        else:
            z_to_m, z_src = _z_units(sources[0], sources[0].crs, infos[0]["tags"])
            if z_to_m is None:
                z_to_m = 1.0
        crs0 = sources[0].crs
        same_crs = all(s.crs == crs0 for s in sources)
        if len(sources) == 1:
            src = sources[0]
            reader = src
            if not _is_north_up(src.transform):
                from rasterio.vrt import WarpedVRT

                reader = WarpedVRT(src, resampling=Resampling.bilinear)
                closers.append(reader)
            dem = DEM(paths=path_list, crs=reader.crs, transform=reader.transform, width=reader.width,
                      height=reader.height, vertical_datum=datum, datum_source=datum_src, z_to_m=z_to_m,
                      z_units_source=z_src, _reader=reader, _closers=closers, _nodata=reader.nodata)
        elif same_crs and all(_is_north_up(i["transform"]) for i in infos):
            transform, width, height = _union_grid(infos)
            xml = _vrt_xml(infos, crs0.to_wkt(), transform, width, height)
            from rasterio.io import MemoryFile

            mem = MemoryFile(xml.encode(), ext=".vrt")
            closers.append(mem)
            reader = mem.open()
            closers.append(reader)
            dem = DEM(paths=path_list, crs=crs0, transform=transform, width=width, height=height,
                      vertical_datum=datum, datum_source=datum_src, z_to_m=z_to_m, z_units_source=z_src,
                      _reader=reader, _closers=closers, _nodata=None)
        else:
            from rasterio.vrt import WarpedVRT

            warped = []
            for s in sources:
                v = WarpedVRT(s, crs=crs0, resampling=Resampling.bilinear, src_nodata=s.nodata, nodata=np.nan,
                              dtype="float64")
                closers.append(v)
                warped.append(v)
            winfos = [{"transform": v.transform, "bounds": tuple(v.bounds)} for v in warped]
            transform, width, height = _union_grid(winfos)
            dem = DEM(paths=path_list, crs=crs0, transform=transform, width=width, height=height,
                      vertical_datum=datum, datum_source=datum_src, z_to_m=z_to_m, z_units_source=z_src,
                      _reader=None, _closers=closers, _merge_sources=warped, _nodata=None)
        _check_pixel_size(dem.name, dem.crs, dem.transform)
        dem.scale_factor_correction = bool(scale_factor_correction)
        return dem
    except BaseException:
        for c in reversed(closers):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        raise


def as_dem(dem: DEM | PathLike | Sequence[PathLike], **kwargs) -> tuple[DEM, bool]:
    """``(DEM, opened_here)``: pass a DEM through, or open paths (the caller then closes it)."""
    if isinstance(dem, DEM):
        return dem, False
    return open_dem(dem, **kwargs), True


# --------------------------------------------------------------------------- checks
def check_elevations(values_m: np.ndarray, where: str) -> None:
    """Raise :class:`SawaValueError` when finite heights fall outside the plausible range (wrong units)."""
    v = np.asarray(values_m, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return
    lo, hi = PLAUSIBLE_ELEVATION_RANGE_M
    vmin, vmax = float(finite.min()), float(finite.max())
    if vmin < lo or vmax > hi:
        raise SawaValueError(
            f"{where}: elevations {vmin:.6g}..{vmax:.6g} m are outside the plausible range {lo:g}..{hi:g} m "
            "(wrong units, e.g. cm or feet read as metres, or an undeclared nodata value); pass z_units= "
            "to open_dem or fix the nodata value"
        )


@dataclass(frozen=True)
class DatumCheck:
    """Offset between DEM heights and GEDI ground heights at the same shots."""

    n: int
    median_offset_m: float  # median(DEM - GEDI)
    mad_m: float  # median absolute deviation of the difference
    dem_datum: str
    verdict: str  # "consistent", "offset_suggests_geoid", "offset_expected_geoid", "too_few_shots"
    message: str


def compare_with_gedi(dem_elevation_m, gedi_elevation_m, dem_datum: str, min_shots: int = 10) -> DatumCheck:
    """Detect a vertical-datum mismatch from DEM and GEDI (ellipsoidal) heights at the same shots.

    Over bare and forested ground the DEM and the GEDI ground mode agree within
    a few metres when both are ellipsoidal; geoid heights differ by the geoid
    undulation N (uniform over a region). A median offset above
    :data:`~terrain.constants.DATUM_OFFSET_WARN_M` with a median absolute
    deviation below it flags a datum mismatch.
    """
    d = np.asarray(dem_elevation_m, np.float64) - np.asarray(gedi_elevation_m, np.float64)
    d = d[np.isfinite(d)]
    if d.size < min_shots:
        return DatumCheck(int(d.size), float("nan"), float("nan"), dem_datum, "too_few_shots",
                          f"only {d.size} shots with both DEM and GEDI heights (< {min_shots})")
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med)))
    shifted = abs(med) > DATUM_OFFSET_WARN_M and mad < abs(med)
    if shifted and dem_datum == ELLIPSOID:
        verdict = "offset_suggests_geoid"
        msg = (f"DEM heights are {med:+.1f} m from GEDI ground (MAD {mad:.1f} m) although the DEM is said to be "
               "ellipsoidal: it probably holds geoid heights (EGM96/EGM2008)")
    elif dem_datum in GEOID_DATUMS:
        verdict = "offset_expected_geoid"
        msg = (f"DEM holds {dem_datum} geoid heights: median DEM - GEDI = {med:+.1f} m (MAD {mad:.1f} m) "
               "includes the geoid undulation N")
    elif shifted:
        verdict = "offset_suggests_geoid"
        msg = f"median DEM - GEDI = {med:+.1f} m (MAD {mad:.1f} m): the DEM's datum probably differs from GEDI's"
    else:
        verdict = "consistent"
        msg = f"median DEM - GEDI = {med:+.1f} m (MAD {mad:.1f} m): consistent with ellipsoidal heights"
    return DatumCheck(int(d.size), med, mad, dem_datum, verdict, msg)


def overlap_check(dem: DEM, lon: np.ndarray, lat: np.ndarray) -> None:
    """Raise :class:`NoOverlapError` when no finite shot position falls inside the DEM's bounds."""
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise NoOverlapError(f"no shot has finite coordinates to look up in DEM {dem.name}")
    x, y = dem.from_lonlat(lon[ok], lat[ok])
    west, south, east, north = dem.bounds
    inside = (x >= west) & (x <= east) & (y >= south) & (y <= north)
    if not inside.any():
        raise NoOverlapError(
            f"DEM {dem.name} (bounds {west:.6g}, {south:.6g}, {east:.6g}, {north:.6g} in {dem.crs.to_string()}) "
            f"does not overlap any of the {int(ok.sum())} shots (lon {np.nanmin(lon):.4f}..{np.nanmax(lon):.4f}, "
            f"lat {np.nanmin(lat):.4f}..{np.nanmax(lat):.4f})"
        )


def dem_paths(values: Iterable[PathLike]) -> list[Path]:
    """Expand a list of DEM arguments: files, and ``@list.txt`` files with one path per line."""
    out: list[Path] = []
    for v in values:
        text = str(v)
        if text.startswith("@"):
            listing = Path(text[1:])
            for line in listing.read_text().splitlines():
                line = re.sub(r"#.*$", "", line).strip()
                if line:
                    p = Path(line)
                    out.append(p if p.is_absolute() else listing.parent / p)
        else:
            out.append(Path(text))
    return out


__all__ = [
    "DEM",
    "DatumCheck",
    "open_dem",
    "as_dem",
    "detect_vertical_datum",
    "geoid_transformer",
    "compare_with_gedi",
    "check_elevations",
    "overlap_check",
    "dem_paths",
    "GEOID_GRIDS",
    "KNOWN_DATUMS",
]
