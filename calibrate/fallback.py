"""Per-layer float fallback for the TensorRT INT8 target, used when the accuracy gate refuses the
fully quantized Q/DQ model.

1. Sensitivity: each quantized layer (a Conv / ConvTranspose / Gemm / residual Add with Q/DQ on its
   inputs) is made the only INT8 layer of the model in turn, and its depth is compared with the FP32
   model's on the held-out frames (AbsRel and delta1 against the FP32 output). These single-layer models
   are made by rewiring the full Q/DQ graph (a layer's inputs read the float tensors instead of their
   DequantizeLinear outputs), which is what quantizing with `nodes_to_exclude` produces, without running
   the quantizer once per layer.
2. Greedy: layers leave INT8 in order of sensitivity, most sensitive first, until the gate passes.
3. The artifact is re-quantized by onnxruntime with those layers in `nodes_to_exclude` (and their reads of
   Q/DQ pairs shared with quantized layers pointed at the float tensor) and gated again.

Layers without Q/DQ around them run in FP16 in TensorRT: through the INT8 + FP16 builder flags on
TensorRT 8.x and 10.0-10.11, from the FP16 copy of the mixed model (export/fp16.py) in the strongly typed
build of 10.12+ and 11 (backends/tensorrt/build.py, mixed_fp16_method). `edgedepth lint` says which
applies to a board.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.errors import require
from edgedepth.preprocess import SELECTION_NODE_PREFIX

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")
Accept = Callable[[str], Tuple[bool, Dict[str, Any]]]


def _load(path: str):
    onnx = require("onnx", "train")
    return onnx.load(str(path))


def quantized_layers(qdq_model) -> List[str]:
    """Names of the nodes of a Q/DQ ModelProto that read at least one input through a DequantizeLinear."""
    dq_out = {n.output[0] for n in qdq_model.graph.node if n.op_type == "DequantizeLinear"}
    return [n.name for n in qdq_model.graph.node
            if n.op_type in QUANTIZED_OPS and any(i in dq_out for i in n.input)]


def with_float_layers(qdq_model, float_layers: Sequence[str]):
    """A copy of the Q/DQ model in which `float_layers` read float inputs (their Q/DQ pairs bypassed).

    The input of a DequantizeLinear fed by a QuantizeLinear is that QuantizeLinear's float input (an
    activation, or the float weight initializer kept by AddQDQPairToWeight). Q/DQ nodes no layer reads
    any more are removed. The selection-feature nodes are always among the float readers.
    """
    model = type(qdq_model)()
    model.CopyFrom(qdq_model)
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    source: Dict[str, str] = {}
    for n in graph.node:
        q = producer.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            source[n.output[0]] = q.input[0]
    # the selection features (export/selection_graph.py) always read float tensors
    wanted = set(float_layers) | {n.name for n in graph.node if n.name.startswith(SELECTION_NODE_PREFIX)}
    for n in graph.node:
        if n.name in wanted:
            for k, name in enumerate(n.input):
                if name in source:
                    n.input[k] = source[name]
    _prune_dead_nodes(graph)
    return model


def _prune_dead_nodes(graph) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def layer_macs(pre_model: str) -> Dict[str, Dict[str, Any]]:
    """{node name: {"op", "macs"}} for the quantizable nodes of the (shape-inferred) float model;
    elementwise Adds count 0 MACs."""
    onnx = require("onnx", "train")
    model = onnx.shape_inference.infer_shapes(_load(pre_model))
    graph = model.graph
    shapes: Dict[str, List[int]] = {}
    for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {t.name: list(t.dims) for t in graph.initializer}
    out: Dict[str, Dict[str, Any]] = {}
    for n in graph.node:
        if n.op_type not in QUANTIZED_OPS:
            continue
        macs = 0
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        y = shapes.get(n.output[0])
        if n.op_type == "Conv" and w and y:
            macs = int(np.prod(y)) * int(np.prod(w[1:]))  # every output element: Cin/group * kh * kw
        elif n.op_type == "ConvTranspose" and w and n.input[0] in shapes:
            macs = int(np.prod(shapes[n.input[0]])) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and w and len(w) == 2 and y:
            macs = int(np.prod(y)) * int(w[0] if w[1] == y[-1] else w[1])  # y[-1] is the output width
        out[n.name] = {"op": n.op_type, "macs": macs}
    return out


def int8_share(macs: Dict[str, Dict[str, Any]], int8_layers: Sequence[str]) -> Dict[str, Any]:
    """What part of the network's weighted-layer work still runs in INT8."""
    weighted = {k: v for k, v in macs.items() if v["op"] != "Add"}
    total = sum(v["macs"] for v in weighted.values())
    kept = sum(weighted[k]["macs"] for k in int8_layers if k in weighted)
    n_int8 = sum(1 for k in int8_layers if k in weighted)
    return {"int8_macs": kept, "total_macs": total,
            "int8_mac_fraction": round(kept / total, 4) if total else 0.0,
            "int8_weighted_layers": n_int8, "weighted_layers": len(weighted)}


def _metrics_vs(pred: np.ndarray, ref: np.ndarray, pre) -> Dict[str, float]:
    from edgedepth.calibrate import accuracy_gate as gate

    m = gate.score(pred, None, ref, pre)
    return {"abs_rel": float(m["abs_rel"]), "d1": float(m["d1"])}


def layer_sensitivity(qdq_model, layers: Sequence[str], inputs: np.ndarray, fp32_pred: np.ndarray, pre,
                      workdir: str, threads: int = 1) -> List[Dict[str, Any]]:
    """For each layer: the model with only that layer in INT8 against the FP32 model's output
    (AbsRel, delta1 and its drop from 1). Sorted most sensitive first (AbsRel, then delta1 drop)."""
    onnx = require("onnx", "train")
    from edgedepth.calibrate import accuracy_gate as gate

    path = str(Path(workdir) / "sensitivity.onnx")
    rows = []
    for name in layers:
        onnx.save(with_float_layers(qdq_model, [n for n in layers if n != name]), path)
        m = _metrics_vs(gate.predict(path, inputs, threads), fp32_pred, pre)
        rows.append({"layer": name, "abs_rel_vs_fp32": m["abs_rel"], "d1_drop_vs_fp32": 1.0 - m["d1"]})
    rows.sort(key=lambda r: (-r["abs_rel_vs_fp32"], -r["d1_drop_vs_fp32"]))
    return rows


def float_fallback(pre_model: str, qdq_path: str, quantize: Callable[[str, Sequence[str]], str],
                   accept: Accept, inputs: np.ndarray, fp32_pred: np.ndarray, pre, workdir: str,
                   threads: int = 1) -> Dict[str, Any]:
    """Find the fewest most-sensitive layers to keep in float so that `accept` (the gate) passes.

    `inputs` / `fp32_pred`: the frames sensitivity is measured on (the calibration frames, so that the
    held-out frames `accept` scores stay out of the ranking) and the FP32 model's depth on them.
    `quantize(out_path, exclude)` writes the Q/DQ model with `exclude` un-quantized (onnxruntime's
    nodes_to_exclude). Returns the report section; "path" is the gated mixed model when "passed".
    """
    onnx = require("onnx", "train")
    full = _load(qdq_path)
    layers = quantized_layers(full)
    ranking = layer_sensitivity(full, layers, inputs, fp32_pred, pre, workdir, threads)
    order = [r["layer"] for r in ranking]
    trial = str(Path(workdir) / "fallback-trial.onnx")
    steps: List[Dict[str, Any]] = []
    chosen: Optional[int] = None
    for k in range(1, len(order) + 1):  # greedy on the rewired graph: cheap to evaluate
        onnx.save(with_float_layers(full, order[:k]), trial)
        ok, info = accept(trial)
        steps.append({"float_layers": k, "d1_drop": info["gate"]["d1_drop"],
                      "abs_rel_rise": info["gate"]["abs_rel_rise"], "passed": ok})
        if ok:
            chosen = k
            break
    result: Dict[str, Any] = {"sensitivity": ranking, "steps": steps, "passed": False, "float_layers": [],
                              "quantized_layers": len(layers)}
    if chosen is None:
        return result
    final = str(Path(workdir) / "fallback.onnx")
    for k in range(chosen, len(order) + 1):  # confirm on onnxruntime's own quantization of the exclusion
        quantize(final, order[:k])
        # An excluded layer whose input tensor also feeds a quantized layer still reads that tensor's
        # shared DequantizeLinear after nodes_to_exclude; point it at the float tensor, as measured.
        onnx.save(with_float_layers(_load(final), order[:k]), final)
        ok, info = accept(final)
        if ok:
            int8 = quantized_layers(_load(final))
            macs = layer_macs(pre_model)
            result.update(passed=True, path=final, float_layers=order[:k], int8_layers=len(int8),
                          share=int8_share(macs, int8), full_share=int8_share(macs, layers), **info)
            return result
        steps.append({"float_layers": k, "d1_drop": info["gate"]["d1_drop"],
                      "abs_rel_rise": info["gate"]["abs_rel_rise"], "passed": False, "requantized": True})
    return result


def cpu_latency(fp32: str, full_int8: str, mixed: str, inputs: np.ndarray, rounds: int, threads: int
                ) -> Dict[str, Any]:
    """onnxruntime CPU latency of FP32, full INT8 and mixed Q/DQ models, interleaved in one run.

    A CPU runs Q/DQ models by quantize/dequantize arithmetic around float kernels, so these figures say
    nothing about TensorRT's INT8 kernels; they are recorded so the report shows what was measured."""
    from edgedepth.calibrate.speed import interleaved_latency

    res = interleaved_latency([fp32, full_int8, mixed], inputs, rounds, threads=threads)
    ms = {p: round(res[p]["median_ms"], 3) for p in (fp32, full_int8, mixed)}
    return {"fp32_ms": ms[fp32], "full_int8_ms": ms[full_int8], "mixed_ms": ms[mixed],
            "rounds": rounds, "threads": threads, "provider": "onnxruntime CPU"}
