"""L4AModel: fit against a naive OLS, predict against a naive per-shot loop, NASA's rules, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from biomass.l4a import L4AModel, gedi_l4a_model
from biomass.model_data import load_packaged_model_table
from tests.reference.biomass_naive import naive_ols, naive_predict_shot
from waveform.errors import ModelError, StratumError


def synthetic_calibration(n=300, seed=3, strata=("A", "B")):
    """AGBD from a known sqrt-sqrt model per stratum plus noise (fit units)."""
    rng = np.random.default_rng(seed)
    truth = {"A": (-110.0, 5.0, 6.0), "B": (-95.0, 7.0, 2.5)}
    rows = []
    for s in strata:
        rh98 = rng.uniform(3, 40, n)
        rh50 = rh98 * rng.uniform(0.3, 0.7, n)
        b0, b1, b2 = truth[s]
        t = b0 + b1 * np.sqrt(rh50 + 100) + b2 * np.sqrt(rh98 + 100) + rng.normal(0, 1.5, n)
        t = np.clip(t, 0.2, None)
        rows.append(pd.DataFrame({"rh50": rh50, "rh98": rh98, "agbd": t ** 2, "predict_stratum": s}))
    return pd.concat(rows, ignore_index=True)


def test_fit_matches_naive_normal_equations():
    cal = synthetic_calibration()
    model = L4AModel(predictors=(50, 98)).fit(cal, cal["agbd"])
    for s in ("A", "B"):
        sub = cal[cal.predict_stratum == s]
        ref = naive_ols(sub[["rh50", "rh98"]].to_numpy(), sub["agbd"].to_numpy())
        m = model.table_.strata[s]
        np.testing.assert_allclose(m.par, ref["par"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(m.vcov, ref["vcov"], rtol=1e-8, atol=1e-12)
        assert m.rse == pytest.approx(ref["rse"], rel=1e-10)
        assert m.dof == ref["dof"] == 297
        assert m.bias_correction_value == pytest.approx(ref["c"], rel=1e-10)
        assert m.n_train == 300 and m.rh_index == (50, 98)
    # coefficients recovered within a few standard errors of the simulated truth
    a = model.table_.strata["A"]
    assert np.all(np.abs(a.par - [-110.0, 5.0, 6.0]) < 4 * np.sqrt(np.diag(a.vcov)))


def test_sklearn_contract():
    model = L4AModel(predictors=(98,), bias_correction="snowdon")
    assert model.get_params()["predictors"] == (98,)
    assert not hasattr(model, "table_")
    model.set_params(rh_suffix="_sawa")
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    cal = synthetic_calibration().rename(columns={"rh98": "rh98_sawa"})
    assert twin.fit(cal, cal["agbd"]) is twin
    with pytest.raises(ModelError, match="not fitted"):
        L4AModel().predict(cal)


def test_prediction_matches_naive_for_nasa_strata():
    """Random RH through several NASA strata (1, 2 and 3 predictors) vs a line-by-line loop."""
    table = load_packaged_model_table()
    rng = np.random.default_rng(11)
    names = ["GSW_NAs", "GSW_Au", "EBT_SAs", "DBT_Af", "ENT_NAm"]
    n = 400
    strata = rng.choice(names, n)
    shots = pd.DataFrame({"predict_stratum": strata})
    for idx in (40, 50, 60, 70, 80, 98):
        shots[f"rh{idx}"] = rng.uniform(-2.0, 45.0, n) * (idx / 98.0)
    out = gedi_l4a_model().predict_frame(shots)
    for i in range(n):
        m = table.strata[strata[i]]
        ref = naive_predict_shot([shots.loc[i, f"rh{k}"] for k in m.rh_index], list(m.par),
                                 m.vcov.tolist(), m.rse, m.dof, m.bias_correction_value)
        for col, v in ref.items():
            got = out.loc[i, col]
            if math.isnan(v):
                assert math.isnan(got), (i, col)
            else:
                assert got == pytest.approx(v, rel=1e-10, abs=1e-10), (i, col)
        assert out.loc[i, "agbd_reason"] == ("" if ref["agbd_t"] >= 0 else "negative_prediction")


def test_negative_linear_predictor_rule():
    # GSW: t = -124.832283 + 12.42631 * sqrt(rh98 + 100) < 0 for rh98 < 0.92 m
    shots = pd.DataFrame({"predict_stratum": ["GSW_NAs"] * 3, "rh98": [0.0, 0.92, 5.0]})
    out = gedi_l4a_model().predict_frame(shots)
    assert out.loc[0, "agbd_t"] == pytest.approx(-124.832283 + 12.42631 * 10.0, abs=1e-4)
    assert out.loc[0, "agbd_reason"] == "negative_prediction" and math.isnan(out.loc[0, "agbd"])
    assert out.loc[0, "response_limit_flag"] == 1
    assert out.loc[1, "agbd_reason"] == "" and out.loc[1, "agbd"] >= 0
    zero = gedi_l4a_model(negative_rule="zero").predict_frame(shots)
    assert zero.loc[0, "agbd"] == 0.0 and zero.loc[0, "agbd_reason"] == ""
    assert zero.loc[0, "response_limit_flag"] == 1


def test_limits_reported_not_applied():
    # GSW_NAs: predictor_max_value 11.035851 (RH98 21.79 m), response_max_value 192.56 Mg/ha
    shots = pd.DataFrame({"predict_stratum": ["GSW_NAs"] * 2, "rh98": [10.0, 40.0]})
    out = gedi_l4a_model().predict_frame(shots)
    t = -124.832283 + 12.42631 * math.sqrt(140.0)
    assert out.loc[1, "agbd"] == pytest.approx(1.1181948 * t * t, rel=1e-6)  # not clamped
    assert list(out["predictor_limit_flag"]) == [0, 2]
    assert list(out["response_limit_flag"]) == [0, 2]


def test_delta_method_se():
    shots = pd.DataFrame({"predict_stratum": ["GSW_NAs"], "rh98": [12.0]})
    l4a = gedi_l4a_model().predict_frame(shots).iloc[0]
    delta = gedi_l4a_model(se_method="delta").predict_frame(shots).iloc[0]
    c = 1.1181948
    assert l4a["agbd_se"] == pytest.approx(c * l4a["agbd_t_se"] ** 2, rel=1e-6)
    assert delta["agbd_se"] == pytest.approx(c * 2 * l4a["agbd_t"] * l4a["agbd_t_se"], rel=1e-6)


def test_bias_corrections_for_log_response():
    cal = synthetic_calibration(strata=("A",))
    resid_model = L4AModel(predictors=(98,), y_transform="log", bias_correction="baskerville").fit(
        cal, cal["agbd"])
    m = resid_model.table_.strata["A"]
    assert m.bias_correction_value == pytest.approx(math.exp(m.rse ** 2 / 2))
    duan = L4AModel(predictors=(98,), y_transform="log", bias_correction="duan").fit(cal, cal["agbd"])
    x = np.column_stack([np.ones(len(cal)), np.sqrt(cal["rh98"] + 100)])
    resid = np.log(cal["agbd"]) - x @ duan.table_.strata["A"].par
    assert duan.table_.strata["A"].bias_correction_value == pytest.approx(np.mean(np.exp(resid)))
    with pytest.raises(ModelError, match="log response only"):
        L4AModel(predictors=(98,), bias_correction="duan").fit(cal, cal["agbd"])


def test_bad_input_reasons_per_shot():
    shots = pd.DataFrame({
        "predict_stratum": ["GSW_NAs", "", None, "XYZ_Mars", "GSW_NAs", "GSW_NAs", "GSW_NAs"],
        "rh98": [10.0, 10.0, 10.0, 10.0, np.nan, -9999.0, -150.0],
    })
    out = gedi_l4a_model().predict_frame(shots)
    assert list(out["agbd_reason"]) == [
        "", "no_stratum", "no_stratum", "unknown_stratum:XYZ_Mars", "missing_predictor:rh98",
        "fill_predictor:rh98", "predictor_out_of_domain:rh98",
    ]
    assert np.isfinite(out["agbd"].iloc[0]) and out["agbd"].iloc[1:].isna().all()
    assert list(out.index) == list(shots.index)


def test_bad_input_errors():
    model = gedi_l4a_model()
    with pytest.raises(ModelError, match=r"lacks RH predictor columns: rh50 needed by EBT_SAs \(1 shots\)"):
        model.predict_frame(pd.DataFrame({"predict_stratum": ["EBT_SAs"], "rh98": [20.0]}))
    with pytest.raises(ModelError, match="centimetres"):
        model.predict_frame(pd.DataFrame({"predict_stratum": ["GSW_NAs"] * 3, "rh98": [1200.0, 1500.0, 900.0]}))
    with pytest.raises(ModelError, match="neither a 'predict_stratum' column nor pft_class"):
        model.predict_frame(pd.DataFrame({"rh98": [20.0]}))
    cal = synthetic_calibration()
    with pytest.raises(ModelError, match="stratum 'B' has 5 calibration shots; at least 10"):
        small = pd.concat([cal[cal.predict_stratum == "A"], cal[cal.predict_stratum == "B"].head(5)])
        L4AModel().fit(small, small["agbd"])
    bad = cal.copy()
    bad.loc[3, "rh50"] = np.nan
    with pytest.raises(ModelError, match="stratum 'A': 1 calibration shots have missing or fill predictors"):
        L4AModel().fit(bad, bad["agbd"])
    bad = cal.copy()
    bad.loc[7, "agbd"] = np.nan
    with pytest.raises(ModelError, match="non-finite AGBD"):
        L4AModel().fit(bad, bad["agbd"])
    with pytest.raises(StratumError, match="no predictors given for stratum 'B'"):
        L4AModel(predictors={"A": (98,)}).fit(cal, cal["agbd"])
    const = cal[cal.predict_stratum == "A"].assign(rh50=5.0, rh98=5.0)
    with pytest.raises(ModelError, match="collinear or constant"):
        L4AModel().fit(const, const["agbd"])


def test_single_model_without_strata_and_array_input():
    cal = synthetic_calibration(strata=("A",)).drop(columns="predict_stratum")
    model = L4AModel(predictors=(50, 98)).fit(cal[["rh50", "rh98"]].to_numpy(), cal["agbd"])
    assert list(model.table_.strata) == ["all"]
    pred = model.predict(cal)
    rmse = float(np.sqrt(np.mean((pred - cal["agbd"]) ** 2)))
    assert rmse < 0.5 * cal["agbd"].std()
    assert model.predict_se(cal).shape == (len(cal),)
