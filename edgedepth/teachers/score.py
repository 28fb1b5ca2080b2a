"""Score a teacher on a labelled dataset (`edgedepth eval --teacher`): how good are the labels it gives?

A metric teacher is scored as it is. A relative teacher is scored the way relative models are compared:
each frame's output aligned to that frame's ground truth by a least-squares scale and shift (in its
affine space), so the figures say how good its labels can be once aligned, not where the metric points
will come from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from edgedepth.errors import DataError
from edgedepth.metrics import format_metrics_table, frame_metrics, mean_metrics
from edgedepth.teachers.align import DISPARITY, METRIC, fit_scale_shift


@dataclass
class TeacherScore:
    teacher: str
    kind: str
    overall: Dict[str, float]
    per_domain: Dict[str, Dict[str, float]] = field(default_factory=dict)
    frames: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        return format_metrics_table({"all": self.overall, **self.per_domain})


def aligned_to_ground_truth(output: np.ndarray, kind: str, gt: np.ndarray) -> np.ndarray:
    """A relative output made metric with the frame's own ground truth (least squares, all valid pixels)."""
    valid = np.isfinite(gt) & (gt > 0) & np.isfinite(output)
    if valid.sum() < 2:
        return np.zeros_like(gt)
    target = 1.0 / gt[valid] if kind == DISPARITY else gt[valid]
    s, t, _, _ = fit_scale_shift(output[valid], target, iters=1)
    fitted = s * output.astype(np.float64) + t
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = 1.0 / fitted if kind == DISPARITY else fitted
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)


def score_teacher(teacher, data: Sequence[str], cache=None, limit: Optional[int] = None,
                  min_depth: float = 0.1, max_depth: float = 80.0) -> TeacherScore:
    from edgedepth.data.dataset import open_dataset
    from edgedepth.teachers.cache import teacher_outputs

    t0 = time.monotonic()
    rows: List[Optional[Dict[str, float]]] = []
    by_domain: Dict[str, list] = {}
    for spec in data:
        ds = open_dataset(spec)
        n = len(ds) if limit is None else min(len(ds), int(limit))
        if n == 0:
            raise DataError(f"dataset {spec} holds no frames")
        for s in range(0, n, teacher.batch_size):
            samples = [ds[i] for i in range(s, min(n, s + teacher.batch_size))]
            outs = teacher_outputs(teacher, [x.rgb for x in samples], cache)
            for x, out in zip(samples, outs):
                if x.depth is None:
                    raise DataError(f"frame {x.name} of {spec} has no depth to score the teacher against")
                pred = out if teacher.kind == METRIC else aligned_to_ground_truth(out, teacher.kind, x.depth)
                m = frame_metrics(pred, x.depth, None, min_depth, max_depth)
                rows.append(m)
                by_domain.setdefault(str(x.domain or "unknown"), []).append(m)
    return TeacherScore(teacher.source, teacher.kind, mean_metrics(rows),
                        {k: mean_metrics(v) for k, v in by_domain.items()}, len(rows), time.monotonic() - t0)
