"""Numerical parity of an ONNX file against its PyTorch model (or against another ONNX file)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY, InputSpec, Preprocessing


def preprocess_batch(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N,3,H,W) float32 with the model's own preprocessing."""
    out = np.empty((len(rgb), 3, pre.height, pre.width), dtype=np.float32)
    for i, img in enumerate(rgb):
        pre.apply(img, out=out[i:i + 1])
    return out


def model_inputs(rgb: np.ndarray, pre: Preprocessing, spec: Optional[InputSpec] = None) -> np.ndarray:
    """(N,H,W,3) uint8 RGB frames -> what the model file takes: float (N,3,h,w) preprocessed here, or
    for a uint8-input graph the frames' bytes (N,H,W,3) at its camera size, in its channel order."""
    if spec is None or not spec.is_uint8:
        return preprocess_batch(rgb, pre)
    out = np.empty((len(rgb), spec.height, spec.width, 3), dtype=np.uint8)
    for i, img in enumerate(rgb):
        out[i] = spec.pack(img)[0]
    return out


def input_parity(float_path: str, uint8_path: str, rgb: np.ndarray, pre: Preprocessing,
                 spec: InputSpec) -> Dict[str, Any]:
    """A uint8-input graph on camera frames against the float pipeline on the same frames
    (edgedepth.preprocess on the CPU, then the float graph)."""
    ref_d, ref_u = run_onnx(ort_session(float_path), preprocess_batch(rgb, pre))
    d, u = run_onnx(ort_session(uint8_path), model_inputs(rgb, pre, spec))
    return compare_outputs(ref_d, d, ref_u, u)


def ort_session(path: str, threads: int = 1, optimize: bool = True):
    from edgedepth.backends.onnxruntime.session import open_session

    return open_session(path, ["CPUExecutionProvider"], threads=threads, optimize=optimize)


def run_onnx(session, inputs: np.ndarray, batch: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Run (depth, uncertainty) over inputs in batches of `batch` (1 for static-batch models)."""
    depth, unc = [], []
    for i in range(0, len(inputs), batch):
        d, u = session.run([OUTPUT_DEPTH, OUTPUT_UNCERTAINTY], {INPUT_NAME: inputs[i:i + batch]})
        depth.append(d)
        unc.append(u)
    return np.concatenate(depth), np.concatenate(unc)


def run_torch(model, inputs: np.ndarray, batch: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    import torch

    depth, unc = [], []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            d, u = model(torch.from_numpy(inputs[i:i + batch]))
            depth.append(d.numpy())
            unc.append(u.numpy())
    return np.concatenate(depth), np.concatenate(unc)


def compare_outputs(ref_depth: np.ndarray, depth: np.ndarray, ref_unc: np.ndarray, unc: np.ndarray,
                    gt: Optional[np.ndarray] = None, depth_range: Optional[Tuple[float, float]] = None
                    ) -> Dict[str, Any]:
    """Agreement of (depth, uncertainty) with a reference; with ground truth, both models' metrics."""
    rel = np.abs(depth.astype(np.float64) - ref_depth) / np.maximum(np.abs(ref_depth), 1e-12)
    ratio = np.maximum(depth / ref_depth, ref_depth / depth)
    out: Dict[str, Any] = {
        "frames": int(depth.shape[0]),
        "max_rel_depth": float(rel.max()),
        "mean_rel_depth": float(rel.mean()),
        "max_abs_uncertainty": float(np.abs(unc.astype(np.float64) - ref_unc).max()),
        "delta1_vs_reference": float(np.mean(ratio < 1.25)),
    }
    if gt is not None:
        from edgedepth.metrics import depth_metrics

        lo, hi = depth_range if depth_range else (None, None)
        ref_m = depth_metrics(list(ref_depth[:, 0]), list(gt), lo, hi)
        new_m = depth_metrics(list(depth[:, 0]), list(gt), lo, hi)
        out["reference_metrics"] = ref_m
        out["metrics"] = new_m
        out["delta1_agreement"] = float(abs(new_m["d1"] - ref_m["d1"]))
    return out


def torch_parity(model, onnx_path: str, rgb: np.ndarray, pre: Preprocessing,
                 gt: Optional[np.ndarray] = None, batch: int = 1) -> Dict[str, Any]:
    """Max relative depth error and δ1 agreement of ONNX (onnxruntime, full optimisation) vs PyTorch."""
    inputs = preprocess_batch(rgb, pre)
    ref_d, ref_u = run_torch(model, inputs)
    d, u = run_onnx(ort_session(onnx_path), inputs, batch)
    return compare_outputs(ref_d, d, ref_u, u, gt, (pre.min_depth, pre.max_depth))


def format_parity(res: Dict[str, Any]) -> List[str]:
    lines = [f"parity on {res['frames']} frames: max relative depth error {res['max_rel_depth']:.2e}, "
             f"mean {res['mean_rel_depth']:.2e}; max |uncertainty diff| {res['max_abs_uncertainty']:.2e}; "
             f"delta1 vs PyTorch {res['delta1_vs_reference']:.4f}"]
    if "metrics" in res:
        lines.append(f"  delta1 vs ground truth: PyTorch {res['reference_metrics']['d1']:.4f}, "
                     f"ONNX {res['metrics']['d1']:.4f} (|difference| {res['delta1_agreement']:.2e})")
    return lines


def summarize(values: Sequence[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "n": int(arr.size)}
