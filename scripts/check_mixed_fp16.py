"""Check the FP16 copy of a mixed Q/DQ model (what a strongly typed TensorRT 10.12+ / 11 build parses)
against the mixed FP32 model on onnxruntime CPU, and print what the conversion kept.

    python scripts/check_mixed_fp16.py BUNDLE/model.int8.trt.onnx [--frames 8] [--seed 0]

Prints the Q/DQ node counts of both graphs, the Casts added, the float layers and their weight type,
and the maximum / median relative depth error of the FP16 copy over random inputs in [0, 1). Writes the
copy to a temporary folder (the bundle is not touched).
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a mixed Q/DQ ONNX (e.g. BUNDLE/model.int8.trt.onnx)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from edgedepth.export.fp16 import write_fp16_onnx

    from edgedepth.onnxgraph import float_weighted_layers

    src = onnx.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        out = write_fp16_onnx(args.model, str(Path(tmp) / "copy.fp16.onnx"))
        fp16 = onnx.load(str(out))
        before = Counter(n.op_type for n in src.graph.node)
        after = Counter(n.op_type for n in fp16.graph.node)
        inits = {t.name: onnx.TensorProto.DataType.Name(t.data_type) for t in fp16.graph.initializer}
        nodes = {n.name: n for n in fp16.graph.node}
        print(f"QuantizeLinear {before['QuantizeLinear']} -> {after['QuantizeLinear']}, "
              f"DequantizeLinear {before['DequantizeLinear']} -> {after['DequantizeLinear']}, "
              f"Casts added {after['Cast'] - before['Cast']}")
        for name in float_weighted_layers(fp16.graph):
            w = nodes[name].input[1] if name in nodes and len(nodes[name].input) > 1 else ""
            print(f"  float layer {name}: weights {inits.get(w, '?')}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written
        cpu = ["CPUExecutionProvider"]
        ref_s = ort.InferenceSession(args.model, opts, providers=cpu)
        got_s = ort.InferenceSession(str(out), opts, providers=cpu)
        inp = ref_s.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        out_name = ref_s.get_outputs()[0].name
        rng = np.random.default_rng(args.seed)
        worst, medians = 0.0, []
        for _ in range(args.frames):
            x = rng.random(shape).astype(np.float32)
            ref = ref_s.run([out_name], {inp.name: x})[0]
            got = got_s.run([out_name], {inp.name: x})[0]
            rel = np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6)
            worst = max(worst, float(rel.max()))
            medians.append(float(np.median(rel)))
        print(f"{args.frames} inputs {shape}, output '{out_name}': max relative error {worst:.5f}, "
              f"median {float(np.median(medians)):.6f} (FP16 copy vs mixed FP32, onnxruntime CPU)")


if __name__ == "__main__":
    main()
