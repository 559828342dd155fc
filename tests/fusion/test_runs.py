"""Run-state bookkeeping: completed tasks are recognised, changed inputs/parameters/outputs are redone."""

from __future__ import annotations

from fusion.runs import RunState, parameters_digest


def test_task_lifecycle(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("granule")
    out = tmp_path / "run" / "out.txt"
    out.parent.mkdir()
    out.write_text("result")
    state = RunState(tmp_path / "run")
    assert not state.is_done("g1", {"granule": src}, {"a": 1})
    state.mark_done("g1", {"granule": src}, {"a": 1}, [out], info={"n_shots": 7})
    again = RunState(tmp_path / "run")  # as after a restart
    assert again.is_done("g1", {"granule": src}, {"a": 1})
    assert again.info("g1") == {"n_shots": 7}
    assert not again.is_done("g1", {"granule": src}, {"a": 2})  # other parameters
    out.write_text("tampered")
    assert not RunState(tmp_path / "run").is_done("g1", {"granule": src}, {"a": 1})
    out.write_text("result")
    src.write_text("another granule")
    assert not RunState(tmp_path / "run").is_done("g1", {"granule": src}, {"a": 1})


def test_parameters_digest_is_order_free():
    assert parameters_digest({"a": 1, "b": [1, 2]}) == parameters_digest({"b": [1, 2], "a": 1})
    assert parameters_digest({"a": 1}) != parameters_digest({"a": 1.5})


def test_corrupt_state_starts_over(tmp_path):
    (tmp_path / "run_state.json").write_text("{not json")
    assert RunState(tmp_path).tasks == {}
