"""Crash-resume bookkeeping for multi-stage runs.

A run folder holds ``run_state.json``: for every task (a granule, a stage) the
sha256 of its inputs, a digest of its parameters, its outputs with sha256, and
its status. The file is rewritten atomically after each task, so a run killed
at any moment (even SIGKILL) leaves a consistent state: completed tasks are
skipped on the rerun, unfinished ones are redone from scratch (their outputs
were never renamed into place), and the final outputs are byte-identical to
those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from waveform.outputs import sha256_file, write_json_atomic

STATE_NAME = "run_state.json"
#: Version of the state file layout.
STATE_FORMAT = 1


def parameters_digest(parameters: Mapping[str, Any]) -> str:
    """A stable digest of JSON-able parameters (key order does not matter)."""
    text = json.dumps(parameters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RunState:
    """Task status of one run folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / STATE_NAME
        self._hash_cache: dict[tuple[str, int, int], str] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") == STATE_FORMAT:
                    self.tasks = data.get("tasks", {})
            except (json.JSONDecodeError, OSError):
                # a state file is only ever replaced atomically; an unreadable one is foreign: start over
                self.tasks = {}

    def _sha(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._hash_cache:
            self._hash_cache[key] = sha256_file(path)
        return self._hash_cache[key]

    def fingerprint(self, inputs: Mapping[str, str | os.PathLike], parameters: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "inputs": {k: self._sha(Path(p)) for k, p in sorted(inputs.items())},
            "parameters": parameters_digest(parameters),
        }

    def is_done(self, task: str, inputs: Mapping[str, str | os.PathLike], parameters: Mapping[str, Any]) -> bool:
        """Whether ``task`` completed with these inputs and parameters and its outputs are intact."""
        entry = self.tasks.get(task)
        if not entry or entry.get("status") != "done":
            return False
        if entry.get("fingerprint") != self.fingerprint(inputs, parameters):
            return False
        for rel, sha in entry.get("outputs", {}).items():
            p = self.folder / rel
            if not p.exists() or self._sha(p) != sha:
                return False
        return True

    def mark_done(self, task: str, inputs: Mapping[str, str | os.PathLike], parameters: Mapping[str, Any],
                  outputs: list[str | os.PathLike], info: Mapping[str, Any] | None = None) -> None:
        outs = {}
        for p in outputs:
            p = Path(p)
            rel = os.path.relpath(p, self.folder)
            outs[rel] = self._sha(p)
        self.tasks[task] = {
            "status": "done",
            "fingerprint": self.fingerprint(inputs, parameters),
            "outputs": outs,
            "info": dict(info or {}),
        }
        self.save()

    def mark_failed(self, task: str, reason: str) -> None:
        self.tasks[task] = {"status": "failed", "reason": reason}
        self.save()

    def info(self, task: str) -> dict[str, Any]:
        return dict(self.tasks.get(task, {}).get("info", {}))

    def save(self) -> None:
        write_json_atomic(self.path, {"format": STATE_FORMAT, "tasks": self.tasks})


__all__ = ["RunState", "parameters_digest", "STATE_NAME"]
