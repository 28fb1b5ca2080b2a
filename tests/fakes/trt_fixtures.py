"""Helpers for the engine tests: a tiny ONNX model with edgedepth metadata and a bundle built by a fake
TensorRT."""

from __future__ import annotations

import json
from pathlib import Path

H, W = 32, 64


def write_tiny_onnx(path: Path, selection: bool = False) -> Path:
    """A two-output ONNX file with edgedepth metadata (onnx is a test dependency; no torch needed); with
    `selection`, also the frame selector's feature output as `edgedepth export` adds it."""
    import onnx
    from onnx import TensorProto, helper

    from edgedepth.modelmeta import ModelInfo
    from edgedepth.preprocess import Preprocessing

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Add", ["m", "one"], ["depth"]),
        helper.make_node("Neg", ["depth"], ["uncertainty"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
        [
            helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, H, W]),
            helper.make_tensor_value_info("uncertainty", TensorProto.FLOAT, [1, 1, H, W]),
        ],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(preprocessing=Preprocessing(height=H, width=W), name="tiny-fake", version="3")
    if selection:
        from edgedepth.export.selection_graph import add_selection_output

        from edgedepth.modelmeta import KEY_SELECTION
        from edgedepth.preprocess import SELECTION_STRIDE

        info.extra[KEY_SELECTION] = add_selection_output(model, info.preprocessing, SELECTION_STRIDE)
    for k, v in info.to_metadata_props().items():
        model.metadata_props.add(key=k, value=v)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_bundle(tmp_path: Path, trt_module, board: str = "orin-nano-8gb", name: str = "b",
                selection: bool = False) -> Path:
    """BUNDLE/model.onnx + BUNDLE/engines/<engine> built by the fake TensorRT through edgedepth build."""
    from edgedepth.export.trt_build import build_engine, plan_build  # the path both generations have

    bdir = tmp_path / name
    write_tiny_onnx(bdir / "model.onnx", selection=selection)
    plan = plan_build(str(bdir / "model.onnx"), board, "fp16", trt_version=trt_module.__version__)
    build_engine(plan, trt_module)
    return bdir


def engine_of(bdir: Path) -> Path:
    return next((bdir / "engines").glob("*.engine"))


def manifest_of(bdir: Path) -> dict:
    return json.loads(engine_of(bdir).with_suffix(".json").read_text())
