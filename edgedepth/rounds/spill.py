"""The round builder's per-frame state between its two passes, kept on disk so memory stays flat.

The first pass over a store's index meets every labelled frame once. What the selection needs of each
stays in numpy arrays (score, the (device, time block) group as two integers, the 16 block means of its
thumbnail: about 90 bytes a frame); the rest goes to a scratch folder next to the round: the metadata
records into a SQLite table (which also sorts them by capture time and id), the full 16x16 float32
thumbnails into a flat file that the near-duplicate search reads a few rows of (edgedepth.rounds.dedupe).
The folder is removed when the build ends, however it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from edgedepth.rounds.dedupe import block_means

THUMB_VALUES = 256  # a 16x16 thumbnail (edgedepth.rounds.build.thumbnail)


@contextlib.contextmanager
def scratch_dir(out: Path) -> Iterator[Path]:
    """A hidden folder next to the round folder `out` (same disk, not a RAM-backed /tmp), removed on exit."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=str(out.parent)))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


class _Column:
    """A numpy array that grows by doubling (amortised O(1) appends, no per-item Python objects)."""

    def __init__(self, dtype, width: int = 0) -> None:
        self._shape = (width,) if width else ()
        self._data = np.empty((1024, *self._shape), dtype)
        self.n = 0

    def append(self, value) -> None:
        if self.n == len(self._data):
            grown = np.empty((2 * len(self._data), *self._shape), self._data.dtype)
            grown[:self.n] = self._data[:self.n]
            self._data = grown
        self._data[self.n] = value
        self.n += 1

    def array(self) -> np.ndarray:
        return self._data[:self.n]


class CandidateSpill:
    """Labelled frames of the first pass: `add` each, then `sorted_order`, `thumbs` and `iter_sorted`.

    A frame's index (0, 1, ... in the order `add` saw them) names it in every array here."""

    def __init__(self, work: Path) -> None:
        self.dir = Path(work)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.dir / "candidates.db"))
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("CREATE TABLE cand (seq INTEGER PRIMARY KEY, captured_at TEXT, id TEXT, "
                             "label TEXT, meta TEXT)")
            self._thumb_path = self.dir / "thumbs.f32"
            self._thumbs = open(self._thumb_path, "wb")
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self._reader = -1
        self.scores = _Column(np.float64)
        self.blocks = _Column(np.float32, 16)
        self.device = _Column(np.int32)  # an index into self.devices
        self.block = _Column(np.int64)  # time block index
        self.devices: List[str] = []
        self._device_code: Dict[str, int] = {}

    def __len__(self) -> int:
        return self.scores.n

    def add(self, meta: dict, label: str, score: float, thumb: np.ndarray, group: Tuple[str, int]) -> None:
        seq = len(self)
        self._db.execute("INSERT INTO cand VALUES (?, ?, ?, ?, ?)",
                         (seq, str(meta.get("captured_at", "")), str(meta.get("id", "")), label,
                          json.dumps(meta)))
        thumb = np.ascontiguousarray(thumb, np.float32).reshape(1, THUMB_VALUES)
        self._thumbs.write(thumb.tobytes())
        self.scores.append(score)
        self.blocks.append(block_means(thumb)[0])
        code = self._device_code.setdefault(group[0], len(self.devices))
        if code == len(self.devices):
            self.devices.append(group[0])
        self.device.append(code)
        self.block.append(group[1])

    def sorted_order(self) -> np.ndarray:
        """Frame indices by (capture time, id) as text, ties in arrival order: the order frames take in
        a round whatever order the store lists them in (SQLite compares text as UTF-8 bytes, which is
        the order of Python's string comparison)."""
        self._db.commit()
        cur = self._db.execute("SELECT seq FROM cand ORDER BY captured_at, id, seq")
        return np.fromiter((row[0] for row in cur), np.int64, count=len(self))

    def thumbs(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), 256) float32 thumbnails of the frames `idx`, read from the file."""
        if self._reader < 0:
            self._thumbs.flush()
            self._reader = os.open(str(self._thumb_path), os.O_RDONLY)
        size = 4 * THUMB_VALUES
        out = np.empty((len(idx), THUMB_VALUES), np.float32)
        for k, i in enumerate(idx):
            out[k] = np.frombuffer(os.pread(self._reader, size, int(i) * size), np.float32)
        return out

    def iter_sorted(self) -> Iterator[Tuple[int, str, dict]]:
        """(frame index, label, metadata) of every frame in sorted_order, read back from disk."""
        self._db.commit()
        for seq, label, meta in self._db.execute("SELECT seq, label, meta FROM cand "
                                                 "ORDER BY captured_at, id, seq"):
            yield seq, label, json.loads(meta)

    def close(self) -> None:
        """Release and delete the spill's folder."""
        try:
            self._thumbs.close()
            if self._reader >= 0:
                os.close(self._reader)
                self._reader = -1
            self._db.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "CandidateSpill":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
