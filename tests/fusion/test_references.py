"""Official references: the real FAO FRA 2020 table (MANIFEST figures, derived forest areas vs
FRA's published areas), the FAO name -> ISO3 table, GEDI published figures, L4B-style grids and
the per-country comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from fusion.areas import geodesic_area_m2
from fusion.references import (
    build_fao_iso3_table,
    compare_totals,
    gedi_l4b_totals,
    gedi_reference_by_iso3,
    load_fao_iso3_table,
    read_fao_fra,
    read_gedi_country_table,
    read_gedi_reference_totals,
)
from terrain.rasters import write_geotiff
from waveform.errors import SawaFileError


@pytest.fixture(scope="module")
def fao(fao_csv_path):
    return read_fao_fra(fao_csv_path)


def test_fao_totals_match_the_manifest(fao):
    t = fao.table
    assert len(t) == 236
    assert t["biomass_carbon_kt"].notna().sum() == 195 and t["agb_tc_ha"].notna().sum() == 195
    assert fao.total_biomass_carbon_pg == pytest.approx(291.8, abs=0.05)
    assert fao.unmatched == []
    b = fao.by_iso3()
    assert (b.loc["BRA", "agb_tc_ha"], b.loc["BRA", "bgb_tc_ha"]) == (84.71, 19.96)
    assert b.loc["BRA", "biomass_carbon_kt"] == 51_981_173.53
    assert b.loc["CHN", "biomass_carbon_kt"] == 8_724_334.62
    assert b.loc["USA", "biomass_carbon_kt"] == 17_704_784.25
    assert t.loc[t["fao_name"] == "Afghanistan", "derivation"].item() == "no biomass carbon stock reported"


def test_fao_derived_forest_areas_match_fra_2020(fao):
    # FRA 2020 forest area (FAO 2020, Global Forest Resources Assessment 2020, main report):
    # Brazil 496.6 Mha, United States 309.8 Mha, China 220.0 Mha
    b = fao.by_iso3()
    assert b.loc["BRA", "forest_area_ha"] / 1e6 == pytest.approx(496.6, rel=1e-3)
    assert b.loc["USA", "forest_area_ha"] / 1e6 == pytest.approx(309.8, rel=1e-3)
    assert b.loc["CHN", "forest_area_ha"] / 1e6 == pytest.approx(220.0, rel=1e-3)
    # step by step for Brazil: area = kt*1000/(agb+bgb); AGB C = area*agb; AGB = AGB C / 0.47
    area = 51_981_173.53e3 / (84.71 + 19.96)
    assert b.loc["BRA", "agb_carbon_pg"] == pytest.approx(area * 84.71 / 1e9, rel=1e-12)
    assert b.loc["BRA", "fao_agb_pg"] == pytest.approx(area * 84.71 / 1e9 / 0.47, rel=1e-12)
    assert b.loc["BRA", "fao_agb_pg"] == pytest.approx(89.51, abs=0.01)
    np.testing.assert_allclose(b["agb_carbon_pg"] + b["bgb_carbon_pg"], b["biomass_carbon_pg"], rtol=1e-12)


def test_fao_iso3_table(fao_csv_path, countries_path):
    shipped = load_fao_iso3_table()
    assert len(shipped) == 236 and shipped["iso3"].str.match(r"^[A-Z]{3}$").all()
    assert shipped["iso3"].is_unique
    assert (shipped["iso3166_name"].str.len() > 0).all()      # every code checked against ISO 3166-1
    rebuilt = build_fao_iso3_table(fao_csv_path, countries_path)
    pd.testing.assert_frame_equal(rebuilt, shipped[["fao_name", "iso3", "match", "note"]])
    by = shipped.set_index("fao_name")
    for name, code in (("Bolivia", "BOL"), ("Côte d’Ivoire", "CIV"), ("United Republic of Tanzania", "TZA"),
                       ("Democratic Republic of the Congo", "COD"), ("Congo", "COG"), ("France", "FRA"),
                       ("Norway", "NOR"), ("State Of Palestine", "PSE"), ("Eswatini", "SWZ"), ("North Macedonia", "MKD")):
        assert by.loc[name, "iso3"] == code
    assert "French Guiana" in by.loc["France", "note"]


def test_fao_unmatched_names_are_reported(tmp_path, fao_csv_path):
    df = pd.read_csv(fao_csv_path, encoding="utf-8-sig")
    df.loc[len(df)] = ["Atlantis", 10.0, 2.0, None, None, None, 1200.0, None]
    p = tmp_path / "fra.csv"
    df.to_csv(p, index=False, encoding="utf-8-sig")
    res = read_fao_fra(p)
    assert res.unmatched == ["Atlantis"]
    row = res.table[res.table["fao_name"] == "Atlantis"].iloc[0]
    assert row["iso3"] == "" and row["forest_area_ha"] == pytest.approx(100_000.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("country,agb\nX,1\n", encoding="utf-8")
    with pytest.raises(SawaFileError, match="lacks columns"):
        read_fao_fra(bad)


def test_gedi_published_figures():
    t = read_gedi_reference_totals()
    assert (t["citation"].str.len() > 20).all() and (t["verification"].str.len() > 20).all()
    glob = t[t["iso3"] == ""].set_index("estimate")["agb_pg"]
    assert (glob["gedi_l4b"], glob["fao_fra_2020"]) == (480.2, 373.1)
    for est, expected in (("gedi_l4b", {"CHN": 41.9, "USA": 42.7}), ("fao_fra_2020", {"CHN": 14.2, "USA": 32.9}),
                          ("gedi_terrain_corrected", {"CHN": 27.5, "USA": 34.5})):
        got = gedi_reference_by_iso3(t, est)["agb_pg"].to_dict()
        assert got == expected
    assert t[t["estimate"] == "gedi_terrain_corrected"]["verification"].str.startswith("UNVERIFIED").all()


def test_gedi_l4b_grid_totals(tmp_path):
    import geopandas as gpd

    res = 1000.895023
    t = Affine(res, 0, 900_000.0, 0, -res, 5_300_000.0)
    mu = np.full((300, 400), 80.0, dtype=np.float32)
    mu[:, 200:] = -9999.0                                  # L4B nodata on the east half
    se = np.full_like(mu, 8.0)
    write_geotiff(tmp_path / "MU.tif", mu, t, "EPSG:6933", nodata=-9999.0)
    write_geotiff(tmp_path / "SE.tif", se, t, "EPSG:6933", nodata=-9999.0)
    poly = shapely.box(10.2, 43.3, 10.8, 44.4)             # inside the west half
    gdf = gpd.GeoDataFrame({"iso3": ["AAA"], "name": ["A"]}, geometry=[poly], crs=4326)
    out = gedi_l4b_totals(tmp_path / "MU.tif", gdf, se_path=tmp_path / "SE.tif")
    area_ha = geodesic_area_m2(poly, 4326) / 1e4
    assert out["gedi_agb_pg"].iloc[0] == pytest.approx(80 * area_ha / 1e9, rel=1e-4)
    assert out["gedi_agb_se_pg"].iloc[0] == pytest.approx(8 * area_ha / 1e9, rel=1e-4)
    assert out["warnings"].iloc[0] == ""


def test_compare_totals_arithmetic():
    ours = pd.DataFrame({"iso3": ["BRA", "CHN", "XXX"], "name": ["Brazil", "China", "X"],
                         "agb_pg": [100.0, 20.0, 1.0], "agb_se_pg": [5.0, 2.0, 0.1], "carbon_pg": [55.0, 11.0, 0.5]})
    fao = pd.DataFrame({"iso3": ["BRA", "CHN"], "fao_agb_pg": [80.0, 25.0]})
    gedi = pd.DataFrame({"iso3": ["CHN"], "gedi_agb_pg": [40.0]})
    c = compare_totals(ours, fao, gedi).set_index("iso3")
    assert c.loc["BRA", "diff_fao_pg"] == 20.0 and c.loc["BRA", "diff_fao_pct"] == 25.0
    assert c.loc["CHN", "diff_fao_pct"] == -20.0 and c.loc["CHN", "diff_gedi_pct"] == -50.0
    assert c.loc["CHN", "diff_gedi_z"] == -10.0
    assert np.isnan(c.loc["BRA", "gedi_agb_pg"])
    cc = compare_totals(ours, fao, gedi)
    assert cc.attrs["ours_without_fao"] == ["XXX"] and cc.attrs["ours_without_gedi"] == ["BRA", "XXX"]
    # the published figures plug in directly
    pub = compare_totals(ours, gedi=gedi_reference_by_iso3(estimate="gedi_l4b")).set_index("iso3")
    assert pub.loc["CHN", "gedi_agb_pg"] == 41.9


def test_gedi_country_table(tmp_path):
    p = tmp_path / "gedi.csv"
    p.write_text("ISO,total,se\nbra,60.5,1.5\nCHN,41.9,0.8\n", encoding="utf-8")
    t = read_gedi_country_table(p, iso3_col="ISO", agb_col="total", se_col="se")
    assert list(t["iso3"]) == ["BRA", "CHN"] and t["gedi_agb_pg"].tolist() == [60.5, 41.9]
    with pytest.raises(SawaFileError, match="no column 'agb_pg'"):
        read_gedi_country_table(p, iso3_col="ISO")
