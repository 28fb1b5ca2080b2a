"""The hard-frame selector's per-frame features, computed inside the model as a third output.

`add_selection_output` appends to a float-input graph (before any uint8 front is put on it):

    uncertainty -> Slice(every s-th pixel) -> Exp -> GlobalAveragePool    -> mean exp(u)      (N, 1)
    depth       -> Slice(every s-th pixel) -> Log -> Flatten              -> log-depth grid   (N, gh*gw)
    image       -> Resize(12x16, bilinear) -> x * 255 std + 255 mean -> Flatten -> thumbnail (N, 576)
    Concat -> 'selection' (N, 1 + gh*gw + 576)

so the engine (on a Jetson, the GPU) does the per-pixel work that edgedepth.runtime.selection would
otherwise do on the CPU for every frame, and the CPU compares two small vectors with the previous
frame's. The sampling grid is the selector's (`[::s, ::s]` from the first pixel); the thumbnail is the
network input's colours in 0..255, planar RGB. The layout is described at edgedepth.preprocess's
OUTPUT_SELECTION (length: `selection_length()`); the stride is recorded in the model's metadata
(edgedepth.modelmeta.KEY_SELECTION). Node names start with SELECTION_NODE_PREFIX, and the quantizer keeps
them in float.
"""

from __future__ import annotations

import json
from typing import List

import numpy as np

from edgedepth.errors import ModelError
from edgedepth.preprocess import (
    INPUT_NAME,
    OUTPUT_DEPTH,
    OUTPUT_SELECTION,
    OUTPUT_UNCERTAINTY,
    SELECTION_NODE_PREFIX,
    SELECTION_THUMB,
    Preprocessing,
    selection_length,
)

PREFIX = SELECTION_NODE_PREFIX.rstrip("/")


def add_selection_output(mp, pre: Preprocessing, stride: int) -> str:
    """Append the feature nodes and the 'selection' output to `mp` (in place); returns the value to record
    under edgedepth.modelmeta.KEY_SELECTION."""
    from onnx import TensorProto, helper, numpy_helper

    graph = mp.graph
    names = {o.name for o in graph.output}
    inputs = {i.name: i for i in graph.input}
    if OUTPUT_SELECTION in names:
        raise ModelError("the graph already has a 'selection' output")
    if not {OUTPUT_DEPTH, OUTPUT_UNCERTAINTY} <= names or INPUT_NAME not in inputs:
        raise ModelError(f"selection features need the input '{INPUT_NAME}' and the outputs "
                         f"'{OUTPUT_DEPTH}', '{OUTPUT_UNCERTAINTY}'")
    if inputs[INPUT_NAME].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError("add the selection output to the float graph, before its uint8 input")
    if stride < 1:
        raise ModelError(f"selection stride must be >= 1, got {stride}")
    batch = inputs[INPUT_NAME].type.tensor_type.shape.dim[0]
    nodes: List = []
    inits: List = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, f"{PREFIX}/{name}"))
        return f"{PREFIX}/{name}"

    def node(op: str, ins: List[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [f"{PREFIX}/{out}"], name=f"{PREFIX}/{out}", **attrs))
        return f"{PREFIX}/{out}"

    # INT32 constants only (TensorRT has no INT64 tensors; lint flags INT64 initializers)
    big = np.iinfo(np.int32).max
    starts = const("starts", np.array([0, 0], np.int32))
    ends = const("ends", np.array([big, big], np.int32))
    axes = const("axes", np.array([2, 3], np.int32))
    steps = const("steps", np.array([stride, stride], np.int32))
    u = node("Slice", [OUTPUT_UNCERTAINTY, starts, ends, axes, steps], "uncertainty_grid")
    mean = node("GlobalAveragePool", [node("Exp", [u], "exp_uncertainty")], "mean")
    mean = node("Flatten", [mean], "mean_flat", axis=1)
    d = node("Slice", [OUTPUT_DEPTH, starts, ends, axes, steps], "depth_grid")
    log_d = node("Flatten", [node("Log", [d], "log_depth_grid")], "log_depth", axis=1)
    th, tw = SELECTION_THUMB
    nc = node("Slice", [node("Shape", [INPUT_NAME], "shape"), const("zero", np.array([0], np.int32)),
                        const("two", np.array([2], np.int32))], "batch_channels")
    hw = node("Cast", [const("thumbnail_size", np.array([th, tw], np.int32))], "thumbnail_size_64",
              to=TensorProto.INT64)
    sizes = node("Concat", [nc, hw], "sizes", axis=0)
    small = node("Resize", [INPUT_NAME, "", "", sizes], "thumbnail_normalised", mode="linear",
                 coordinate_transformation_mode="half_pixel")
    scale = const("std_255", (255.0 * np.asarray(pre.std, np.float32)).reshape(1, 3, 1, 1))
    shift = const("mean_255", (255.0 * np.asarray(pre.mean, np.float32)).reshape(1, 3, 1, 1))
    thumb = node("Add", [node("Mul", [small, scale], "thumbnail_scaled"), shift], "thumbnail")
    thumb = node("Flatten", [thumb], "thumbnail_flat", axis=1)
    nodes.append(helper.make_node("Concat", [mean, log_d, thumb], [OUTPUT_SELECTION], axis=1,
                                  name=f"{PREFIX}/concat"))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    length = selection_length((pre.height, pre.width), stride)
    out = helper.make_tensor_value_info(OUTPUT_SELECTION, TensorProto.FLOAT,
                                        [batch.dim_param or batch.dim_value, length])
    out.doc_string = ("hard-frame selection features: mean exp(uncertainty), log-depth every "
                      f"{stride} pixels, 12x16 RGB thumbnail (edgedepth.runtime.selection)")
    graph.output.append(out)
    return json.dumps({"stride": stride, "thumbnail": list(SELECTION_THUMB)}, sort_keys=True)
