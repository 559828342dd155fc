"""Streaming granules to GeoParquet shot tables, and the ``sawa metrics`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.reference.waveform_naive import write_synthetic_l1b
from waveform.errors import SawaValueError
from waveform.gedi import read_l1b, read_l2a
from waveform.metrics import compute_metrics
from waveform.shot_table import (
    REQUIRED_COLUMNS,
    RH_COLUMNS,
    SHOT_TABLE_COLUMNS,
    column_docs,
    read_shot_table,
    shot_table_metadata,
    write_shot_table,
)
from waveform.stream import L2A_SIDE_COLUMNS, stream_metrics, write_metrics


@pytest.fixture(scope="module")
def synthetic_l1b(tmp_path_factory):
    path = tmp_path_factory.mktemp("l1b") / "GEDI01_B_synthetic.h5"
    pool, picks = write_synthetic_l1b(path, 60, beams=("BEAM0000", "BEAM0101"), seed=4, pool_size=64,
                                      bad_shots=True)
    return path, pool, picks


@pytest.fixture(scope="module")
def real_table(tmp_path_factory, l1b_path, l2a_path):
    out = tmp_path_factory.mktemp("real") / "shots.parquet"
    summary = write_metrics(l1b_path, out, algorithm="l2a", l2a_paths=[l2a_path], chunk_shots=25)
    return out, summary


def test_real_granule_table_contract(real_table, l1b_path):
    out, summary = real_table
    assert summary["n_shots"] == 300 and summary["reasons"] == {"ok": 300}
    gdf = read_shot_table(out)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) == 300 and gdf["shot_number"].dtype == np.uint64
    assert list(gdf.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert set(L2A_SIDE_COLUMNS) <= set(gdf.columns)
    schema = pq.read_schema(out)
    for name, (typ, _u, _d) in SHOT_TABLE_COLUMNS.items():
        assert schema.field(name).type == typ, name
    # geometry = (longitude, latitude) of the ground sample
    np.testing.assert_allclose(gdf.geometry.x, gdf["longitude"])
    np.testing.assert_allclose(gdf.geometry.y, gdf["latitude"])
    # same numbers as the kernels on the whole granule (L2A selected group 1 everywhere here)
    chunk = read_l1b(l1b_path)
    m = compute_metrics(chunk.batch, "a1", chunk.shots["noise_mean_corrected"].to_numpy(),
                        chunk.shots["noise_stddev_corrected"].to_numpy())
    table = gdf.set_index("shot_number").loc[chunk.batch.shot_number]
    np.testing.assert_allclose(table["ground_elevation"], m.ground_elevation_m)
    np.testing.assert_allclose(table[RH_COLUMNS].to_numpy(), m.rh.astype(np.float32))
    assert (table["algorithm"] == 1).all() and table["quality"].all()
    assert (table["reason"] == "ok").all()
    meta = shot_table_metadata(out)
    assert meta["algorithm"] == "l2a" and meta["inputs"] == [str(l1b_path)]
    assert len(column_docs()) == len(SHOT_TABLE_COLUMNS)


def test_side_by_side_l2a_values(real_table, l2a_path):
    gdf = read_shot_table(real_table[0])
    l2a = read_l2a(l2a_path).set_index("shot_number").loc[gdf["shot_number"]]
    assert gdf["l2a_matched"].all()
    np.testing.assert_allclose(gdf["l2a_ground_elevation"], l2a["elev_lowestmode"], rtol=1e-7)
    np.testing.assert_allclose(gdf["l2a_rh98"], l2a["rh98"])
    assert (np.abs(gdf["ground_elevation"] - gdf["l2a_ground_elevation"]) < 0.05).all()


def test_duckdb_reads_the_table(real_table):
    duckdb = pytest.importorskip("duckdb")
    path = str(real_table[0])
    n, n_ok, mean_rh98 = duckdb.sql(
        f"select count(*), sum(case when quality then 1 else 0 end), avg(rh98) from read_parquet('{path}')"
    ).fetchall()[0]
    gdf = read_shot_table(path)
    assert n == 300 and n_ok == 300
    assert mean_rh98 == pytest.approx(gdf["rh98"].astype(float).mean(), rel=1e-6)
    kind = duckdb.sql(f"select typeof(geometry) from read_parquet('{path}') limit 1").fetchall()[0][0]
    assert kind.startswith(("GEOMETRY", "BLOB"))  # GeoParquet-aware duckdb reads a GEOMETRY (WKB otherwise)


def test_bad_shots_are_kept_with_reasons(synthetic_l1b, tmp_path):
    path, pool, picks = synthetic_l1b
    out = tmp_path / "syn.parquet"
    summary = write_metrics(path, out, chunk_shots=16)
    gdf = read_shot_table(out)
    assert len(gdf) == summary["n_shots"] == 120
    for beam in ("BEAM0000", "BEAM0101"):
        b = gdf[gdf["beam"] == beam].reset_index(drop=True)
        assert list(b["reason"][1:4]) == ["empty_waveform", "nonfinite_samples", "no_signal"]
        assert not b["quality"][1:4].any() and b["rh50"][1:4].isna().all()
        ok = b.index.difference([1, 2, 3])
        assert (b.loc[ok, "reason"] == "ok").all()
        # simulated truth: ground elevation of each pool waveform
        truth = pool.ground_elevation_m[picks[beam]][ok]
        assert np.abs(b.loc[ok, "ground_elevation"].to_numpy() - truth).max() < 1.0
        # no ground: geometry at the middle of the waveform, never dropped
        assert b.geometry[1] is not None


def test_chunk_size_does_not_change_results(synthetic_l1b, tmp_path):
    path = synthetic_l1b[0]
    a = pd.concat([f.drop(columns="geometry") for f in stream_metrics(path, chunk_shots=7)], ignore_index=True)
    b = pd.concat([f.drop(columns="geometry") for f in stream_metrics(path, chunk_shots=1000)], ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_on_chunk_hook_adds_columns_and_errors_leave_no_file(synthetic_l1b, tmp_path):
    path = synthetic_l1b[0]
    seen = []

    def add_column(chunk, frame):
        seen.append((chunk.beam, len(chunk)))
        frame["terrain_slope_deg"] = np.float32(3.0)
        return frame

    out = tmp_path / "hook.parquet"
    write_metrics(path, out, chunk_shots=40, on_chunk=add_column)
    gdf = read_shot_table(out)
    assert (gdf["terrain_slope_deg"] == 3.0).all()
    assert seen == [("BEAM0000", 40), ("BEAM0000", 20), ("BEAM0101", 40), ("BEAM0101", 20)]

    bad = tmp_path / "bad.parquet"
    with pytest.raises(SawaValueError, match="on_chunk must return a GeoDataFrame"):
        write_metrics(path, bad, on_chunk=lambda c, f: f.to_dict())
    assert not bad.exists() and not list(tmp_path.glob(".bad.parquet*"))


def test_with_tx_hands_transmit_waveforms_to_the_hook(tmp_path):
    """``with_tx`` reads each chunk's transmit waveforms (the ones ``read_l1b(with_tx=True)`` reads, same
    shots); ``metadata`` entries land in the file's metadata."""
    from data_samples import load_sample_world
    from waveform.shot_table import shot_table_metadata

    path = load_sample_world().granule_paths[0]
    whole = read_l1b(path, beams="BEAM0000", with_tx=True)
    got = []

    def keep_tx(chunk, frame):
        got.append(chunk.tx)
        return frame

    out = tmp_path / "tx.parquet"
    write_metrics(path, out, chunk_shots=100, beams="BEAM0000", on_chunk=keep_tx, with_tx=True,
                  metadata={"dem": ["a.tif"]})
    assert [t.n_shots for t in got] == [100, 100, 100, 33]
    np.testing.assert_array_equal(np.concatenate([t.shot_number for t in got]), whole.tx.shot_number)
    np.testing.assert_array_equal(np.concatenate([t.count for t in got]), whole.tx.count)
    np.testing.assert_array_equal(got[1].waveform(5), whole.tx.waveform(105))
    assert whole.tx.count.min() > 0
    assert shot_table_metadata(out)["dem"] == ["a.tif"]
    got.clear()
    list(stream_metrics(path, chunk_shots=100, beams="BEAM0000", on_chunk=keep_tx))
    assert got == [None] * 4


def test_empty_input_writes_empty_table(tmp_path):
    out = write_shot_table([], tmp_path / "empty.parquet")
    gdf = read_shot_table(out)
    assert len(gdf) == 0 and list(gdf.columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)


def test_bad_arguments(synthetic_l1b, l2a_path, tmp_path):
    path = synthetic_l1b[0]
    with pytest.raises(SawaValueError, match="needs l2a_paths"):
        write_metrics(path, tmp_path / "x.parquet", algorithm="l2a")
    with pytest.raises(ValueError, match="L1B granule is needed"):
        write_metrics(l2a_path, tmp_path / "x.parquet")
    with pytest.raises(SawaValueError, match="chunk_shots"):
        next(stream_metrics(path, chunk_shots=0))
    assert not (tmp_path / "x.parquet").exists()


def test_cli_metrics(l1b_path, l2a_path, tmp_path):
    from fusion.cli import main

    out = tmp_path / "cli.parquet"
    runner = CliRunner()
    res = runner.invoke(main, ["metrics", str(l1b_path), "-o", str(out), "--l2a", str(l2a_path),
                               "-a", "l2a", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "wrote 300 shots (300 with quality)" in res.output
    assert len(read_shot_table(out)) == 300
    res = runner.invoke(main, ["metrics", str(l2a_path), "-o", str(tmp_path / "y.parquet")])
    assert res.exit_code == 1 and "L1B granule is needed" in res.output
    res = runner.invoke(main, ["metrics", str(l1b_path), "-o", str(tmp_path / "y.parquet"), "-a", "a8"])
    assert res.exit_code == 1 and "unknown L2A algorithm setting group 'a8'" in res.output


def test_sample_world_granules_against_simulated_truth():
    """The embedded sample world's simulated L1B granules: ground and cover against the truth.

    With a1 (back threshold 6 sd) weak ground returns under dense canopy are missed (the
    lowest mode found is in the canopy), so the check is on shots with true cover < 0.5.
    """
    from data_samples import load_sample_world

    world = load_sample_world()
    truth = pd.read_parquet(world.truth_path)
    frames = [f.drop(columns="geometry") for f in stream_metrics(world.granule_paths, algorithm="a1")]
    table = pd.concat(frames, ignore_index=True).merge(truth, on="shot_number", suffixes=("", "_true"))
    assert len(table) == len(truth) and (table["reason"] == "ok").all()
    open_canopy = table[table["cover_true"] < 0.5]
    assert len(open_canopy) > 500
    ground_err = (open_canopy["ground_elevation"] - open_canopy["ground_elevation_m"]).abs()
    assert (ground_err < 0.5).mean() >= 0.98
    assert (open_canopy["cover"] - open_canopy["cover_true"]).abs().median() < 0.01
