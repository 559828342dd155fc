"""``sawa metrics --dem``: terrain, SAWA and deconvolution columns beside the uncorrected RH,
checked against the sample world's per-shot truth (analytic slope, simulated flat-ground RH)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from fusion.cli import main
from terrain.constants import SAWA_PERCENTILES
from waveform.gedi import open_granule
from waveform.shot_table import read_shot_table, shot_table_metadata

#: One beam of the descending pass: 467 shots on slopes of 0-50 deg (truth), a few seconds with SAWA
#: and deconvolution.
GRANULE_INDEX = 1
BEAM = "BEAM0101"


@pytest.fixture(scope="module")
def world():
    from data_samples import load_sample_world

    return load_sample_world()


def _split_dem(dem_path, out_dir, col):
    """Write the DEM as two tiles (west of ``col``, and the rest): ``--dem`` twice must mosaic them."""
    paths = []
    with rasterio.open(dem_path) as src:
        for name, win in (("west", Window(0, 0, col, src.height)), ("east", Window(col, 0, src.width - col, src.height))):
            profile = src.profile.copy()
            profile.update(width=int(win.width), height=int(win.height), transform=src.window_transform(win))
            path = out_dir / f"dem_{name}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(1, window=win), 1)
                dst.update_tags(**src.tags())
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def table(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics_dem")
    granule = world.granule_paths[GRANULE_INDEX]
    truth = world.read_truth()
    truth = truth[(truth["granule"] == granule.name) & (truth["beam"] == BEAM)]
    # split the DEM at the beam's median longitude so shots fall on both tiles and on the seam
    with rasterio.open(world.dem_path) as src:
        col = int((~src.transform @ (float(truth["lon"].median()), float(truth["lat"].median())))[0])
    tiles = _split_dem(world.dem_path, tmp, col)
    out = tmp / "shots.parquet"
    res = CliRunner().invoke(main, ["metrics", str(granule), "--beam", BEAM, "--dem", str(tiles[0]),
                                    "--dem", str(tiles[1]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output, truth, granule, tiles


def test_terrain_columns_and_shot_count(table):
    out, text, truth, granule, tiles = table
    gdf = read_shot_table(out)
    with open_granule(granule, "L1B") as g:
        n_input = g.n_shots(BEAM)
    assert len(gdf) == n_input == len(truth) == 467
    assert f"wrote {n_input} shots" in text and "terrain_reason: ok 467" in text
    expected = ["slope_deg", "aspect_deg", "relief_m", "dem_elevation_m", "terrain_reason", "sawa_reason",
                "deconv_reason", *[f"rh{p}_sawa" for p in SAWA_PERCENTILES], *[f"rh{p}_deconv" for p in SAWA_PERCENTILES]]
    assert set(expected) <= set(gdf.columns)
    assert {"rh98", "rh50", "ground_elevation"} <= set(gdf.columns)  # the uncorrected metrics stay
    meta = shot_table_metadata(out)
    assert meta["dem"] == [str(p) for p in tiles] and meta["footprint_diameter_m"] == 25.0


def test_slope_matches_truth(table):
    """Footprint slope from the 1" DEM (Horn, geodesic spacing; plane fit over the footprint) vs the
    analytic slope of the world's terrain at the shot: the DEM samples that surface every ~31 m, so
    they agree to a fraction of a degree. Tolerance: every shot within 0.5 deg, median within 0.1 deg
    (measured: max 0.22 deg, median -0.03 deg)."""
    out, _text, truth, _g, _t = table
    gdf = read_shot_table(out)
    m = gdf.merge(truth[["shot_number", "slope_deg", "lon", "lat"]], on="shot_number", suffixes=("", "_true"))
    assert len(m) == len(gdf) and (m["terrain_reason"] == "ok").all()
    assert m["slope_deg_true"].max() > 40  # the beam crosses steep mountains
    diff = m["slope_deg"].to_numpy(np.float64) - m["slope_deg_true"].to_numpy()
    assert np.all(np.abs(diff) < 0.5)
    assert abs(np.median(diff)) < 0.1
    # shots on each DEM tile were annotated
    assert (m["lon"] < m["lon"].median() - 0.001).sum() > 100
    assert (m["lon"] > m["lon"].median() + 0.001).sum() > 100


def test_sawa_and_deconv_columns(table):
    out, _text, truth, _g, _t = table
    gdf = read_shot_table(out)
    ok = (gdf["reason"] == "ok").to_numpy()
    assert ok.all()
    sawa_ok = (gdf["sawa_reason"] == "ok").to_numpy()
    assert sawa_ok.mean() > 0.75
    assert np.isfinite(gdf.loc[sawa_ok, "rh98_sawa"]).all()
    dec_ok = gdf["deconv_reason"].isin(["ok", "flat"]).to_numpy()
    assert dec_ok.all() and np.isfinite(gdf["rh98_deconv"]).all()
    # deconvolution removes the terrain stretch: on slopes >= 25 deg the uncorrected RH98 is metres off
    # the simulated flat-ground RH98, the deconvolved one within 2 m RMS (measured 11.6 vs 0.8 m)
    m = gdf.merge(truth[["shot_number", "slope_deg", "rh98"]], on="shot_number", suffixes=("", "_true"))
    steep = m["slope_deg_true"] >= 25
    assert steep.sum() > 100

    def rmse(col):
        return float(np.sqrt(np.mean((m.loc[steep, col] - m.loc[steep, "rh98_true"]) ** 2)))

    assert rmse("rh98_deconv") < 2.0 < 5.0 < rmse("rh98")


def test_dem_that_does_not_overlap(world, tmp_path):
    from affine import Affine

    from terrain.rasters import write_geotiff

    far = tmp_path / "far_dem.tif"
    write_geotiff(far, np.full((50, 50), 100.0, np.float32), Affine(1 / 3600, 0, 40.0, 0, -1 / 3600, 50.0),
                  "EPSG:4326", nodata=-9999.0)
    out = tmp_path / "shots.parquet"
    granule = world.granule_paths[GRANULE_INDEX]
    res = CliRunner().invoke(main, ["metrics", str(granule), "--beam", BEAM, "--dem", str(far), "-o", str(out)])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sawa: error:")
    assert str(far) in lines[0] and "does not overlap" in lines[0] and granule.name in lines[0]
    assert not out.exists()


def test_deconv_options_need_dem(world, tmp_path):
    res = CliRunner().invoke(main, ["metrics", str(world.granule_paths[0]), "--no-deconv", "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "--dem" in res.output


def test_empty_chunk_gets_the_same_columns(table):
    """A beam without shots yields an empty chunk: the hook must add the same columns (the Parquet
    writer requires every chunk to have the first one's columns)."""
    from terrain.granule_terrain import terrain_columns, terrain_hook

    gdf = read_shot_table(table[0])
    added = [name for name, _ in terrain_columns(deconvolve=True)]
    base = gdf.drop(columns=added).iloc[:0]
    empty = terrain_hook(None, 25.0, deconvolve=True)(None, base)
    assert list(empty.columns) == list(gdf.columns) and len(empty) == 0


def test_granule_off_the_dem_is_reported_not_fatal(world, l1b_path):
    """With several granules, one off the DEM is listed (the CLI warns); none on it is an error."""
    from terrain.dem import open_dem
    from terrain.granule_terrain import check_dem_overlap
    from waveform.errors import NoOverlapError

    with open_dem(world.dem_path) as dem:
        assert check_dem_overlap(dem, [world.granule_paths[0], l1b_path]) == [l1b_path.name]
        assert check_dem_overlap(dem, [world.granule_paths[0]], beams=["BEAM0101"]) == []
        with pytest.raises(NoOverlapError, match=f"does not overlap any of the 300 shots .* of granule {l1b_path.name}"):
            check_dem_overlap(dem, [l1b_path])
