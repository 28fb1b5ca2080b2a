"""Next-round datasets: ingested frames -> labelled, de-duplicated, replay-mixed, leakage-free splits.

Labels, in order of availability per frame:
1. depth uploaded with the frame (`depth_gt` from a synthetic source, `depth_sensor` from an RGB-D rig)
   covering at least half the pixels;
2. a pseudo-label from a bigger teacher (`--teacher`: a .pt checkpoint, any .onnx depth model, a
   transformers model; edgedepth.teachers). A relative teacher is aligned per frame to metric points:
   sparse uploaded depth, or the ground plane (`camera_height` and the frame's intrinsics); frames with
   neither stay unlabelled;
3. experimental, with `--self-supervised MODEL`: photometric refinement of MODEL's prediction against
   the neighbour frames uploaded with the frame, through their camera poses (edgedepth.rounds.selfsup);
4. none: the frame is counted as unlabelled and left out.

Output layout (a folder the trainer reads directly)::

    OUT/rgb/, OUT/depth/, OUT/meta.json       the TRAIN split (new frames + replay), folder format
    OUT/val/rgb/, OUT/val/depth/, OUT/val/meta.json   the VAL split (new frames only)
    OUT/lineage.json                          config, counts, and every frame's store item id / origin

so `edgedepth train --init-from CURRENT --data rounds/0,rounds/1 --val rounds/1/val` works as is.

The split is by (device, time block): every frame of one device inside one block goes to the same
side, so near-identical neighbouring frames never straddle train and val. Near-duplicates (16x16 grey
thumbnails, normalised for brightness and contrast, closer than `dedupe_distance` in mean absolute
z-score; consecutive video frames are ~0.02-0.1 apart, different scenes > 0.5) are dropped, keeping
the higher-scored frame. Items are read
twice (a cheap first pass for labels, thumbnails and metadata, then only the kept ones in full), and
what the first pass learns of each frame waits on disk (edgedepth.rounds.spill) while the output files
are written as the frames come (edgedepth.rounds.splitfiles): memory stays flat however large the store
(scripts/bench_round_build.py).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgedepth.data.formats import LABEL_KIND, write_sample
from edgedepth.errors import ConfigError, DataError
from edgedepth.fsutil import DeferredFsync
from edgedepth.rounds.dedupe import dedupe_search, greedy_order
from edgedepth.rounds.labels import read_depth, read_rgb, uploaded_label
from edgedepth.rounds.spill import CandidateSpill, scratch_dir
from edgedepth.rounds.splitfiles import SplitFiles
from edgedepth.teachers.labels import DENSE_SENSOR

log = logging.getLogger(__name__)

VAL_DIR = "val"
LINEAGE = "lineage.json"
FORMAT = "edgedepth.round/1"
DEDUPE_EXHAUSTIVE_MAX = 2000  # above this many frames, near-duplicates are found with a grid pre-filter


@dataclass
class RoundConfig:
    store: str
    out: str
    since: Optional[str] = None  # only items received strictly after this ISO 8601 UTC time
    teacher: Optional[str] = None  # any edgedepth.teachers spec giving pseudo-labels to frames without depth
    teacher_options: Optional[dict] = None  # edgedepth.teachers.TeacherOptions fields
    camera_height: Optional[float] = None  # metres above the floor: ground-plane points (relative teacher)
    label_cache: Optional[str] = None  # teacher-output cache folder (default: the user cache)
    # False: depth uploaded with the frames is not used as a label (the teacher labels every frame; for
    # comparing teacher labels with ground truth, as the fleet simulation does)
    use_uploaded_depth: bool = True
    self_supervised: Optional[str] = None  # .pt / .onnx refined photometrically against neighbour frames
    replay: Sequence[str] = ()  # earlier round (or any dataset) folders to sample from
    replay_fraction: float = 0.3  # replay frames as a fraction of the new training frames
    val_fraction: float = 0.2
    time_block_s: float = 600.0  # frames of one device within this span stay on one side of the split
    dedupe_distance: float = 0.1  # normalised thumbnails closer than this (mean abs) are duplicates
    seed: int = 0
    endpoint_url: Optional[str] = None

    def validate(self) -> "RoundConfig":
        if not 0.0 <= self.replay_fraction <= 10.0:
            raise ConfigError(f"--replay-fraction must be in 0..10, got {self.replay_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.time_block_s <= 0:
            raise ConfigError(f"--time-block must be positive seconds, got {self.time_block_s}")
        if self.dedupe_distance < 0:
            raise ConfigError(f"--dedupe-distance must be >= 0, got {self.dedupe_distance}")
        if self.teacher and not (self.teacher.startswith("hf:") or Path(self.teacher).exists()):
            raise ConfigError(f"--teacher {self.teacher} does not exist (a .pt checkpoint, an .onnx model, "
                              "hf:ORG/NAME or a save_pretrained folder)")
        if not self.use_uploaded_depth and not self.teacher:
            raise ConfigError("ignoring uploaded depth needs a --teacher to label the frames")
        if self.self_supervised and not Path(self.self_supervised).is_file():
            raise ConfigError(f"--self-supervised {self.self_supervised} does not exist (the current "
                              "model, a .pt checkpoint or .onnx model)")
        for spec in self.replay:
            if not Path(spec).is_dir():
                raise ConfigError(f"--replay {spec} is not a dataset folder "
                                  "(an earlier round, or a folder with rgb/ and depth/)")
        return self


@dataclass
class RoundReport:
    out: str
    ingested: int = 0
    labelled: Dict[str, int] = field(default_factory=dict)  # label source -> frames kept
    # edgedepth.teachers.labels kind (sensor, teacher-metric, teacher-aligned, self-supervised) -> frames
    label_kinds: Dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    unreadable: int = 0
    duplicates: int = 0
    train: int = 0  # new frames + replay in the train split
    val: int = 0
    replay: int = 0
    groups: Dict[str, int] = field(default_factory=dict)  # split -> (device, time block) groups
    domains: Dict[str, int] = field(default_factory=dict)
    devices: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.label_kinds.items())) or "none"
        doms = ", ".join(f"{k} {v}" for k, v in sorted(self.domains.items()))
        return (f"round {self.out}: {self.ingested} ingested, labels: {labels}; "
                f"{self.unlabelled} unlabelled, {self.unreadable} unreadable, {self.duplicates} "
                f"near-duplicates dropped -> train {self.train} (incl. {self.replay} replay), "
                f"val {self.val}; domains: {doms}")


def thumbnail(rgb: np.ndarray, size: int = 16) -> np.ndarray:
    """A tiny grey embedding for near-duplicate detection: 16x16, zero mean, unit variance.

    Normalising brightness and contrast matters: without it every dark (night) or hazy (fog) frame
    is within a few grey levels of every other one and would be dropped as a "duplicate".
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    t = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    return (t - t.mean()) / (t.std() + 1.0)


def dedupe(embeddings: List[np.ndarray], scores: List[float], distance: float) -> List[int]:
    """Indices to keep: greedy in descending score, dropping any frame within `distance` of a kept one.

    Large rounds use the grid-filtered search of edgedepth.rounds.dedupe (the same answer)."""
    if len(embeddings) > DEDUPE_EXHAUSTIVE_MAX and embeddings[0].size == 256:
        from edgedepth.rounds.dedupe import dedupe_fast

        return dedupe_fast(embeddings, scores, distance)
    order = sorted(range(len(embeddings)), key=lambda i: (-scores[i], i))
    kept: List[int] = []
    kept_vecs = np.empty((len(embeddings), embeddings[0].size if embeddings else 0), np.float32)
    for i in order:
        e = embeddings[i]
        n = len(kept)
        if n and float(np.min(np.mean(np.abs(kept_vecs[:n] - e), axis=1))) < distance:
            continue
        kept_vecs[n] = e
        kept.append(i)
    return sorted(kept)


def group_key(meta: dict, block_s: float) -> Tuple[str, int]:
    """(device id, time block index) of an item: the unit that never straddles train and val."""
    from edgedepth.fleet.store.base import parse_time

    t = parse_time(str(meta["captured_at"])).timestamp()
    return str(meta.get("device_id", "?")), int(t // block_s)


def split_groups(metas: List[dict], val_fraction: float, block_s: float, seed: int) -> List[str]:
    """'train' or 'val' per frame, assigning whole (device, time block) groups to one side (val_groups)."""
    keys = [group_key(m, block_s) for m in metas]
    counts: Dict[Tuple[str, int], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    chosen = val_groups(counts, val_fraction, seed)
    return ["val" if k in chosen else "train" for k in keys]


def val_groups(counts: Dict[Tuple[str, int], int], val_fraction: float, seed: int) -> set:
    """The (device, time block) groups of the val split, from the frame count of every group.

    Groups are shuffled (seeded) and given to val until it holds about `val_fraction` of the frames;
    at least one group always stays in train, so a round from a single group has no val split.
    """
    groups = sorted(counts)
    random.Random(seed).shuffle(groups)
    target = val_fraction * sum(counts.values())
    chosen = set()
    n_val = 0
    for g in groups:
        if n_val >= target or len(chosen) >= len(groups) - 1:
            break
        if n_val and n_val + counts[g] > 1.5 * target:  # skip a group that would overshoot a lot
            continue
        chosen.add(g)
        n_val += counts[g]
    return chosen


def _labeler(cfg: RoundConfig):
    """The TeacherLabeler of `cfg.teacher` (metric labels; relative teachers aligned), or None."""
    if not cfg.teacher:
        return None
    from edgedepth.teachers import LabelCache, LabelPolicy, TeacherLabeler, TeacherOptions, open_teacher

    teacher = open_teacher(cfg.teacher, TeacherOptions(**(cfg.teacher_options or {})))
    return TeacherLabeler(teacher, LabelPolicy(target="metric", camera_height=cfg.camera_height),
                          LabelCache(cfg.label_cache))


def _teacher_label(labeler, meta: dict, rgb: np.ndarray, sparse: Optional[np.ndarray]):
    """(depth, label kind) from the teacher; (None, why) when a relative teacher has no metric points."""
    from edgedepth.teachers import FrameInput

    K = meta.get("intrinsics")
    lab = labeler.label_many([FrameInput(rgb, sparse, None if K is None else np.asarray(K, np.float64))])[0]
    return (lab.depth, lab.kind) if lab.depth is not None else (None, lab.why)


def _frame_name(item_id: str) -> str:
    return item_id[:24]


def _replay_rows(replay: Iterable[str], n: int, seed: int, out: Path) -> Tuple[List[dict], List[dict]]:
    """Copy a seeded random sample of n training frames of earlier rounds (any dataset folders) into out.

    Returns (rows, sources). Only the train side of a round folder is sampled (its root; val/ is not).
    """
    from edgedepth.data.dataset import open_dataset
    from edgedepth.data.formats import write_sample
    from edgedepth.train.torchdata import dataset_lineage

    specs = list(replay)
    if n <= 0 or not specs:
        return [], []
    pool = []
    sources = []
    for spec in specs:
        ds = open_dataset(spec)
        pool.extend((ds, i, spec) for i in range(len(ds)))
        sources.append({**dataset_lineage(spec), "frames": len(ds)})
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(n, len(pool)))
    rows = []
    for ds, i, spec in chosen:
        s = ds[i]
        tag = hashlib.sha256(f"{Path(spec).resolve()}:{s.name}".encode()).hexdigest()[:16]
        name = f"replay_{tag}"
        write_sample(out, name, s.rgb, s.depth)
        fm = getattr(ds, "frames_meta", {}).get(s.name) or {}
        rows.append(dict(name=name, domain=s.domain, label="replay", item=None, device_id=None,
                         label_kind=fm.get("label_kind", "sensor"),
                         captured_at=None, score=None,
                         intrinsics=None if s.intrinsics is None else np.asarray(s.intrinsics).tolist(),
                         replay_of=f"{spec}:{s.name}"))
    return rows, sources


def _collect(store, cfg: RoundConfig, teacher, report: RoundReport, progress: Optional[Callable[[int], None]],
             selfsup, spill: CandidateSpill) -> None:
    """First pass: every item since `cfg.since` with a usable label into `spill` (thumbnail + metadata)."""
    for meta in store.iter_items(since=cfg.since):
        report.ingested += 1
        if progress is not None:
            progress(1)
        up = uploaded_label(meta) if cfg.use_uploaded_depth or teacher is None else None
        label = up[0] if up else ("teacher" if teacher is not None else None)
        if label is None and selfsup is not None and selfsup.available(meta):
            label = "selfsup"
        if label is None:
            report.unlabelled += 1
            continue
        try:
            rgb = read_rgb(store, meta)
            group = group_key(meta, cfg.time_block_s)
        except (DataError, KeyError, ValueError, TypeError) as exc:
            report.unreadable += 1
            log.warning("skipping item %s: %s", str(meta.get("id"))[:12], exc)
            continue
        score = meta.get("score", 0.0)
        score = float(score) if isinstance(score, (int, float)) and np.isfinite(score) else 0.0
        spill.add(meta, label, score, thumbnail(rgb), group)


def _select(spill: CandidateSpill, cfg: RoundConfig, report: RoundReport) -> np.ndarray:
    """The split of every frame in sorted order: 0 dropped (near-duplicate), 1 train, 2 val."""
    order = spill.sorted_order()  # position -> frame index
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))  # frame index -> position: de-duplication ties go to the earlier
    kept = dedupe_search(spill.blocks.array(), spill.thumbs, greedy_order(spill.scores.array(), rank),
                         cfg.dedupe_distance)[order]
    report.duplicates = int(len(order) - kept.sum())
    device, block = spill.device.array()[order][kept], spill.block.array()[order][kept]
    uniq, inverse, counts = np.unique(np.stack([device.astype(np.int64), block], axis=1), axis=0,
                                      return_inverse=True, return_counts=True)
    keys = [(spill.devices[int(d)], int(b)) for d, b in uniq]  # one per (device, time block) group
    chosen = val_groups(dict(zip(keys, counts.tolist())), cfg.val_fraction, cfg.seed)
    is_val = np.array([k in chosen for k in keys], bool)[inverse.reshape(-1)]
    side = np.zeros(len(order), np.int8)
    side[kept] = np.where(is_val, 2, 1)
    return side


def write_splits(cfg: RoundConfig, out: Path, files: SplitFiles, groups: Dict[str, set],
                 report: RoundReport) -> List[dict]:
    """Add the replay sample to the train rows, write both splits' meta.json and count them in `report`;
    returns the replay sources for the lineage. Shared by the local and the Ray round builders."""
    n_replay = int(round(cfg.replay_fraction * files.count["train"]))
    replay_rows, replay_sources = _replay_rows(cfg.replay, n_replay, cfg.seed, out)
    for r in replay_rows:
        files.add("train", r)
    files.write_meta(out, "train")
    if files.count["val"]:
        files.write_meta(out / VAL_DIR, "val")
    report.train, report.val, report.replay = files.count["train"], files.count["val"], len(replay_rows)
    report.groups = {k: len(v) for k, v in groups.items()}
    for d, n in [*files.domains["train"].items(), *files.domains["val"].items()]:  # train (incl. replay), val
        report.domains[d] = report.domains.get(d, 0) + n
    return replay_sources


def _build_frames(cfg: RoundConfig, store, out: Path, teacher, selfsup, report: RoundReport,
                  progress: Optional[Callable[[int], None]], spill: CandidateSpill,
                  files: SplitFiles) -> Dict[str, set]:
    """Both passes over the store: select the frames (first pass, spilled), then label and write the kept
    ones in sorted order, their rows streamed to `files`; returns the (device, time block) groups per split.
    Closes the store."""
    groups: Dict[str, set] = {"train": set(), "val": set()}
    try:
        _collect(store, cfg, teacher, report, progress, selfsup, spill)
        if not len(spill):
            why = (f"{report.ingested} item(s) read, {report.unlabelled} without depth, "
                   f"{report.unreadable} unreadable")
            raise DataError(f"no labelled frames in the store {cfg.store}"
                            + (f" since {cfg.since}" if cfg.since else "") + f" ({why}): upload frames "
                            "with depth (synthetic or RGB-D sources), or pass --teacher MODEL for "
                            "pseudo-labels (or --self-supervised MODEL for frames uploaded with "
                            "neighbours and poses)")
        # arrival order depends on upload timing; a fixed order makes the same items give the same round
        sides = _select(spill, cfg, report)
        scores = spill.scores.array()
        out.mkdir(parents=True, exist_ok=True)
        for pos, (seq, label, meta) in enumerate(spill.iter_sorted()):
            if not sides[pos]:
                continue
            side = "train" if sides[pos] == 1 else "val"
            score = float(scores[seq])
            root = out if side == "train" else out / VAL_DIR
            try:
                rgb = read_rgb(store, meta)
                up = uploaded_label(meta)
                kind = LABEL_KIND.get(label, label)
                if label == "teacher":
                    # sparse uploaded depth (a ToF, LiDAR returns) is the relative teacher's metric points
                    sparse = read_depth(store, meta, up[1], rgb.shape[:2]) if up else None
                    depth, kind = _teacher_label(teacher, meta, rgb, sparse)
                elif up:
                    depth = read_depth(store, meta, up[1], rgb.shape[:2])
                    if teacher is not None and float((depth > 0).mean()) < DENSE_SENSOR:
                        aligned, why = _teacher_label(teacher, meta, rgb, depth)
                        if aligned is not None:  # else: the sparse depth itself is the label
                            depth, kind = aligned, why
                else:
                    depth = selfsup(store, meta, rgb)
            except (DataError, KeyError, ValueError) as exc:
                report.unreadable += 1
                log.warning("skipping item %s: %s", str(meta.get("id"))[:12], exc)
                continue
            if depth is None:  # a relative teacher with nothing to align it to: `kind` says why
                report.unlabelled += 1
                log.warning("item %s left unlabelled: relative teacher, no metric points to align it (%s); "
                            "upload sparse depth with the frames or give the camera height",
                            str(meta.get("id"))[:12], kind)
                continue
            name = _frame_name(meta["id"])
            fmt = "png" if depth.max(initial=0) <= 65.0 else "npy"  # uint16 mm PNG tops out at 65.5 m
            write_sample(root, name, rgb, depth, depth_format=fmt)
            files.add(side, dict(name=name, domain=meta.get("domain"), label=label, label_kind=kind,
                                 item=meta["id"], device_id=meta.get("device_id"),
                                 captured_at=meta.get("captured_at"), score=score,
                                 intrinsics=meta.get("intrinsics"), replay_of=None))
            groups[side].add(group_key(meta, cfg.time_block_s))
            report.labelled[label] = report.labelled.get(label, 0) + 1
            report.label_kinds[kind] = report.label_kinds.get(kind, 0) + 1
            dev = str(meta.get("device_id", "?"))
            report.devices[dev] = report.devices.get(dev, 0) + 1
    finally:
        store.close()
    if not files.count["train"] and not files.count["val"]:
        raise DataError(f"no frame of {cfg.store} could be read; see the warnings above")
    return groups


@DeferredFsync()  # thousands of frame files: one filesystem sync at the end instead of 4 fsyncs each
def build_round(cfg: RoundConfig, progress: Optional[Callable[[int], None]] = None) -> RoundReport:
    """Collect ingested frames from a store into a train/val dataset folder with lineage.json.

    Raises DataError when the store holds no labelled frame (since `cfg.since`), or `cfg.out` is a
    non-empty folder. `progress(n)` is called as items are read (e.g. a tqdm bar's update).
    """
    from edgedepth import __version__
    from edgedepth.fleet.store import open_store

    cfg.validate()
    t0 = time.monotonic()
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; choose a new round folder")
    report = RoundReport(out=str(out))
    teacher = _labeler(cfg)
    selfsup = None
    if cfg.self_supervised:
        from edgedepth.rounds.selfsup import SelfSupervisedLabeler

        selfsup = SelfSupervisedLabeler(cfg.self_supervised)
    store = open_store(cfg.store, endpoint_url=cfg.endpoint_url, must_exist=True)
    with scratch_dir(out) as work, CandidateSpill(work / "candidates") as spill:
        files = SplitFiles(work / "splits")
        try:
            groups = _build_frames(cfg, store, out, teacher, selfsup, report, progress, spill, files)
            replay_sources = write_splits(cfg, out, files, groups, report)
            report.seconds = time.monotonic() - t0
            lineage = {
                "format": FORMAT,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "code_version": __version__,
                "config": {k: (list(v) if isinstance(v, (list, tuple)) else v)
                           for k, v in asdict(cfg).items()},
                "teacher": {"path": teacher.teacher.source, "sha256": teacher.teacher.identity,
                            "output": teacher.teacher.kind, "backend": teacher.teacher.backend}
                if teacher else None,
                "self_supervision": {"model": selfsup.path, "sha256": selfsup.sha256, "method": "photometric "
                                     "refinement against posed neighbour frames (experimental)",
                                     "mean_valid_fraction": float(np.mean(selfsup.valid_fractions))
                                     if selfsup.valid_fractions else None} if selfsup else None,
                "replay_sources": replay_sources,
                "report": asdict(report),
            }
            files.write_lineage(out / LINEAGE, lineage)
        finally:
            files.close()
    log.info(report.summary())
    return report


def round_val_dir(round_dir: str) -> Optional[str]:
    """The val split of a round folder, or None when the round has none."""
    p = Path(round_dir) / VAL_DIR
    return str(p) if (p / "rgb").is_dir() else None
