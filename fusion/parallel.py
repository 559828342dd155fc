"""Task execution: serial, on a local Dask cluster, or on an existing ``dask.distributed`` scheduler.

Granule-level and raster-block-level work is expressed as a list of
independent tasks ``func(item)``; :func:`run_tasks` returns their results in
input order whatever the executor, so a parallel run gives the same outputs as
a serial one.

On a ``LocalCluster`` each worker is a process with one thread and numba is
limited to one thread per worker (``NUMBA_NUM_THREADS=1``), so two workers on
two cores do not oversubscribe the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

#: Environment given to LocalCluster worker processes (one compute thread each).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def default_workers() -> int:
    """Workers of a default LocalCluster: the cores this process may use."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 0):
    """A ``distributed.Client``: to ``scheduler`` if given, else a LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    _quiet_distributed()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env=WORKER_ENV, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _quiet_distributed() -> None:
    """Keep dask.distributed's INFO chatter (scheduler/nanny start-up) out of a normal run.

    distributed configures its own loggers at INFO when imported; they follow sawa's verbosity
    instead: shown only when the root logger is at INFO or below (``sawa -v``).
    """
    threshold = max(logging.getLogger().getEffectiveLevel(), logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(threshold)


def run_tasks(
    func: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    scheduler: str | None = None,
    workers: int = 1,
    progress: bool = False,
    desc: str = "tasks",
    on_result: Callable[[int, R], None] | None = None,
) -> list[R]:
    """Run ``func`` on every item; results in input order.

    ``workers == 1`` and no ``scheduler``: serial in this process (no cluster).
    ``workers == 0``: a LocalCluster sized to this machine. A task that raises
    makes the whole call raise that exception (after the others finish or are
    cancelled), naming the item. ``on_result(index, result)`` is called in this process as
    each task finishes (in completion order), e.g. to record it for crash-resume.
    """
    items = list(items)
    if not items:
        return []
    if scheduler is None and workers == 1:
        return _run_serial(func, items, progress, desc, on_result)
    with dask_client(scheduler, workers) as client:
        return _run_client(client, func, items, progress, desc, on_result)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not enabled, leave=False)


def _run_serial(func, items, progress, desc, on_result=None):
    results = []
    with _progress_bar(len(items), desc, progress) as bar:
        for i, item in enumerate(items):
            results.append(_call(func, item))
            if on_result is not None:
                on_result(i, results[-1])
            bar.update(1)
    return results


def _run_client(client, func, items, progress, desc, on_result=None):
    from distributed import as_completed

    futures = client.map(_call, [func] * len(items), items, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    with _progress_bar(len(items), desc, progress) as bar:
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                results[i] = fut.result()
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise
    return results


def _call(func, item):
    try:
        return func(item)
    except Exception as exc:
        exc.add_note(f"while processing {item!r}")
        raise


__all__ = ["run_tasks", "dask_client", "default_workers", "WORKER_ENV"]
