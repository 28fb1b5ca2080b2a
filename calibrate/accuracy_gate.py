"""Accuracy gate: a quantized model against its FP32 model on held-out frames."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from edgedepth.preprocess import Preprocessing

MAX_D1_DROP = 0.01  # absolute
MAX_ABSREL_RISE = 0.05  # relative


def predict(model_path: str, inputs: np.ndarray, threads: int = 1) -> np.ndarray:
    """Depth (N,H,W) from an ONNX file through onnxruntime's CPU provider."""
    from edgedepth.export.parity import ort_session, run_onnx

    depth, _ = run_onnx(ort_session(model_path, threads), inputs)
    return depth[:, 0]


def score(pred: np.ndarray, gt: Optional[np.ndarray], ref: np.ndarray, pre: Preprocessing
          ) -> Dict[str, float]:
    """Depth metrics against ground truth where the frames have it, else against `ref` (FP32 output)."""
    from edgedepth.metrics import depth_metrics

    target = gt if gt is not None else ref
    return depth_metrics(list(pred), list(target), pre.min_depth, pre.max_depth)


def decide(fp32: Dict[str, float], int8: Dict[str, float], max_d1_drop: float = MAX_D1_DROP,
           max_absrel_rise: float = MAX_ABSREL_RISE) -> Dict[str, Any]:
    """Pass if delta1 drops by <= max_d1_drop (absolute) and AbsRel rises by <= max_absrel_rise (relative).

    Without ground truth the reference is the FP32 output itself (FP32 AbsRel 0): the rise is then the
    quantized model's AbsRel against that output, i.e. its mean relative deviation from FP32 depth.
    """
    d1_drop = float(fp32["d1"] - int8["d1"])
    base = float(fp32["abs_rel"])
    rise = float((int8["abs_rel"] - base) / base) if base > 0 else float(int8["abs_rel"])
    reasons = []
    if not d1_drop <= max_d1_drop:
        reasons.append(f"delta1 drops by {d1_drop:.4f} (> {max_d1_drop})")
    if not rise <= max_absrel_rise:
        what = "AbsRel rises by" if base > 0 else "AbsRel against the FP32 output is"
        reasons.append(f"{what} {rise * 100:.2f}% (> {max_absrel_rise * 100:.0f}%)")
    return {"passed": not reasons, "d1_drop": d1_drop, "abs_rel_rise": rise, "reasons": reasons,
            "limits": {"max_d1_drop": max_d1_drop, "max_abs_rel_rise": max_absrel_rise}}


def reference_mode_metrics(ref: np.ndarray, pre: Preprocessing) -> Dict[str, float]:
    """FP32 scored against itself (no ground truth): delta1 = 1, AbsRel = 0."""
    return score(ref, None, ref, pre)
