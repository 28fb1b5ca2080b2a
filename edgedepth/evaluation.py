"""Evaluate a model (checkpoint or ONNX) on datasets: metric table, per-domain breakdown, per-frame rows.

Torch-free for ONNX models. Metrics are computed at the ground truth's resolution (the prediction is
resized back to each image's size), with the conventions of edgedepth.metrics. Each frame also
records its mean predicted uncertainty (model resolution, all pixels: the score a device can compute
without ground truth). The result reports `frame_spearman`, Spearman(per-frame score, per-frame AbsRel)
with the score of edgedepth.metrics.frame_uncertainty (mean of b = exp(u), the expected mean |log error|;
the figure frame selection relies on), plus `unc_spearman` (mean of u) for comparison.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgedepth.errors import DataError
from edgedepth.eval_protocol import Protocol, apply_protocol
from edgedepth.metrics import format_metrics_table, frame_metrics, mean_metrics, spearman
from edgedepth.predictor import Predictor, load_predictor


@dataclass
class FrameResult:
    name: str
    domain: str
    dataset: str
    metrics: Optional[Dict[str, float]]  # None when the frame has no valid ground-truth pixel
    mean_uncertainty: float
    mean_scale: float = float("nan")  # mean of b = exp(u) = metrics.frame_uncertainty(u): the frame's score


@dataclass
class EvalResult:
    model: str
    overall: Dict[str, float]
    per_domain: Dict[str, Dict[str, float]]
    frames: List[FrameResult] = field(default_factory=list)
    seconds: float = 0.0
    protocol: Dict[str, str] = field(default_factory=dict)  # dataset -> how it was scored

    def table(self) -> str:
        rows = {"all": self.overall}
        if len(self.per_domain) > 1 or any(d != "unknown" for d in self.per_domain):
            rows.update({f"  {d}": m for d, m in sorted(self.per_domain.items())})
        lines = [format_metrics_table(rows, title=f"model: {self.model}")]
        lines.append("Spearman(per-frame uncertainty score mean exp(u), per-frame AbsRel): " + ", ".join(
            f"{name.strip()} {m['frame_spearman']:.3f}" for name, m in rows.items()))
        return "\n".join(lines)

    def to_dict(self, with_frames: bool = True) -> Dict[str, Any]:
        d = {"model": self.model, "overall": self.overall, "per_domain": self.per_domain,
             "seconds": self.seconds, "protocol": self.protocol}
        if with_frames:
            d["frames"] = [asdict(f) for f in self.frames]
        return d

    def write_json(self, path: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=float))
        return path


def summarise(frames: Sequence[FrameResult]) -> Dict[str, float]:
    """Mean metrics over frames + Spearman of uncertainty scores with AbsRel + mean uncertainty."""
    out = mean_metrics(f.metrics for f in frames)
    scored = [f for f in frames if f.metrics is not None]
    out["unc_spearman"] = spearman([f.mean_uncertainty for f in scored],
                                   [f.metrics["abs_rel"] for f in scored])
    out["scale_spearman"] = spearman([f.mean_scale for f in scored], [f.metrics["abs_rel"] for f in scored])
    out["frame_spearman"] = out["scale_spearman"]  # mean b = the frame_uncertainty score to rank by
    # which part of the error the score ranks: the global scale error or the scale-invariant rest
    out["spearman_vs_scale_error"] = spearman([f.mean_scale for f in scored],
                                              [abs(f.metrics.get("log_scale", np.nan)) for f in scored])
    out["spearman_vs_si_error"] = spearman([f.mean_scale for f in scored],
                                           [f.metrics.get("si_abs_log", np.nan) for f in scored])
    out["mean_uncertainty"] = float(np.mean([f.mean_uncertainty for f in frames])) if frames else float("nan")
    return out


def evaluate_samples(predictor: Predictor, samples: Any, dataset: str = "", batch_size: int = 16,
                     protocol: Optional[Protocol] = None, kind: str = "folder") -> List[FrameResult]:
    """FrameResults for an iterable of Samples (rgb, depth, name, domain).

    protocol: crop / median scaling / depth cap (edgedepth.eval_protocol), already resolved for the
    dataset's `kind`; None scores every valid pixel in the model's depth range."""
    from edgedepth.teachers.score import aligned_to_ground_truth

    pre = predictor.preprocessing
    relative = getattr(getattr(predictor, "info", None), "depth_units", "metres") == "relative"
    results: List[FrameResult] = []
    batch: List[Any] = []

    def flush() -> None:
        preds = predictor.predict_many([s.rgb for s in batch])
        for s, p in zip(batch, preds):
            if s.depth is None:
                raise DataError(f"frame {s.name} in {dataset or 'the dataset'} has no depth to compare with")
            depth = p.depth
            if relative:  # no metric scale: scored after a per-frame scale and shift to the ground truth
                depth = aligned_to_ground_truth(1.0 / p.depth, "disparity", s.depth)
            if protocol is None:
                m = frame_metrics(depth, s.depth, None, pre.min_depth, pre.max_depth)
            else:
                pred, mask, lo, hi = apply_protocol(depth, s.depth, protocol, kind, pre.min_depth,
                                                    pre.max_depth)
                m = frame_metrics(pred, s.depth, mask, lo, hi)
            domain = str(s.domain or "unknown")
            results.append(FrameResult(str(s.name), domain, dataset, m, p.mean_uncertainty, p.mean_scale))
        batch.clear()

    for s in samples:
        batch.append(s)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return results


def evaluate(model: Any, data: Sequence[str], batch_size: int = 16, limit: Optional[int] = None,
             providers: Optional[Sequence[str]] = None, protocol: Optional[Protocol] = None) -> EvalResult:
    """Evaluate `model` (path to .pt/.onnx, or a Predictor) on dataset specs (edgedepth.data.dataset).

    protocol: the scoring protocol; each dataset fills in its standard depth cap (NYU 10 m, KITTI 80 m)."""
    from edgedepth.data.dataset import open_dataset, resolve_spec

    for d in data:
        resolve_spec(d)  # a missing dataset fails before the model loads
    t0 = time.monotonic()
    predictor = load_predictor(model, providers)
    frames: List[FrameResult] = []
    used: Dict[str, str] = {}
    for d in data:
        ds = open_dataset(d)
        n = len(ds) if limit is None else min(len(ds), int(limit))
        if n == 0:
            raise DataError(f"dataset {d} holds no frames")
        kind = str(getattr(ds, "kind", "folder"))
        proto = protocol.for_dataset(kind) if protocol is not None else None
        if proto is not None:
            used[str(d)] = proto.describe()
        frames.extend(evaluate_samples(predictor, (ds[i] for i in range(n)), str(d), batch_size, proto, kind))
    by_domain: Dict[str, List[FrameResult]] = {}
    for f in frames:
        by_domain.setdefault(f.domain, []).append(f)
    return EvalResult(model=str(getattr(predictor, "path", model)), overall=summarise(frames),
                      per_domain={k: summarise(v) for k, v in by_domain.items()}, frames=frames,
                      seconds=time.monotonic() - t0, protocol=used)
