"""onnxruntime static quantization for two targets from one calibration.

- trt: symmetric INT8 Q/DQ that TensorRT's parser accepts (zero point 0, INT8 only, per-channel weights
  on the output-channel axis, per-tensor activations, Q/DQ on weighted-op inputs and residual Adds,
  not on their outputs; Model-Optimizer-style options).
- cpu: U8S8 (uint8 activations, int8 weights) in the format and with the set of quantized layer types
  that onnxruntime's CPU provider runs fastest; chosen by measurement in calibrate/cpu_select.py.

onnx / onnxruntime.quantization are imported inside functions (onnxruntime.quantization imports onnx).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgedepth.errors import ConfigError, ModelError, require
from edgedepth.preprocess import INPUT_NAME, SELECTION_NODE_PREFIX

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
WEIGHTED_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
PERCENTILE = 99.999


def _ort_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[name]
    except KeyError:
        raise ConfigError(f"unknown calibration method '{name}'; choose one of "
                          f"{', '.join(METHODS)} or auto") from None


def make_reader(inputs: np.ndarray):
    """A CalibrationDataReader over preprocessed inputs (N,3,H,W), one frame per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class FrameReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(inputs):
                return None
            item = {INPUT_NAME: inputs[self.i:self.i + 1]}
            self.i += 1
            return item

        def __len__(self) -> int:
            return len(inputs)

        def rewind(self) -> None:
            self.i = 0

    return FrameReader()


def pre_process(model_path: str, out_path: str) -> str:
    """onnxruntime's quant_pre_process (shape inference + basic graph optimisation)."""
    require("onnx", "train")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model_path), str(out_path), skip_symbolic_shape=False)
    except Exception as exc:  # onnxruntime raises assorted types for graphs it cannot process
        raise ModelError(f"quant_pre_process failed on {model_path}: {exc}") from exc
    return str(out_path)


def ranges_cache_path(cache_dir: Path, model_path: str, frame_names: Sequence[str], method: str) -> Path:
    """Cache key: pre-processed model bytes + calibration frame names + method."""
    h = hashlib.sha256(Path(model_path).read_bytes())
    h.update("\n".join(frame_names).encode())
    return Path(cache_dir) / f"ranges-{method}-{h.hexdigest()[:16]}.json"


def read_ranges(cache_path: Path) -> Dict[str, List[float]]:
    """{tensor: [lowest, highest]} from onnxruntime's calibration range cache (JSON)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache_path)
    out = {}
    for name, td in data.data.items():
        lo, hi = td.range_value
        out[name] = [float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])]
    return out


def calibrate_ranges(pre_model: str, inputs: np.ndarray, method: str, cache_path: Path) -> Path:
    """Run onnxruntime calibration once for `method` and keep the ranges in `cache_path`."""
    if cache_path.is_file():
        return cache_path
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    cache_path.parent.mkdir(parents=True, exist_ok=True)
    extra: Dict[str, Any] = {}
    if method == "percentile":
        extra = {"percentile": PERCENTILE, "symmetric": True}
    elif method == "entropy":
        extra = {"symmetric": True, "num_bins": 512}
    quiet = io.StringIO()  # onnxruntime's histogram calibrators print progress to stdout
    with tempfile.TemporaryDirectory(prefix="edgedepth-calib-") as tmp, contextlib.redirect_stdout(quiet):
        calibrator = create_calibrator(Path(pre_model), None,
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_ort_method(method), extra_options=extra)
        calibrator.collect_data(make_reader(inputs))
        save_tensors_data(calibrator.compute_data(), cache_path)
    if quiet.getvalue().strip():
        log.debug("onnxruntime calibrator: %s", quiet.getvalue().strip())
    return cache_path


# ------------------------------------------------------------------------------- trt target
def trt_options() -> Dict[str, Any]:
    """Extra options for a TensorRT-safe Q/DQ model (the Q/DQ rules TensorRT enforces: docs/tensorrt.md)."""
    return {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": True,
        "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1, "Gemm": 0},
        "DedicatedQDQPair": False,
        "ForceQuantizeNoInputCheck": True,
    }


def float_tail_nodes(model_path: str) -> List[str]:
    """Nodes kept in float for accuracy: the elementwise ops that turn head logits into depth
    (Add/Mul with a constant operand after the heads), and the selection features' nodes. Quantizing
    them would put INT8 steps directly on metric depth."""
    onnx = require("onnx", "train")
    mp = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in mp.graph.initializer}
    return [n.name for n in mp.graph.node
            if (n.op_type in ("Add", "Mul", "Sub", "Div") and any(i in inits for i in n.input))
            or n.name.startswith(SELECTION_NODE_PREFIX)]  # the selector's features (export/selection_graph)


def quantize_trt(pre_model: str, out_path: str, ranges_cache: Path, method: str,
                 exclude: Sequence[str] = ()) -> str:
    """Symmetric INT8 Q/DQ for TensorRT: Conv inputs and residual Adds only."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        pre_model, out_path, calibration_data_reader=None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv", "ConvTranspose", "Gemm", "Add"], per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted(set(float_tail_nodes(pre_model)) | set(exclude)),
        calibrate_method=_ort_method(method), extra_options=trt_options(),
        calibration_cache_path=str(ranges_cache),
    )
    selection_reads_float(out_path)
    drop_unused_domains(out_path)
    return out_path


def selection_reads_float(path: str) -> None:
    """Point the selection-feature nodes at float tensors where the quantizer fed them a tensor it
    quantized for another reader (the input image feeds the first convolution and the thumbnail)."""
    onnx = require("onnx", "train")
    from edgedepth.calibrate.fallback import with_float_layers

    mp = onnx.load(str(path))
    if any(n.name.startswith(SELECTION_NODE_PREFIX) for n in mp.graph.node):
        onnx.save(with_float_layers(mp, []), str(path))


def drop_unused_domains(path: str) -> None:
    """Remove opset imports of domains no node uses (quant_pre_process adds several)."""
    onnx = require("onnx", "train")
    mp = onnx.load(str(path))
    used = {n.domain or "" for n in mp.graph.node} | {""}
    keep = [o for o in mp.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del mp.opset_import[:]
    mp.opset_import.extend(keep)
    onnx.save(mp, str(path))


# ------------------------------------------------------------------------------- cpu target
def quantize_cpu(pre_model: str, out_path: str, ranges_cache: Path, method: str, fmt: str,
                 nodes_to_quantize: Optional[Sequence[str]], per_channel: bool = False) -> str:
    """U8S8 quantization of the listed nodes in QDQ or QOperator format for onnxruntime's CPU EP."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if nodes_to_quantize is not None and not nodes_to_quantize:
        raise ConfigError("no node selected for CPU quantization")
    quantize_static(
        pre_model, out_path, calibration_data_reader=None,
        quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize is not None else None,
        nodes_to_exclude=float_tail_nodes(pre_model),
        calibrate_method=_ort_method(method), calibration_cache_path=str(ranges_cache),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    selection_reads_float(out_path)
    return out_path


def layer_types(model_path: str) -> Dict[str, List[str]]:
    """Group the graph's quantizable nodes by the layer type that matters for INT8 speed on a CPU."""
    onnx = require("onnx", "train")
    from onnx import numpy_helper

    mp = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name: t for t in mp.graph.initializer}
    groups: Dict[str, List[str]] = {}
    for node in mp.graph.node:
        kind = None
        if node.op_type == "Conv" and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            cout, cin_g, kh, kw = w.shape
            if group > 1 and cin_g == 1:
                kind = f"conv_depthwise_{kh}x{kw}"
            elif cout == 1:
                kind = "conv_head"
            elif kh == kw == 1:
                kind = "conv_pointwise"
            else:
                kind = f"conv_full_{kh}x{kw}"
        elif node.op_type in ("Add", "Resize", "Relu") and not any(i in inits for i in node.input[:2]):
            kind = node.op_type.lower()
        if kind:
            groups.setdefault(kind, []).append(node.name)
    return groups


def qdq_summary(model_path: str) -> Dict[str, Any]:
    """Counts of Q/DQ nodes and quantized operators (for the report)."""
    onnx = require("onnx", "train")
    mp = onnx.load(str(model_path), load_external_data=False)
    counts: Dict[str, int] = {}
    for n in mp.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return {"ops": dict(sorted(counts.items())), "size_bytes": Path(model_path).stat().st_size}


def ranges_json(ranges: Dict[str, List[float]]) -> str:
    return json.dumps(ranges, sort_keys=True)
