"""The ragged batch: sawa's central data type for many waveforms.

A batch holds ``n`` waveforms of different lengths without padding:

* ``samples``  float32 (total,)  all waveforms back to back (digitiser counts)
* ``start``    int64   (n,)      0-based offset of each waveform in ``samples``
* ``count``    int32   (n,)      number of samples of each waveform
* ``elevation_bin0``    float64 (n,)  ellipsoidal height of the first sample (m)
* ``elevation_lastbin`` float64 (n,)  ellipsoidal height of the last sample (m)
* ``shot_number``       uint64  (n,)

GEDI stores ``rx_sample_start_index`` 1-based; readers convert to 0-based
``start`` once, here nothing else is 1-based. Kernels take these arrays and
return per-shot arrays.

The height of sample ``i`` of shot ``k`` (``0 <= i < count[k]``) is linear
between bin 0 and the last bin (GEDI L1B user guide, section on geolocation):
``z = bin0 + (lastbin - bin0) * i / (count - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BatchError


@dataclass(frozen=True)
class RaggedBatch:
    samples: np.ndarray
    start: np.ndarray
    count: np.ndarray
    elevation_bin0: np.ndarray
    elevation_lastbin: np.ndarray
    shot_number: np.ndarray
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        validate_batch(self)

    @property
    def n_shots(self) -> int:
        return int(self.count.shape[0])

    def __len__(self) -> int:
        return self.n_shots

    def waveform(self, k: int) -> np.ndarray:
        """Samples of shot ``k`` (a view)."""
        s = int(self.start[k])
        return self.samples[s : s + int(self.count[k])]

    def bin_size_m(self) -> np.ndarray:
        """Vertical size of one sample (m) per shot: (bin0 - lastbin) / (count - 1)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.elevation_bin0 - self.elevation_lastbin) / np.maximum(self.count.astype(np.float64) - 1.0, 1.0)

    def sample_elevations(self, k: int) -> np.ndarray:
        """Ellipsoidal height (m) of every sample of shot ``k``."""
        c = int(self.count[k])
        frac = np.arange(c, dtype=np.float64) / max(c - 1, 1)
        return self.elevation_bin0[k] + (self.elevation_lastbin[k] - self.elevation_bin0[k]) * frac

    def take(self, index: np.ndarray | slice) -> RaggedBatch:
        """A new compact batch with the shots selected by ``index`` (in that order)."""
        idx = np.arange(self.n_shots)[index] if isinstance(index, slice) else np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        count = self.count[idx]
        new_start = np.zeros(idx.shape[0], dtype=np.int64)
        if idx.shape[0]:
            np.cumsum(count[:-1], out=new_start[1:])
        total = int(count.sum(dtype=np.int64))
        gather = np.empty(total, dtype=np.int64)
        for j, k in enumerate(idx):
            s = new_start[j]
            gather[s : s + count[j]] = np.arange(self.start[k], self.start[k] + count[j])
        return RaggedBatch(
            samples=self.samples[gather],
            start=new_start,
            count=count.copy(),
            elevation_bin0=self.elevation_bin0[idx].copy(),
            elevation_lastbin=self.elevation_lastbin[idx].copy(),
            shot_number=self.shot_number[idx].copy(),
            source=self.source,
        )

    @classmethod
    def from_waveforms(
        cls,
        waveforms: list[np.ndarray],
        elevation_bin0: np.ndarray,
        elevation_lastbin: np.ndarray,
        shot_number: np.ndarray | None = None,
        source: str = "",
    ) -> RaggedBatch:
        """Build a batch from a list of 1-D arrays (convenience for tests and small jobs)."""
        count = np.array([len(w) for w in waveforms], dtype=np.int32)
        start = np.zeros(len(waveforms), dtype=np.int64)
        if len(waveforms):
            np.cumsum(count[:-1], out=start[1:])
        samples = (
            np.concatenate([np.asarray(w, dtype=np.float32) for w in waveforms])
            if waveforms
            else np.zeros(0, np.float32)
        )
        if shot_number is None:
            shot_number = np.arange(len(waveforms), dtype=np.uint64)
        return cls(
            samples=samples,
            start=start,
            count=count,
            elevation_bin0=np.asarray(elevation_bin0, dtype=np.float64),
            elevation_lastbin=np.asarray(elevation_lastbin, dtype=np.float64),
            shot_number=np.asarray(shot_number, dtype=np.uint64),
            source=source,
        )


def validate_batch(batch: RaggedBatch) -> None:
    """Check dtypes, shapes and that every waveform lies inside ``samples``.

    Raises :class:`BatchError` naming the first bad shot.
    """
    where = f" ({batch.source})" if batch.source else ""
    expected = {
        "samples": np.float32,
        "start": np.int64,
        "count": np.int32,
        "elevation_bin0": np.float64,
        "elevation_lastbin": np.float64,
        "shot_number": np.uint64,
    }
    for name, dtype in expected.items():
        arr = getattr(batch, name)
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise BatchError(f"ragged batch{where}: '{name}' must be a 1-D numpy array")
        if arr.dtype != dtype:
            raise BatchError(f"ragged batch{where}: '{name}' must be {np.dtype(dtype).name}, got {arr.dtype.name}")
    n = batch.count.shape[0]
    for name in ("start", "elevation_bin0", "elevation_lastbin", "shot_number"):
        if getattr(batch, name).shape[0] != n:
            raise BatchError(
                f"ragged batch{where}: '{name}' has {getattr(batch, name).shape[0]} entries, 'count' has {n}"
            )
    if n == 0:
        return
    bad = np.flatnonzero(
        (batch.start < 0) | (batch.count < 0) | (batch.start + batch.count > batch.samples.shape[0])
    )
    if bad.size:
        k = int(bad[0])
        raise BatchError(
            f"ragged batch{where}: shot {int(batch.shot_number[k])} (index {k}) has start={int(batch.start[k])}, "
            f"count={int(batch.count[k])} outside samples of length {batch.samples.shape[0]}"
        )


__all__ = ["RaggedBatch", "validate_batch"]
