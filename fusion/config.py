"""The audit configuration: a TOML file (stdlib ``tomllib``) validated against a schema.

Every parameter of ``sawa audit`` has a default here; ``sawa audit`` with no
``--config`` runs on the embedded sample world with exactly these defaults
(the sample world fills in the ``[inputs]`` paths). Validation names the
section and key of any problem: unknown key, wrong type, missing file.

Example ``audit.toml``::

    [inputs]
    granules = ["GEDI01_B_2019108080338_O01964_T05337_02_003_01.h5"]
    dem = ["dem_tile_1.tif", "dem_tile_2.tif"]
    optical = { tree_cover = "treecover.tif", ndvi = "ndvi.tif" }
    polygons = "countries.gpkg"
    polygon_id = "iso3"

    [biomass]
    model = "random-forest"

    [grid]
    resolution_deg = 0.01

    [run]
    output = "audit_out"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from waveform.errors import ConfigError, SawaValueError

# (type, default, help). Types: str, int, float, bool, "path", "paths", "pathmap", "strs".
SCHEMA: dict[str, dict[str, tuple[Any, Any, str]]] = {
    "inputs": {
        "granules": ("paths", [], "GEDI L1B granules (HDF5)"),
        "l2a": ("paths", [], "optional GEDI L2A granules, official RH side by side"),
        "dem": ("paths", [], "DEM tiles (GeoTIFF, .hgt, VRT), mosaicked"),
        "optical": ("pathmap", {}, "optical covariate rasters, name = path"),
        "polygons": ("path", None, "country/region polygons (GeoPackage, GeoParquet, shapefile)"),
        "polygon_id": (str, "iso3", "polygon id column (ISO 3166 alpha-3 for countries)"),
        "polygon_name": (str, "name", "polygon name column"),
        "calibration": ("path", None, "calibration plots: shot table with true AGBD (agbd_true_mg_ha) and RH"),
        "fao": ("path", None, "FAO FRA carbon stock table (FRACarbonStock.csv)"),
        "gedi_l4b": ("path", None, "optional GEDI L4B-style gridded AGBD raster for comparison"),
    },
    "waveform": {
        "algorithm": (str, "a1", "GEDI L2A algorithm setting group a1..a6"),
        "chunk_shots": (int, 50_000, "shots per chunk when streaming granules"),
    },
    "terrain": {
        "footprint_diameter_m": (float, 25.0, "footprint diameter (m) used for slope and SAWA"),
        "correction": (str, "deconv", "terrain correction of the RH metrics used for biomass: deconv (sawa's "
                       "terrain deconvolution), sawa (slope-adaptive metrics, Wang et al. 2019) or none"),
    },
    "biomass": {
        "model": (str, "random-forest", "footprint AGBD model fitted on the calibration plots: random-forest, "
                  "gradient-boosting or l4a-form (NASA's model form: sqrt-OLS on RH)"),
        "predictors": ("strs", ["rh10", "rh20", "rh25", "rh30", "rh40", "rh50", "rh60", "rh70", "rh75", "rh80",
                                "rh90", "rh95", "rh98", "cover"],
                       "model predictors: RH columns (the terrain-correction suffix is added) and other shot columns"),
        "min_quality": (bool, True, "use only shots with quality == True"),
        "calibration_plots": (int, 4000, "simulated flat-ground calibration plots when [inputs] calibration is not given"),
        # the sample world's stated allometry (data_samples/generate.py ALLOMETRY)
        "allometry_a": (float, 2.0, "calibration plot AGB = a * H^b * cover^c (Mg/ha, H in m): a"),
        "allometry_b": (float, 1.5, "allometry exponent of canopy height"),
        "allometry_c": (float, 1.0, "allometry exponent of canopy cover"),
    },
    "grid": {
        "resolution_deg": (float, 0.01, "L4B-style gridded mean: cell size (degrees, EPSG:4326)"),
        "min_shots": (int, 3, "minimum shots per cell"),
    },
    "fusion": {
        "learner": (str, "random-forest", "optical fusion learner: random-forest or gradient-boosting"),
        "block_px": (int, 512, "raster block size for prediction (pixels)"),
        "resolution_deg": (float, 0.001, "wall-to-wall AGB map pixel size (degrees, EPSG:4326)"),
        "terrain_covariates": (bool, True, "add DEM slope and aspect to the optical covariates"),
    },
    "carbon": {
        "ecozone": (str, "tropical rain forest", "FAO global ecological zone for the carbon fraction and "
                    "root:shoot ratios (fusion/data/carbon_factors.csv)"),
        "factors": ("path", None, "carbon factor table (CSV, columns of fusion/data/carbon_factors.csv, optional "
                    "continent/origin columns, e.g. IPCC 2019 Refinement root:shoot ratios); empty = the shipped "
                    "IPCC 2006 table"),
        "continent": (str, "", "continent for root:shoot ratios of a factor table split by continent: africa, "
                      "americas, asia, europe or oceania (Natural Earth North/South America = americas); "
                      "empty = not set"),
        "origin": (str, "", "forest origin for root:shoot ratios of a factor table split by origin: natural or "
                   "planted; empty = not set"),
    },
    "run": {
        "output": (str, "sawa_out", "output folder"),
        "scheduler": (str, "", "dask scheduler address; empty = LocalCluster sized to this machine"),
        "workers": (int, 0, "LocalCluster workers; 0 = number of cores; 1 = serial, no cluster"),
        "seed": (int, 20190418, "random seed of the learners"),
    },
}


#: Keys that earlier versions accepted, and where their setting lives now.
RETIRED_KEYS = {
    ("carbon", "carbon_fraction"): (
        "; carbon fractions come from the factor table (IPCC 2006 Table 4.3 by climate domain in the shipped "
        "fusion/data/carbon_factors.csv): give your own table with [carbon] factors = \"table.csv\""
    ),
}

@dataclass
class AuditConfig:
    """Validated audit parameters, by section; paths resolved against the TOML file's folder."""

    inputs: dict[str, Any] = field(default_factory=dict)
    waveform: dict[str, Any] = field(default_factory=dict)
    terrain: dict[str, Any] = field(default_factory=dict)
    biomass: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)
    carbon: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    source: str = "defaults"

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in fields(self):
            if f.name == "source":
                continue
            out[f.name] = {k: _plain(v) for k, v in getattr(self, f.name).items()}
        return out


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def default_config() -> AuditConfig:
    cfg = AuditConfig()
    for section, keys in SCHEMA.items():
        getattr(cfg, section).update({k: (list(d) if isinstance(d, list) else dict(d) if isinstance(d, dict) else d)
                                      for k, (_, d, _) in keys.items()})
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> AuditConfig:
    """Read and validate an audit TOML file (``None``: defaults only), then apply ``overrides``."""
    cfg = default_config()
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
        base = path.parent
        cfg.source = str(path)
    for section, values in list(raw.items()) + list((overrides or {}).items()):
        where = f"{cfg.source}: " if path is not None else ""
        if section not in SCHEMA:
            raise ConfigError(f"{where}unknown section [{section}] (known: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{where}[{section}] must be a table, got {type(values).__name__}")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                hint = RETIRED_KEYS.get((section, key), "")
                raise ConfigError(
                    f"{where}unknown key '{key}' in [{section}] (known: {', '.join(SCHEMA[section])}){hint}"
                )
            kind = SCHEMA[section][key][0]
            getattr(cfg, section)[key] = _check(f"{where}[{section}] {key}", kind, value, base)
    _check_values(cfg, f"{cfg.source}: " if path is not None else "")
    return cfg


def _check(name: str, kind, value, base: Path):
    def as_path(v) -> Path:
        if not isinstance(v, (str, os.PathLike)):
            raise ConfigError(f"{name}: expected a file path string, got {type(v).__name__} {v!r}")
        p = Path(v)
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise ConfigError(f"{name}: file {p} does not exist")
        return p

    if kind == "path":
        return None if value in (None, "") else as_path(value)
    if kind == "paths":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list of file paths, got {type(value).__name__}")
        return [as_path(v) for v in value]
    if kind == "pathmap":
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table name = path, got {type(value).__name__}")
        return {str(k): as_path(v) for k, v in value.items()}
    if kind == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return list(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(kind)


#: Allowed values of enumerated options.
CHOICES = {
    ("waveform", "algorithm"): ("a1", "a2", "a3", "a4", "a5", "a6"),
    ("biomass", "model"): ("random-forest", "gradient-boosting", "l4a-form"),
    ("terrain", "correction"): ("deconv", "sawa", "none"),
    ("fusion", "learner"): ("random-forest", "gradient-boosting"),
}
#: Ranges of numeric options: (low, high), inclusive.
RANGES = {
    ("waveform", "chunk_shots"): (1, 10_000_000),
    ("terrain", "footprint_diameter_m"): (1.0, 200.0),
    ("grid", "resolution_deg"): (1e-5, 10.0),
    ("grid", "min_shots"): (1, 100_000),
    ("fusion", "resolution_deg"): (1e-5, 10.0),
    ("biomass", "calibration_plots"): (10, 10_000_000),
    ("fusion", "block_px"): (16, 16384),
    ("run", "workers"): (0, 1024),
}


def _check_values(cfg: AuditConfig, where: str = "") -> None:
    if cfg.carbon.get("continent") or cfg.carbon.get("origin"):
        from .carbon import (  # numpy/pandas: imported only when needed
            canonical_continent,
            canonical_origin,
        )

        for key, canonical in (("continent", canonical_continent), ("origin", canonical_origin)):
            v = cfg.carbon.get(key)
            if v:
                try:
                    canonical(v)
                except SawaValueError as exc:
                    raise ConfigError(f"{where}[carbon] {key} = {v!r}: {exc}") from None
    for (section, key), allowed in CHOICES.items():
        v = getattr(cfg, section)[key]
        if v not in allowed:
            raise ConfigError(f"{where}[{section}] {key} = {v!r} is not one of {', '.join(allowed)}")
    for (section, key), (lo, hi) in RANGES.items():
        v = getattr(cfg, section)[key]
        if not lo <= v <= hi:
            raise ConfigError(f"{where}[{section}] {key} = {v} is outside {lo}..{hi}")


def config_to_toml(cfg: AuditConfig) -> str:
    """Write a config back as TOML (for the run folder: what was actually used)."""
    lines = []
    for section, values in cfg.as_dict().items():
        lines.append(f"[{section}]")
        for key, v in values.items():
            if v is None:
                continue
            lines.append(f"{key} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


__all__ = ["SCHEMA", "AuditConfig", "default_config", "load_config", "config_to_toml"]
