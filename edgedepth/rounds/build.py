"""Next-round datasets: ingested frames -> labelled, de-duplicated, replay-mixed, leakage-free splits.

Labels, in order of availability per frame:
1. depth uploaded with the frame (`depth_gt` from a synthetic source, `depth_sensor` from an RGB-D rig);
2. a pseudo-label from a bigger teacher checkpoint or ONNX model (`--teacher`);
3. none: the frame is counted as unlabelled and left out (self-supervision from neighbour frames is
   not used for training here; the neighbour frames stay in the store for it).

The split is by (device, time block): every frame of one device inside one block goes to the same
side, so near-identical neighbouring frames never straddle train and val.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from edgedepth.errors import DataError

log = logging.getLogger(__name__)

LABEL_KINDS = ("depth_gt", "depth_sensor")


@dataclass
class RoundConfig:
    store: str
    out: str
    since: Optional[str] = None
    teacher: Optional[str] = None
    replay: Sequence[str] = ()  # earlier round folders to sample from
    replay_fraction: float = 0.3  # replay frames as a fraction of the new frames
    val_fraction: float = 0.2
    time_block_s: float = 600.0  # frames of one device within this span stay on one side of the split
    dedupe_distance: float = 0.02  # thumbnails closer than this (mean abs, 0..1) count as duplicates
    seed: int = 0
    endpoint_url: Optional[str] = None


@dataclass
class RoundReport:
    out: str
    ingested: int = 0
    labelled: Dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    unreadable: int = 0
    duplicates: int = 0
    train: int = 0
    val: int = 0
    replay: int = 0
    domains: Dict[str, int] = field(default_factory=dict)


def thumbnail(rgb: np.ndarray, size: int = 16) -> np.ndarray:
    """A tiny grey embedding for near-duplicate detection (0..1 floats)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255.0


def dedupe(embeddings: List[np.ndarray], scores: List[float], distance: float) -> List[int]:
    """Indices to keep: greedy in descending score, dropping any frame within `distance` of a kept one."""
    order = sorted(range(len(embeddings)), key=lambda i: -scores[i])
    kept: List[int] = []
    kept_vecs: List[np.ndarray] = []
    for i in order:
        e = embeddings[i]
        if kept_vecs and float(np.min(np.mean(np.abs(np.stack(kept_vecs) - e), axis=1))) < distance:
            continue
        kept.append(i)
        kept_vecs.append(e)
    return sorted(kept)


def split_groups(metas: List[dict], val_fraction: float, block_s: float, seed: int) -> List[str]:
    """'train' or 'val' per frame, assigning whole (device, time block) groups to one side."""
    from edgedepth.fleet.store.base import parse_time

    keys = []
    for m in metas:
        t = parse_time(m["captured_at"]).timestamp()
        keys.append((m.get("device_id", "?"), int(t // block_s)))
    groups = sorted(set(keys))
    rng = random.Random(seed)
    rng.shuffle(groups)
    n_val_target = val_fraction * len(metas)
    val_groups = set()
    counts: Dict[tuple, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    n_val = 0
    for g in groups:
        if n_val >= n_val_target or len(val_groups) >= len(groups) - 1:
            break
        val_groups.add(g)
        n_val += counts[g]
    return ["val" if k in val_groups else "train" for k in keys]


def _decode_depth(data: bytes, units: Optional[str], name: str) -> np.ndarray:
    if name.endswith(".npy") or units == "m_float32":
        import io

        depth = np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)
    else:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16:
            raise DataError(f"depth file {name} is not a 16-bit PNG")
        depth = raw.astype(np.float32) / 1000.0
    depth[~np.isfinite(depth)] = 0.0
    return depth


def _load_item(store, meta: dict):
    """(rgb, depth or None, label kind or None) of a stored item."""
    files = meta["files"]
    rgb_name = next(n for n, e in files.items() if e["kind"] == "rgb" and e.get("offset", 0) == 0)
    bgr = cv2.imdecode(np.frombuffer(store.read_file(meta["id"], rgb_name), np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"item {meta['id'][:12]}: {rgb_name} does not decode")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for kind in LABEL_KINDS:
        for name, e in files.items():
            if e["kind"] == kind:
                depth = _decode_depth(store.read_file(meta["id"], name), e.get("units"), name)
                if depth.shape != rgb.shape[:2]:
                    raise DataError(f"item {meta['id'][:12]}: depth {depth.shape} vs image {rgb.shape[:2]}")
                return rgb, depth, kind
    return rgb, None, None


class _Teacher:
    def __init__(self, path: str) -> None:
        from edgedepth.predictor import load_predictor

        self.path = path
        self.predict = load_predictor(path)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        depth, _unc = self.predict(rgb)
        return depth.astype(np.float32)


def _write_split(root: Path, rows: List[dict]) -> None:
    from edgedepth.data.formats import write_meta, write_sample

    for row in rows:
        write_sample(root, row["name"], row["rgb"], row["depth"])
    write_meta(root, {
        "source": "round",
        "domains": {r["name"]: r["domain"] for r in rows if r["domain"]},
        "intrinsics_per_frame": {r["name"]: r["intrinsics"] for r in rows if r["intrinsics"] is not None},
        "labels": {r["name"]: r["label"] for r in rows},
    })


def _replay_rows(replay: Iterable[str], n: int, seed: int) -> List[dict]:
    """A random sample of n training frames from earlier round (or any dataset) folders."""
    from edgedepth.data.formats import open_dataset

    pool = []
    for spec in replay:
        train_dir = Path(spec) / "train"
        ds = open_dataset(str(train_dir if train_dir.is_dir() else spec))
        pool.extend((ds, i, spec) for i in range(len(ds)))
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    rows = []
    for ds, i, spec in chosen:
        s = ds[i]
        tag = hashlib.sha256(f"{spec}:{s.name}".encode()).hexdigest()[:16]
        rows.append(dict(name=f"replay_{tag}", rgb=s.rgb, depth=s.depth, domain=s.domain,
                         intrinsics=None if s.intrinsics is None else np.asarray(s.intrinsics).tolist(),
                         label="replay", item=None, replay_of=f"{spec}:{s.name}"))
    return rows


def build_round(cfg: RoundConfig) -> RoundReport:
    """Collect ingested frames from a store into a train/val dataset folder with lineage.json."""
    from edgedepth.fleet.store import open_store

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} already exists and is not empty; choose a new round folder")
    report = RoundReport(out=str(out))
    teacher = _Teacher(cfg.teacher) if cfg.teacher else None
    rows: List[dict] = []
    metas: List[dict] = []
    store = open_store(cfg.store, endpoint_url=cfg.endpoint_url)
    try:
        for meta in store.iter_items(since=cfg.since):
            report.ingested += 1
            try:
                rgb, depth, label = _load_item(store, meta)
            except (DataError, KeyError, StopIteration, ValueError) as exc:
                report.unreadable += 1
                log.warning("skipping item %s: %s", str(meta.get("id"))[:12], exc)
                continue
            if depth is None and teacher is not None:
                depth, label = teacher(rgb), "teacher"
            if depth is None:
                report.unlabelled += 1
                continue
            report.labelled[label] = report.labelled.get(label, 0) + 1
            rows.append(dict(name=meta["id"][:24], rgb=rgb, depth=depth, domain=meta.get("domain"),
                             intrinsics=meta.get("intrinsics"), label=label, item=meta["id"],
                             score=float(meta.get("score", 0.0))))
            metas.append(meta)
    finally:
        store.close()

    keep = dedupe([thumbnail(r["rgb"]) for r in rows], [r["score"] for r in rows], cfg.dedupe_distance)
    report.duplicates = len(rows) - len(keep)
    rows = [rows[i] for i in keep]
    metas = [metas[i] for i in keep]
    if not rows:
        raise DataError(f"no labelled frames in {cfg.store}"
                        + (f" since {cfg.since}" if cfg.since else "")
                        + ": upload frames with depth, or pass --teacher CKPT for pseudo-labels")
    sides = split_groups(metas, cfg.val_fraction, cfg.time_block_s, cfg.seed)
    train_rows = [r for r, s in zip(rows, sides) if s == "train"]
    val_rows = [r for r, s in zip(rows, sides) if s == "val"]
    replay_rows = _replay_rows(cfg.replay, int(round(cfg.replay_fraction * len(train_rows))), cfg.seed)
    train_rows += replay_rows
    out.mkdir(parents=True, exist_ok=True)
    _write_split(out / "train", train_rows)
    if val_rows:
        _write_split(out / "val", val_rows)
    report.train, report.val, report.replay = len(train_rows), len(val_rows), len(replay_rows)
    for r in train_rows + val_rows:
        d = r["domain"] or "unknown"
        report.domains[d] = report.domains.get(d, 0) + 1
    lineage = {
        "config": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items()},
        "report": asdict(report),
        "frames": [{"name": r["name"], "split": split, "item": r["item"], "label": r["label"],
                    "domain": r["domain"], "replay_of": r.get("replay_of")}
                   for split, rs in (("train", train_rows), ("val", val_rows)) for r in rs],
    }
    tmp = out / ".lineage.json.tmp"
    tmp.write_text(json.dumps(lineage, indent=1))
    os.replace(tmp, out / "lineage.json")
    return report
