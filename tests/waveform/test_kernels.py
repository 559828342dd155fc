"""The numba kernels against the slow reference (tests/reference/waveform_naive.py),
analytic cases, simulated truth and properties (hypothesis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.reference import waveform_naive as naive
from waveform.algorithms import (
    L2A_ALGORITHMS,
    AlgorithmSettings,
    box_cascade_for_sigma,
    cascade_half_length,
    cascade_kernel,
    get_algorithm,
    smoothing_boxes,
)
from waveform.batch import RaggedBatch
from waveform.errors import SawaValueError
from waveform.metrics import REASON_CODES, REASON_NAMES, compute_metrics, smooth_batch

REPO = Path(__file__).resolve().parents[2]
FLOAT_FIELDS = ("ground_index", "toploc", "botloc", "ground_elevation_m", "canopy_top_elevation_m",
                "lee_m", "tee_m", "cover", "energy_total")


@pytest.fixture(scope="module")
def sim():
    return naive.simulated_batch(150, seed=11)


def _compare_with_reference(batch, m, noise_mean, noise_std, settings_for_shot):
    for k in range(batch.n_shots):
        ref = naive.metrics_one(batch.waveform(k), batch.elevation_bin0[k], batch.elevation_lastbin[k],
                                noise_mean[k], noise_std[k], settings_for_shot(k))
        assert REASON_NAMES[int(m.reason[k])] == ref["reason"], f"shot {k}"
        assert m.n_modes[k] == ref["n_modes"], f"shot {k}"
        np.testing.assert_array_equal(m.mode_locations[k, : m.n_modes[k]], ref["mode_locations"][:20])
        for name in FLOAT_FIELDS:
            np.testing.assert_allclose(getattr(m, name)[k], ref[name], rtol=1e-9, atol=1e-7,
                                       equal_nan=True, err_msg=f"{name}, shot {k}")
        np.testing.assert_allclose(m.rh[k], ref["rh"], atol=1e-9, equal_nan=True, err_msg=f"rh, shot {k}")


# --------------------------------------------------------------------------- smoothing
@pytest.mark.parametrize("boxes", [(10, 10, 10, 10), (3, 4, 5, 5, 6), (3, 3, 5), (1,)])
def test_box_cascade_equals_explicit_kernel(sim, boxes):
    batch, _ = sim
    sub = batch.take(slice(0, 20))
    out = smooth_batch(sub, boxes=boxes)
    for k in range(sub.n_shots):
        s = sub.start[k]
        ref = naive.smooth(sub.waveform(k), boxes)
        np.testing.assert_allclose(out[s : s + sub.count[k]], ref, rtol=1e-12, atol=1e-9)


def test_cascade_kernel_shape():
    k = cascade_kernel(L2A_ALGORITHMS["a1"].boxes_locs)
    x = np.arange(len(k)) - (len(k) - 1) / 2
    assert len(k) == 37 and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])
    # variance of 4 boxes of 10 = 4 * (10^2 - 1) / 12 = 33
    assert float((k * x**2).sum()) == pytest.approx(33.0)
    assert smoothing_boxes(6.5) == (10, 10, 10, 10) and smoothing_boxes(3.5) == (3, 4, 5, 5, 6)
    assert smoothing_boxes(0) == ()


@pytest.mark.parametrize("sigma", [1.5, 3.0, 5.0, 9.0])
def test_box_cascade_for_sigma_matches_variance(sigma):
    boxes = box_cascade_for_sigma(sigma)
    assert all(b % 2 == 1 for b in boxes)
    var = sum((b * b - 1) / 12 for b in boxes)
    assert abs(np.sqrt(var) - sigma) < 0.35


def test_uncentred_cascade_is_rejected():
    with pytest.raises(SawaValueError, match="not centred"):
        cascade_half_length((4, 4, 4))
    assert cascade_half_length((4, 4)) == 3


# --------------------------------------------------------------------------- kernels vs reference
@pytest.mark.parametrize("name", list(L2A_ALGORITHMS))
def test_kernels_match_reference_on_simulated(sim, name):
    batch, truth = sim
    m = compute_metrics(batch, name, truth.noise_mean, truth.noise_std)
    assert (m.reason == 0).all()
    _compare_with_reference(batch, m, truth.noise_mean, truth.noise_std, lambda k: L2A_ALGORITHMS[name])


def test_kernels_match_reference_on_real_l1b(l1b_path):
    from waveform.gedi import read_l1b

    chunk = read_l1b(l1b_path)
    mu = chunk.shots["noise_mean_corrected"].to_numpy()
    sd = chunk.shots["noise_stddev_corrected"].to_numpy()
    groups = np.arange(chunk.batch.n_shots) % 6 + 1  # every group on real waveforms
    m = compute_metrics(chunk.batch, groups, mu, sd)
    _compare_with_reference(chunk.batch, m, mu, sd, lambda k: get_algorithm(int(groups[k])))
    assert (m.algorithm == groups).all()


def test_per_shot_groups_equal_single_group_runs(sim):
    batch, truth = sim
    groups = np.arange(batch.n_shots) % 6 + 1
    mixed = compute_metrics(batch, groups, truth.noise_mean, truth.noise_std)
    for g in range(1, 7):
        single = compute_metrics(batch, g, truth.noise_mean, truth.noise_std)
        sel = groups == g
        np.testing.assert_array_equal(mixed.rh[sel], single.rh[sel])
        np.testing.assert_array_equal(mixed.ground_index[sel], single.ground_index[sel])


def test_noise_estimated_from_quieter_end_when_not_given(sim):
    batch, truth = sim
    m = compute_metrics(batch, "a1")
    for k in range(10):
        mu, sd = naive.noise_estimate(batch.waveform(k), 64)
        assert m.noise_mean[k] == pytest.approx(mu) and m.noise_std[k] == pytest.approx(sd)
    # the estimate is close to the simulated noise (64 samples: sd of the mean ~ sd / 8)
    assert np.all(np.abs(m.noise_mean - truth.noise_mean) < 5 * truth.noise_std / 8)
    partial = np.where(np.arange(batch.n_shots) % 2 == 0, truth.noise_mean, np.nan)
    m2 = compute_metrics(batch, "a1", partial, truth.noise_std)
    np.testing.assert_allclose(m2.noise_mean[::2], truth.noise_mean[::2])


# --------------------------------------------------------------------------- truth and analytic cases
def test_ground_of_bare_ground_waveforms_matches_truth():
    batch, truth = naive.simulated_batch(80, seed=5, canopy=False)
    m = compute_metrics(batch, "a1", truth.noise_mean, truth.noise_std)
    err = m.ground_elevation_m - truth.ground_elevation_m
    assert np.abs(err).max() < 0.1  # noise-driven; quarter-sample grid = 0.0375 m
    # one symmetric return: half of the energy lies below the ground mode
    assert np.abs(m.rh[:, 50]).max() < 0.15  # front (3 sd) and back (6 sd) thresholds differ
    np.testing.assert_allclose(m.rh[:, 100] - m.rh[:, 0], m.waveform_extent_m, atol=1e-9)


def _gaussian_batch(sigma, amp=400.0, count=900, centre=500.0, extra=None):
    x = np.arange(count, dtype=np.float64)
    w = 200.0 + amp * np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    if extra is not None:
        w = w + extra(x)
    return RaggedBatch.from_waveforms([w], [1000.0], [1000.0 - 0.15 * (count - 1)])


def test_noise_free_gaussian_analytic_extents():
    sigma, amp, mu, sd = 20.0, 400.0, 200.0, 4.0
    batch = _gaussian_batch(sigma, amp)
    m = compute_metrics(batch, "a1", [mu], [sd])
    s_t = np.sqrt(sigma**2 + 33.0)  # Gaussian convolved with the 6.5 ns cascade (variance 33)
    a_t = amp * sigma / s_t
    bs = 0.15
    assert m.ground_index[0] == pytest.approx(500.0, abs=0.25)
    # signal start: smoothed amplitude = 3 sd; half maximum at s_t * sqrt(2 ln 2)
    start = s_t * np.sqrt(2 * np.log(a_t / (3 * sd)))
    end = s_t * np.sqrt(2 * np.log(a_t / (6 * sd)))
    half = s_t * np.sqrt(2 * np.log(2))
    assert m.toploc[0] == pytest.approx(500 - start, abs=0.3)
    assert m.botloc[0] == pytest.approx(500 + end, abs=0.3)
    assert m.lee_m[0] == pytest.approx((start - half) * bs, abs=0.06)
    assert m.tee_m[0] == pytest.approx((end - half) * bs, abs=0.06)
    assert m.cover[0] == pytest.approx(0.0, abs=0.01)  # only ground
    assert m.energy_total[0] == pytest.approx(amp * sigma * np.sqrt(2 * np.pi), rel=1e-6)


def test_cover_of_separate_canopy_and_ground_returns():
    sigma, amp_g, amp_v = 6.0, 300.0, 100.0
    canopy = lambda x: amp_v * np.exp(-0.5 * ((x - 380.0) / (2 * sigma)) ** 2)  # noqa: E731
    m = compute_metrics(_gaussian_batch(sigma, amp_g, extra=canopy), "a1", [200.0], [1.0])
    e_g = amp_g * sigma * np.sqrt(2 * np.pi)
    e_v = amp_v * 2 * sigma * np.sqrt(2 * np.pi)
    assert m.n_modes[0] == 2
    assert m.ground_index[0] == pytest.approx(500.0, abs=0.25)
    assert m.rg[0] == pytest.approx(e_g, rel=0.02)
    assert m.cover[0] == pytest.approx(e_v / (e_v + 1.5 * e_g), abs=0.01)


# --------------------------------------------------------------------------- bad shots
def test_bad_shots_get_reasons_not_exceptions():
    good = naive.simulate_waveforms(1, seed=2)
    x = np.arange(800)
    flat = 200.0 + np.sin(x)  # noise only
    waves = [good.waveforms[0], np.zeros(0, np.float32), np.full(50, np.nan), np.array([1.0, 2.0]), flat,
             good.waveforms[0], good.waveforms[0]]
    bin0 = np.array([good.elevation_bin0[0], 0, 0, 0, 100.0, np.nan, good.elevation_bin0[0]])
    last = np.array([good.elevation_lastbin[0], 0, 0, 0, 0.0, 0.0, good.elevation_lastbin[0]])
    batch = RaggedBatch.from_waveforms(waves, bin0, last)
    mu = np.array([good.noise_mean[0], 200, 200, 200, 200.0, 200, good.noise_mean[0]])
    sd = np.array([good.noise_std[0], 3, 3, 3, 3.0, 3, 0.0])
    m = compute_metrics(batch, "a1", mu, sd)
    names = list(m.reason_names())
    assert names == ["ok", "empty_waveform", "nonfinite_samples", "too_short", "no_signal",
                     "bad_geolocation", "bad_noise"]
    assert list(m.quality) == [True] + [False] * 6
    assert np.isnan(m.rh[1:]).all() and np.isnan(m.ground_elevation_m[1:]).all()
    assert set(REASON_CODES) >= set(m.reason.tolist())


def test_empty_batch():
    batch = RaggedBatch.from_waveforms([], np.zeros(0), np.zeros(0))
    m = compute_metrics(batch)
    assert len(m) == 0 and m.rh.shape == (0, 101)


def test_bad_input_is_explained(sim):
    batch, truth = sim
    with pytest.raises(SawaValueError, match="RaggedBatch"):
        compute_metrics([1, 2, 3])
    with pytest.raises(SawaValueError, match="noise_mean must have one value per shot"):
        compute_metrics(batch, "a1", np.zeros(3))
    with pytest.raises(SawaValueError, match="unknown L2A algorithm setting group 'a7'"):
        compute_metrics(batch, "a7")
    groups = np.ones(batch.n_shots, int)
    groups[17] = 9
    with pytest.raises(SawaValueError, match="shot index 17"):
        compute_metrics(batch, groups)
    with pytest.raises(SawaValueError, match="rho_ratio"):
        compute_metrics(batch, rho_ratio=0)
    with pytest.raises(SawaValueError, match="one group number per shot"):
        compute_metrics(batch, np.ones(3, int))
    assert get_algorithm("A3").number == 3 and get_algorithm(5).name == "a5"
    custom = AlgorithmSettings("mine", 9, 4.0, 4.0, 5.0, 5.0)
    assert compute_metrics(batch.take(slice(0, 3)), custom, truth.noise_mean[:3], truth.noise_std[:3]).quality.all()


# --------------------------------------------------------------------------- properties
_waveform_params = st.tuples(
    st.integers(min_value=0, max_value=10_000),  # noise seed
    st.floats(min_value=0.4, max_value=0.8),  # ground position (fraction of the waveform)
    st.floats(min_value=60.0, max_value=600.0),  # ground amplitude
    st.floats(min_value=0.0, max_value=40.0),  # canopy height (m)
    st.floats(min_value=0.05, max_value=1.0),  # canopy relative amplitude
)


def _one_waveform(params, count=700):
    seed, gpos, amp, height, rel = params
    rng = np.random.default_rng(seed)
    x = np.arange(count, dtype=np.float64)
    g = gpos * count
    w = amp * np.exp(-0.5 * ((x - g) / 6.5) ** 2)
    if height > 3:
        w += rel * amp * np.exp(-0.5 * ((x - (g - height / 0.15)) / 10.0) ** 2)
    return w + rng.normal(0.0, 3.0, count)  # noise mean 0, sd 3


_hyp = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_hyp
@given(params=_waveform_params, name=st.sampled_from(list(L2A_ALGORITHMS)))
def test_property_rh_monotone_and_inside_signal(params, name):
    w = _one_waveform(params)
    batch = RaggedBatch.from_waveforms([w], [500.0], [500.0 - 0.15 * 699])
    m = compute_metrics(batch, name, [0.0], [3.0])
    assert m.reason[0] == 0
    rh = m.rh[0]
    assert np.all(np.diff(rh) >= 0)
    assert rh[0] == pytest.approx((m.ground_index[0] - m.botloc[0]) * 0.15)
    assert rh[100] == pytest.approx((m.ground_index[0] - m.toploc[0]) * 0.15)
    assert rh[100] - rh[0] == pytest.approx(m.waveform_extent_m[0])
    assert m.toploc[0] < m.ground_index[0] < m.botloc[0]


@_hyp
@given(params=_waveform_params, shift=st.integers(min_value=1, max_value=120))
def test_property_shift_moves_ground_by_exactly_k_bins(params, shift):
    # shift invariance holds for a signal inside the window: a canopy return cut by the window start
    # (GEDI's rx_rxwindow_clip_front case) changes with the padding in front of it
    _, gpos, _, height, _ = params
    canopy_top_sample = gpos * 700 - (height / 0.15 if height > 3 else 0.0) - 4 * 10.0
    assume(canopy_top_sample > 20)
    w = _one_waveform(params)
    shifted = np.concatenate([np.full(shift, w[0]), w]).astype(np.float32)
    bs = 0.15
    batch = RaggedBatch.from_waveforms([w, shifted], [500.0, 500.0 + shift * bs],
                                       [500.0 - bs * (len(w) - 1), 500.0 - bs * (len(w) - 1)])
    m = compute_metrics(batch, "a1", [0.0, 0.0], [3.0, 3.0])
    assert m.ground_index[1] - m.ground_index[0] == shift
    assert m.ground_elevation_m[1] == pytest.approx(m.ground_elevation_m[0], abs=1e-9)
    np.testing.assert_allclose(m.rh[1], m.rh[0], atol=1e-9)


@_hyp
@given(params=_waveform_params, power=st.integers(min_value=-3, max_value=4), name=st.sampled_from(["a1", "a4", "a5"]))
def test_property_amplitude_scaling_changes_no_height(params, power, name):
    # (not a2: its mode selection compares amplitudes with an absolute 50 counts, as L2A does)
    w = _one_waveform(params).astype(np.float32)
    c = 2.0**power  # exact in binary floating point
    batch = RaggedBatch.from_waveforms([w, w * np.float32(c)], [500.0, 500.0], [395.15, 395.15])
    m = compute_metrics(batch, name, [0.0, 0.0], [3.0, 3.0 * c])
    for field in ("ground_elevation_m", "canopy_top_elevation_m", "lee_m", "tee_m", "cover"):
        a, b = getattr(m, field)
        assert a == pytest.approx(b, abs=1e-9), field
    np.testing.assert_allclose(m.rh[1], m.rh[0], atol=1e-9)
    assert m.energy_total[1] == pytest.approx(c * m.energy_total[0])


# --------------------------------------------------------------------------- plain Python
def test_same_results_without_jit(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the kernels as plain Python: same numbers."""
    code = (
        "import json, numpy as np\n"
        "from tests.reference.waveform_naive import simulated_batch\n"
        "from waveform.metrics import compute_metrics\n"
        "b, t = simulated_batch(4, seed=3)\n"
        "m = compute_metrics(b, np.array([1, 2, 5, 6]), t.noise_mean, t.noise_std)\n"
        "print(json.dumps({'rh': m.rh.tolist(), 'g': m.ground_elevation_m.tolist(), 'c': m.cover.tolist()}))\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True)
    plain = json.loads(out.stdout)
    batch, truth = naive.simulated_batch(4, seed=3)
    m = compute_metrics(batch, np.array([1, 2, 5, 6]), truth.noise_mean, truth.noise_std)
    np.testing.assert_allclose(np.array(plain["rh"]), m.rh, atol=1e-9)
    np.testing.assert_allclose(plain["g"], m.ground_elevation_m, atol=1e-9)
    np.testing.assert_allclose(plain["c"], m.cover, atol=1e-9)


def test_saturated_and_bad_geolocation_agree_with_reference(sim):
    """Clipped flat tops (saturation) and implausible geolocation: same reasons as the slow reference."""
    batch, truth = sim
    waves, bin0, last = [], [], []
    for k in range(12):
        w = batch.waveform(k).astype(np.float64).copy()
        if k % 3 == 0:  # clip the strongest return 30 counts under its peak
            w = np.minimum(w, w.max() - 30.0)
        waves.append(w.astype(np.float32))
        b0, bl = batch.elevation_bin0[k], batch.elevation_lastbin[k]
        if k % 4 == 1:
            b0, bl = bl, b0               # bin0 below lastbin
        elif k % 4 == 2 and k % 3:
            bl = b0 - 1e-4 * (len(w) - 1)  # 0.1 mm samples
        bin0.append(b0)
        last.append(bl)
    b = RaggedBatch.from_waveforms(waves, bin0, last)
    mu, sd = truth.noise_mean[:12], truth.noise_std[:12]
    m = compute_metrics(b, "a1", mu, sd)
    names = [REASON_NAMES[int(r)] for r in m.reason]
    assert names.count("saturated") >= 2 and names.count("bad_geolocation") >= 4, names
    _compare_with_reference(b, m, mu, sd, lambda k: L2A_ALGORITHMS["a1"])


# --------------------------------------------------------------------------- scan helpers
@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.integers(min_value=0, max_value=5), min_size=3, max_size=150),
       cut=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_block_maxima_helpers_equal_plain_scans(values, cut):
    """The first pass's block maxima, and the scans that use them (first/last sample above a threshold,
    from any start; first box mean above it, with its jumps over noise; the flat top), against plain
    numpy on small-integer waveforms (many ties, flat tops and blocks straddling every boundary)."""
    from waveform import _kernels as K

    w = np.array(values, np.float32)
    n = w.size
    block_max = np.empty(n // K.SCAN_BLOCK + 1)
    assert K.sum_and_block_max(w, n, block_max) == float(w.astype(np.float64).sum())
    full = n // K.SCAN_BLOCK
    np.testing.assert_array_equal(block_max[:full], [w[b * K.SCAN_BLOCK:(b + 1) * K.SCAN_BLOCK].max() for b in range(full)])
    for thr in (-1.0, 0.5, 2.5, 4.5, 5.0):
        above = np.flatnonzero(w > thr)
        assert K.first_sample_above(w, n, thr, block_max) == (above[0] if above.size else -1)
        assert K.last_sample_above(w, n, thr, block_max) == (above[-1] if above.size else -1)
        start = int(cut[0] * n)
        later = above[above >= start]
        assert K.first_sample_above(w, n, thr, block_max, start) == (later[0] if later.size else -1)
        # first window of 4 whose sum exceeds 4 thr less the pruning slack (samples before the
        # waveform repeat w[0])
        padded = np.concatenate([np.full(3, w[0]), w]).astype(np.float64)
        sums = np.convolve(padded, np.ones(4), mode="valid")
        hit = np.flatnonzero(sums > 4 * thr - K.MEAN_PRUNE_SLACK * abs(4 * thr))
        assert K.first_mean_above(w, n, 4, thr, block_max) == (hit[0] if hit.size else -1)
    i0 = min(int(cut[0] * n), n - 1)
    i1 = max(i0 + 1, int(cut[1] * n))
    seg = w[i0:i1]
    at = int(np.argmax(seg))  # first occurrence
    run = int(np.argmax(seg[at:] != seg[at])) if np.any(seg[at:] != seg[at]) else seg.size - at
    assert K.flat_top_run(w, i0, i1, block_max) == (run, float(seg.max()))
