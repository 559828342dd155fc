"""The embedded sample world: terrain, truth totals, truth per shot, granules, checksums.

Values are recomputed independently of the generator: pixel areas with the
closed-form area of a latitude band on the WGS84 ellipsoid (not pyproj), country
membership by rasterising the GeoPackage polygons, slopes from the DEM itself.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from data_samples import ALLOMETRY, load_sample_world
from data_samples import generate as gen
from waveform.errors import SawaFileError
from waveform.gedi import open_granule, read_l1b

A_WGS84 = 6_378_137.0
F_WGS84 = 1 / 298.257223563
E2 = F_WGS84 * (2 - F_WGS84)
E = math.sqrt(E2)


def _authalic_q(lat_deg):
    s = np.sin(np.radians(lat_deg))
    return s / (1 - E2 * s**2) + np.log((1 + E * s) / (1 - E * s)) / (2 * E)


def cell_area_m2(lat_top, lat_bottom, dlon_deg):
    """Area of a lat/lon cell on the WGS84 ellipsoid (closed form via the authalic latitude)."""
    return A_WGS84**2 * (1 - E2) * math.radians(dlon_deg) / 2 * np.abs(_authalic_q(lat_top) - _authalic_q(lat_bottom))


@pytest.fixture(scope="session")
def world():
    return load_sample_world()


@pytest.fixture(scope="session")
def truth(world):
    return world.read_truth()


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1), src.transform, src.crs, src.tags()


def _slope_deg(dem, transform):
    rows = np.arange(dem.shape[0])
    lat = transform.f + (rows + 0.5) * transform.e
    phi = np.radians(lat)
    w = np.sqrt(1 - E2 * np.sin(phi) ** 2)
    m_lon = np.pi / 180 * A_WGS84 * np.cos(phi) / w
    m_lat = np.pi / 180 * A_WGS84 * (1 - E2) / w**3
    dzdy = np.gradient(dem.astype(np.float64), axis=0) / (abs(transform.e) * m_lat[:, None])
    dzdx = np.gradient(dem.astype(np.float64), axis=1) / (transform.a * m_lon[:, None])
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy)))


def test_dem_grid_and_slope_range(world):
    dem, transform, crs, tags = _read(world.dem_path)
    assert crs.to_epsg() == 4326 and dem.shape == (720, 1080)
    assert transform.a == pytest.approx(1 / 3600) and (transform.c, transform.f) == (10.0, -0.8)
    assert "ellipsoid" in tags["VERTICAL_DATUM"].lower()
    slope = _slope_deg(dem, transform)
    assert slope.min() < 0.5 and slope.max() >= 45.0
    plain, hills, mountains = (np.median(slope[:, i * 360 : (i + 1) * 360]) for i in range(3))
    assert plain < 2.0 < hills < 15.0 < mountains
    assert (slope >= 20).mean() > 0.15 and (slope >= 45).sum() > 1000


def test_agb_follows_the_stated_allometry(world):
    height, _, _, _ = _read(world.height_path)
    cover, _, _, _ = _read(world.cover_path)
    agb, _, _, _ = _read(world.agb_path)
    expected = 2.0 * height.astype(np.float64) ** 1.5 * cover.astype(np.float64)
    assert np.all(np.abs(agb - expected) <= 0.005 + 1e-6 * expected)  # 0.01 Mg/ha rounding, float32
    np.testing.assert_allclose(ALLOMETRY(height, cover), expected, rtol=1e-12)
    assert world.allometry.as_dict()["formula"].startswith("AGB")
    forest = height > 0
    assert height[forest].min() >= 5.0 and height.max() <= 50.0
    assert cover.max() <= 0.95 and np.all(cover[~forest] == 0) and np.all(agb[~forest] == 0)


def test_country_truth_totals_recomputed_independently(world):
    countries = world.read_countries()
    assert list(countries["iso3"]) == ["XPL", "XCL", "XMT"]
    agb, transform, _, _ = _read(world.agb_path)
    shapes = [(geom, i + 1) for i, geom in enumerate(countries.geometry)]
    label = rasterize(shapes, out_shape=agb.shape, transform=transform, fill=0, dtype="uint8")
    assert np.all(label > 0)  # the countries tile the world
    edges = transform.f + np.arange(agb.shape[0] + 1) * transform.e
    area_ha = cell_area_m2(edges[:-1], edges[1:], transform.a) / 1e4
    total_area = 0.0
    for i, row in countries.iterrows():
        sel = label == i + 1
        agb_mg = float((agb.astype(np.float64) * area_ha[:, None])[sel].sum())
        assert row["true_agb_mg"] == pytest.approx(agb_mg, rel=1e-7)
        assert row["true_agb_pg"] == pytest.approx(agb_mg * 1e-9, rel=1e-7)
        assert row["true_area_ha"] == pytest.approx(float(np.broadcast_to(area_ha[:, None], agb.shape)[sel].sum()), rel=1e-7)
        assert row["n_pixels"] == int(sel.sum())
        total_area += row["true_area_ha"]
    # the extent's area in closed form
    assert total_area == pytest.approx(cell_area_m2(-0.8, -1.0, 0.3) / 1e4, rel=1e-7)
    # polygons do not overlap
    g = list(countries.geometry)
    assert g[0].intersection(g[1]).area == pytest.approx(0.0, abs=1e-12)
    assert g[1].intersection(g[2]).area == pytest.approx(0.0, abs=1e-12)


def test_optical_rasters_correlate_with_agb(world):
    agb, _, _, _ = _read(world.agb_path)
    tc, tr, crs, _ = _read(world.optical_paths["tree_cover"])
    assert crs.to_epsg() == 4326 and tr.a == pytest.approx(3 / 3600)
    agb3 = agb.reshape(240, 3, 360, 3).mean(axis=(1, 3))
    assert np.corrcoef(agb3.ravel(), tc.ravel().astype(float))[0, 1] > 0.6
    ndvi, tr, _, _ = _read(world.optical_paths["ndvi"])
    assert tr.a == pytest.approx(0.001) and ndvi.shape == (200, 300)
    with rasterio.open(world.optical_paths["carbon_agb"]) as src:
        assert src.crs.to_epsg() == 32732 and src.res == (100.0, 100.0)
        prod = src.read(1, masked=True)
    assert prod.count() > 0.9 * prod.size and 0 < float(prod.mean()) < float(agb.mean())


def test_truth_table_matches_the_rasters_at_each_shot(world, truth):
    for col in ("shot_number", "beam", "lat", "lon", "ground_elevation_m", "canopy_height_m", "cover", "agb_mg_ha",
                "slope_deg", "aspect_deg", "rh0", "rh50", "rh100"):
        assert col in truth.columns
    assert 5000 <= len(truth) <= 7000 and truth["shot_number"].is_unique
    assert set(truth["beam"]) == set(gen.BEAM_DIGITISER)
    height, transform, _, _ = _read(world.height_path)
    agb, _, _, _ = _read(world.agb_path)
    dem, _, _, _ = _read(world.dem_path)
    rows, cols = rasterio.transform.rowcol(transform, truth["lon"].to_numpy(), truth["lat"].to_numpy())
    rows, cols = np.asarray(rows), np.asarray(cols)
    np.testing.assert_array_equal(truth["canopy_height_m"].to_numpy(), height[rows, cols].astype(np.float64))
    np.testing.assert_array_equal(truth["agb_mg_ha"].to_numpy(), agb[rows, cols].astype(np.float64))
    # ground elevation: the DEM pixel holds the same surface sampled 15 m away at most
    diff = truth["ground_elevation_m"].to_numpy() - dem[rows, cols]
    tan = np.tan(np.radians(truth["slope_deg"].to_numpy()))
    assert np.all(np.abs(diff) <= 25.0 * tan + 2.0)
    # slope truth agrees with the DEM's own slope at the shot pixel
    slope = _slope_deg(dem, transform)[rows, cols]
    assert np.median(np.abs(slope - truth["slope_deg"].to_numpy())) < 1.0
    assert (truth["slope_deg"] >= 20).sum() > 800 and truth["slope_deg"].max() >= 45
    assert set(truth["iso3"]) == {"XPL", "XCL", "XMT"}


def test_granules_hold_the_truth_shots(world, truth):
    assert len(world.granule_paths) == 2
    total = 0
    for path in world.granule_paths:
        with open_granule(path) as g:
            assert g.product == "L1B" and len(g.beams) == 8
        chunk = read_l1b(path)
        sub = truth[truth["granule"] == path.name].set_index("shot_number")
        assert len(chunk) == len(sub)
        shots = chunk.shots.set_index("shot_number")
        np.testing.assert_array_equal(shots.index.to_numpy(np.uint64), np.sort(shots.index.to_numpy(np.uint64)))
        np.testing.assert_array_equal(shots["latitude_bin0"].to_numpy(), sub.loc[shots.index, "lat"].to_numpy())
        np.testing.assert_array_equal(shots["beam"].to_numpy(), sub.loc[shots.index, "beam"].to_numpy())
        # bin0 lies 100 samples above the highest return (z0 + H + 3 sigma_z)
        top = (sub.loc[shots.index, "canopy_top_elevation_m"] + 3 * sub.loc[shots.index, "return_sigma_m"]).to_numpy()
        np.testing.assert_allclose(chunk.batch.elevation_bin0 - top, 100 * 0.1499, atol=0.01)
        total += len(chunk)
    assert total == len(truth) == world.summary["shots_total"]


def test_regeneration_is_byte_identical_and_verified(world, tmp_path):
    committed = json.loads(gen.COMMITTED_CHECKSUMS.read_text())
    cached = json.loads(world.checksums_path.read_text())
    again = gen.generate_sample_world(tmp_path / "world")
    fresh = json.loads(again.checksums_path.read_text())
    assert fresh == cached  # same machine: byte-identical files
    assert set(fresh["files"]) == set(committed["files"])
    for rel, entry in fresh["files"].items():  # any machine: identical content
        assert entry["content_sha256"] == committed["files"][rel]["content_sha256"], rel
    gen.verify_world(again.root)
    # a tampered file is named
    world_json = again.root / "world.json"
    world_json.write_text(world_json.read_text().replace('"seed"', '"seed_"'))
    with pytest.raises(SawaFileError, match="world.json"):
        gen.verify_world(again.root)
    (again.root / "world.json").unlink()
    with pytest.raises(SawaFileError, match="missing"):
        gen.verify_world(again.root)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(out, report=None):
        (out / "dem.tif").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "_write_world", boom)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_sample_world(tmp_path / "w")
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_a_foreign_nonempty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not a world")
    with pytest.raises(SawaFileError, match="no sample world"):
        load_sample_world(tmp_path)
