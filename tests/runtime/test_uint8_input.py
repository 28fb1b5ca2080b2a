"""A bundle whose model preprocesses inside its graph: the loop hands it the frame's bytes, no float
preprocessing on the CPU, and gets the depth the float pipeline would."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgedepth.runtime.backends import load_backend
from edgedepth.runtime.capture import Source
from edgedepth.runtime.loop import DepthLoop
from edgedepth.runtime.sources import Frame, RawSource

CAMERA = (128, 192)  # twice the tiny model's 64x96


def uint8_model(float_path, out_path, fmt="uint8-hwc-bgr", camera=CAMERA):
    """The float tiny model with preprocessing put in front of it, as `edgedepth export` does."""
    import dataclasses

    import onnx
    from edgedepth.export.input_graph import add_uint8_input

    from edgedepth.modelmeta import ModelInfo
    from edgedepth.preprocess import InputSpec

    mp = onnx.load(str(float_path))
    props = {p.key: p.value for p in mp.metadata_props}
    info = ModelInfo.from_metadata_props(props)
    spec = InputSpec(fmt, *camera)
    add_uint8_input(mp, info.preprocessing, spec)
    del mp.metadata_props[:]
    for key, value in dataclasses.replace(info, input=spec).to_metadata_props().items():
        entry = mp.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(mp, full_check=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(mp, str(out_path))
    return out_path


class CameraLike(RawSource):
    """Frames as an OpenCV camera delivers them: RGB for everyone, the BGR original alongside."""

    live, finite = False, True

    def __init__(self, n=8):
        rng = np.random.default_rng(3)
        self.bgr = [rng.integers(0, 255, (*CAMERA, 3), dtype=np.uint8) for _ in range(n)]
        self.uri, self.i = "test://camera", 0

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= len(self.bgr):
            return None
        bgr = self.bgr[self.i]
        self.i += 1
        now = time.monotonic()
        return Frame(np.ascontiguousarray(bgr[..., ::-1]), self.i - 1, 0.0, now, time.time(), bgr=bgr)


@pytest.mark.parametrize("fmt", ["uint8-hwc-bgr", "uint8-hwc-rgb"])
def test_loop_feeds_camera_bytes_and_matches_the_float_pipeline(tmp_path, tiny_onnx, fmt):
    be = load_backend(uint8_model(tiny_onnx, tmp_path / "b" / "model.onnx", fmt), backend="ort-cpu")
    assert be.input_shape == (1, *CAMERA, 3) and be.input_dtype == np.uint8
    ref_be = load_backend(tiny_onnx, backend="ort-cpu")
    fed = []
    infer = be.infer

    def spy(batch):
        fed.append(batch)
        return infer(batch)

    be.infer = spy
    raw = CameraLike()
    results = []
    summary = DepthLoop(Source(raw).start(), be, on_result=lambda r: results.append(
        (r.frame, r.depth.copy()))).run()
    assert summary.frames == len(raw.bgr) and summary.errors == 0
    for batch, (frame, depth) in zip(fed, results):
        own = frame.bgr if fmt == "uint8-hwc-bgr" else frame.rgb
        assert batch.dtype == np.uint8 and np.shares_memory(batch, own)  # the frame's bytes, not a copy
        ref, _ = ref_be.infer(ref_be.info.preprocessing.apply(frame.rgb))
        assert depth.shape == (64, 96)
        assert float(np.max(np.abs(depth - ref[0, 0]) / ref[0, 0])) <= 2e-2


def test_frame_of_another_size_or_order_is_converted(tmp_path, tiny_onnx):
    be = load_backend(uint8_model(tiny_onnx, tmp_path / "model.onnx", "uint8-hwc-bgr"), backend="ort-cpu")
    spec = be.info.input
    rgb = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    packed = spec.pack(rgb)  # no BGR original, another size: resized, reordered
    assert packed.shape == (1, *CAMERA, 3) and packed.dtype == np.uint8
    depth, _ = be.infer(packed)
    assert depth.shape == (1, 1, 64, 96) and np.all(np.isfinite(depth))
    with pytest.raises(Exception, match="uint8"):
        be.infer(np.zeros((1, 3, 64, 96), np.float32))
