"""Biomass study on the sample world: raw vs SAWA vs deconvolved metrics, AGB RMSE by slope bin.

Runs on every 12th shot of the sample world (526 of 6308 shots, all slope
bins, both passes) so that it stays fast; the full study is ``sawa study biomass``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from biomass.study import (
    CV_RANDOM,
    CV_SPATIAL,
    METRIC_SETS,
    STUDY_COLUMNS,
    metric_set_columns,
    run_study,
)
from fusion.biomass_study import join_truth, run_biomass_study, sample_world_shots
from waveform.errors import SawaFileError

SUBSET_STRIDE = 12
SLOPE_BIN_DEG = 5.0


@pytest.fixture(scope="module")
def world():
    from data_samples import load_sample_world

    return load_sample_world()


@pytest.fixture(scope="module")
def truth(world):
    return world.read_truth()


@pytest.fixture(scope="module")
def subset(world, truth):
    shot_numbers = truth["shot_number"].to_numpy()[::SUBSET_STRIDE]
    return sample_world_shots(world, shot_numbers=shot_numbers)


@pytest.fixture(scope="module")
def study(world, subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("biomass_study")
    return run_biomass_study(out, world, learner="l4a-form", block_km=5.0, shots=subset)


def test_every_requested_shot_has_metrics_terrain_and_its_truth(subset, truth):
    want = truth["shot_number"].to_numpy()[::SUBSET_STRIDE]
    assert len(subset) == len(want) == 526
    assert sorted(subset["shot_number"].astype(np.uint64)) == sorted(want.astype(np.uint64))
    # the truth is joined by shot number: look each shot up independently
    ref = truth.set_index("shot_number").loc[subset["shot_number"].to_numpy()]
    np.testing.assert_array_equal(subset["agb_mg_ha"].to_numpy(), ref["agb_mg_ha"].to_numpy())
    assert (subset["beam"].to_numpy() == ref["beam"].to_numpy()).all()
    assert (subset["granule"].to_numpy() == ref["granule"].to_numpy()).all()
    for s in METRIC_SETS.values():
        for p in (25, 50, 75, 98):
            assert subset[f"rh{p}{s}"].notna().all(), f"rh{p}{s}"
    # slope from the 1" DEM over the footprint vs the analytic slope of the world at the shot
    assert np.max(np.abs(subset["slope_deg"] - subset["true_slope_deg"])) < 0.5


def test_truth_join_names_a_shot_without_truth(subset, truth):
    lost = int(subset["shot_number"].iloc[7])
    with pytest.raises(SawaFileError, match=f"shot {lost} .*has no truth row"):
        join_truth(subset, truth[truth["shot_number"] != lost], complete=False)
    with pytest.raises(SawaFileError, match="is in no granule"):
        join_truth(subset, truth, complete=True)  # the subset lacks most truth shots


def test_table_has_one_row_per_set_cv_and_slope_bin(study, subset):
    t = study.table
    assert list(t.columns) == STUDY_COLUMNS
    # bins from the DEM slope, counted independently
    lo = np.floor(subset["slope_deg"].to_numpy() / SLOPE_BIN_DEG) * SLOPE_BIN_DEG
    counts = pd.Series([f"{a:g}-{a + SLOPE_BIN_DEG:g}" for a in lo]).value_counts().to_dict()
    assert len(counts) == 12  # 0-5 ... 55-60
    for label in METRIC_SETS:
        for cv in (CV_SPATIAL, CV_RANDOM):
            rows = t[(t["metric_set"] == label) & (t["cv"] == cv)]
            assert list(rows["slope_bin"]) == ["all", *sorted(counts, key=lambda b: float(b.split("-")[0]))]
            assert rows.set_index("slope_bin")["n"].to_dict() == {"all": len(subset), **counts}
            assert (rows["n_unpredicted"] == 0).all()
    assert len(t) == 3 * 2 * 13
    # the files: CSV = table, PNG, JSON summary
    csv = pd.read_csv(study.paths["table"])
    assert list(csv.columns) == STUDY_COLUMNS and len(csv) == len(t)
    np.testing.assert_allclose(csv["rmse_mg_ha"], t["rmse_mg_ha"], atol=1e-4)
    assert study.paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert study.summary["n_shots_used"] == len(subset) and study.summary["n_shots_excluded"] == 0
    assert study.paths["manifest"].exists()


def test_deconvolved_metrics_beat_raw_on_steep_slopes(study):
    # Simulated truth: spatial block CV, L4A form on RH25/50/75/98, 135 shots with DEM slope >= 20 deg:
    # RMSE raw 169.4, SAWA 145.1, deconvolved 89.6 Mg/ha (random split: 168.8 / 144.4 / 87.1).
    res = study.summary["results"]
    raw = res["raw"][CV_SPATIAL]["steep"]
    dec = res["deconv"][CV_SPATIAL]["steep"]
    assert raw["n"] == dec["n"] == study.summary["n_steep_shots"] == 135
    assert dec["rmse_mg_ha"] < 0.7 * raw["rmse_mg_ha"]
    assert res["sawa"][CV_SPATIAL]["steep"]["rmse_mg_ha"] < raw["rmse_mg_ha"]
    # and in every steep 5-degree bin holding at least 10 shots
    t = study.table[study.table["cv"] == CV_SPATIAL]
    piv = t.pivot_table(index="slope_bin", columns="metric_set", values="rmse_mg_ha")
    n = t[t["metric_set"] == "raw"].set_index("slope_bin")["n"]
    steep = [b for b in piv.index if b != "all" and float(b.split("-")[0]) >= 20 and n[b] >= 10]
    assert len(steep) == 5  # 20-25 ... 40-45
    for b in steep:
        assert piv.loc[b, "deconv"] < piv.loc[b, "raw"], b


def test_one_rmse_recomputed_by_hand_from_the_per_shot_predictions(study):
    p = study.predictions
    sel = p[(p["metric_set"] == "deconv") & (p["cv"] == CV_SPATIAL) & (p["slope_bin"] == "25-30")]
    assert len(sel) == 26
    sq = 0.0
    err_sum = 0.0
    for yt, yp in zip(sel["y_true"], sel["y_pred"], strict=True):
        sq += (yp - yt) ** 2
        err_sum += yp - yt
    row = study.table[(study.table["metric_set"] == "deconv") & (study.table["cv"] == CV_SPATIAL)
                      & (study.table["slope_bin"] == "25-30")].iloc[0]
    assert row["rmse_mg_ha"] == pytest.approx(math.sqrt(sq / len(sel)), rel=1e-12)
    assert row["bias_mg_ha"] == pytest.approx(err_sum / len(sel), rel=1e-12)
    # spatial CV holds out whole blocks: no block is predicted in two folds
    sp = p[(p["metric_set"] == "deconv") & (p["cv"] == CV_SPATIAL)]
    assert (sp.groupby("block")["fold"].nunique() == 1).all()
    # every shot is predicted once per set and CV kind
    assert (p.groupby(["metric_set", "cv"]).size() == len(sp)).all()


def test_shots_missing_a_feature_are_excluded_from_every_set_with_a_reason(subset):
    shots = subset.copy()
    shots.loc[shots.index[3], "rh98_sawa"] = np.nan
    res = run_study(shots, learner="l4a-form")
    assert res.summary["n_shots_excluded"] == 1
    assert res.excluded["exclude_reason"].tolist() == ["missing:rh98_sawa"]
    assert res.excluded["shot_number"].tolist() == [shots["shot_number"].iloc[3]]
    all_rows = res.table[res.table["slope_bin"] == "all"]
    assert (all_rows["n"] == len(shots) - 1).all()


def test_feature_sets_per_learner():
    assert metric_set_columns("l4a-form", (50, 98)) == {
        "raw": ["rh50", "rh98"], "sawa": ["rh50_sawa", "rh98_sawa"], "deconv": ["rh50_deconv", "rh98_deconv"]}
    assert metric_set_columns("random-forest", (98,))["raw"] == ["rh98", "slope_deg", "relief_m"]


def test_cli_study_biomass(subset, monkeypatch, tmp_path):
    from click.testing import CliRunner

    import fusion.biomass_study as fbs
    from fusion.cli import main

    runner = CliRunner()
    r = runner.invoke(main, ["study", "--help"])
    assert r.exit_code == 0 and "biomass" in r.output and "slope" in r.output
    assert runner.invoke(main, ["study", "slope", "--help"]).exit_code == 0
    # the pipeline on the subset (sample_world_shots is tested above)
    monkeypatch.setattr(fbs, "sample_world_shots", lambda *a, **k: subset)
    r = runner.invoke(main, ["study", "biomass", "-o", str(tmp_path), "--block-km", "4", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "slope >= 20 deg (135 shots), spatial_block" in r.output
    csv = pd.read_csv(tmp_path / "biomass_study.csv")
    assert set(csv["metric_set"]) == set(METRIC_SETS) and set(csv["cv"]) == {CV_SPATIAL, CV_RANDOM}
    assert (tmp_path / "biomass_study.png").exists() and (tmp_path / "biomass_study_summary.json").exists()
