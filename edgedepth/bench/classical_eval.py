"""Evaluate the classical two-view baseline on a sequence dataset with the learned model's metrics.

Every frame of the set is a reference frame (so the frame set is exactly the one a learned model is
scored on); its partner is the frame `gap` later in the same sequence (or `gap` earlier at the end of
a sequence). A frame whose pair fails (too few matches, no partner, no baseline, ...) is counted by
reason and predicts nothing.

Two views of the result, both the mean of per-frame figures (edgedepth.metrics conventions):
- `covered`: over the pixels the method predicts, with `coverage` (predicted / ground-truth-valid
  pixels, failed frames counting 0): how good the method is where it answers;
- `filled` (the headline, comparable with a dense learned model): over all ground-truth-valid pixels,
  holes filled with the nearest prediction, and frames with no prediction at all filled with the
  median of the method's own predictions over the set (no ground truth used).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edgedepth.bench.classical import OK, ClassicalConfig, classical_depth, config_dict, fill_holes
from edgedepth.bench.twoview import relative_motion
from edgedepth.errors import ConfigError, DataError
from edgedepth.metrics import frame_metrics, mean_metrics, valid_mask

log = logging.getLogger(__name__)

NO_PARTNER = "no_partner"
BAD_INPUT = "bad_input"
HEADLINE = "filled"


@dataclass
class SeqFrame:
    """One frame of a posed sequence (what the baseline needs)."""

    rgb: np.ndarray  # uint8 HxWx3 RGB
    depth: Optional[np.ndarray]  # float32 HxW metres, 0 = invalid (None: no ground truth)
    pose: np.ndarray  # 4x4 camera-to-world
    K: np.ndarray  # 3x3
    name: str = ""
    sequence: Any = None  # frames pair only within one sequence; None = one sequence


@dataclass
class ClassicalReport:
    method: str
    gap: int
    frames: int
    status_counts: Dict[str, int]
    coverage: float
    covered: Dict[str, float]
    filled: Dict[str, float]
    fill_value: float
    seconds_per_frame: float
    config: Dict[str, Any] = field(default_factory=dict)
    depth_range: List[float] = field(default_factory=list)
    match_stats: Dict[str, float] = field(default_factory=dict)
    per_frame: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def headline(self) -> Dict[str, float]:
        return self.filled

    def to_dict(self, with_frames: bool = False) -> Dict[str, Any]:
        d = {"method": self.method, "gap": self.gap, "frames": self.frames, "headline": HEADLINE,
             "pairs_ok": self.status_counts.get(OK, 0), "status_counts": self.status_counts,
             "coverage": self.coverage, "covered": self.covered, "filled": self.filled,
             "fill_value": self.fill_value, "seconds_per_frame": self.seconds_per_frame,
             "depth_range": self.depth_range, "match_stats": self.match_stats, "config": self.config}
        if with_frames:
            d["per_frame"] = [{k: v for k, v in row.items() if k not in ("pred", "valid")}
                              for row in self.per_frame]
        return d


def partner_index(frames: Sequence[SeqFrame], i: int, gap: int) -> Optional[int]:
    """The frame `gap` later in the same sequence, else `gap` earlier, else None."""
    for j in (i + gap, i - gap):
        if 0 <= j < len(frames) and frames[j].sequence == frames[i].sequence:
            return j
    return None


def evaluate_classical(frames: Sequence[SeqFrame], gap: int = 6, cfg: Optional[ClassicalConfig] = None,
                       fill: str = "nearest", min_depth: float = 0.1, max_depth: float = 40.0,
                       keep_predictions: bool = False,
                       on_frame: Optional[Callable[[int, int, str], None]] = None) -> ClassicalReport:
    """Run the baseline on every frame and score it (see the module docstring).

    With keep_predictions, each per-frame row also holds the filled prediction ("pred", HxW float32)
    and the mask of predicted pixels ("valid") so a caller can compare another method on them.
    """
    if gap < 1:
        raise ConfigError(f"--gap must be >= 1, got {gap}")
    if not frames:
        raise DataError("no frames to evaluate")
    cfg = cfg or ClassicalConfig()
    counts: Counter = Counter()
    covered_rows: List[Optional[Dict[str, float]]] = []
    filled_rows: List[Optional[Dict[str, float]]] = []
    coverages: List[float] = []
    per_frame: List[Dict[str, Any]] = []
    pending: List[int] = []  # frames with no prediction: filled once the set's median is known
    samples: List[np.ndarray] = []  # a subsample of every prediction, for that median
    consistent, inliers = [], []
    t0 = time.perf_counter()
    for i, fr in enumerate(frames):
        if fr.depth is None:
            raise DataError(f"frame {fr.name or i} has no ground-truth depth; the benchmark needs depth")
        gt_ok = valid_mask(fr.depth, min_depth, max_depth)
        j = partner_index(frames, i, gap)
        row: Dict[str, Any] = {"name": fr.name, "partner": None if j is None else frames[j].name}
        status, stats = NO_PARTNER, {}
        depth = np.zeros(fr.depth.shape, np.float32)
        valid = np.zeros(fr.depth.shape, bool)
        if j is not None:
            try:
                motion = relative_motion(fr.pose, frames[j].pose, fr.K)
                res = classical_depth(fr.rgb, frames[j].rgb, motion, cfg)
                status, stats, depth, valid = res.status, res.stats, res.depth, res.valid
            except (DataError, ConfigError) as exc:  # one bad frame is counted, not fatal
                log.warning("frame %s with %s: %s", fr.name, frames[j].name, exc)
                status = BAD_INPUT
            if "ransac_inliers" in stats and stats["ransac_inliers"] > 0:
                inliers.append(stats["ransac_inliers"])
                consistent.append(stats["consistent"])
        if depth.shape != fr.depth.shape:
            raise DataError(f"frame {fr.name}: rgb {depth.shape} and depth {fr.depth.shape} sizes differ")
        counts[status] += 1
        n_gt = int(gt_ok.sum())
        cov = float((valid & gt_ok).sum()) / n_gt if n_gt else 0.0
        coverages.append(cov)
        row.update(status=status, coverage=cov, **{k: v for k, v in stats.items() if np.isfinite(v)})
        if valid.any():
            covered_rows.append(frame_metrics(depth, fr.depth, valid, min_depth, max_depth))
            samples.append(depth[valid][:: max(1, int(valid.sum()) // 2000)])
            dense = fill_holes(depth, valid, fill)
            filled_rows.append(frame_metrics(dense, fr.depth, None, min_depth, max_depth))
            if keep_predictions:
                row["pred"], row["valid"] = dense, valid
        else:
            covered_rows.append(None)
            filled_rows.append(None)
            pending.append(i)
        per_frame.append(row)
        if on_frame is not None:
            on_frame(i, len(frames), status)
    elapsed = time.perf_counter() - t0
    fill_value = float(np.median(np.concatenate(samples))) if samples else float("nan")
    for i in pending:  # frames the method could not predict at all: the set's own median depth
        if np.isfinite(fill_value):
            flat = np.full(frames[i].depth.shape, fill_value, np.float32)
            filled_rows[i] = frame_metrics(flat, frames[i].depth, None, min_depth, max_depth)
            if keep_predictions:
                per_frame[i]["pred"], per_frame[i]["valid"] = flat, np.zeros(flat.shape, bool)
    if not samples:
        log.warning("the classical baseline predicted no pixel on any of %d frames (%s)",
                    len(frames), dict(counts))
    match_stats: Dict[str, float] = {}
    if inliers:
        agree = np.asarray(consistent) / np.asarray(inliers)
        match_stats = {"median_ransac_inliers": float(np.median(inliers)),
                       "median_known_motion_agreement": float(np.median(agree))}
        if np.median(agree) < 0.5:
            log.warning("only %.0f%% of RANSAC inliers agree with the known poses: check the pose convention "
                        "(camera-to-world, OpenCV axes) and intrinsics", 100 * np.median(agree))
    return ClassicalReport(
        method=cfg.method if cfg.method == "sgbm" else f"flow-{cfg.flow}", gap=gap, frames=len(frames),
        status_counts=dict(counts), coverage=float(np.mean(coverages)),
        covered=mean_metrics(covered_rows), filled=mean_metrics(filled_rows), fill_value=fill_value,
        seconds_per_frame=elapsed / len(frames), config=config_dict(cfg), depth_range=[min_depth, max_depth],
        match_stats=match_stats, per_frame=per_frame)


def iter_sequence(path: str) -> Iterator[SeqFrame]:
    """Frames of a dataset directory that has poses and intrinsics (edgedepth.data.formats).

    Frames pair only within one sequence: the per-frame "sequence", "scene" or "scene_seed" entry of
    meta.json (a synthetic video changes scene every so many frames), else the whole folder.
    """
    from edgedepth.data.dataset import open_dataset

    ds = open_dataset(path)
    meta = getattr(ds, "meta", None) or {}
    if meta.get("sequence") is False:
        raise DataError(f"{path} holds independent frames (meta.json: sequence=false), not a video: the "
                        "classical baseline needs consecutive posed frames; render one with "
                        "`edgedepth data synth --sequence` (write_synth_dataset(..., sequence=True))")
    frames_meta = getattr(ds, "frames_meta", None) or {}
    for i in range(len(ds)):
        s = ds[i]
        if s.pose is None or s.intrinsics is None:
            missing = "pose" if s.pose is None else "intrinsics"
            raise DataError(
                f"frame {s.name} of {path} has no {missing}: the classical "
                "baseline needs per-frame camera-to-world poses and intrinsics in meta.json; write a "
                "sequence with `edgedepth data synth --sequence` (or add them to meta.json)")
        yield SeqFrame(rgb=s.rgb, depth=s.depth, pose=np.asarray(s.pose, np.float64),
                       K=np.asarray(s.intrinsics, np.float64), name=str(s.name),
                       sequence=_sequence_key(s, frames_meta.get(str(s.name)) or {}))


def _sequence_key(sample: Any, frame_meta: Dict[str, Any]) -> Any:
    for attr in ("sequence", "scene", "scene_seed"):
        value = getattr(sample, attr, None)
        if value is None and isinstance(frame_meta, dict):
            value = frame_meta.get(attr)
        if value is not None:
            return value
    return None


def load_sequence(path: str, limit: Optional[int] = None) -> List[SeqFrame]:
    frames: List[SeqFrame] = []
    for fr in iter_sequence(path):
        frames.append(fr)
        if limit is not None and len(frames) >= limit:
            break
    if not frames:
        raise DataError(f"dataset {path} holds no frames")
    return frames
