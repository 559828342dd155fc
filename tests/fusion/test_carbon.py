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


# --- continent / forest origin (IPCC 2019 Refinement Table 4.4 layout) -------------------------
# Made-up root:shoot values, NOT IPCC numbers: they only exercise the row selection.
_TEST_CITATION = "test table, not IPCC"


def _rs(zone, continent, origin, value, lo=None, hi=None):
    return {"factor": "root_shoot_ratio", "domain": "tropical", "zone": zone, "forest_type": "*",
            "agb_min_mg_ha": lo, "agb_max_mg_ha": hi, "value": value, "range_low": None, "range_high": None,
            "unit": "t root d.m. / t shoot d.m.", "citation": _TEST_CITATION, "verification": "made-up test value",
            "continent": continent, "origin": origin}


def _user_rows() -> list[dict]:
    cf = {"factor": "carbon_fraction", "domain": "tropical", "zone": "*", "forest_type": "*", "agb_min_mg_ha": None,
          "agb_max_mg_ha": None, "value": 0.47, "range_low": None, "range_high": None, "unit": "t C / t dry matter",
          "citation": _TEST_CITATION, "verification": "made-up test value", "continent": "*", "origin": None}
    return [
        cf,
        # tropical moist forest: continent x origin rows plus a continent/origin-independent fallback
        _rs("tropical moist forest", "africa", "natural", 0.11),
        _rs("tropical moist forest", "Africa", "Planted", 0.12),      # names normalised like the other columns
        _rs("tropical moist forest", "asia", "*", 0.13),
        _rs("tropical moist forest", None, "", 0.19),                # empty cells = "*"
        # tropical dry forest: continent-specific rows only
        _rs("tropical dry forest", "africa", "*", 0.31),
        _rs("tropical dry forest", "asia", "*", 0.32),
        _rs("tropical dry forest", "americas", "*", 0.33),
        # tropical rain forest: origin-specific rows only, two AGB classes each
        _rs("tropical rain forest", "*", "natural", 0.41, hi=125.0),
        _rs("tropical rain forest", "*", "natural", 0.43, lo=125.0),
        _rs("tropical rain forest", "*", "planted", 0.42),
    ]


@pytest.fixture()
def user_table(tmp_path) -> CarbonFactors:
    path = tmp_path / "rs_2019_layout.csv"
    pd.DataFrame(_user_rows()).to_csv(path, index=False)
    return CarbonFactors.load(path)


def test_user_table_most_specific_continent_and_origin_rows(user_table):
    f = user_table
    r = lambda zone, **kw: float(f.root_shoot_ratio(100.0, zone, **kw))  # noqa: E731
    tmf = "tropical moist forest"
    assert r(tmf, continent="africa", origin="natural") == pytest.approx(0.11)
    assert r(tmf, continent="AFRICA", origin="planted") == pytest.approx(0.12)
    assert r(tmf, continent="asia", origin="planted") == pytest.approx(0.13)   # asia has only origin "*"
    assert r(tmf, continent="asia") == pytest.approx(0.13)
    # no row for the continent (or none given): the "*" fallback row
    assert r(tmf, continent="europe", origin="natural") == pytest.approx(0.19)
    assert r(tmf) == pytest.approx(0.19)
    assert r(tmf, origin="planted") == pytest.approx(0.19)
    # a continent's rows split by origin only: origin needed, and the error names the continent
    with pytest.raises(SawaValueError, match=r"'tropical moist forest' \(continent 'africa'\).*by forest origin only, "
                                             r"for natural, planted; give origin="):
        f.root_shoot_rows(tmf, continent="africa")
    # Natural Earth CONTINENT names
    assert r("tropical dry forest", continent="South America") == pytest.approx(0.33)
    assert r("tropical dry forest", continent="north_america") == pytest.approx(0.33)
    assert r("tropical dry forest", continent="Asia") == pytest.approx(0.32)
    # origin rows with AGB classes
    np.testing.assert_allclose(f.root_shoot_ratio([100.0, 125.0, 300.0], "tropical rain forest", origin="natural"),
                               [0.41, 0.41, 0.43])
    assert r("tropical rain forest", origin="planted", continent="oceania") == pytest.approx(0.42)


def test_user_table_continent_and_origin_errors(user_table, tmp_path):
    f = user_table
    with pytest.raises(SawaValueError, match=r"'tropical dry forest'.*by continent only, for africa, americas, asia; "
                                             r"give continent= one of them"):
        f.root_shoot_rows("tropical dry forest")
    with pytest.raises(SawaValueError, match="by continent only"):
        agb_to_carbon(10.0, "tropical dry forest", factors=f)
    with pytest.raises(SawaValueError, match=r"no root-to-shoot ratio for continent 'europe' and no "
                                             r"continent-independent \('\*'\) rows; it has africa, americas, asia"):
        f.root_shoot_rows("tropical dry forest", continent="europe")
    with pytest.raises(SawaValueError, match=r"'tropical rain forest'.*by forest origin only, for natural, planted"):
        f.root_shoot_ratio(10.0, "tropical rain forest")
    known = "known continents: africa, americas, asia, europe, oceania"
    with pytest.raises(SawaValueError, match=f"unknown continent 'Antarctica'; {known}"):
        f.root_shoot_rows("tropical moist forest", continent="Antarctica")
    with pytest.raises(SawaValueError, match=f"unknown continent 'Atlantis'; {known}"):
        agb_to_carbon(10.0, "tropical moist forest", continent="Atlantis")   # shipped table too
    with pytest.raises(SawaValueError, match="unknown forest origin 'wild'; known origins: natural, planted"):
        agb_to_carbon(10.0, "tropical moist forest", factors=f, origin="wild")
    # bad cells in a user table are reported at load time
    rows = _user_rows()
    rows[2]["continent"] = "Eurasia"
    bad = tmp_path / "bad_continent.csv"
    pd.DataFrame(rows).to_csv(bad, index=False)
    with pytest.raises(SawaValueError, match=r"column 'continent': unknown continent 'eurasia'"):
        CarbonFactors.load(bad)
    rows = _user_rows()
    rows[0]["origin"] = "planted"   # a carbon fraction row by origin
    bad = tmp_path / "bad_cf.csv"
    pd.DataFrame(rows).to_csv(bad, index=False)
    with pytest.raises(SawaValueError, match=r"carbon fraction rows \[0\] have a continent or origin"):
        CarbonFactors.load(bad)


def test_agb_to_carbon_with_continent_and_origin(user_table):
    agb = np.array([50.0, 200.0, np.nan])
    se = np.array([5.0, 20.0, 1.0])
    r = agb_to_carbon(agb, "tropical moist forest", factors=user_table, continent="africa", origin="planted",
                      agb_se_mg_ha=se)
    np.testing.assert_allclose(r["agc"][:2], agb[:2] * 0.47)
    np.testing.assert_allclose(r["bgc"][:2], r["agc"][:2] * 0.12)
    np.testing.assert_allclose(r["total_c"][:2], r["agc"][:2] * 1.12)
    np.testing.assert_allclose(r["total_c_se"][:2], se[:2] * 0.47 * 1.12)
    assert np.isnan(r["bgc"][2])
    # GEZ code arrays: each zone's rows chosen with the same continent/origin
    codes = np.array([12, 13, 11])
    rc = agb_to_carbon(np.array([100.0, 100.0, 100.0]), codes, factors=user_table, continent="africa",
                       origin="natural")
    np.testing.assert_allclose(rc["root_shoot_ratio"], [0.11, 0.31, 0.41])
    np.testing.assert_allclose(rc["bgc"], rc["agc"] * np.array([0.11, 0.31, 0.41]))


def test_shipped_table_has_any_continent_and_origin():
    t = pd.read_csv(CARBON_FACTORS_PATH, dtype=str, keep_default_na=False)
    assert list(t.columns[-2:]) == ["continent", "origin"]
    assert (t["continent"] == "*").all() and (t["origin"] == "*").all()
    # IPCC 2006 tropical moist forest: R 0.20 / 0.24 whatever the continent and origin
    agb = [100.0, 125.0, 125.5]
    base = agb_to_carbon(agb, "tropical moist forest")
    np.testing.assert_allclose(base["root_shoot_ratio"], [0.20, 0.20, 0.24])
    for kw in ({"continent": "asia"}, {"continent": "South America", "origin": "planted"}, {"origin": "natural"}):
        r = agb_to_carbon(agb, "tropical moist forest", **kw)
        np.testing.assert_array_equal(r["total_c"], base["total_c"])
        np.testing.assert_array_equal(r["root_shoot_ratio"], base["root_shoot_ratio"])


def test_continent_and_origin_columns_are_optional_the_others_required(tmp_path):
    t = pd.read_csv(CARBON_FACTORS_PATH)
    old = tmp_path / "ipcc2006_layout.csv"
    t.drop(columns=["continent", "origin"]).to_csv(old, index=False)
    f = CarbonFactors.load(old)
    assert (f.table["continent"] == "*").all() and (f.table["origin"] == "*").all()
    np.testing.assert_array_equal(f.table["value"], default_factors().table["value"])
    a = agb_to_carbon([60.0, 300.0], "boreal coniferous forest", factors=f, continent="europe")
    np.testing.assert_array_equal(a["total_c"], agb_to_carbon([60.0, 300.0], "boreal coniferous forest")["total_c"])
    missing = tmp_path / "no_verification.csv"
    t.drop(columns=["verification"]).to_csv(missing, index=False)
    with pytest.raises(SawaValueError, match=r"lacks columns \['verification'\]"):
        CarbonFactors.load(missing)


def test_zonal_totals_pass_continent_and_origin(user_table):
    import geopandas as gpd
    import shapely
    from affine import Affine

    from fusion.zonal import latitude_band_total, zonal_totals

    agb = (np.full((20, 20), 100.0), Affine(0.01, 0, 10.0, 0, -0.01, 1.0), "EPSG:4326")
    poly = gpd.GeoDataFrame({"iso3": ["AAA"]}, geometry=[shapely.box(10.02, 0.82, 10.15, 0.97)], crs=4326)
    res = zonal_totals(agb, poly, name_col=None, zone="tropical moist forest", factors=user_table,
                       continent="africa", origin="natural")
    np.testing.assert_allclose(res["bgc_pg"], res["agc_pg"] * 0.11)
    np.testing.assert_allclose(res["carbon_pg"], res["agb_pg"] * 0.47 * 1.11)
    fallback = zonal_totals(agb, poly, name_col=None, zone="tropical moist forest", factors=user_table)
    np.testing.assert_allclose(fallback["bgc_pg"], fallback["agc_pg"] * 0.19)
    band = latitude_band_total(agb, zone="tropical dry forest", factors=user_table, continent="South America")
    assert band["bgc_pg"] == pytest.approx(band["agc_pg"] * 0.33)
    # errors before any pixel is read
    with pytest.raises(SawaValueError, match="by continent only"):
        zonal_totals(agb, poly, name_col=None, zone="tropical dry forest", factors=user_table)
    with pytest.raises(SawaValueError, match="unknown continent 'Atlantis'"):
        zonal_totals(agb, poly, name_col=None, zone="tropical moist forest", continent="Atlantis")
