"""NASA agreement: RH rebuilt from the real L4A granule's xvar, predicted through sawa's public API.

The L4A granule has no RH, only the transformed predictors ``xvar``
(x = sqrt(RH_m + 100), checked against L2A in ORNL DAAC's tutorial). Inverting
gives RH in metres; the shot table with those RH columns then goes through
:func:`biomass.shots.predict_shots` with the packaged NASA table, and every
output is compared with the granule's own values.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from biomass import agreement
from biomass.agreement import COMPARED
from biomass.model_data import load_packaged_model_table
from biomass.shots import predict_shots
from waveform.gedi import read_l4a

ALGORITHMS = (1, 2, 3, 4, 5, 6, 10)


def rh_table_from_xvar(strata: np.ndarray, xvar: np.ndarray) -> pd.DataFrame:
    """RH columns (m) rebuilt from xvar with the packaged NASA table."""
    return agreement.rh_table_from_xvar(load_packaged_model_table(), strata, xvar)


def assert_agrees(pred: pd.DataFrame, ref: pd.DataFrame, label: str) -> dict[str, tuple[float, float]]:
    """Within 0.1 % or 0.01 Mg/ha (fit units: 1e-4) for every shot with agbd >= 0; same NaN pattern."""
    ok = ref["agbd"].to_numpy() >= 0
    figures = {}
    for col in COMPARED:
        a = pred[col].to_numpy(dtype=float)[ok]
        b = ref[col].to_numpy(dtype=float)[ok]
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), f"{label} {col}: NaN pattern differs"
        m = np.isfinite(b)
        diff = np.abs(a[m] - b[m])
        tol = np.maximum(1e-3 * np.abs(b[m]), 0.01 if not col.startswith("agbd_t") else 1e-4)
        assert np.all(diff <= tol), f"{label} {col}: max diff {diff.max()}"
        figures[col] = (float(diff.max()), float(np.max(diff / np.abs(b[m]))))
    return figures


@pytest.fixture(scope="session")
def l4a_shots(l4a_path):
    return read_l4a(l4a_path)


def test_official_agbd_reproduced_from_rebuilt_rh(l4a_shots):
    ref = l4a_shots
    shots = rh_table_from_xvar(ref["predict_stratum"].to_numpy(dtype=object),
                               ref[[f"xvar{j}" for j in range(4)]].to_numpy())
    out = predict_shots(shots, "gedi-l4a")
    assert len(out) == len(ref) == 461
    ok = ref["agbd"].to_numpy() >= 0
    assert ok.sum() == 438
    assert (out["agbd_reason"].to_numpy()[ok] == "").all()
    figures = assert_agrees(out, ref, "selected algorithm")
    assert figures["agbd"][1] < 2e-5 and figures["agbd_se"][1] < 1e-5
    # the 23 shots NASA did not predict are kept, each with a reason
    reasons = out.loc[~ok, "agbd_reason"].value_counts().to_dict()
    assert reasons == {"no_stratum": 21, "missing_predictor:rh98": 2}
    # limits are reported but not applied (V002): 13 shots above the GSW RH98 calibration maximum
    assert (out.loc[ok, "predictor_limit_flag"] == 2).sum() == 13
    assert (out.loc[ok, "response_limit_flag"] == 2).sum() == 11


def test_pft_region_codes_give_the_same_predictions(l4a_shots):
    ref = l4a_shots
    shots = rh_table_from_xvar(ref["predict_stratum"].to_numpy(dtype=object),
                               ref[[f"xvar{j}" for j in range(4)]].to_numpy())
    shots = shots.drop(columns="predict_stratum")
    shots["pft_class"] = ref["pft_class"].to_numpy()
    shots["region_class"] = ref["region_class"].to_numpy()
    out = predict_shots(shots, "gedi-l4a")
    assert list(out["predict_stratum"]) == list(ref["predict_stratum"])
    assert_agrees(out, ref, "codes")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_setting_group(l4a_path, algorithm):
    """agbd_prediction/*_aN: 461 shots x 7 setting groups, including RH98 down to 1.7 m."""
    frames, preds = [], []
    with h5py.File(l4a_path, "r") as f:
        for beam in sorted(k for k in f if k.startswith("BEAM")):
            g = f[beam]
            ap = g["agbd_prediction"]
            strata = np.array([s.decode() for s in g["predict_stratum"][:]], dtype=object)
            xvar = ap[f"xvar_a{algorithm}"][:].astype(np.float64)
            xvar[xvar == -9999] = np.nan
            ref = pd.DataFrame({
                "agbd": ap[f"agbd_a{algorithm}"][:], "agbd_se": ap[f"agbd_se_a{algorithm}"][:],
                "agbd_t": ap[f"agbd_t_a{algorithm}"][:], "agbd_t_se": ap[f"agbd_t_se_a{algorithm}"][:],
                "agbd_pi_lower": ap[f"agbd_pi_lower_a{algorithm}"][:],
                "agbd_pi_upper": ap[f"agbd_pi_upper_a{algorithm}"][:],
            }).astype(np.float64).replace(-9999.0, np.nan)
            ref["agbd"] = ref["agbd"].fillna(-9999.0)
            frames.append(ref)
            preds.append(predict_shots(rh_table_from_xvar(strata, xvar), "gedi-l4a"))
    assert_agrees(pd.concat(preds, ignore_index=True), pd.concat(frames, ignore_index=True), f"a{algorithm}")


def test_agreement_report(l4a_path):
    from biomass import l4a_agreement

    table = l4a_agreement(l4a_path, algorithms=("selected", 10))
    assert set(table["algorithm"]) == {"selected", "10"}
    assert (table["n_nan_mismatch"] == 0).all()
    agbd = table[table.column == "agbd"]
    assert (agbd["n_compared"] == 438).all() and (agbd["max_rel_diff"] < 1e-4).all()
    assert table["max_abs_diff"].max() < 0.01
