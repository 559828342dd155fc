"""Carbon factors: the cited table's integrity, worked IPCC examples, per-pixel zones, linear SE
propagation and the errors for zones/forest types/AGB classes the table does not cover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.carbon import CARBON_FACTORS_PATH, CarbonFactors, agb_to_carbon, default_factors
from waveform.errors import SawaFileError, SawaValueError


@pytest.fixture(scope="module")
def factors() -> CarbonFactors:
    return default_factors()


def test_every_factor_row_is_cited_and_inside_its_range(factors):
    t = factors.table
    assert set(t["factor"]) == {"carbon_fraction", "root_shoot_ratio"}
    assert (t["citation"].str.len() > 20).all()
    assert (t["verification"].str.len() > 10).all()
    ranged = t.dropna(subset=["range_low", "range_high"])
    assert ((ranged["range_low"] <= ranged["value"]) & (ranged["value"] <= ranged["range_high"])).all()
    # IPCC 2006 Table 4.3 default
    assert factors.carbon_fraction() == 0.47


def test_root_shoot_classes_do_not_overlap(factors):
    rs = factors.table[factors.table["factor"] == "root_shoot_ratio"]
    for (_zone, _ft), grp in rs.groupby(["zone", "forest_type"]):
        lo = grp["agb_min_mg_ha"].fillna(-np.inf).sort_values().to_numpy()
        hi = grp.sort_values("agb_min_mg_ha", na_position="first")["agb_max_mg_ha"].fillna(np.inf).to_numpy()
        # consecutive classes meet exactly: (lo_k, hi_k] then (hi_k, ...]
        assert np.all(lo[1:] == hi[:-1])


def test_tropical_moist_worked_example():
    # IPCC 2006 Table 4.4 tropical moist deciduous forest: R = 0.20 for AGB <= 125 t/ha, 0.24 above
    r = agb_to_carbon([100.0, 125.0, 125.5, np.nan], "tropical moist forest")
    np.testing.assert_allclose(r["agc"][:3], [47.0, 58.75, 58.985])
    np.testing.assert_allclose(r["root_shoot_ratio"][:3], [0.20, 0.20, 0.24])
    np.testing.assert_allclose(r["bgc"][:3], [100 * 0.47 * 0.20, 125 * 0.47 * 0.20, 125.5 * 0.47 * 0.24])
    np.testing.assert_allclose(r["total_c"][:3], r["agc"][:3] + r["bgc"][:3])
    assert np.isnan(r["total_c"][3])


def test_aliases_and_forest_types(factors):
    # the IPCC 2006 name of the zone works too
    a = agb_to_carbon(200.0, "Tropical moist deciduous forest")["bgc"]
    assert float(a) == pytest.approx(200 * 0.47 * 0.24)
    # temperate conifer: CF 0.51, R 0.20 above 150 Mg/ha; broadleaf CF 0.48
    c = agb_to_carbon(300.0, "temperate continental forest", forest_type="conifer")
    assert float(c["agc"]) == pytest.approx(300 * 0.51)
    assert float(c["bgc"]) == pytest.approx(300 * 0.51 * 0.20)
    b = agb_to_carbon(100.0, "temperate oceanic forest", forest_type="other broadleaf")
    assert float(b["agc"]) == pytest.approx(48.0) and float(b["root_shoot_ratio"]) == pytest.approx(0.23)
    # boreal: R 0.39 up to 75 Mg/ha, 0.24 above
    np.testing.assert_allclose(agb_to_carbon([75.0, 76.0], "boreal coniferous forest")["root_shoot_ratio"], [0.39, 0.24])
    # a climate domain is enough for the carbon fraction alone
    assert float(agb_to_carbon(10.0, "boreal", include_bgb=False)["agc"]) == pytest.approx(4.7)


def test_gez_code_arrays_match_per_zone_calls():
    rng = np.random.default_rng(3)
    agb = rng.uniform(0, 400, size=(40, 50))
    codes = rng.choice([11, 12, 13, 41, 43], size=agb.shape)
    agb[3, 4] = np.nan
    res = agb_to_carbon(agb, codes, agb_se_mg_ha=0.1 * agb)
    names = {11: "tropical rain forest", 12: "tropical moist forest", 13: "tropical dry forest",
             41: "boreal coniferous forest", 43: "boreal mountain system"}
    for code, name in names.items():
        sel = codes == code
        ref = agb_to_carbon(agb[sel], name, agb_se_mg_ha=0.1 * agb[sel])
        np.testing.assert_allclose(res["total_c"][sel], ref["total_c"])
        np.testing.assert_allclose(res["total_c_se"][sel], ref["total_c_se"])
    assert np.isnan(res["total_c"][3, 4])


def test_se_propagates_linearly():
    agb = np.array([50.0, 150.0, 300.0])
    se = np.array([5.0, 20.0, 45.0])
    r = agb_to_carbon(agb, "tropical dry forest", agb_se_mg_ha=se)
    cf, ratio = 0.47, np.array([0.28, 0.28, 0.28])
    np.testing.assert_allclose(r["agc_se"], se * cf)
    np.testing.assert_allclose(r["bgc_se"], se * cf * ratio)
    np.testing.assert_allclose(r["total_c_se"], se * cf * (1 + ratio))
    r2 = agb_to_carbon(agb, "tropical dry forest", agb_se_mg_ha=2 * se)
    np.testing.assert_allclose(r2["total_c_se"], 2 * r["total_c_se"])


def test_without_bgb_only_above_ground_carbon():
    r = agb_to_carbon(np.array([10.0, 20.0]), include_bgb=False)
    np.testing.assert_allclose(r["agc"], [4.7, 9.4])
    np.testing.assert_allclose(r["bgc"], [0.0, 0.0])
    np.testing.assert_allclose(r["total_c"], r["agc"])


def test_uncovered_cases_raise_clear_errors():
    with pytest.raises(SawaValueError, match="unknown ecological zone 'tropical jungle'"):
        agb_to_carbon(10.0, "tropical jungle")
    with pytest.raises(SawaValueError, match="forest_type"):
        agb_to_carbon(10.0, "temperate oceanic forest")
    with pytest.raises(SawaValueError, match=r"\(70, inf\]"):
        agb_to_carbon([50.0, 100.0], "temperate oceanic forest", forest_type="quercus")
    with pytest.raises(SawaValueError, match="no root-to-shoot ratio for zone 'subtropical mountain system'"):
        agb_to_carbon(10.0, "subtropical mountain system")
    with pytest.raises(SawaValueError, match="needs an ecological zone"):
        agb_to_carbon(10.0)
    with pytest.raises(SawaValueError, match=">= 0"):
        agb_to_carbon([10.0, -1.0], "tropical rain forest")
    with pytest.raises(SawaValueError, match="unknown GEZ ecological zone code 99"):
        agb_to_carbon(np.array([10.0]), np.array([99]))
    with pytest.raises(SawaValueError, match="shape"):
        agb_to_carbon(np.ones(3), np.array([11, 11]))


def test_user_table_must_cite_every_row(tmp_path):
    t = pd.read_csv(CARBON_FACTORS_PATH)
    t.loc[3, "citation"] = ""
    bad = tmp_path / "factors.csv"
    t.to_csv(bad, index=False)
    with pytest.raises(SawaValueError, match=r"rows \[3\] have no citation"):
        CarbonFactors.load(bad)
    with pytest.raises(SawaFileError, match="does not exist"):
        CarbonFactors.load(tmp_path / "missing.csv")
    # a user table with a national factor is used as given
    t = pd.read_csv(CARBON_FACTORS_PATH)
    t.loc[(t["factor"] == "carbon_fraction") & (t["domain"] == "tropical") & (t["forest_type"] == "*"), "value"] = 0.49
    good = tmp_path / "national.csv"
    t.to_csv(good, index=False)
    f = CarbonFactors.load(good)
    assert float(agb_to_carbon(100.0, "tropical rain forest", factors=f, include_bgb=False)["agc"]) == pytest.approx(49.0)
