"""``sawa audit`` on the embedded sample world: truth, shot accounting, outputs, crash-resume.

The sample world's countries have known true AGB totals (sum of the true AGB field x geodesic
pixel area). The audit starts from the simulated L1B waveforms, so every number below is
recomputed from the waveforms, the DEM and the optical rasters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

#: Files that record run times (not products): excluded from byte comparisons.
RUN_RECORDS = {"run_state.json", "manifest.json"}


@pytest.fixture(scope="module")
def world():
    from data_samples import load_sample_world

    return load_sample_world()


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory, world):
    """One uninterrupted audit, run from its own folder with the relative output 'out'."""
    from fusion.pipeline import run_audit

    base = tmp_path_factory.mktemp("audit_ref")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        result = run_audit(None, "out", workers=1)
    finally:
        os.chdir(cwd)
    result.output_dir = base / "out"
    return result


def _products(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in RUN_RECORDS}


def test_corrected_totals_within_5pct_of_truth_and_closer_than_uncorrected(audit_run, world):
    t = audit_run.totals.set_index("iso3")
    truth = world.read_countries().set_index("iso3")["true_agb_pg"]
    assert set(t.index) == set(truth.index) == {"XPL", "XCL", "XMT"}
    err = t["agb_pg"] / truth.reindex(t.index) - 1.0
    err_raw = t["agb_uncorrected_pg"] / truth.reindex(t.index) - 1.0
    # measured (random forest, seed 20190418): corrected +0.6 %, -1.0 %, -1.9 %; uncorrected +1.5 %, +1.9 %, +22.6 %
    assert (err.abs() < 0.05).all(), err.to_dict()
    assert (err.abs() < err_raw.abs()).all(), (err.to_dict(), err_raw.to_dict())
    # the terrain bias is largest in the mountains, and it is an overestimate (ground return spread upwards)
    assert err_raw.abs().idxmax() == "XMT"
    assert err_raw["XMT"] > 0.10
    # the table's own error columns are what they say
    # the CSV holds 6 significant digits: agb_pg is rounded by up to 5e-6 of itself, so an error recomputed
    # from it is off by up to 100 * 5e-6 * agb/true ~ 5e-4 percentage points
    np.testing.assert_allclose(t["error_pct"], 100 * err, rtol=0, atol=5e-4)


def test_every_shot_is_accepted_or_rejected_once(audit_run, world):
    from waveform.stream import count_shots

    n_in = count_shots(world.granule_paths)
    counts = pd.read_csv(audit_run.paths["reject_counts"])
    assert int(counts["shots"].sum()) == n_in == audit_run.n_input_shots
    foot = pd.read_parquet(audit_run.paths["footprints"], columns=["shot_number"])
    rej = pd.read_parquet(audit_run.paths["rejects"], columns=["shot_number", "reason"])
    assert len(foot) + len(rej) == n_in
    assert int(counts.loc[counts.reason == "accepted", "shots"].iloc[0]) == len(foot)
    both = np.concatenate([foot.shot_number.to_numpy(np.uint64), rej.shot_number.to_numpy(np.uint64)])
    assert np.unique(both).size == n_in
    assert (rej["reason"] != "").all()
    # accepted footprints all carry a finite AGBD for both metric sets
    agbd = pd.read_parquet(audit_run.paths["footprints"], columns=["agbd", "agbd_uncorrected"])
    assert np.isfinite(agbd.to_numpy()).all()


def test_classify_shots_reasons_in_order():
    from fusion.pipeline import classify_shots

    shots = pd.DataFrame({
        "reason": ["ok", "no_signal", "ok", "ok", "ok", "ok", "ok"],
        "stale_return_flag": [0, 0, 1, 0, 0, 0, 0],
        "degrade": [0, 1, 0, 3, 0, 0, 0],
        "quality": [True, False, True, True, False, True, True],
        "terrain_reason": ["ok", "ok", "ok", "ok", "ok", "outside_dem", "ok"],
        "deconv_reason": ["ok", "ok", "ok", "ok", "ok", "ok", "no_ground"],
    })
    got = classify_shots(shots, "deconv").tolist()
    assert got == ["", "waveform:no_signal", "stale_return", "degrade_flag", "low_quality",
                   "terrain:outside_dem", "deconv:no_ground"]
    assert classify_shots(shots, "none").tolist()[-1] == ""


def test_outputs_open_and_report_has_tables_and_plots(audit_run):
    p = audit_run.paths
    with rasterio.open(p["map_corrected"]) as agb, rasterio.open(p["map_corrected_se"]) as se:
        assert agb.crs.to_epsg() == 4326 and agb.nodata == -9999
        a = agb.read(1, masked=True)
        s = se.read(1, masked=True)
        assert a.count() > 0.95 * a.size and float(a.min()) >= 0
        assert float(s.min()) > 0
    with rasterio.open(p["gridded"]) as g:
        assert g.count >= 2 and g.crs.to_epsg() == 4326
    table = pd.read_csv(p["country_totals"])
    for col in ("iso3", "name", "agb_pg", "agb_se_pg", "carbon_pg", "fao_agb_pg", "gedi_agb_pg"):
        assert col in table.columns
    # carbon = AGB x carbon fraction x (1 + root:shoot): more than 0.47 x AGB, less than AGB
    assert ((table.carbon_pg > 0.47 * table.agb_pg) & (table.carbon_pg < table.agb_pg)).all()
    html = Path(p["html"]).read_text()
    md = Path(p["markdown"]).read_text()
    for png in ("agb_map.png", "totals_bar.png", "difference_map.png"):
        assert (audit_run.output_dir / png).read_bytes()[:4] == b"\x89PNG"
        assert png in md
    assert html.count("data:image/png;base64") >= 3
    assert "XMT" in html and "Shot accounting" in md
    manifest = json.loads(Path(p["manifest"]).read_text())
    for entry in manifest["inputs"].values():
        assert len(entry["sha256"]) == 64
    assert manifest["outputs"]["country_totals"]["sha256"]


def test_rerun_skips_every_stage_and_changes_nothing(audit_run):
    from fusion.pipeline import run_audit

    before = _products(audit_run.output_dir)
    lines: list[str] = []
    cwd = os.getcwd()
    os.chdir(audit_run.output_dir.parent)
    try:
        run_audit(None, "out", workers=1, echo=lines.append)
    finally:
        os.chdir(cwd)
    skipped = [ln for ln in lines if "done before, skipped" in ln]
    assert len(skipped) >= 6, lines
    assert any("0 to process" in ln for ln in lines)
    assert _products(audit_run.output_dir) == before


def test_sigkill_mid_run_then_rerun_gives_identical_outputs(audit_run, tmp_path):
    """Kill ``sawa audit`` with SIGKILL during the map stage, rerun, compare every product byte for byte."""
    cmd = [sys.executable, "-m", "fusion.cli", "audit", "-o", "out", "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = tmp_path / "out" / "run_state.json"
    deadline = time.monotonic() + 300
    killed_after = None
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            try:
                tasks = json.loads(state.read_text())["tasks"]
            except (json.JSONDecodeError, KeyError):
                tasks = {}
            if "grid" in tasks or "terrain_covariates" in tasks:
                killed_after = sorted(tasks)
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_after is not None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "country_totals.csv").exists()  # killed before the end
    rerun = subprocess.run([sys.executable, "-m", "fusion.cli", "audit", "-o", "out", "--workers", "1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "done before, skipped" in rerun.stdout        # the completed stages were not redone
    got = _products(tmp_path / "out")
    ref = _products(audit_run.output_dir)
    assert sorted(got) == sorted(ref)
    differ = [k for k in ref if got[k] != ref[k]]
    assert not differ, differ


def test_config_driven_audit_with_user_l4b_grid(world, tmp_path):
    """A TOML config naming every input; the 'GEDI L4B' grid is the true AGB field, so its totals are the truth."""
    import shutil

    import h5py

    from fusion.pipeline import run_audit

    granule = tmp_path / world.granule_paths[0].name
    shutil.copy(world.granule_paths[0], granule)
    with h5py.File(granule, "r+") as f:   # bad shots of known kinds in BEAM0000
        b = f["BEAM0000"]
        bad_shots = b["shot_number"][:9].astype(np.uint64)
        b["geolocation/degrade"][0:3] = 1
        b["stale_return_flag"][3:5] = 1
        for k, value in ((5, float(b["noise_mean_corrected"][5])), (6, np.nan)):
            start = int(b["rx_sample_start_index"][k]) - 1      # 1-based in the product
            b["rxwaveform"][start:start + int(b["rx_sample_count"][k])] = value
        for name in ("latitude_bin0", "latitude_lastbin"):
            b[f"geolocation/{name}"][7:9] = b[f"geolocation/{name}"][7:9] + 1.0   # 1 deg north: off the DEM
    expected = {"waveform:degraded": 3, "waveform:stale_return": 2, "waveform:no_signal": 1, "waveform:nonfinite_samples": 1,
                "terrain:outside_dem": 2}
    opt = "\n".join(f'{k} = "{v}"' for k, v in world.optical_paths.items())
    (tmp_path / "audit.toml").write_text(f"""
[inputs]
granules = ["{granule}"]
dem = ["{world.dem_path}"]
polygons = "{world.countries_path}"
gedi_l4b = "{world.agb_path}"
[inputs.optical]
{opt}
[terrain]
correction = "sawa"
[biomass]
calibration_plots = 400
[fusion]
terrain_covariates = false
[run]
workers = 1
output = "{tmp_path / 'out'}"
""")
    res = run_audit(tmp_path / "audit.toml")
    t = res.totals.set_index("iso3")
    truth = world.read_countries().set_index("iso3")["true_agb_pg"]
    # exact fractional coverage of pixel-edge borders: the true field sums to the true totals
    np.testing.assert_allclose(t["gedi_agb_pg"], truth.reindex(t.index), rtol=1e-3)
    np.testing.assert_allclose(t["diff_gedi_pct"], 100 * (t["agb_pg"] / t["gedi_agb_pg"] - 1), rtol=1e-3, atol=1e-3)
    assert "true_agb_pg" not in t.columns  # truth columns only for the embedded sample world
    with rasterio.open(res.paths["map_corrected"]) as ds:
        assert ds.tags()["TERRAIN_CORRECTION"] == "sawa"
    counts = pd.read_csv(res.paths["reject_counts"]).set_index("reason")["shots"]
    from waveform.stream import count_shots

    assert int(counts.sum()) == count_shots([granule])
    rej = pd.read_parquet(res.paths["rejects"]).set_index("shot_number")
    for reason, n in expected.items():
        assert counts.get(reason) == n, counts.to_dict()
    assert set(rej.index.to_numpy(np.uint64)) >= set(bad_shots)
    assert rej.loc[int(bad_shots[5]), "reason"] == "waveform:no_signal"
    assert rej.loc[int(bad_shots[8]), "stage"] == "terrain"


def test_footprint_prediction_reasons_for_l4a_form_models():
    """A negative linear predictor gives no AGBD and a reason (the audit then moves the shot to the rejects)."""
    from biomass.l4a import L4AModel
    from fusion.pipeline import predict_footprints

    rh = np.linspace(2.0, 40.0, 40)
    cal = pd.DataFrame({"rh98_deconv": rh})
    y = (1.5 * np.sqrt(rh + 100.0) - 14.0) ** 2          # sqrt(AGB) linear in sqrt(RH98 + 100)
    model = L4AModel(predictors=(98,), rh_suffix="_deconv").fit(cal, y, strata=np.full(rh.size, "all", dtype=object))
    shots = pd.DataFrame({"rh98_deconv": [30.0, -60.0, np.nan]})  # -60 m: linear predictor below zero
    got = predict_footprints(model, shots)
    assert np.isfinite(got["agbd"].iloc[0]) and got["agbd_reason"].iloc[0] == ""
    assert np.isnan(got["agbd"].iloc[1]) and got["agbd_reason"].iloc[1] == "negative_prediction"
    assert np.isnan(got["agbd"].iloc[2]) and got["agbd_reason"].iloc[2] != ""
    np.testing.assert_allclose(got["agbd"].iloc[0], (1.5 * np.sqrt(130.0) - 14.0) ** 2, rtol=1e-6)


def test_audit_with_a_dem_off_every_granule_fails_before_any_work(world, srtm_path, tmp_path):
    """The real SRTM tile (eastern Anatolia) under the sample granules (Gabon-like latitudes): one clear error."""
    from fusion.config import load_config
    from fusion.pipeline import run_audit
    from waveform.errors import NoOverlapError

    cfg = load_config(None, {
        "inputs": {"granules": [str(world.granule_paths[0])], "dem": [str(srtm_path)],
                   "optical": {k: str(v) for k, v in world.optical_paths.items()},
                   "polygons": str(world.countries_path)},
        "run": {"workers": 1, "output": str(tmp_path / "out")},
    })
    with pytest.raises(NoOverlapError, match=rf"{srtm_path.name}.*{world.granule_paths[0].name}"):
        run_audit(cfg)
    assert not list((tmp_path / "out" / "shots").glob("*.parquet"))
