"""Readable depth previews: the colour bar in metres, and overlay figures from the first frame on."""

from __future__ import annotations

import cv2
import numpy as np

from edgedepth.colorbar import attach_colorbar, colorbar, depth_to_colour, depth_units, display_range
from edgedepth.runtime.backends import load_backend
from edgedepth.runtime.capture import open_source
from edgedepth.runtime.loop import DepthLoop
from edgedepth.runtime.sinks import Sink, Visualizer, stats_overlay_line
from edgedepth.runtime.stats import LoopStats


def test_the_bar_uses_the_preview_colours_near_at_the_top():
    cmap = cv2.COLORMAP_TURBO
    bar = colorbar(200, 0.5, 6.0, cmap)
    grad = bar[2:198, 2:6].astype(int)
    near = depth_to_colour(np.array([[0.5]], np.float32), 0.5, 6.0, cmap)[0, 0].astype(int)
    far = depth_to_colour(np.array([[6.0]], np.float32), 0.5, 6.0, cmap)[0, 0].astype(int)
    assert np.abs(grad[0, 0] - near).max() <= 12 and np.abs(grad[-1, 0] - far).max() <= 12
    assert np.abs(near - far).max() > 50  # the two ends differ: it is a ramp, not a blank strip
    inverted = colorbar(200, 0.5, 6.0, cmap, inverted=True)[2:198, 2:6].astype(int)
    assert np.abs(inverted[0, 0] - far).max() <= 12
    labels = bar[:, 2 + grad.shape[1] + 4:]
    assert (labels > 200).any()  # tick text is drawn


def test_attach_colorbar_keeps_the_image_and_adds_a_bar():
    img = np.zeros((96, 128, 3), np.uint8)
    out = attach_colorbar(img, 1.0, 3.0)
    assert out.shape[0] == 96 and out.shape[1] > 128 + 40
    assert (out[:, :128] == 0).all()
    assert out.shape == attach_colorbar(img, 10.0, 70.0).shape  # fixed width: videos keep their size


def test_display_range_ignores_invalid_pixels():
    d = np.full((64, 64), 2.0, np.float32)
    d[:8] = 0.0
    d[8:16] = np.nan
    d[32:, :] = 4.0
    lo, hi = display_range(d)
    assert lo == 2.0 and hi == 4.0
    assert display_range(d, fixed=(1.0, 1.0)) == (1.0, 1.0 + 1e-3)


def test_depth_units_reads_a_relative_model():
    from edgedepth.modelmeta import ModelInfo
    from edgedepth.preprocess import Preprocessing

    pre = Preprocessing(height=32, width=32)
    props = ModelInfo(preprocessing=pre, depth_units="relative").to_metadata_props()
    relative = ModelInfo.from_metadata_props(props)
    assert depth_units(None) == "m" and depth_units(ModelInfo(preprocessing=pre)) == "m"
    assert depth_units(relative) == "relative"  # survives the ONNX metadata round trip


def test_visualizer_view_has_input_depth_and_bar():
    from edgedepth.runtime.postprocess import Postprocessor
    from edgedepth.runtime.sources import Frame

    frame = Frame(rgb=np.zeros((96, 128, 3), np.uint8), index=0, t=0.0, captured=0.0, wall_time=0.0)
    depth = np.tile(np.linspace(1.0, 5.0, 64, dtype=np.float32), (48, 1))
    result = Postprocessor()(frame, 0, depth, np.full((48, 64), -3.0, np.float32), 1.0)
    vis = Visualizer("inferno")
    view = vis.compose(result, ["model", "warming up"])
    assert view.shape[0] == 96 and view.shape[1] == 2 * 128 + colorbar(96, 1, 5).shape[1]
    assert vis.last_range[0] < 1.2 and vis.last_range[1] > 4.8


def test_overlay_line_before_and_after_the_first_figures():
    stats = LoopStats()
    line = stats_overlay_line(stats.snapshot())
    assert line.startswith("warming up") and "nan" not in line
    for i in range(5):
        stats.record(20.0 + i, 5.0, 0.1, 100.0 + i * 0.05)
    line = stats_overlay_line(stats.snapshot())
    assert "fps" in line and "nan" not in line and not line.startswith("0.0")


class _Views(Sink):
    wants_view = True

    def __init__(self):
        self.lines = []
        self.shapes = []

    def write(self, result, view):
        self.shapes.append(view.shape)


class _RecordingVisualizer(Visualizer):
    def __init__(self, sink):
        super().__init__()
        self.sink = sink

    def compose(self, result, lines):
        self.sink.lines.append(list(lines))
        return super().compose(result, lines)


def test_the_overlay_never_shows_empty_figures(tiny_onnx):
    backend = load_backend(str(tiny_onnx), backend="ort-cpu", threads=1)
    sink = _Views()
    source = open_source("synthetic://indoor?seed=1&size=64x96&cache=4", default_size=(64, 96))
    DepthLoop(source, backend, sinks=[sink], visualizer=_RecordingVisualizer(sink), max_frames=6).run()
    source.close()
    backend.close()
    assert len(sink.lines) == 6
    for lines in sink.lines:
        assert "nan" not in lines[1] and not lines[1].startswith("0.0 fps"), lines
    assert sink.lines[0][1].startswith("warming up  infer ")
    assert any("fps" in lines[1] for lines in sink.lines[2:])  # figures as soon as there are some
    assert sink.shapes[0][1] > 2 * 96  # input | depth | colour bar
