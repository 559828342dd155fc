"""Shot tables: one row per GEDI shot, written as GeoParquet (EPSG:4326).

The columns are a stable contract (consumed by terrain SAWA, biomass and
fusion); :data:`SHOT_TABLE_COLUMNS` lists name, Arrow type, unit and meaning.
Writers may add columns after these (e.g. ``l2a_*`` official values, terrain
columns from an ``on_chunk`` hook); readers must not rely on column order.

The file follows GeoParquet 1.0.0: the ``geometry`` column holds WKB points
(x = longitude, y = latitude), and the file metadata key ``geo`` names it as
primary column with the PROJJSON of EPSG:4326. geopandas
(``read_parquet``) and duckdb (``read_parquet``; ``ST_GeomFromWKB`` with the
spatial extension) read it. Files are written row group by row group with
:class:`ShotTableWriter` (bounded memory) and renamed into place on success
(:func:`waveform.outputs.atomic_path`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError, SawaFileError, SawaValueError
from .outputs import atomic_path

#: Version of the shot-table column contract (stored in the file metadata).
SHOT_TABLE_VERSION = "1"
GEOPARQUET_VERSION = "1.0.0"
RH_COLUMNS = [f"rh{i}" for i in range(101)]

#: name -> (arrow type, unit, description). Order = column order in files.
SHOT_TABLE_COLUMNS: dict[str, tuple[pa.DataType, str, str]] = {
    "shot_number": (pa.uint64(), "", "GEDI shot number"),
    "beam": (pa.string(), "", "beam group name, BEAMxxxx"),
    "granule": (pa.string(), "", "file name of the L1B granule"),
    "geometry": (pa.binary(), "deg", "WKB Point (lon, lat) of the ground sample, EPSG:4326"),
    "latitude": (pa.float64(), "deg", "latitude of the ground sample, interpolated between bin0 and lastbin "
                 "(as L2A lat_lowestmode; the middle of the waveform when no ground was found)"),
    "longitude": (pa.float64(), "deg", "longitude of the ground sample (as latitude)"),
    "ground_elevation": (pa.float64(), "m", "ellipsoidal height of the ground (lowest) mode (as L2A elev_lowestmode)"),
    "canopy_top_elevation": (pa.float64(), "m", "ellipsoidal height of the signal start (as L2A elev_highestreturn)"),
    **{c: (pa.float32(), "m", f"relative height: cumulative energy from the signal end reaches {c[2:]} %, above ground")
       for c in RH_COLUMNS},
    "waveform_extent": (pa.float32(), "m", "signal start to signal end"),
    "lee": (pa.float32(), "m", "leading edge extent (Lefsky et al. 2005)"),
    "tee": (pa.float32(), "m", "trailing edge extent (Lefsky et al. 2005)"),
    "cover": (pa.float32(), "1", "canopy cover rv / (rv + 1.5 rg) (GEDI L2B convention)"),
    "energy_total": (pa.float32(), "counts x ns", "sum of waveform minus noise mean (as L2A energy_total)"),
    "n_modes": (pa.int16(), "", "number of modes detected between signal start and end"),
    "algorithm": (pa.uint8(), "", "L2A setting group number used (1-6)"),
    "quality": (pa.bool_(), "", "True when processed (reason 'ok') and L1B degrade/stale flags are 0"),
    "reason": (pa.string(), "", "'ok' or why the shot has no or doubtful metrics (waveform.metrics.REASON_CODES, "
               "'degraded', 'stale_return')"),
    "elevation_bin0": (pa.float64(), "m", "ellipsoidal height of the first waveform sample (L1B)"),
    "elevation_lastbin": (pa.float64(), "m", "ellipsoidal height of the last waveform sample (L1B)"),
    "ground_index": (pa.float32(), "samples", "0-based fractional sample of the ground mode in the L1B waveform"),
    "noise_mean": (pa.float32(), "counts", "noise mean used for thresholds"),
    "noise_stddev_corrected": (pa.float32(), "counts", "L1B noise standard deviation (passthrough)"),
    "degrade": (pa.uint8(), "", "L1B geolocation/degrade (passthrough)"),
    "stale_return_flag": (pa.uint8(), "", "L1B stale_return_flag (passthrough)"),
    "digital_elevation_model": (pa.float32(), "m", "L1B TanDEM-X DEM height under the shot (passthrough)"),
    "tx_egsigma": (pa.float32(), "ns", "L1B transmit pulse Gaussian sigma (passthrough)"),
    "delta_time": (pa.float64(), "s", "L1B time since the GEDI epoch (passthrough)"),
}

#: Columns that must be present for a file to be a shot table.
REQUIRED_COLUMNS = tuple(SHOT_TABLE_COLUMNS)


def column_docs() -> pd.DataFrame:
    """The column contract as a table (name, type, unit, description)."""
    return pd.DataFrame(
        [(name, str(t), unit, desc) for name, (t, unit, desc) in SHOT_TABLE_COLUMNS.items()],
        columns=["name", "type", "unit", "description"],
    )


def _crs_projjson() -> dict[str, Any]:
    from pyproj import CRS

    return CRS.from_epsg(4326).to_json_dict()


def geo_metadata(bbox: list[float] | None = None) -> dict[str, Any]:
    """The GeoParquet ``geo`` metadata for a WKB Point column in EPSG:4326."""
    col: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Point"], "crs": _crs_projjson()}
    if bbox is not None:
        col["bbox"] = bbox
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": col}}


def points_wkb(lon: np.ndarray, lat: np.ndarray) -> pa.Array:
    """WKB Points (little endian, 21 bytes each) as an Arrow binary array; NaN coordinates -> null."""
    lon = np.asarray(lon, np.float64)
    lat = np.asarray(lat, np.float64)
    n = lon.shape[0]
    rec = np.zeros(n, dtype=[("order", "u1"), ("kind", "<u4"), ("x", "<f8"), ("y", "<f8")])
    rec["order"] = 1
    rec["kind"] = 1
    rec["x"] = lon
    rec["y"] = lat
    valid = np.isfinite(lon) & np.isfinite(lat)
    offsets = np.zeros(n + 1, np.int32)
    offsets[1:] = np.cumsum(np.where(valid, 21, 0))
    data = rec[valid].tobytes()
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=int(n - valid.sum()))


def _to_arrow(frame: pd.DataFrame | Mapping[str, Any], extra_ok: bool = True) -> pa.Table:
    """A chunk (GeoDataFrame, DataFrame or dict of arrays) as an Arrow table in contract order."""
    if isinstance(frame, Mapping):
        data = dict(frame)
    else:
        data = {c: frame[c] for c in frame.columns}
    missing = [c for c in REQUIRED_COLUMNS if c not in data and c != "geometry"]
    if missing:
        raise SawaValueError(f"shot table chunk lacks columns: {', '.join(missing)}")
    arrays = []
    names = []
    for name, (typ, _unit, _desc) in SHOT_TABLE_COLUMNS.items():
        if name == "geometry":
            arrays.append(points_wkb(np.asarray(data["longitude"]), np.asarray(data["latitude"])))
        else:
            values = data[name]
            if isinstance(values, pd.Series):
                values = values.to_numpy()
            if pa.types.is_string(typ):
                arrays.append(pa.array(np.asarray(values, dtype=object), type=typ))
            elif pa.types.is_boolean(typ):
                arrays.append(pa.array(np.asarray(values, dtype=bool), type=typ))
            else:
                arr = np.asarray(values)
                if arr.dtype.kind == "f" and pa.types.is_integer(typ):
                    arr = np.where(np.isfinite(arr), arr, 0)
                arrays.append(pa.array(arr.astype(typ.to_pandas_dtype(), copy=False), type=typ))
        names.append(name)
    if extra_ok:
        for name, values in data.items():
            if name in SHOT_TABLE_COLUMNS or name == "geometry":
                continue
            if isinstance(values, pd.Series):
                values = values.to_numpy()
            arr = np.asarray(values)
            if arr.dtype.kind == "O":
                arrays.append(pa.array(arr, type=pa.string()))
            else:
                arrays.append(pa.array(arr))
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


class ShotTableWriter:
    """Write a shot table row group by row group (bounded memory), atomically.

    Use as a context manager; :meth:`write` takes GeoDataFrame/DataFrame
    chunks or dicts of arrays with at least the contract columns (geometry is
    rebuilt from ``longitude``/``latitude``). All chunks must have the same
    extra columns. On an exception nothing is left under ``path``.
    """

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None,
                 compression: str = "zstd"):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".parquet", ".geoparquet", ".pq"):
            raise OutputError(f"shot table {self.path} must end in .parquet")
        self.metadata = dict(metadata or {})
        self.compression = compression
        self.n_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._ctx = None
        self._tmp: Path | None = None
        self._schema: pa.Schema | None = None

    def __enter__(self) -> ShotTableWriter:
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        return self

    def write(self, chunk) -> None:
        table = _to_arrow(chunk)
        if self._writer is None:
            meta = {
                b"geo": json.dumps(geo_metadata()).encode(),
                b"sawa_shot_table": json.dumps(
                    {"version": SHOT_TABLE_VERSION, **self.metadata}, default=str).encode(),
            }
            self._schema = table.schema.with_metadata(meta)
            self._writer = pq.ParquetWriter(str(self._tmp), self._schema, compression=self.compression)
        elif table.schema.names != self._schema.names:
            raise SawaValueError(
                f"shot table {self.path}: chunk columns differ from the first chunk's "
                f"({sorted(set(table.schema.names) ^ set(self._schema.names))})"
            )
        table = table.cast(self._schema)
        if table.num_rows:
            self._writer.write_table(table)
        self.n_rows += table.num_rows

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None and self._writer is None:
                self.write(_empty_chunk())  # zero shots is valid: an empty table with the contract schema
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        except BaseException as err:
            if self._writer is not None:
                self._writer.close()
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def _empty_chunk() -> dict[str, np.ndarray]:
    out = {}
    for name, (typ, _unit, _desc) in SHOT_TABLE_COLUMNS.items():
        if name == "geometry":
            continue
        out[name] = np.zeros(0, object) if pa.types.is_string(typ) else np.zeros(0, typ.to_pandas_dtype())
    return out


def write_shot_table(frames: Iterable | pd.DataFrame, path: str | os.PathLike,
                     metadata: Mapping[str, Any] | None = None) -> Path:
    """Write one frame or an iterable of chunks as a shot table; returns ``path``."""
    if isinstance(frames, (pd.DataFrame, Mapping)):
        frames = [frames]
    with ShotTableWriter(path, metadata=metadata) as w:
        for chunk in frames:
            w.write(chunk)
    return Path(path)


def parquet_metadata(path: str | os.PathLike) -> dict[bytes, bytes]:
    """Schema metadata of a Parquet file; :class:`SawaFileError` naming it when missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise SawaFileError(f"shot table {path} does not exist")
    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise SawaFileError(f"{path} is not a readable Parquet file: {exc}") from exc


def read_shot_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Read a shot table as a GeoDataFrame (EPSG:4326); checks the column contract."""
    import geopandas as gpd

    path = Path(path)
    meta = parquet_metadata(path)
    if b"geo" not in meta:
        raise SawaFileError(f"{path} has no GeoParquet 'geo' metadata (not a sawa shot table)")
    names = pq.read_schema(path).names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise SawaFileError(f"{path} lacks shot-table columns: {', '.join(missing[:8])}")
    if columns is not None and "geometry" not in columns:
        columns = [*columns, "geometry"]
    return gpd.read_parquet(path, columns=columns)


def shot_table_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``sawa_shot_table`` metadata (version, inputs, parameters) of a file."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"sawa_shot_table")
    return json.loads(raw) if raw else {}


__all__ = [
    "parquet_metadata",
    "SHOT_TABLE_COLUMNS",
    "SHOT_TABLE_VERSION",
    "REQUIRED_COLUMNS",
    "RH_COLUMNS",
    "ShotTableWriter",
    "write_shot_table",
    "read_shot_table",
    "shot_table_metadata",
    "column_docs",
    "geo_metadata",
    "points_wkb",
]
