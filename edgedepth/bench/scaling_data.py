"""Data of the scaling study: rendered sets (in parallel shards) and nested training subsets.

Training frames are independent views of independent scenes (one new scene per frame), rendered in
`shards` processes; the study's training set of n frames is the first n of the shards interleaved
(A0, B0, A1, B1, ...), so every smaller set is contained in every larger one. Each subset is its own
folder dataset (hard links to the rendered files + its own meta.json), so a training run reads and
hashes only the frames it trains on.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from edgedepth.errors import DataError

log = logging.getLogger(__name__)


def _render(args: Tuple[str, str, int, int, int, int, bool]) -> float:
    """Worker: render one folder dataset; returns seconds (runs in a child process)."""
    out, domain, frames, H, W, seed, sequence = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from edgedepth.data.synth import write_synth_dataset

    t0 = time.perf_counter()
    write_synth_dataset(out, domain, frames, H, W, seed, sequence=sequence, progress=False)
    return time.perf_counter() - t0


def render_sets(jobs: Dict[str, Dict[str, Any]], root: Path, workers: int = 2) -> Dict[str, float]:
    """Render each named set {name: dict(frames, seed, sequence, size, domain)} into root/name.

    A set whose root/name/.study.json matches its spec is reused. Returns seconds per rendered set.
    """
    todo = {}
    for name, spec in jobs.items():
        stamp = root / name / ".study.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == spec:
            continue
        if (root / name).exists():
            shutil.rmtree(root / name)
        H, W = spec["size"]
        todo[name] = (str(root / name), spec["domain"], int(spec["frames"]), int(H), int(W),
                      int(spec["seed"]), bool(spec["sequence"]))
    if not todo:
        return {}
    names = sorted(todo, key=lambda n: -todo[n][2])  # biggest first
    if workers > 1 and len(names) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(names))) as pool:
            seconds = dict(zip(names, pool.map(_render, [todo[n] for n in names])))
    else:
        seconds = {n: _render(todo[n]) for n in names}
    for name in names:
        (root / name / ".study.json").write_text(json.dumps(jobs[name]))
    return seconds


def frame_list(shards: Sequence[Path]) -> List[Tuple[Path, str]]:
    """(shard, frame name) of every frame, shards interleaved: A0, B0, A1, B1, ..."""
    per = []
    for shard in shards:
        meta = json.loads((shard / "meta.json").read_text())
        per.append(sorted(meta.get("frames", {})))
    out: List[Tuple[Path, str]] = []
    for i in range(max(len(p) for p in per)):
        for shard, names in zip(shards, per):
            if i < len(names):
                out.append((shard, names[i]))
    return out


def _find(folder: Path, stem: str) -> Path:
    for p in folder.glob(stem + ".*"):
        return p
    raise DataError(f"{folder} has no file for frame {stem}")


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(src, dst)


def build_subset(frames: Sequence[Tuple[Path, str]], out: Path) -> Path:
    """A folder dataset at `out` holding exactly `frames` (renamed 000000.. in order); reused if present."""
    stamp = out / ".subset.json"
    want = [[str(s), n] for s, n in frames]
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    if out.exists():
        shutil.rmtree(out)
    (out / "rgb").mkdir(parents=True)
    (out / "depth").mkdir()
    metas: Dict[Path, Dict[str, Any]] = {}
    entries: Dict[str, Any] = {}
    for k, (shard, name) in enumerate(frames):
        if shard not in metas:
            metas[shard] = json.loads((shard / "meta.json").read_text())
        new = f"{k:06d}"
        for sub in ("rgb", "depth"):
            src = _find(shard / sub, name)
            _link(src, out / sub / (new + src.suffix))
        entries[new] = {**metas[shard].get("frames", {}).get(name, {}), "source": f"{shard.name}/{name}"}
    first = metas[frames[0][0]] if frames else {}
    meta = {k: v for k, v in first.items() if k not in ("frames", "seed")}
    meta.update(frames=entries, subset_of=sorted({str(s) for s, _ in frames}))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    stamp.write_text(json.dumps(want))
    return out


def classical_baseline(cfg: Any, test: Sequence[Any], out: Path) -> Tuple[Dict[str, Any], List[Any]]:
    """The classical baseline on the test frames (SeqFrames) of a StudyConfig `cfg`: (report dict, per-frame
    masks of the pixels it predicts). Kept in
    OUT/classical.json + classical_masks.npz and reused while the test set and its settings are the same
    (it costs minutes on a small CPU, and every process of a study split over processes needs it)."""
    from edgedepth.bench.classical import ClassicalConfig
    from edgedepth.bench.classical_eval import evaluate_classical

    spec = json.loads(json.dumps({k: getattr(cfg, k) for k in (
        "gap", "method", "min_depth", "max_depth", "render_size", "domain", "test_frames", "test_sequences",
        "data_seed")}))
    spec["test_shapes"] = [list(f.depth.shape) for f in test]
    cached, cached_masks = out / "classical.json", out / "classical_masks.npz"
    try:
        saved = json.loads(cached.read_text())
        if saved.get("spec") == spec:
            with np.load(cached_masks) as z:
                masks = [z[f"m{i}"] if f"m{i}" in z else None for i in range(len(test))]
            return saved["report"], masks
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # no usable copy: evaluate
    rep = evaluate_classical(test, gap=cfg.gap, cfg=ClassicalConfig(method=cfg.method),
                             min_depth=cfg.min_depth, max_depth=cfg.max_depth, keep_predictions=True)
    masks = [row.get("valid") for row in rep.per_frame]
    report = rep.to_dict()
    from edgedepth.fsutil import write_bytes_atomic

    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"m{i}": m for i, m in enumerate(masks) if m is not None})
    write_bytes_atomic(cached_masks, buf.getvalue())
    write_bytes_atomic(cached, json.dumps({"spec": spec, "report": report}, default=float).encode())
    return json.loads(json.dumps(report, default=float)), masks
