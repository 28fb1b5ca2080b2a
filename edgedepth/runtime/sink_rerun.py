"""Live depth in the Rerun viewer, or recorded to an .rrd file (the `viewers` extra: rerun-sdk).

    rerun://127.0.0.1:9876            stream to a running viewer (`rerun` starts one; 9876 is its port)
    rerun+file://out/run.rrd | run.rrd   record to a file (open it with `rerun run.rrd`)
    ...?max_fps=30                    images (RGB, depth, uncertainty) at most this many per second of
                                      capture time, plus every kept frame; 0 = every frame. The time
                                      series below have every frame either way.

What is logged, per frame, on the timelines `frame` (the run's sequence number) and `capture_time`
(the frame's wall-clock capture time):

    world/camera         Pinhole from the intrinsics (x right, y down, z forward), at the depth map's size
    world/camera/depth   DepthImage in metres (meter = 1): under the Pinhole the viewer draws it as a 3D
                         point cloud, and as a colour-mapped depth image in 2D
    rgb                  the input frame (RGB)
    uncertainty          expected relative depth error exp(u) per pixel (0.1 = 10 %)
    selection/score      the selection score, and selection/<part> for its parts (uncertainty, flicker,
                         novelty...), as time series
    selection/kept       1 for a frame kept for upload, else 0; selection/events: a text log line per
                         kept (or low-confidence) frame
    stats/infer_ms, stats/confident_fraction

Without intrinsics (no --intrinsics, none from the source or the device config) the depth is logged as a
2D depth image only. The first frame sends a default layout (`default_layout`). Logging runs in the
output's own thread (edgedepth.runtime.sink_thread).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from edgedepth.errors import ConfigError, require
from edgedepth.runtime.sink_thread import BackgroundSink, ViewerFrame

log = logging.getLogger(__name__)

DEFAULT_PORT = 9876
FLUSH_TIMEOUT_S = 10.0  # at the end of a run, how long to wait for a viewer to take what is left
DEFAULT_MAX_FPS = 30.0  # images logged per second of capture time (a viewer needs no more; 0 = every frame)
BATCH_SECONDS = 0.25  # per-frame data is sent in columns covering at most this much capture time
BATCH_FRAMES = 128  # ... or this many frames (bounds the memory held at very high frame rates)


class _Column:
    """One entity's pending rows: frame numbers, capture times (ns) and values (floats or image bytes)."""

    __slots__ = ("seq", "stamps", "values")

    def __init__(self) -> None:
        self.seq: List[int] = []
        self.stamps: List[int] = []
        self.values: list = []

    def add(self, f: ViewerFrame) -> None:
        self.seq.append(int(f.seq))
        self.stamps.append(int(round(f.wall_time * 1e9)))


def _rerun():
    return require("rerun", extra="viewers")


def default_layout(with_camera: bool = True):
    """The viewer's layout: the 3D point cloud (with a camera model), RGB, depth and uncertainty images,
    the selection time series with the kept-frame log, and the loop's figures."""
    import rerun.blueprint as rrb

    images = [rrb.Spatial2DView(name="RGB", origin="rgb"),
              rrb.Spatial2DView(name="depth (m)", origin="world/camera" if with_camera else "depth"),
              rrb.Spatial2DView(name="uncertainty (relative error)", origin="uncertainty")]
    series = rrb.Vertical(rrb.TimeSeriesView(name="selection score and parts", origin="selection"),
                          rrb.TextLogView(name="kept frames", origin="selection/events"),
                          rrb.TimeSeriesView(name="inference ms, confident share", origin="stats"))
    views = ([rrb.Spatial3DView(name="3D (metres)", origin="world")] if with_camera else []) \
        + [rrb.Vertical(*images), series]
    return rrb.Blueprint(rrb.Horizontal(*views), collapse_panels=True)


class RerunSink(BackgroundSink):
    name = "rerun"

    def __init__(self, target: str, kind: str = "file", intrinsics=None, device=None,
                 application_id: str = "edgedepth", queue_size: int = 64, max_fps: float = DEFAULT_MAX_FPS):
        rr = _rerun()
        self.max_fps = float(max_fps)
        self._image_at = float("-inf")
        self.rr = rr
        self.target, self.kind = target, kind
        self.rec = rr.RecordingStream(application_id)
        if kind == "file":
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.rec.save(str(path))
            log.info("recording depth for Rerun to %s (open it with `rerun %s`)", path, path)
        else:
            self.rec.connect_grpc(f"rerun+http://{target}/proxy")
            log.info("streaming depth to the Rerun viewer at %s", target)
        self._K_logged: Optional[tuple] = None
        self._layout_sent = False
        self._formats: Dict[str, tuple] = {}  # entity -> the image format logged for it
        self._pending: Dict[str, _Column] = {}
        self._batch_start = float("-inf")
        super().__init__(intrinsics=intrinsics, device=device, queue_size=queue_size)

    def emit(self, f: ViewerFrame) -> None:
        rr, rec = self.rr, self.rec
        h, w = f.depth.shape
        if not self._layout_sent:  # the first frame tells whether there is a camera model (a 3D view)
            rec.send_blueprint(default_layout(f.K_depth is not None))
            self._layout_sent = True
        if f.K_depth is not None:
            key = (h, w, f.K_depth.tobytes())
            if key != self._K_logged:  # the camera model only when it changes (latest-at applies)
                self._at(f)
                rec.log("world/camera", rr.Pinhole(image_from_camera=f.K_depth, resolution=[w, h],
                                                   camera_xyz=rr.ViewCoordinates.RDF))
                self._K_logged = key
            depth_path = "world/camera/depth"
        else:
            depth_path = "depth"
        # images at most max_fps per second of capture time (kept frames always): the heavy part
        if self.max_fps <= 0 or f.selected or f.wall_time - self._image_at >= 1.0 / self.max_fps - 1e-6:
            self._image_at = f.wall_time
            self._image(f, depth_path, f.depth, depth=True)
            self._image(f, "rgb", f.rgb)
            self._image(f, "uncertainty", np.exp(f.uncertainty).astype(np.float32))
        self._scalar(f, "selection/kept", 1.0 if f.selected else 0.0)
        for key, value in f.scores.items():
            self._scalar(f, f"selection/{key}", value)
        self._scalar(f, "stats/infer_ms", f.infer_ms)
        self._scalar(f, "stats/confident_fraction", f.confident_fraction)
        if f.selected:
            self._at(f)
            rec.log("selection/events", rr.TextLog(
                f"frame {f.index} kept for upload (score {f.scores.get('score', 0.0):.3f})", level="INFO"))
        if not f.reliable:
            self._at(f)
            rec.log("selection/events", rr.TextLog(
                f"frame {f.index} low confidence ({f.confident_fraction:.0%} of pixels confident)",
                level="WARN"))
        if self._batch_start == float("-inf"):
            self._batch_start = f.wall_time
        if f.wall_time - self._batch_start >= BATCH_SECONDS or self._batched >= BATCH_FRAMES:
            self._send()

    # Per-frame data goes out in columns (rr.send_columns: one call per entity per batch, a fraction of
    # the cost of one log call per entity per frame); a batch covers at most BATCH_SECONDS of capture
    # time or BATCH_FRAMES frames, so a live viewer lags by about that much.
    @property
    def _batched(self) -> int:
        return max((len(c.seq) for c in self._pending.values()), default=0)

    def _at(self, f: ViewerFrame) -> None:
        self.rec.set_time("frame", sequence=int(f.seq))
        self.rec.set_time("capture_time", timestamp=float(f.wall_time))

    def _column(self, path: str) -> "_Column":
        col = self._pending.get(path)
        if col is None:
            col = self._pending[path] = _Column()
        return col

    def _scalar(self, f: ViewerFrame, path: str, value: float) -> None:
        col = self._column(path)
        col.add(f)
        col.values.append(float(value))

    def _image(self, f: ViewerFrame, path: str, array: np.ndarray, depth: bool = False) -> None:
        fmt = (array.shape, array.dtype.str)
        if self._formats.get(path) != fmt:  # first frame or a new size: flush, then log the new format
            self._send_one(path)
            rr = self.rr
            h, w = array.shape[:2]
            image_format = rr.components.ImageFormat(
                width=w, height=h, color_model="RGB" if array.ndim == 3 else "L",
                channel_datatype="U8" if array.dtype == np.uint8 else "F32")
            self._at(f)
            self.rec.log(path, rr.DepthImage.from_fields(format=image_format, meter=1.0) if depth
                         else rr.Image.from_fields(format=image_format))
            self._formats[path] = fmt
        col = self._column(path)
        col.add(f)
        col.values.append(np.ascontiguousarray(array).view(np.uint8).reshape(-1))

    def _send_one(self, path: str) -> None:
        col = self._pending.pop(path, None)
        if col is None or not col.seq:
            return
        rr = self.rr
        times = np.array(col.stamps, dtype="datetime64[ns]")
        indexes = [rr.TimeColumn("frame", sequence=col.seq), rr.TimeColumn("capture_time", timestamp=times)]
        if isinstance(col.values[0], np.ndarray):
            archetype = rr.DepthImage if path.endswith("depth") else rr.Image
            columns = archetype.columns(buffer=np.stack(col.values))
        else:
            columns = rr.Scalars.columns(scalars=col.values)
        self.rec.send_columns(path, indexes=indexes, columns=columns)

    def _send(self) -> None:
        for path in list(self._pending):
            self._send_one(path)
        self._batch_start = float("-inf")

    def finish(self) -> None:
        try:
            self._send()
            # a viewer that went away must not hold up the end of the run (the SDK waits forever by default)
            self.rec.flush(timeout_sec=FLUSH_TIMEOUT_S)
        finally:
            self.rec.disconnect()


def make_rerun_sink(uri: str, intrinsics=None, device=None) -> RerunSink:
    """rerun://HOST[:PORT] (a live viewer), rerun+file://PATH.rrd or PATH.rrd (a recording); option
    max_fps=N (images per second of capture time, default 30; 0 = every frame)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if set(params) - {"max_fps"}:
        raise ConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(set(params) - {'max_fps'}))}; "
                          "use max_fps (images per second, 0 = every frame)")
    try:
        max_fps = float(params.get("max_fps", DEFAULT_MAX_FPS))
    except ValueError:
        raise ConfigError(f"{uri!r}: max_fps must be a number (0 = every frame)") from None
    if not max_fps >= 0:
        raise ConfigError(f"{uri!r}: max_fps must be >= 0 (0 = every frame)")
    if scheme == "rerun":
        if not parts.hostname:
            raise ConfigError(f"{uri!r}: name the viewer as rerun://HOST:PORT (e.g. rerun://127.0.0.1:9876)")
        port = parts.port or DEFAULT_PORT
        return RerunSink(f"{parts.hostname}:{port}", kind="grpc", intrinsics=intrinsics, device=device,
                         max_fps=max_fps)
    path = unquote(parts.netloc + parts.path) if scheme in ("rerun+file", "file") else uri.split("?", 1)[0]
    if not path.lower().endswith(".rrd"):
        raise ConfigError(f"{uri!r}: a Rerun recording needs an .rrd path (rerun+file://out/run.rrd)")
    return RerunSink(path, kind="file", intrinsics=intrinsics, device=device, max_fps=max_fps)
