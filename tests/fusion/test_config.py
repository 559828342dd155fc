"""Audit TOML configuration: defaults, round trip, and clear errors naming section and key."""

from __future__ import annotations

import tomllib

import pytest

from fusion.config import config_to_toml, default_config, load_config
from waveform.errors import ConfigError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert cfg.waveform["algorithm"] == "a1"
    assert cfg.carbon["carbon_fraction"] == 0.47
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
        ("[carbon]\ncarbon_fraction = 4.7\n", r"carbon_fraction = 4.7 is outside"),
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
