"""Preprocessing inside the model: a uint8 camera-image input in front of the float network.

`add_uint8_input` replaces the float input 'image' (N,3,h,w, normalised RGB) by the camera's bytes
(N,H,W,3 uint8, RGB or BGR, at the camera's size) followed by

    Cast(float) -> Transpose(NHWC->NCHW) -> [Gather: BGR->RGB] -> [AveragePool | Resize] -> Sub -> Div

so TensorRT (or onnxruntime) runs resize, colour order, scaling and mean/std normalisation with the
network and the CPU only hands over the frame's bytes. The resize mirrors edgedepth.preprocess: a
camera image an integer factor larger than the model's input is area-averaged (AveragePool with
kernel = stride = factor, which is what OpenCV's INTER_AREA computes for an integer factor); any other
size uses bilinear Resize with half-pixel centres (OpenCV's INTER_LINEAR). The float pipeline rounds
its resized image to uint8 and this graph does not, so a resizing graph differs from it by up to half
a grey level per pixel; without a resize both compute the same numbers.
All ops parse in TensorRT 8.2+; the channel indices are INT32 (no INT64 initializer for lint).
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from edgedepth.errors import ModelError
from edgedepth.preprocess import INPUT_NAME, InputSpec, Preprocessing

PREFIX = "preprocess"


def resize_plan(spec: InputSpec, pre: Preprocessing) -> str:
    """'none', 'average-pool KHxKW' or 'linear': how the graph brings the camera image to the model's size."""
    (ch, cw), (h, w) = (spec.height, spec.width), (pre.height, pre.width)
    if (ch, cw) == (h, w):
        return "none"
    if ch >= h and cw >= w and ch % h == 0 and cw % w == 0:
        return f"average-pool {ch // h}x{cw // w}"
    return "linear"


def _per_channel(values) -> np.ndarray:
    """(1,3,1,1) float32 of 255 * values: mean and std in grey levels, as the Cast input has them."""
    return (255.0 * np.asarray(values, np.float64)).astype(np.float32).reshape(1, 3, 1, 1)


def add_uint8_input(mp, pre: Preprocessing, spec: InputSpec) -> Dict[str, Any]:
    """Rewrite `mp` (a ModelProto with float input 'image') in place; returns what was added."""
    from onnx import TensorProto, helper, numpy_helper

    if not spec.is_uint8:
        raise ModelError(f"input format {spec.format} is not a uint8 format")
    graph = mp.graph
    old = next((vi for vi in graph.input if vi.name == INPUT_NAME), None)
    if old is None or old.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"the graph has no float input '{INPUT_NAME}' to put preprocessing in front of")
    batch = old.type.tensor_type.shape.dim[0]
    normalised = f"{PREFIX}/normalised"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[i] = normalised

    nodes: List = []
    inits: List = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, f"{PREFIX}/{name}"))
        return f"{PREFIX}/{name}"

    x = f"{PREFIX}/float"
    nodes.append(helper.make_node("Cast", [INPUT_NAME], [x], to=TensorProto.FLOAT, name=f"{PREFIX}/cast"))
    nodes.append(helper.make_node("Transpose", [x], [f"{PREFIX}/nchw"], perm=[0, 3, 1, 2],
                                  name=f"{PREFIX}/transpose"))
    x = f"{PREFIX}/nchw"
    if spec.bgr:
        idx = const("bgr_to_rgb", np.array([2, 1, 0], dtype=np.int32))
        nodes.append(helper.make_node("Gather", [x, idx], [f"{PREFIX}/rgb"], axis=1,
                                      name=f"{PREFIX}/bgr_to_rgb"))
        x = f"{PREFIX}/rgb"
    plan = resize_plan(spec, pre)
    if plan.startswith("average-pool"):
        k = [spec.height // pre.height, spec.width // pre.width]
        nodes.append(helper.make_node("AveragePool", [x], [f"{PREFIX}/resized"], kernel_shape=k, strides=k,
                                      name=f"{PREFIX}/resize"))
        x = f"{PREFIX}/resized"
    elif plan == "linear":
        if batch.dim_value == 1:
            sizes = const("sizes", np.array([1, 3, pre.height, pre.width], dtype=np.int64))
        else:  # dynamic batch: the batch size comes from the input's shape
            nodes.append(helper.make_node("Shape", [x], [f"{PREFIX}/shape"], name=f"{PREFIX}/shape"))
            nodes.append(helper.make_node(
                "Slice", [f"{PREFIX}/shape", const("zero", np.array([0], np.int64)),
                          const("one", np.array([1], np.int64))], [f"{PREFIX}/batch"],
                name=f"{PREFIX}/batch"))
            nodes.append(helper.make_node(
                "Concat", [f"{PREFIX}/batch", const("chw", np.array([3, pre.height, pre.width], np.int64))],
                [f"{PREFIX}/sizes"], axis=0, name=f"{PREFIX}/sizes"))
            sizes = f"{PREFIX}/sizes"
        nodes.append(helper.make_node("Resize", [x, "", "", sizes], [f"{PREFIX}/resized"], mode="linear",
                                      coordinate_transformation_mode="half_pixel", name=f"{PREFIX}/resize"))
        x = f"{PREFIX}/resized"
    mean = const("mean_255", _per_channel(pre.mean))
    std = const("std_255", _per_channel(pre.std))
    nodes.append(helper.make_node("Sub", [x, mean], [f"{PREFIX}/centred"], name=f"{PREFIX}/subtract_mean"))
    nodes.append(helper.make_node("Div", [f"{PREFIX}/centred", std], [normalised],
                                  name=f"{PREFIX}/divide_std"))

    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body)
    graph.initializer.extend(inits)
    dims = [batch.dim_param or batch.dim_value, spec.height, spec.width, 3]
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, dims)
    new_input.doc_string = (f"camera image, uint8 (N,H,W,3) {'BGR' if spec.bgr else 'RGB'} at "
                            f"{spec.height}x{spec.width}; resized and normalised inside the graph")
    inputs = [new_input if vi.name == INPUT_NAME else vi for vi in graph.input]
    del graph.input[:]
    graph.input.extend(inputs)
    return {"format": spec.format, "camera_size": [spec.height, spec.width], "resize": plan,
            "nodes": [n.op_type for n in nodes]}
