"""The selector's features computed inside the exported graph ('selection' output) agree with the CPU
path, survive a uint8 front and INT8 calibration's exclusions, and the live loop uses them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgedepth.modelmeta import KEY_SELECTION, read_onnx_info
from edgedepth.preprocess import OUTPUT_SELECTION, selection_length
from edgedepth.runtime.backends import load_backend
from edgedepth.runtime.selection import FrameSelector, SelectionConfig


def _export(tmp_path, tiny_ckpt, frames_dir, **kw):
    from edgedepth.export.onnx import export_onnx

    out = tmp_path / "bundle"
    export_onnx(str(tiny_ckpt), str(out), opset=13, data=str(frames_dir), parity_frames=2, **kw)
    return out / "model.onnx"


def _frames(n=6, h=64, w=64):
    rng = np.random.default_rng(4)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.clip(base.astype(int) + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


@pytest.mark.parametrize("input_format", ["float-nchw", "uint8-hwc-rgb"])
def test_graph_features_match_the_cpu_features(tmp_path, tiny_ckpt, frames_dir, input_format):
    model = _export(tmp_path, tiny_ckpt, frames_dir, input_format=input_format)
    info = read_onnx_info(str(model))
    assert info.selection_stride == 8 and json.loads(info.extra[KEY_SELECTION])["thumbnail"] == [12, 16]
    be = load_backend(model, backend="ort-cpu")
    pre = be.info.preprocessing
    graph, cpu = FrameSelector(SelectionConfig(mode="none")), FrameSelector(SelectionConfig(mode="none"))
    for i, rgb in enumerate(_frames(h=pre.height, w=pre.width)):
        batch = be.info.input.pack(rgb, bgr=False) if be.info.input.is_uint8 else pre.apply(rgb)
        out = be.infer(batch)
        depth, unc = out
        assert out.selection is not None
        assert out.selection.shape == (1, selection_length((pre.height, pre.width), 8))
        d, u = depth[0, 0], unc[0, 0]
        a = graph.score(rgb, d, u, i, i / 30.0, features=out.selection).scores
        b = cpu.score(rgb, d, u, i, i / 30.0).scores
        assert "invalid" not in a and graph._prev_vector is not None  # the graph's vector was used
        assert a["uncertainty"] == pytest.approx(b["uncertainty"], rel=1e-5)
        assert a["temporal"] == pytest.approx(b["temporal"], rel=1e-4, abs=1e-7)
        # the graph's thumbnail is float and made from the network input; OpenCV's rounds to grey levels
        assert a["image_change"] == pytest.approx(b["image_change"], abs=2.0 / 255)
    # the embedding of a keep candidate works from the graph's planar thumbnail as from OpenCV's
    emb_graph, emb_cpu = graph.embedding(), cpu.embedding()
    assert emb_graph.shape == (64,) and float(emb_graph @ emb_cpu) > 0.98
    cv2_thumb = cv2.resize(rgb, (16, 12), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    planar = out.selection[0, -576:].reshape(3, 12, 16).transpose(1, 2, 0)
    assert np.abs(planar - cv2_thumb).max() <= 1.0


def test_a_model_without_the_output_and_a_foreign_grid_use_the_cpu_path(tmp_path, tiny_ckpt, frames_dir):
    model = _export(tmp_path, tiny_ckpt, frames_dir, selection_stride=0)
    be = load_backend(model, backend="ort-cpu")
    assert be.info.selection_stride == 0 and getattr(be.infer(np.zeros(be.input_shape, np.float32)),
                                                     "selection", None) is None
    sel = FrameSelector(SelectionConfig(mode="none"))  # stride 8; a vector of another grid is ignored
    rgb = _frames(1)[0]
    d, u = np.full((64, 64), 2.0, np.float32), np.full((64, 64), -2.0, np.float32)
    wrong = np.zeros((1, selection_length((64, 64), 4)), np.float32)
    scores = sel.score(rgb, d, u, 0, 0.0, features=wrong).scores
    assert scores["uncertainty"] == pytest.approx(float(np.exp(-2.0)), rel=1e-5)


def test_the_loop_hands_the_graph_features_to_the_selector(tmp_path, tiny_ckpt, frames_dir):
    from edgedepth.runtime.capture import Source
    from edgedepth.runtime.loop import DepthLoop
    from tests.runtime.test_loop import ListSource

    model = _export(tmp_path, tiny_ckpt, frames_dir)
    be = load_backend(model, backend="ort-cpu")

    class Spy(FrameSelector):
        cpu_frames = 0

        def features(self, rgb, depth, uncertainty):
            Spy.cpu_frames += 1
            return super().features(rgb, depth, uncertainty)

    sel = Spy(SelectionConfig(mode="hard", warmup=2))
    frames = _frames(8)
    DepthLoop(Source(ListSource(frames)), be, selector=sel).run()
    assert sel._seen == 8 and Spy.cpu_frames == 0


def test_calibration_keeps_the_selection_nodes_in_float(tmp_path, tiny_ckpt, frames_dir):
    from edgedepth.calibrate.quantize import float_tail_nodes

    model = _export(tmp_path, tiny_ckpt, frames_dir)
    import onnx

    mp = onnx.load(str(model))
    names = {n.name for n in mp.graph.node if n.name.startswith("selection/")}
    assert names and names <= set(float_tail_nodes(str(model)))
    assert [o.name for o in mp.graph.output][-1] == OUTPUT_SELECTION


def test_the_int8_model_feeds_the_selection_branch_float_tensors(tmp_path, tiny_ckpt, frames_dir):
    """The input image feeds both the first convolution (quantized) and the thumbnail: after
    quantization the branch must still read the float image, not its INT8 round trip."""
    import onnx
    from edgedepth.calibrate import quantize as q

    from edgedepth.preprocess import SELECTION_NODE_PREFIX

    model = _export(tmp_path, tiny_ckpt, frames_dir)
    pre = tmp_path / "pre.onnx"
    q.pre_process(str(model), str(pre))
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ranges = q.calibrate_ranges(str(pre), x, "minmax", tmp_path / "r.json")
    mp = onnx.load(q.quantize_trt(str(pre), str(tmp_path / "int8.onnx"), ranges, "minmax"))
    producer = {o: n.op_type for n in mp.graph.node for o in n.output}
    branch = [n for n in mp.graph.node if n.name.startswith(SELECTION_NODE_PREFIX)]
    assert branch and "DequantizeLinear" in producer.values()
    assert not [i for n in branch for i in n.input if producer.get(i) == "DequantizeLinear"]
