"""Teacher labels for frames: metric as is, aligned to metric points, or relative (scale-and-shift free).

Label kinds (recorded per frame in every dataset this writes, and in round datasets):
- `sensor`: depth measured with the frame (or synthetic ground truth), used as is;
- `teacher-metric`: a metric teacher's depth;
- `teacher-aligned`: a relative teacher's output made metric by a per-frame robust scale and shift
  against metric points (edgedepth.teachers.align);
- `teacher-relative`: a relative teacher's output with no metric scale, stored as pseudo-depth with
  median 1; only a relative model (`--target relative`, a scale-and-shift-invariant loss) learns from it;
- `self-supervised`: photometric refinement against posed neighbour frames (edgedepth.rounds.selfsup).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgedepth.errors import ConfigError, DataError
from edgedepth.teachers.align import DISPARITY, METRIC, RELATIVE, align, ground_points, triangulated_points

log = logging.getLogger(__name__)

SENSOR, TEACHER_METRIC, TEACHER_ALIGNED, TEACHER_RELATIVE, SELF_SUPERVISED = (
    "sensor", "teacher-metric", "teacher-aligned", "teacher-relative", "self-supervised")
LABEL_KINDS = (SENSOR, TEACHER_METRIC, TEACHER_ALIGNED, TEACHER_RELATIVE, SELF_SUPERVISED)
TARGETS = ("metric", "relative")
DEPTH_UNITS_RELATIVE = "relative"  # meta.json "depth_units" of a dataset of relative labels
DENSE_SENSOR = 0.5  # uploaded/sensor depth covering at least this fraction of pixels is a label itself


def no_metric_source_message(teacher_desc: str) -> str:
    return (f"the teacher {teacher_desc} predicts relative depth and these frames have no metric points to "
            "align it: give sparse sensor depth with the frames (depth/NAME.png|npy, any coverage), "
            "--camera-height M (ground-plane prior; or camera.height_m in the device config), "
            "--two-view (frames with poses and intrinsics in meta.json), or train a relative model "
            "with --target relative")


@dataclass
class LabelPolicy:
    target: str = "metric"  # metric | relative
    camera_height: Optional[float] = None  # metres above a flat floor (ground-plane prior)
    camera_pitch_deg: float = 0.0
    ground_rows: float = 0.25  # bottom fraction of the image assumed to show the floor (robustly)
    two_view: bool = False  # triangulate metric points from a neighbour frame with a known pose
    two_view_gap: int = 5  # the neighbour: this many frames later (earlier at the end); wider = more parallax
    min_points: int = 8
    min_depth: float = 0.1
    max_depth: float = 80.0

    def validate(self) -> "LabelPolicy":
        if self.target not in TARGETS:
            raise ConfigError(f"--target must be metric or relative, got {self.target!r}")
        if self.camera_height is not None and not self.camera_height > 0:
            raise ConfigError(f"--camera-height must be > 0 m, got {self.camera_height}")
        return self


@dataclass
class FrameInput:
    """One frame to label plus whatever metric evidence came with it."""

    rgb: np.ndarray
    points: Optional[np.ndarray] = None  # HxW metres, 0 = none (sparse sensor depth)
    intrinsics: Optional[np.ndarray] = None
    neighbor: Optional[np.ndarray] = None  # another frame's RGB ...
    pose: Optional[np.ndarray] = None  # ... with both camera-to-world poses
    neighbor_pose: Optional[np.ndarray] = None


@dataclass
class Label:
    depth: Optional[np.ndarray]  # HxW (metres, or pseudo-depth for teacher-relative); None = unlabelled
    kind: Optional[str]
    source: str = ""  # metric points used: sensor | two-view | ground-plane
    scale: Optional[float] = None
    shift: Optional[float] = None
    points: int = 0
    why: str = ""


def relative_pseudo_depth(output: np.ndarray, kind: str) -> np.ndarray:
    """A relative output as positive pseudo-depth with median 1 (0 = unusable): disparity is inverted."""
    out = np.asarray(output, np.float64)
    good = np.isfinite(out) & (out > 0)
    if not good.any():
        return np.zeros(out.shape, np.float32)
    med = float(np.median(out[good]))
    if kind == DISPARITY:
        with np.errstate(divide="ignore"):
            pseudo = np.where(good, med / np.where(good, out, 1.0), 0.0)
    else:
        pseudo = np.where(good, out / med, 0.0)
    return np.where(np.isfinite(pseudo) & (pseudo < 1e3), pseudo, 0.0).astype(np.float32)


def sensor_coverage(points: Optional[np.ndarray]) -> float:
    if points is None:
        return 0.0
    p = np.asarray(points)
    return float((np.isfinite(p) & (p > 0)).mean())


class TeacherLabeler:
    """Labels frames with one teacher under one policy; outputs go through a LabelCache if given."""

    def __init__(self, teacher, policy: LabelPolicy = LabelPolicy(), cache=None) -> None:
        self.teacher = teacher
        self.policy = policy.validate()
        self.cache = cache
        self.counts: Dict[str, int] = {}

    @property
    def relative(self) -> bool:
        return self.teacher.kind != METRIC

    def _metric_points(self, f: FrameInput, shape) -> List[tuple]:
        """[(source, HxW points)] in order of preference."""
        p = self.policy
        found = []
        if f.points is not None and sensor_coverage(f.points) > 0:
            found.append(("sensor", np.asarray(f.points, np.float32)))
        if p.two_view and f.neighbor is not None and f.pose is not None and f.neighbor_pose is not None \
                and f.intrinsics is not None:
            try:
                found.append(("two-view", triangulated_points(f.rgb, f.neighbor, f.pose, f.neighbor_pose,
                                                              f.intrinsics)))
            except DataError as exc:
                log.debug("no two-view points: %s", exc)
        if p.camera_height is not None and f.intrinsics is not None:
            found.append(("ground-plane", ground_points(shape, f.intrinsics, p.camera_height, p.ground_rows,
                                                        p.camera_pitch_deg)))
        return found

    def label_many(self, frames: Sequence[FrameInput]) -> List[Label]:
        from edgedepth.teachers.cache import teacher_outputs

        outs = teacher_outputs(self.teacher, [f.rgb for f in frames], self.cache)
        labels = [self._label(f, o) for f, o in zip(frames, outs)]
        for lab in labels:
            key = lab.kind or "unlabelled"
            self.counts[key] = self.counts.get(key, 0) + 1
        return labels

    def _label(self, f: FrameInput, out: np.ndarray) -> Label:
        p = self.policy
        kind = self.teacher.kind
        if p.target == "relative":
            # a metric teacher's depth is a relative depth too (median-normalised like the others)
            return Label(relative_pseudo_depth(out, kind if kind != METRIC else RELATIVE), TEACHER_RELATIVE)
        if kind == METRIC:
            d = np.where(np.isfinite(out) & (out >= p.min_depth) & (out <= p.max_depth), out, 0)
            return Label(d.astype(np.float32), TEACHER_METRIC)
        why = "no metric points"
        for source, pts in self._metric_points(f, out.shape):
            try:
                depth, fit = align(out, kind, pts, p.min_points, p.min_depth, p.max_depth)
            except DataError as exc:
                why = f"{source}: {exc}"
                continue
            return Label(depth, TEACHER_ALIGNED, source, fit.scale, fit.shift, fit.points)
        return Label(None, None, why=why)


# -- folder datasets -------------------------------------------------------------------------------
@dataclass
class FolderLabelReport:
    source: str
    out: str
    frames: int = 0
    counts: Dict[str, int] = field(default_factory=dict)
    sources: Dict[str, int] = field(default_factory=dict)
    computed: int = 0  # teacher runs (cache misses)
    cached: int = 0
    seconds: float = 0.0


def _image_files(root: Path) -> List[Path]:
    from edgedepth.data.formats import IMAGE_EXTS

    rgb = root / "rgb"
    if not rgb.is_dir():
        raise DataError(f"{root} is not a folder dataset: it needs an rgb/ folder (depth/ optional here)")
    return [p for p in sorted(rgb.iterdir()) if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]


def has_metric_source(root: Path, policy: LabelPolicy) -> bool:
    """Whether a folder can give any frame metric points under `policy` (checked before the teacher runs)."""
    from edgedepth.data.formats import read_meta

    meta = read_meta(root)
    frames_meta = meta.get("frames") or {}
    has_K = meta.get("intrinsics") is not None or any(
        isinstance(v, dict) and v.get("intrinsics") is not None for v in frames_meta.values())
    if (root / "depth").is_dir() and any((root / "depth").iterdir()):
        return True
    if policy.camera_height is not None and has_K:
        return True
    return bool(policy.two_view and has_K and any(isinstance(v, dict) and v.get("pose") is not None
                                                   for v in frames_meta.values()))


def label_folder(labeler: TeacherLabeler, src, out, batch: int = 16) -> FolderLabelReport:
    """Label the frames of folder dataset `src` into a new folder dataset `out` (rgb copied, depth = the
    labels, meta.json naming each frame's label kind). Dense depth already there (>= 50 % of pixels) is
    kept as a `sensor` label; sparse depth becomes the metric points of a relative teacher.

    ConfigError when a relative teacher should give metric labels and nothing can give metric points.
    """
    from edgedepth.data.formats import read_depth, read_meta, read_rgb, write_meta, write_sample

    t0 = time.monotonic()
    root, dst = Path(src), Path(out)
    files = _image_files(root)
    if not files:
        raise DataError(f"{root}/rgb holds no images")
    policy = labeler.policy
    desc = f"{labeler.teacher.source} ({labeler.teacher.kind})"
    if labeler.relative and policy.target == "metric" and not has_metric_source(root, policy):
        raise ConfigError(no_metric_source_message(desc))
    meta = read_meta(root)
    frames_meta = meta.get("frames") or {}
    K_default = meta.get("intrinsics")
    names = [p.stem for p in files]
    first_index: Dict[str, int] = {}  # what names.index(stem) gives, without a scan per frame
    for k, name in enumerate(names):
        first_index.setdefault(name, k)
    report = FolderLabelReport(str(root), str(dst), len(files))
    out_frames: Dict[str, dict] = {}
    hits0, misses0 = (labeler.cache.hits, labeler.cache.misses) if labeler.cache else (0, 0)
    run0 = labeler.teacher.frames_run

    def depth_of(name: str) -> Optional[np.ndarray]:
        for ext in (".png", ".npy"):
            p = root / "depth" / f"{name}{ext}"
            if p.is_file():
                return read_depth(p)
        return None

    for s in range(0, len(files), batch):
        part = files[s:s + batch]
        inputs, dense = [], []
        for p in part:
            rgb = read_rgb(p)
            fm = frames_meta.get(p.stem) or {}
            pts = depth_of(p.stem)
            K = fm.get("intrinsics", K_default)
            f = FrameInput(rgb, pts, None if K is None else np.asarray(K, np.float64))
            if policy.two_view and fm.get("pose") is not None:
                i = first_index[p.stem]
                gap = max(1, policy.two_view_gap)
                j = i + gap if i + gap < len(names) else i - gap
                nm = frames_meta.get(names[j]) or {}
                if j >= 0 and j != i and nm.get("pose") is not None:
                    f.neighbor, f.pose, f.neighbor_pose = read_rgb(files[j]), np.asarray(fm["pose"]), \
                        np.asarray(nm["pose"])
            inputs.append(f)
            dense.append(sensor_coverage(pts) >= DENSE_SENSOR)
        todo = [i for i, d in enumerate(dense) if not d]
        labels: List[Optional[Label]] = [None] * len(part)
        for i, lab in zip(todo, labeler.label_many([inputs[i] for i in todo])):
            labels[i] = lab
        for i, p in enumerate(part):
            lab = labels[i] or Label(inputs[i].points, SENSOR)
            report.counts[lab.kind or "unlabelled"] = report.counts.get(lab.kind or "unlabelled", 0) + 1
            if lab.depth is None:
                continue
            if lab.source:
                report.sources[lab.source] = report.sources.get(lab.source, 0) + 1
            write_sample(dst, p.stem, inputs[i].rgb, lab.depth, depth_format="npy")
            fm = dict(frames_meta.get(p.stem) or {})
            fm.update({"label_kind": lab.kind, "label": lab.kind})
            if lab.scale is not None:
                fm["alignment"] = {"scale": lab.scale, "shift": lab.shift, "points": lab.points,
                                   "source": lab.source}
            out_frames[p.stem] = fm
    if not out_frames:
        raise ConfigError(no_metric_source_message(desc) if labeler.relative else
                          f"no frame of {root} could be labelled")
    relative = policy.target == "relative"
    write_meta(dst, {**{k: v for k, v in meta.items() if k != "frames"},
                     "source": "teacher-labels", "labelled_from": str(root),
                     "depth_units": DEPTH_UNITS_RELATIVE if relative else "metres",
                     "teacher": {"source": labeler.teacher.source, "kind": labeler.teacher.kind,
                                 "identity": labeler.teacher.identity},
                     "policy": asdict(policy), "frames": out_frames})
    if labeler.cache is not None:
        report.cached = labeler.cache.hits - hits0
        report.computed = labeler.cache.misses - misses0
    else:
        report.computed = labeler.teacher.frames_run - run0
    report.seconds = time.monotonic() - t0
    return report
