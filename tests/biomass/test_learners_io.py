"""Learners (RF / GB) and model files: JSON round trip and tampering, skops allow-list, foreign files."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.base import clone
from sklearn.linear_model import LinearRegression

from biomass.l4a import L4AModel, gedi_l4a_model
from biomass.learners import GradientBoostingAGB, RandomForestAGB
from biomass.modelio import load_model, save_model
from tests.reference.biomass_naive import simulate_slope_shots
from waveform.errors import ModelError, ModelFileError, SawaFileError


class NotASawaType:
    """A class outside sawa's allow-list (stands for arbitrary code in a foreign file)."""

    def __init__(self):
        self.value = 1


@pytest.fixture(scope="module")
def shots():
    return simulate_slope_shots(n=500, seed=5)


@pytest.fixture(scope="module")
def rf(shots):
    return RandomForestAGB(feature_columns=["rh50_sawa", "rh98_sawa"], n_estimators=40).fit(
        shots, shots["agb_mg_ha"])


def test_random_forest_learns_and_reports_oob_se(rf, shots):
    pred = rf.predict(shots)
    assert np.sqrt(np.mean((pred - shots["agb_mg_ha"]) ** 2)) < 0.35 * shots["agb_mg_ha"].std()
    # out-of-bag RMSE: an honest error, larger than the in-sample one
    in_sample = float(np.sqrt(np.mean((pred - shots["agb_mg_ha"]) ** 2)))
    assert rf.rmse_ > in_sample
    assert np.allclose(rf.predict_se(shots), rf.rmse_)
    spread = rf.predict_spread(shots)
    assert spread.shape == (len(shots),) and np.all(spread >= 0)
    assert rf.get_params()["n_estimators"] == 40 and clone(rf).get_params() == rf.get_params()


def test_gradient_boosting_holdout_se(shots):
    gb = GradientBoostingAGB(feature_columns=["rh50_sawa", "rh98_sawa"], n_estimators=60).fit(
        shots, shots["agb_mg_ha"])
    pred = gb.predict(shots)
    assert np.sqrt(np.mean((pred - shots["agb_mg_ha"]) ** 2)) < 0.35 * shots["agb_mg_ha"].std()
    assert 0 < gb.rmse_ < shots["agb_mg_ha"].std()


def test_learner_bad_input(rf, shots):
    test = shots.head(4).copy()
    test.loc[test.index[1], "rh98_sawa"] = np.nan
    frame = rf.predict_frame(test)
    assert list(frame["agbd_reason"]) == ["", "missing_feature:rh98_sawa", "", ""]
    assert np.isnan(frame["agbd"].iloc[1]) and np.isnan(frame["agbd_se"].iloc[1])
    with pytest.raises(ModelError, match="lacks feature columns rh50_sawa"):
        rf.predict(shots[["rh98_sawa"]])
    bad = shots.copy()
    bad.loc[0, "rh50_sawa"] = np.nan
    with pytest.raises(ModelError, match=r"1 training shots have missing features: rh50_sawa \(1\)"):
        RandomForestAGB(feature_columns=["rh50_sawa", "rh98_sawa"], n_estimators=10).fit(bad, bad["agb_mg_ha"])


def test_l4a_json_round_trip_and_tamper(tmp_path):
    model = gedi_l4a_model(rh_suffix="_sawa")
    path = save_model(model, tmp_path / "nasa.json")
    back = load_model(path)
    assert isinstance(back, L4AModel) and back.get_params() == model.get_params()
    shots = pd.DataFrame({"predict_stratum": ["GSW_NAs", "EBT_SAs"], "rh50_sawa": [5.0, 15.0],
                          "rh98_sawa": [12.0, 31.0]})
    pd.testing.assert_frame_equal(back.predict_frame(shots), model.predict_frame(shots))
    doc = json.loads(path.read_text())
    assert doc["format"] == "sawa-biomass-model" and doc["kind"] == "l4a-form"
    assert doc["payload"]["table"]["provenance"]["PGEVersion"] == "002"
    doc["payload"]["table"]["strata"][0]["bias_correction_value"] = 2.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="modified after it was written"):
        load_model(path)


def test_fitted_l4a_round_trip(tmp_path, shots):
    model = L4AModel(predictors=(98,), rh_suffix="_sawa").fit(shots, shots["agb_mg_ha"])
    back = load_model(save_model(model, tmp_path / "fit.json"))
    np.testing.assert_array_equal(back.predict(shots), model.predict(shots))
    assert back.table_.strata["all"].n_train == len(shots)


def test_skops_round_trip(tmp_path, rf, shots):
    path = save_model(rf, tmp_path / "rf.skops")
    back = load_model(path)
    assert isinstance(back, RandomForestAGB)
    np.testing.assert_array_equal(back.predict(shots), rf.predict(shots))
    assert back.rmse_ == rf.rmse_ and back.feature_names_ == rf.feature_names_


def test_foreign_and_tampered_files_are_refused(tmp_path, rf):
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="never loads pickle"):
        load_model(pkl)
    foreign = tmp_path / "foreign.skops"
    sio.dump({"payload": NotASawaType()}, foreign)
    with pytest.raises(ModelFileError, match="outside sawa's allow-list: .*NotASawaType"):
        load_model(foreign)
    plain = tmp_path / "linear.skops"
    sio.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), plain)
    with pytest.raises(ModelFileError, match="not a sawa learner"):
        load_model(plain)
    good = save_model(rf, tmp_path / "rf.skops")
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    tampered = tmp_path / "tampered.skops"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="fails its CRC check"):
        load_model(tampered)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "geojson", "payload": {}}))
    with pytest.raises(ModelFileError, match="is a 'geojson' file"):
        load_model(other)
    with pytest.raises(SawaFileError, match="does not exist"):
        load_model(tmp_path / "absent.json")
    with pytest.raises(ModelError, match="unfitted"):
        save_model(L4AModel(), tmp_path / "x.json")
    with pytest.raises(ModelError, match=r"name the file \*.skops"):
        save_model(rf, tmp_path / "rf.json")
    with pytest.raises(ModelError, match=r"name the file \*.json"):
        save_model(gedi_l4a_model(), tmp_path / "nasa.skops")


def test_reproducible_skops_files_are_byte_identical_and_load(tmp_path):
    """stamp=None: skops' id()-based names and zip times are normalised; the model still loads."""
    import hashlib

    import numpy as np
    import pandas as pd

    from biomass.learners import RandomForestAGB
    from biomass.modelio import load_model, save_model

    X = pd.DataFrame({"rh50": np.linspace(0, 30, 60), "rh98": np.linspace(5, 45, 60)})
    y = 3.0 * X["rh98"].to_numpy()
    first = RandomForestAGB(feature_columns=["rh50", "rh98"], n_estimators=15).fit(X, y)
    second = RandomForestAGB(feature_columns=["rh50", "rh98"], n_estimators=15).fit(X, y)  # other objects, other ids
    save_model(first, tmp_path / "a.skops", stamp=None)
    save_model(second, tmp_path / "b.skops", stamp=None)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.skops", "b.skops")]
    assert digest[0] == digest[1]
    np.testing.assert_array_equal(load_model(tmp_path / "b.skops").predict(X), first.predict(X))
