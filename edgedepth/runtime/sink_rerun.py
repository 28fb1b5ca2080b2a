"""Live depth in the Rerun viewer, or recorded to an .rrd file (the `viewers` extra: rerun-sdk).

    rerun://127.0.0.1:9876            stream to a running viewer (`rerun` starts one; 9876 is its port)
    rerun+file://out/run.rrd | run.rrd   record to a file (open it with `rerun run.rrd`)

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
                         kept frame
    stats/infer_ms, stats/confident_fraction

Without intrinsics (no --intrinsics, none from the source or the device config) the depth is logged as a
2D depth image only. Logging runs in the output's own thread (edgedepth.runtime.sink_thread).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import numpy as np

from edgedepth.errors import ConfigError, require
from edgedepth.runtime.sink_thread import BackgroundSink, ViewerFrame

log = logging.getLogger(__name__)

DEFAULT_PORT = 9876


def _rerun():
    return require("rerun", extra="viewers")


class RerunSink(BackgroundSink):
    name = "rerun"

    def __init__(self, target: str, kind: str = "file", intrinsics=None, device=None,
                 application_id: str = "edgedepth", queue_size: int = 8):
        rr = _rerun()
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
        self._depth_range: Optional[tuple] = None
        super().__init__(intrinsics=intrinsics, device=device, queue_size=queue_size)

    def emit(self, f: ViewerFrame) -> None:
        rr, rec = self.rr, self.rec
        rec.set_time("frame", sequence=int(f.seq))
        rec.set_time("capture_time", timestamp=float(f.wall_time))
        h, w = f.depth.shape
        if f.K_depth is not None:
            key = (h, w, *np.round(f.K_depth.ravel(), 6))
            if key != self._K_logged:  # the camera model only when it changes (latest-at applies)
                rec.log("world/camera", rr.Pinhole(image_from_camera=f.K_depth, resolution=[w, h],
                                                   camera_xyz=rr.ViewCoordinates.RDF))
                self._K_logged = key
            depth_path = "world/camera/depth"
        else:
            depth_path = "depth"
        rec.log(depth_path, rr.DepthImage(f.depth, meter=1.0))
        rec.log("rgb", rr.Image(f.rgb, color_model="RGB"))
        rec.log("uncertainty", rr.Image(np.exp(f.uncertainty).astype(np.float32)))
        for key, value in f.scores.items():
            rec.log(f"selection/{key}", rr.Scalars(float(value)))
        rec.log("selection/kept", rr.Scalars(1.0 if f.selected else 0.0))
        if f.selected:
            rec.log("selection/events", rr.TextLog(
                f"frame {f.index} kept for upload (score {f.scores.get('score', 0.0):.3f})", level="INFO"))
        if not f.reliable:
            rec.log("selection/events", rr.TextLog(
                f"frame {f.index} low confidence ({f.confident_fraction:.0%} of pixels confident)",
                level="WARN"))
        rec.log("stats/infer_ms", rr.Scalars(float(f.infer_ms)))
        rec.log("stats/confident_fraction", rr.Scalars(float(f.confident_fraction)))

    def finish(self) -> None:
        try:
            self.rec.flush()
        finally:
            self.rec.disconnect()


def make_rerun_sink(uri: str, intrinsics=None, device=None) -> RerunSink:
    """rerun://HOST[:PORT] (a live viewer), rerun+file://PATH.rrd or PATH.rrd (a recording)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "rerun":
        if not parts.hostname:
            raise ConfigError(f"{uri!r}: name the viewer as rerun://HOST:PORT (e.g. rerun://127.0.0.1:9876)")
        port = parts.port or DEFAULT_PORT
        return RerunSink(f"{parts.hostname}:{port}", kind="grpc", intrinsics=intrinsics, device=device)
    path = unquote(parts.netloc + parts.path) if scheme == "rerun+file" else uri
    if not path.lower().endswith(".rrd"):
        raise ConfigError(f"{uri!r}: a Rerun recording needs an .rrd path (rerun+file://out/run.rrd)")
    return RerunSink(path, kind="file", intrinsics=intrinsics, device=device)
