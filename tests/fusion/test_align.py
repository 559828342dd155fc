"""Lazy alignment of rasters of different CRS/resolution on a target grid, and the block writer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from fusion.align import align_to_grid, open_block_writer
from fusion.grid import GridSpec
from terrain.rasters import write_geotiff
from waveform.errors import NoOverlapError, OutputError, SawaFileError, SawaValueError

UTM = "EPSG:32732"
TARGET = GridSpec.geographic(0.001, (10.0, -1.0, 10.1, -0.95))  # 100 x 50 cells


def _plane(x, y):
    """A linear field of UTM easting/northing (bilinear resampling reproduces it exactly)."""
    return 0.01 * (x - 600_000.0) + 0.02 * (y - 9_880_000.0)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    d = tmp_path_factory.mktemp("align")
    # UTM 32S raster at 50 m covering the target with a margin
    tr = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    x0, y0 = tr.transform(9.99, -0.94)
    x1, y1 = tr.transform(10.11, -1.01)
    x0, y1 = np.floor(x0 / 50) * 50, np.floor(y1 / 50) * 50
    w, h = int((x1 - x0) / 50) + 1, int((y0 - y1) / 50) + 1
    top = y1 + h * 50
    cx = x0 + 25 + 50 * np.arange(w)
    cy = top - 25 - 50 * np.arange(h)
    plane = _plane(cx[None, :], cy[:, None]).astype(np.float32)
    utm = write_geotiff(d / "plane_utm.tif", plane, Affine(50, 0, x0, 0, -50, top), UTM, nodata=-9999.0)
    # geographic raster at 0.0005 deg (2 x 2 per target cell), covering only the western 60 % and with holes
    rng = np.random.default_rng(1)
    fine = rng.uniform(0, 100, (100, 120)).astype(np.float32)
    fine[10:14, 20:24] = -1.0  # nodata block: 2 x 2 target cells fully missing
    fine[30, 30] = -1.0  # one of four fine pixels missing
    geo = write_geotiff(d / "fine_geo.tif", fine, Affine(0.0005, 0, 10.0, 0, -0.0005, -0.95), "EPSG:4326",
                        nodata=-1.0)
    far = write_geotiff(d / "far.tif", fine, Affine(0.0005, 0, 50.0, 0, -0.0005, 10.0), "EPSG:4326", nodata=-1.0)
    return {"utm": utm, "geo": geo, "fine": fine, "far": far, "dir": d}


def test_utm_plane_bilinear_on_geographic_grid(rasters):
    with align_to_grid({"plane": rasters["utm"]}, TARGET, "bilinear") as stack:
        assert stack.names == ["plane"] and stack.layers[0].resampling == "bilinear"
        got = stack.read()[0]
    t = TARGET.transform
    lon = t.c + t.a * (np.arange(TARGET.width) + 0.5)
    lat = t.f + t.e * (np.arange(TARGET.height) + 0.5)
    x, y = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(*np.meshgrid(lon, lat))
    expected = _plane(x, y)
    # GDAL approximates the transformation to 0.125 source px (6 m): the plane changes 0.022/m
    np.testing.assert_allclose(got, expected, atol=0.2)
    assert np.isfinite(got).all()


def test_geographic_average_honours_nodata_and_extent(rasters):
    fine = rasters["fine"].astype(np.float64)
    masked = np.where(fine == -1.0, np.nan, fine)
    with align_to_grid([rasters["geo"]], TARGET) as stack:  # auto -> average (source finer)
        assert stack.layers[0].resampling == "average"
        got = stack.read()[0]
    blocks = masked.reshape(50, 2, 60, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        expected = np.nanmean(blocks, axis=(1, 3))
    np.testing.assert_allclose(got[:, :60], expected, rtol=1e-5, equal_nan=True)
    assert np.isnan(got[5:7, 10:12]).all()  # all four fine pixels nodata
    assert got[15, 15] == pytest.approx(np.nanmean(masked[30:32, 30:32]), rel=1e-5)  # 3 of 4 valid
    assert np.isnan(got[:, 61:]).all()  # outside the source extent


def test_windows_and_point_sampling_agree_with_full_read(rasters):
    with align_to_grid({"plane": rasters["utm"], "fine": rasters["geo"]}, TARGET,
                       {"plane": "bilinear"}) as stack:
        full = stack.read()
        win = stack.read(Window(17, 9, 30, 20))
        np.testing.assert_array_equal(win, full[:, 9:29, 17:47])
        rng = np.random.default_rng(0)
        rows, cols = rng.integers(0, 50, 200), rng.integers(0, 100, 200)
        pts = stack.sample_cells(rows, cols, block_px=16)
        np.testing.assert_array_equal(pts, full[:, rows, cols].T)
        lon, lat = np.array([10.0105, 10.2]), np.array([-0.9605, -0.96])
        vals, inside = stack.sample_lonlat(lon, lat)
        assert inside.tolist() == [True, False]
        np.testing.assert_array_equal(vals[0], full[:, 10, 10])
        assert np.isnan(vals[1]).all()
        with pytest.raises(SawaValueError, match="outside the target grid"):
            stack.read(Window(90, 0, 20, 10))


def test_reference_raster_as_target_and_errors(rasters):
    ref = write_geotiff(rasters["dir"] / "ref.tif", np.zeros((50, 100), np.float32), TARGET.transform,
                        "EPSG:4326")
    with align_to_grid([rasters["geo"]], ref, "nearest") as stack:
        assert stack.grid.shape == (50, 100) and stack.layers[0].resampling == "nearest"
    with pytest.raises(NoOverlapError, match="far.tif"):
        align_to_grid([rasters["far"]], TARGET)
    with pytest.raises(SawaFileError, match="absent.tif"):
        align_to_grid([rasters["dir"] / "absent.tif"], TARGET)
    with pytest.raises(SawaValueError, match="cubicspline"):
        align_to_grid([rasters["geo"]], TARGET, "cubicspline")
    with pytest.raises(SawaValueError, match="unique"):
        align_to_grid([rasters["geo"], rasters["geo"]], TARGET)


def test_block_writer_layout_and_atomicity(tmp_path):
    grid = GridSpec.geographic(0.0001, (10.0, -1.0, 10.11, -0.89))  # 1100 x 1100
    out = tmp_path / "w.tif"
    with open_block_writer(out, grid, nodata=-9999.0, band_names=["agb_mg_ha"], tags={"UNITS": "Mg/ha"}) as dst:
        for r0 in range(0, 1100, 500):
            h = min(500, 1100 - r0)
            dst.write(np.full((h, 1100), r0, np.float32), 1, window=Window(0, r0, 1100, h))
    with rasterio.open(out) as ds:
        assert ds.block_shapes[0] == (512, 512) and ds.compression.name == "deflate"
        assert ds.overviews(1) == [2, 4] and ds.nodata == -9999.0
        assert ds.descriptions == ("agb_mg_ha",) and ds.tags()["UNITS"] == "Mg/ha"
        assert ds.read(1)[1099, 0] == 1000.0
    bad = tmp_path / "bad.tif"
    with pytest.raises(RuntimeError), open_block_writer(bad, grid, nodata=-9999.0):
        raise RuntimeError("crash mid-write")
    assert not bad.exists() and not list(tmp_path.glob(".bad.tif*"))
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(OutputError), open_block_writer(tmp_path / "file.txt" / "x.tif", grid):
        pass
