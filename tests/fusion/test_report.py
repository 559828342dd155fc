"""Report: PNG plots of the expected pixel size, Markdown/HTML reports holding the table values,
figures and manifest, atomic writes, and an end-to-end run on a constant-AGB raster whose
country totals must equal AGB x geodesic area."""

from __future__ import annotations

import geopandas as gpd
import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from fusion.areas import geodesic_area_m2
from fusion.references import compare_totals, gedi_reference_by_iso3
from fusion.report import (
    format_value,
    plot_agb_map,
    plot_difference_map,
    plot_totals_bar,
    write_report,
    write_table_csv,
)
from fusion.zonal import zonal_totals
from terrain.rasters import write_geotiff
from waveform.errors import RasterError, SawaFileError
from waveform.outputs import build_manifest

T = Affine(0.01, 0, 10.0, 0, -0.01, 45.0)
SHAPE = (200, 300)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    agb = (50 + 0.5 * xx + 0.2 * yy).astype(np.float32)
    agb[:20, :20] = -9999.0
    write_geotiff(d / "agb.tif", agb, T, "EPSG:4326", nodata=-9999.0)
    write_geotiff(d / "agb_uncorrected.tif", np.where(agb > 0, agb * 1.1, -9999.0).astype(np.float32), T,
                  "EPSG:4326", nodata=-9999.0)
    write_geotiff(d / "const.tif", np.full(SHAPE, 100.0, dtype=np.float32), T, "EPSG:4326", nodata=-9999.0)
    countries = gpd.GeoDataFrame(
        {"iso3": ["CHN", "USA"], "name": ["West", "East"]},
        geometry=[shapely.box(10.2, 43.2, 11.4, 44.8), shapely.Polygon([(11.6, 43.3), (12.9, 43.5), (12.5, 44.7), (11.7, 44.2)])],
        crs=4326,
    )
    return d, countries


def _png_shape(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path).shape


def test_maps_and_bar_chart_are_pngs_of_the_expected_size(world, tmp_path):
    d, countries = world
    p1 = plot_agb_map(d / "agb.tif", tmp_path / "agb.png", countries)
    p2 = plot_difference_map(d / "agb.tif", d / "agb_uncorrected.tif", tmp_path / "diff.png", countries)
    table = pd.DataFrame({"iso3": ["CHN", "USA"], "agb_pg": [2.0, 1.0], "agb_se_pg": [0.2, 0.1],
                          "fao_agb_pg": [1.5, np.nan], "gedi_agb_pg": [2.5, 1.2]})
    p3 = plot_totals_bar(table, tmp_path / "bars.png")
    for p in (p1, p2, p3):
        assert _png_shape(p)[:2] == (600, 1000)       # figsize 10 x 6 in at 100 dpi
    assert _png_shape(plot_agb_map(d / "agb.tif", tmp_path / "small.png", figsize=(4, 3), dpi=50))[:2] == (150, 200)
    assert not list(tmp_path.glob(".*.tmp*"))           # atomic writes leave no temporaries


def test_difference_map_needs_one_grid(world, tmp_path):
    d, _ = world
    write_geotiff(tmp_path / "other.tif", np.ones((10, 10), dtype=np.float32), T, "EPSG:4326")
    with pytest.raises(RasterError, match="not on the same grid"):
        plot_difference_map(d / "agb.tif", tmp_path / "other.tif", tmp_path / "x.png")


def test_report_holds_tables_figures_and_manifest(world, tmp_path):
    d, countries = world
    fig = plot_agb_map(d / "agb.tif", tmp_path / "figs" / "agb.png", countries)
    table = pd.DataFrame({"iso3": ["CHN", "USA"], "agb_pg": [1.234567, 0.0421], "area_ha": [123456789.0, 5.0e6]})
    manifest = build_manifest(inputs={"agb": d / "agb.tif"}, parameters={"zone": "tropical moist forest"})
    paths = write_report(tmp_path, {"Country totals": table}, {"AGB map": fig}, manifest,
                         notes={"SE assumption": "fully correlated <pixels>"})
    md = paths["markdown"].read_text(encoding="utf-8")
    html = paths["html"].read_text(encoding="utf-8")
    for text in (md, html):
        assert "1.235" in text and "0.0421" in text and "123,456,789" in text and "CHN" in text
        assert manifest["inputs"]["agb"]["sha256"] in text
    assert "![AGB map](figs/agb.png)" in md
    assert "data:image/png;base64," in html and "fully correlated &lt;pixels&gt;" in html
    assert not list(tmp_path.glob(".*.tmp*"))
    bad = tmp_path / "fake.png"
    bad.write_text("not a png")
    with pytest.raises(SawaFileError, match="not a PNG"):
        write_report(tmp_path, {}, {"fake": bad})


def test_format_value():
    assert format_value(480.2) == "480.2" and format_value(0.000123456) == "0.0001235"
    assert format_value(1234567.8) == "1,234,568" and format_value(np.nan) == "" and format_value(7) == "7"


def test_end_to_end_constant_agb_country_totals(world, tmp_path):
    d, countries = world
    totals = zonal_totals(d / "const.tif", countries, zone="tropical moist forest")
    for i, poly in enumerate(countries.geometry):
        assert totals["agb_pg"].iloc[i] == pytest.approx(100 * geodesic_area_m2(poly, 4326) / 1e13, rel=1e-4)
    cmp = compare_totals(totals, pd.DataFrame({"iso3": ["CHN"], "fao_agb_pg": [0.1]}),
                         gedi_reference_by_iso3(estimate="gedi_l4b"))
    bars = plot_totals_bar(cmp, tmp_path / "bars.png")
    cols = ["iso3", "name", "agb_pg", "agb_se_pg", "carbon_pg", "fao_agb_pg", "gedi_agb_pg"]
    paths = write_report(tmp_path, {"country_totals": cmp[cols]}, {"totals": bars})
    md = paths["markdown"].read_text(encoding="utf-8")
    for v in cmp["agb_pg"]:
        assert format_value(v) in md
    assert "41.9" in md and "42.7" in md          # GEDI published figures for CHN / USA
    csv = write_table_csv(cmp[cols], tmp_path / "country_totals.csv")
    back = pd.read_csv(csv)
    assert list(back.columns) == cols
    np.testing.assert_allclose(back["agb_pg"], cmp["agb_pg"], rtol=1e-5)
