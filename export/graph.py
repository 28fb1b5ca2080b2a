"""Small ONNX graph clean-ups after torch's exporter: no Identity/Constant nodes, unique weight names.

Each pass mutates a ModelProto in place and returns a count of what it changed. onnx is imported by
the caller; these functions only touch protobuf objects (plus onnx.numpy_helper where needed).
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List


def _consumers(graph) -> Dict[str, List]:
    out: Dict[str, List] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def constants_to_initializers(model) -> int:
    """Constant nodes with a tensor value become initializers (what TensorRT and the quantizer expect)."""
    graph = model.graph
    keep, moved = [], 0
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return moved


def remove_identities(model) -> int:
    """Bypass Identity nodes (the exporter emits them for de-duplicated folded BN biases)."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: Dict[str, str] = {}
    keep, removed = [], 0
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            src = node.input[0]
            rename[node.output[0]] = rename.get(src, src)
            removed += 1
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    return removed


def unshare_initializers(model) -> int:
    """Give every weighted op its own copy of an initializer it shares with another node.

    Per-node quantization (bias scale = input scale x weight scale) needs one tensor per consumer.
    Initializers are renamed after their node: `<node>.weight`, `<node>.bias`.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input if name in inits)
    copied = 0
    renamed: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        for idx, role in ((1, "weight"), (2, "bias")):
            if idx >= len(node.input) or node.input[idx] not in inits:
                continue
            old = node.input[idx]
            new = f"{node.name or node.output[0]}.{role}"
            if uses[old] > 1:
                tensor = type(inits[old])()
                tensor.CopyFrom(inits[old])
                tensor.name = new
                graph.initializer.append(tensor)
                inits[new] = tensor
                uses[old] -= 1
                copied += 1
            elif old not in renamed and new not in inits:
                inits[old].name = new
                inits[new] = inits.pop(old)
                renamed[old] = new
            else:
                continue
            node.input[idx] = new
    return copied


def prune_unused_initializers(model) -> int:
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    removed = len(graph.initializer) - len(keep)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    # Initializers must not also be graph inputs for TensorRT's parser to treat them as constants.
    names = {t.name for t in keep}
    inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    return removed


def int64_initializers(model) -> List[str]:
    """Names of INT64 initializers (TensorRT casts them to INT32; lint warns)."""
    return [t.name for t in model.graph.initializer if t.data_type == 7]


def op_histogram(model) -> Dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def clean_graph(model) -> Dict[str, int]:
    """All passes in order; returns what each changed."""
    return {
        "constants_to_initializers": constants_to_initializers(model),
        "identities_removed": remove_identities(model),
        "initializers_unshared": unshare_initializers(model),
        "unused_initializers_removed": prune_unused_initializers(model),
    }
