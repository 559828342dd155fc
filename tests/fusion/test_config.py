"""Audit TOML configuration: defaults, round trip, and clear errors naming section and key."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from fusion.config import config_to_toml, default_config, load_config
from waveform.errors import ConfigError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert cfg.waveform["algorithm"] == "a1"
    assert cfg.carbon["ecozone"] == "tropical rain forest" and cfg.carbon["factors"] is None
    assert cfg.terrain["footprint_diameter_m"] == 25.0
    text = config_to_toml(cfg)
    assert tomllib.loads(text)["grid"]["resolution_deg"] == 0.01
    path = tmp_path / "audit.toml"
    path.write_text(text)
    again = load_config(path)
    assert again.as_dict() == default_config().as_dict()


def test_paths_resolved_relative_to_file(tmp_path):
    (tmp_path / "dem.tif").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tc.tif").write_bytes(b"x")
    cfg_path = tmp_path / "audit.toml"
    cfg_path.write_text('[inputs]\ndem = ["dem.tif"]\noptical = { tree_cover = "sub/tc.tif" }\n[grid]\nresolution_deg = 0.05\n')
    cfg = load_config(cfg_path)
    assert cfg.inputs["dem"] == [tmp_path / "dem.tif"]
    assert cfg.inputs["optical"] == {"tree_cover": tmp_path / "sub" / "tc.tif"}
    assert cfg.grid["resolution_deg"] == 0.05


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[inputs]\ngranule = []\n", r"unknown key 'granule' in \[inputs\]"),
        ("[input]\n", r"unknown section \[input\]"),
        ("[grid]\nresolution_deg = \"fine\"\n", r"\[grid\] resolution_deg: expected a number, got str"),
        ("[grid]\nmin_shots = 2.5\n", r"\[grid\] min_shots: expected an integer"),
        ("[fusion]\nterrain_covariates = 1\n", r"\[fusion\] terrain_covariates: expected true or false"),
        ("[terrain]\ncorrection = \"magic\"\n", r"correction = 'magic' is not one of deconv"),
        ("[inputs]\ndem = [\"missing.tif\"]\n", r"\[inputs\] dem: file .*missing.tif does not exist"),
        ("[waveform]\nalgorithm = \"a9\"\n", r"algorithm = 'a9' is not one of a1"),
        ("[carbon]\ncarbon_fraction = 0.47\n", r"unknown key 'carbon_fraction' in \[carbon\].*carbon fractions come from the factor table"),
        ('[carbon]\ncontinent = "Antarctica"\n',
         r"\[carbon\] continent = 'Antarctica': unknown continent 'Antarctica'; known continents: africa, americas, "
         r"asia, europe, oceania"),
        ('[carbon]\norigin = "wild"\n', r"\[carbon\] origin = 'wild': unknown forest origin 'wild'; known origins: "
                                        r"natural, planted"),
        ('[carbon]\nfactors = "missing.csv"\n', r"\[carbon\] factors: file .*missing.csv does not exist"),
        ("[carbon]\ncontinent = 3\n", r"\[carbon\] continent: expected a string"),
        ("[grid\nresolution_deg = 1\n", r"is not valid TOML"),
    ],
)
def test_bad_config_errors(tmp_path, text, message):
    path = tmp_path / "audit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ValueError):  # ConfigError is a ValueError for builtin-only callers
        load_config(tmp_path / "nope.toml")


def test_carbon_factor_table_continent_and_origin(tmp_path):
    cfg = load_config(None)
    assert (cfg.carbon["factors"], cfg.carbon["continent"], cfg.carbon["origin"]) == (None, "", "")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "rs2019.csv").write_text("factor\n")
    path = tmp_path / "audit.toml"
    path.write_text('[carbon]\nfactors = "tables/rs2019.csv"\ncontinent = "South America"\norigin = "Planted"\n')
    cfg = load_config(path)
    assert cfg.carbon["factors"] == tmp_path / "tables" / "rs2019.csv"   # relative to the TOML file
    assert (cfg.carbon["continent"], cfg.carbon["origin"]) == ("South America", "Planted")
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(cfg))
    assert load_config(again).as_dict() == cfg.as_dict()


def test_audit_totals_use_the_configured_table_continent_and_origin(tmp_path):
    """[carbon] factors/continent/origin reach the audit's zonal totals (fusion.pipeline.country_totals)."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely
    from affine import Affine

    from fusion.carbon import CARBON_FACTORS_PATH
    from fusion.pipeline import AuditInputs, country_totals, resolve_inputs
    from terrain.rasters import write_geotiff

    # made-up root:shoot ratios (NOT IPCC values) for tropical moist forest by continent
    t = pd.read_csv(CARBON_FACTORS_PATH)
    t = t[t["factor"] == "carbon_fraction"]
    rs = {"factor": "root_shoot_ratio", "domain": "tropical", "zone": "tropical moist forest", "forest_type": "*",
          "unit": "t root d.m. / t shoot d.m.", "citation": "test table, not IPCC", "verification": "made-up test value"}
    t = pd.concat([t, pd.DataFrame([{**rs, "continent": "africa", "origin": "*", "value": 0.5},
                                    {**rs, "continent": "*", "origin": "*", "value": 0.1}])], ignore_index=True)
    table = tmp_path / "rs.csv"
    t.to_csv(table, index=False)
    transform = Affine(0.01, 0, 10.0, 0, -0.01, 1.0)
    agb, se = tmp_path / "agb.tif", tmp_path / "se.tif"
    write_geotiff(agb, np.full((20, 20), 100.0, dtype=np.float32), transform, "EPSG:4326", nodata=-9999.0)
    write_geotiff(se, np.full((20, 20), 10.0, dtype=np.float32), transform, "EPSG:4326", nodata=-9999.0)
    polys = tmp_path / "polys.gpkg"
    gpd.GeoDataFrame({"iso3": ["AAA"], "name": ["A"]}, geometry=[shapely.box(10.02, 0.82, 10.15, 0.97)],
                     crs=4326).to_file(polys)
    inputs = AuditInputs(granules=[], dem=[], optical={}, polygons=polys, polygon_id="iso3", polygon_name="name",
                         fao=None, gedi_l4b=None, calibration=None)
    maps = {"uncorrected": (agb, se, "")}
    ratio = {}
    for continent in ("africa", "", "Europe"):
        cfg = load_config(None, {"carbon": {"ecozone": "tropical moist forest", "factors": str(table),
                                            "continent": continent}})
        totals, band = country_totals(dataclasses.replace(inputs, carbon_factors=cfg.carbon["factors"]), cfg, maps)
        ratio[continent] = float(totals["carbon_pg"].iloc[0] / totals["agb_pg"].iloc[0])
        assert float(band["carbon_pg"].iloc[0] / band["agb_pg"].iloc[0]) == pytest.approx(ratio[continent])
    assert ratio == pytest.approx({"africa": 0.47 * 1.5, "": 0.47 * 1.1, "Europe": 0.47 * 1.1})
    # resolve_inputs carries the table into the inputs (hashed into the manifest with the other files)
    for name in ("granule.h5", "dem.tif", "ndvi.tif"):
        (tmp_path / name).write_bytes(b"")
    cfg = load_config(None, {"inputs": {"granules": [str(tmp_path / "granule.h5")], "dem": [str(tmp_path / "dem.tif")],
                                        "optical": {"ndvi": str(tmp_path / "ndvi.tif")}, "polygons": str(polys)},
                             "carbon": {"factors": str(table)}})
    resolved = resolve_inputs(cfg)
    assert resolved.carbon_factors == table and resolved.files()["carbon_factors"] == table
