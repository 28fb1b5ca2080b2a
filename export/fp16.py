"""FP16 copy of an ONNX model with FP32 inputs/outputs, for strongly typed TensorRT builds.

Two uses, one conversion: a float model for TensorRT 11 FP16 engines (BUNDLE/model.fp16.onnx), and the
float part of a mixed Q/DQ model (`edgedepth calibrate --target trt` left its most INT8-sensitive layers
without Q/DQ) for TensorRT 10.12+ / 11, where a strongly typed network runs a layer in its ONNX tensor
type (BUNDLE/model.int8.trt.fp16.onnx). In a Q/DQ model the INT8 region keeps its FP32 types: every
QuantizeLinear / DequantizeLinear with its FP32 scale, every layer that reads a DequantizeLinear, and the
elementwise ops between such a layer and the next Q/DQ or graph output (Conv -> Relu -> Q), so TensorRT's
Q/DQ fusions see the graph they expect. Everything else becomes FP16, with Casts at the boundaries.

Runs on the workstation (it needs `onnx`, which a device install does not have); the board's build then
parses the copy, whose metadata names the sha256 of the model it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Set

from edgedepth.backends.tensorrt.build import KEY_FP16_OF, fp16_onnx_name
from edgedepth.errors import ModelError, require
from edgedepth.fsutil import file_sha256
from edgedepth.onnxgraph import WEIGHTED_OPS

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def int8_region(graph) -> List[str]:
    """Names of the nodes of a Q/DQ graph that stay FP32 in the FP16 copy (see the module docstring)."""
    producer = {o: n for n in graph.node for o in n.output}
    dq_out = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    base = {n.name for n in graph.node if n.op_type in QDQ_OPS or any(i in dq_out for i in n.input)}
    keep: Set[str] = set(base)
    # Grow forwards over non-weighted ops fed only by the region (or constants) ...
    grown = True
    while grown:
        grown = False
        for n in graph.node:
            if n.name in keep or n.op_type in WEIGHTED_OPS:
                continue
            fed = [producer[i] for i in n.input if i in producer]
            if fed and all(p.name in keep for p in fed):
                keep.add(n.name)
                grown = True
    # ... then drop those whose result reaches a float (FP16) node: they run FP16 after a Cast.
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pruned = True
    while pruned:
        pruned = False
        for n in graph.node:
            if n.name not in keep or n.name in base:
                continue
            users = [u for o in n.output for u in consumers.get(o, [])]
            if any(u.name not in keep for u in users):
                keep.discard(n.name)
                pruned = True
    return [n.name for n in graph.node if n.name in keep]


def drop_round_trips(graph, original: Set[str]) -> int:
    """Remove the FP32 -> FP16 -> FP32 Cast pairs the converter puts between two FP32 (blocked) nodes:
    it casts every blocked node's inputs and outputs, so without this each INT8 layer would see its
    input rounded to FP16 and TensorRT's Q/DQ fusions would meet Casts. Only Casts the conversion added
    (names not in `original`) are touched. Returns how many Casts were removed."""
    producer = {o: n for n in graph.node for o in n.output}
    outputs = {o.name for o in graph.output}
    rewire = {}
    for n in graph.node:
        if n.op_type != "Cast" or n.name in original or n.attribute[0].i != 1:
            continue
        up = producer.get(n.input[0])
        if up is None or up.op_type != "Cast" or up.name in original or up.attribute[0].i != 10:
            continue
        if n.output[0] in outputs:  # a graph output keeps its name: pass the FP32 tensor through
            n.op_type, n.input[0] = "Identity", up.input[0]
            del n.attribute[:]
        else:
            rewire[n.output[0]] = up.input[0]  # read the FP32 tensor the pair started from
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in rewire:
                n.input[k] = rewire[name]
    before = len(graph.node)
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        alive = [n for n in graph.node if n.op_type != "Cast" or n.name in original or n.output[0] in used]
        if len(alive) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(alive)
    _restore_names(graph)
    return before - len(graph.node)


def _restore_names(graph, suffix: str = "_cast_to_fp16") -> None:
    """The converter renames a blocked node's output to NAME_cast_to_fp16 and casts it back to NAME; where
    that Cast went with a round trip, the FP32 tensor gets its own name back (what TensorRT's layer
    names and a debugger show)."""
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {
        t.name for t in graph.initializer}
    back = {o: o[: -len(suffix)] for n in graph.node if n.op_type != "Cast" for o in n.output
            if o.endswith(suffix) and o[: -len(suffix)] not in taken}
    for n in graph.node:
        for seq in (n.input, n.output):
            for k, name in enumerate(seq):
                if name in back:
                    seq[k] = back[name]
    infos = [v for v in graph.value_info if v.name not in set(back.values())]
    for v in infos:
        v.name = back.get(v.name, v.name)
    del graph.value_info[:]
    graph.value_info.extend(infos)


def topological_sort(graph) -> None:
    """Order the nodes so that each comes after the producers of its inputs (the converter appends its
    Casts at the end; the ONNX checker and TensorRT's parser expect a sorted graph)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:  # one sweep in the current order places a sorted run in one pass
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ModelError(f"the FP16 graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def write_fp16_onnx(src, dst: Optional[str] = None) -> Path:
    """Convert `src` to FP16 (keep_io_types) into `dst` (default: <name>.fp16.onnx beside it); in a Q/DQ
    model only the float part (the INT8 region keeps FP32, see int8_region)."""
    onnx = require("onnx", "train")
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    src = Path(src)
    out = Path(dst) if dst else src.with_name(fp16_onnx_name(src.name))
    model = onnx.load(str(src))
    unnamed = [n for n in model.graph.node if not n.name]
    for k, n in enumerate(unnamed):  # the block list goes by node name
        n.name = f"_fp16_node_{k}"
    keep = int8_region(model.graph)
    original = {n.name for n in model.graph.node}
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + (list(QDQ_OPS) if keep else []),
        node_block_list=keep or None,
    )
    if keep:
        drop_round_trips(model.graph, original)
    topological_sort(model.graph)
    props = {p.key: p.value for p in model.metadata_props}
    props[KEY_FP16_OF] = file_sha256(src)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out
