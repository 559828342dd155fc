"""``sawa predict`` / ``sawa fit`` over (Geo)Parquet shot tables."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from biomass.l4a import inverse_x
from biomass.shots import predict_shots
from fusion.cli import main
from tests.reference.biomass_naive import simulate_slope_shots
from waveform.errors import ModelError
from waveform.gedi import read_l4a


@pytest.fixture(scope="module")
def l4a_shot_file(l4a_path, tmp_path_factory):
    """GeoParquet of the real L4A shots with rh98 and rh98_sawa (m) rebuilt from xvar."""
    ref = read_l4a(l4a_path)
    rh98 = inverse_x(ref["xvar0"].to_numpy(), "sqrt", 100.0)
    frame = gpd.GeoDataFrame(
        {"shot_number": ref["shot_number"], "beam": ref["beam"], "pft_class": ref["pft_class"],
         "region_class": ref["region_class"], "rh98": rh98, "rh98_sawa": rh98 - 1.0,
         "agbd_official": ref["agbd"]},
        geometry=gpd.points_from_xy(ref["lon_lowestmode"].fillna(0), ref["lat_lowestmode"].fillna(0)),
        crs="EPSG:4326",
    )
    path = tmp_path_factory.mktemp("cli") / "l4a_shots.parquet"
    frame.to_parquet(path)
    return path


def test_sawa_predict_gedi_l4a(l4a_shot_file, tmp_path):
    out = tmp_path / "agbd.parquet"
    res = CliRunner().invoke(main, ["predict", "--model", "gedi-l4a", str(l4a_shot_file), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 461 shots (438 predicted" in res.output
    assert "no_stratum 21" in res.output and "missing_predictor 2" in res.output
    got = gpd.read_parquet(out)
    assert len(got) == 461 and got.crs.to_epsg() == 4326
    assert list(got["shot_number"]) == list(pd.read_parquet(l4a_shot_file)["shot_number"])
    ok = got["agbd_reason"] == ""
    np.testing.assert_allclose(got.loc[ok, "agbd"], got.loc[ok, "agbd_official"], rtol=1e-3, atol=0.01)
    assert {"agbd_se", "agbd_t", "agbd_pi_lower", "predict_stratum"} <= set(got.columns)


def test_sawa_predict_rh_suffix(l4a_shot_file, tmp_path):
    out = tmp_path / "agbd_sawa.parquet"
    res = CliRunner().invoke(main, ["predict", str(l4a_shot_file), "--rh-suffix", "_sawa", "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(out)
    ok = got["agbd_reason"] == ""
    # one metre lower RH98 -> lower AGBD for every shot
    assert (got.loc[ok, "agbd"] < got.loc[ok, "agbd_official"]).all()


def test_sawa_predict_bad_input(tmp_path):
    path = tmp_path / "no_rh.parquet"
    pd.DataFrame({"predict_stratum": ["EBT_SAs"], "rh98": [20.0]}).to_parquet(path)
    res = CliRunner().invoke(main, ["predict", str(path), "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 1
    assert "lacks RH predictor columns: rh50 needed by EBT_SAs" in res.output
    assert not (tmp_path / "o.parquet").exists()
    clash = tmp_path / "clash.parquet"
    pd.DataFrame({"predict_stratum": ["GSW_NAs"], "rh98": [5.0], "agbd": [1.0]}).to_parquet(clash)
    res = CliRunner().invoke(main, ["predict", str(clash), "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 1 and "already has columns agbd" in res.output
    res = CliRunner().invoke(main, ["predict", str(clash), "--overwrite", "-o", str(tmp_path / "o.parquet")])
    assert res.exit_code == 0, res.output


def test_sawa_fit_then_predict(tmp_path):
    shots = simulate_slope_shots(n=400, seed=3)
    path = tmp_path / "cal.parquet"
    shots.to_parquet(path)
    model = tmp_path / "sawa_model.json"
    res = CliRunner().invoke(main, ["fit", str(path), "--target", "agb_mg_ha", "--predictors", "50,98",
                                    "--rh-suffix", "_sawa", "-o", str(model)])
    assert res.exit_code == 0, res.output
    assert "stratum all: n=400" in res.output
    out = tmp_path / "pred.parquet"
    res = CliRunner().invoke(main, ["predict", "--model", str(model), str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(out)
    rmse = float(np.sqrt(np.mean((got["agbd"] - got["agb_mg_ha"]) ** 2)))
    assert rmse < 0.2 * got["agb_mg_ha"].mean()
    rf = tmp_path / "rf.skops"
    res = CliRunner().invoke(main, ["fit", str(path), "--target", "agb_mg_ha", "--learner", "random-forest",
                                    "--features", "rh50_sawa,rh98_sawa,slope_deg", "-o", str(rf)])
    assert res.exit_code == 0, res.output
    assert "out-of-sample RMSE" in res.output
    res = CliRunner().invoke(main, ["predict", "--model", str(rf), str(path), "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["fit", str(path), "--target", "nope", "-o", str(tmp_path / "m.json")])
    assert res.exit_code == 1 and "no target column 'nope'" in res.output


def test_python_predict_keeps_index_and_rows():
    shots = pd.DataFrame({"predict_stratum": ["GSW_NAs", "", "GSW_NAs"], "rh98": [5.0, 5.0, np.nan]},
                         index=[10, 20, 30])
    out = predict_shots(shots)
    assert list(out.index) == [10, 20, 30]
    assert list(out["agbd_reason"]) == ["", "no_stratum", "missing_predictor:rh98"]
    with pytest.raises(ModelError, match="rh_suffix applies to L4A-form models"):
        from biomass.learners import RandomForestAGB

        cal = simulate_slope_shots(n=60)
        rf = RandomForestAGB(feature_columns=["rh98"], n_estimators=10).fit(cal, cal["agb_mg_ha"])
        predict_shots(cal, rf, rh_suffix="_sawa")


def test_sawa_fit_per_stratum_and_single_model_applies_everywhere(tmp_path):
    shots = simulate_slope_shots(n=400, seed=4)
    shots["predict_stratum"] = np.where(shots["lon"] < 20.0, "west", "east")
    path = tmp_path / "cal.parquet"
    shots.to_parquet(path)
    per = tmp_path / "per.json"
    res = CliRunner().invoke(main, ["fit", str(path), "--target", "agb_mg_ha", "--predictors", "98",
                                    "--rh-suffix", "_sawa", "--strata-col", "predict_stratum", "-o", str(per)])
    assert res.exit_code == 0, res.output
    assert "stratum east:" in res.output and "stratum west:" in res.output
    single = tmp_path / "single.json"
    res = CliRunner().invoke(main, ["fit", str(path), "--target", "agb_mg_ha", "--predictors", "98",
                                    "--rh-suffix", "_sawa", "-o", str(single)])
    assert res.exit_code == 0 and "stratum all: n=400" in res.output
    # the single model predicts every shot although the table names other strata
    out = predict_shots(shots, str(single))
    assert (out["agbd_reason"] == "").all()
