"""Round build memory: what the first pass keeps per frame until the second pass is a few hundred bytes
(numpy arrays; metadata and thumbnails wait on disk), not the frame's metadata and thumbnail as Python
objects. Measured with tracemalloc (Python and numpy allocations) as the growth from N to 4N items."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tracemalloc

import cv2
import numpy as np

from edgedepth.data import formats
from edgedepth.fleet.store.local import LocalStore
from edgedepth.rounds import build
from edgedepth.rounds.build import RoundConfig, build_round
from edgedepth.spool import compute_item_id

N = 300


def _fill(root, n: int, seed: int) -> None:
    store = LocalStore(root, min_free_bytes=0)
    rng = np.random.default_rng(seed)
    for i in range(n):
        rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        files = {"rgb.png": cv2.imencode(".png", rgb)[1].tobytes(),
                 "depth.png": cv2.imencode(".png", np.full((6, 8), 1000 + i % 500, np.uint16))[1].tobytes()}
        kinds = {"rgb.png": ("rgb", None), "depth.png": ("depth_gt", "mm_uint16")}
        entries = {k: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b), "kind": kinds[k][0],
                       "offset": 0, "units": kinds[k][1]} for k, b in files.items()}
        item_id = compute_item_id(entries)
        meta = {"id": item_id, "files": entries, "device_id": f"cam-{i % 7}", "domain": "indoor",
                "captured_at": f"2026-11-24T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.000Z",
                "score": float(rng.random()), "intrinsics": [[5.0, 0.0, 4.0], [0.0, 5.0, 3.0], [0, 0, 1.0]]}
        assert store.put_item(item_id, files, meta)
    store.close()


def _held_between_passes(tmp_path, name: str, monkeypatch) -> int:
    """Bytes traced when the second pass writes its first frame: the first pass's per-frame state."""
    held = []
    real = formats.write_sample
    # pathlib interns every path part; the interpreter's table of interned strings grows in steps that
    # have nothing to do with the round, so its allocations are left out
    ignore = [tracemalloc.Filter(False, pathlib.__file__), tracemalloc.Filter(False, "<frozen importlib.*")]

    def spy(*args, **kwargs):
        if not held:
            snap = tracemalloc.take_snapshot().filter_traces(ignore)
            held.append(sum(s.size for s in snap.statistics("filename")))
        return real(*args, **kwargs)

    monkeypatch.setattr(formats, "write_sample", spy)
    monkeypatch.setattr(build, "write_sample", spy, raising=False)
    tracemalloc.start()
    try:
        build_round(RoundConfig(store=str(tmp_path / name), out=str(tmp_path / f"round-{name}")))
    finally:
        tracemalloc.stop()
        monkeypatch.undo()
    return held[0]


def test_first_pass_state_does_not_grow_with_the_store(tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # filling the stores is setup: durability is not what this tests
        m.setattr(os, "fsync", lambda fd: None)
        _fill(tmp_path / "warm", 20, 0)
        _fill(tmp_path / "small", N, 1)
        _fill(tmp_path / "large", 4 * N, 2)
    _held_between_passes(tmp_path, "warm", monkeypatch)  # first-call imports and caches
    small = _held_between_passes(tmp_path, "small", monkeypatch)
    large = _held_between_passes(tmp_path, "large", monkeypatch)
    per_item = (large - small) / (3 * N)
    # the spilled state is ~100 bytes a frame (arrays grow by doubling); a frame's metadata dict and
    # float32 thumbnail held in memory are several kilobytes
    assert per_item < 1000, f"{small} bytes held at {N} items, {large} at {4 * N}: {per_item:.0f} B/item"
