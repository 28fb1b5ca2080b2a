"""Outputs: display://0, video files, image sequences, 16-bit depth PNGs and PLY point clouds.

Video and display outputs show input | colourised depth | colour bar (near/far in metres) side by side
with an overlay (fps, latency, model version, depth range in metres, reliability and selection events).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from edgedepth.colorbar import colorbar, depth_to_colour, display_range
from edgedepth.errors import ConfigError, MissingDependencyError
from edgedepth.preprocess import resize_depth
from edgedepth.runtime.collect import depth_to_png_mm
from edgedepth.runtime.pointcloud import depth_to_points, result_intrinsics, write_ply
from edgedepth.runtime.postprocess import DepthResult
from edgedepth.runtime.sink_base import Sink

log = logging.getLogger(__name__)

COLORMAPS = {
    "inferno": "INFERNO",
    "magma": "MAGMA",
    "plasma": "PLASMA",
    "turbo": "TURBO",
    "viridis": "VIRIDIS",
    "parula": "PARULA",
    "jet": "JET",
    "bone": "BONE",
}
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def colormap_id(name: str) -> Tuple[int, bool]:
    base = name.lower()
    inverted = base.endswith("-inverted")
    base = base[: -len("-inverted")] if inverted else base
    if base not in COLORMAPS or not hasattr(cv2, "COLORMAP_" + COLORMAPS[base]):
        raise ConfigError(
            f"unknown colormap {name!r}; choose one of "
            f"{', '.join(sorted(COLORMAPS))} (each also NAME-inverted)"
        )
    return getattr(cv2, "COLORMAP_" + COLORMAPS[base]), inverted


def opencv_has_gui() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.upper()
    return False


class Visualizer:
    """Composes the input | depth | colour bar view (BGR) with the overlay."""

    def __init__(self, colormap: str = "inferno", depth_range: Optional[Tuple[float, float]] = None,
                 units: str = "m"):
        self.cmap, self.inverted = colormap_id(colormap)
        self.depth_range = depth_range
        self.units = units  # "m", or "relative" for a model without a metric scale (edgedepth.colorbar)
        self.overlay: Dict[str, str] = {}
        self.event_text = ""
        self.event_frames = 0
        self.last_range: Tuple[float, float] = (0.0, 1.0)

    def colorize(self, depth: np.ndarray) -> np.ndarray:
        lo, hi = display_range(depth, fixed=self.depth_range)
        self.last_range = (lo, hi)
        return depth_to_colour(depth, lo, hi, self.cmap, self.inverted)

    def compose(self, result: DepthResult, lines: List[str]) -> np.ndarray:
        rgb = result.frame.rgb
        h, w = rgb.shape[:2]
        left = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        right = cv2.resize(self.colorize(result.depth), (w, h), interpolation=cv2.INTER_NEAREST)
        bar = colorbar(h, *self.last_range, self.cmap, self.inverted, units=self.units)
        canvas = np.concatenate([left, right, bar], axis=1)
        if result.selected:
            self.event_text, self.event_frames = (
                f"KEPT for upload (score {result.scores.get('score', 0):.2f})",
                30,
            )
        text = list(lines)
        d = result.depth
        text.append(f"depth {float(d.min()):.2f}-{float(d.max()):.2f} "
                    + ("m (metric, metres)" if self.units == "m" else "(relative, no metric scale)"))
        if not result.reliable:
            text.append(f"LOW CONFIDENCE ({result.confident_fraction:.0%} of pixels confident)")
        if self.event_frames > 0:
            text.append(self.event_text)
            self.event_frames -= 1
        font = 0.42 if h < 400 else 0.6 if h < 800 else 0.9
        step = int(round(font * 36))
        (tw, _), _ = cv2.getTextSize(max(text, key=len), cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        box = canvas[: step * len(text) + 8, : min(w, tw + 14)]
        box //= 2  # darken the band behind the text (in place, no allocation)
        y = step
        for line in text:
            colour = (
                (0, 0, 255)
                if line.startswith("LOW")
                else (0, 255, 0)
                if line.startswith("KEPT")
                else (255,) * 3
            )
            cv2.putText(canvas, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, font, colour, 1, cv2.LINE_AA)
            y += step
        return canvas


WARMING_UP = "warming up"


def stats_overlay_line(snap: Dict[str, object], result: Optional[DepthResult] = None) -> str:
    """The overlay's figures line; 'warming up' (with this frame's inference time) until the loop's
    statistics have figures, so the first frames never show '0.0 fps, p50 nan'."""
    fps, p50, infer = (float(snap.get(k, float("nan"))) for k in ("fps", "latency_ms_p50", "infer_ms_p50"))
    if int(snap.get("frames", 0) or 0) < 2 or not (fps > 0 and np.isfinite(p50) and np.isfinite(infer)):
        return WARMING_UP + (f"  infer {result.infer_ms:.1f} ms" if result is not None else "")
    return f"{fps:.1f} fps  latency p50 {p50:.0f} ms  infer {infer:.1f} ms"


class DisplaySink(Sink):
    wants_view = True

    def __init__(self, title: str = "edgedepth", on_quit: Optional[Callable[[], None]] = None):
        if not opencv_has_gui():
            raise MissingDependencyError(
                "display://: this OpenCV build has no GUI (cv2.getBuildInformation() says 'GUI: NONE'; "
                "opencv-python-headless never has one). Run with --headless, write a video with "
                "--output out.mp4, or install a GUI build (pip install opencv-python, or JetPack's "
                "python3-opencv)"
            )
        self.title, self.on_quit = title, on_quit
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def write(self, result, view) -> None:
        cv2.imshow(self.title, view)
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class VideoFileSink(Sink):
    wants_view = True

    def __init__(self, path: Path, fps: float = 30.0):
        self.path, self.fps = Path(path), fps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None

    def write(self, result, view) -> None:
        if self.writer is None:
            fourcc = VIDEO_FOURCC.get(self.path.suffix.lower(), "mp4v")
            h, w = view.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h))
            if not self.writer.isOpened():
                raise ConfigError(f"cannot write video {self.path} (codec {fourcc}); try a .avi or .mp4 path")
            log.info("writing input | depth (metres) video to %s", self.path)
        self.writer.write(view)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class ImageSequenceSink(Sink):
    """out/frame_%05d.png: one composed image per frame (the pattern takes the frame's sequence number)."""

    wants_view = True

    def __init__(self, pattern: str):
        self.pattern = pattern
        try:
            pattern % 0
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"image output {pattern!r} needs one integer placeholder like %05d") from exc
        Path(pattern % 0).parent.mkdir(parents=True, exist_ok=True)

    def write(self, result, view) -> None:
        cv2.imwrite(self.pattern % result.seq, view)


class DepthPngSink(Sink):
    """DIR/depth_%06d.png: 16-bit PNG, millimetres (0 = invalid), at the input image's resolution."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "README.txt").write_text(
            "depth_*.png: 16-bit PNG, metric depth in millimetres "
            "(value / 1000 = metres), 0 = invalid; same size as the input.\n"
        )

    def write(self, result, view) -> None:
        h, w = result.frame.rgb.shape[:2]
        depth = resize_depth(result.depth, h, w)
        (self.dir / f"depth_{result.seq:06d}.png").write_bytes(depth_to_png_mm(depth))


class PointCloudSink(Sink):
    """DIR/cloud_%06d.ply from metric depth; intrinsics from the frame, a calibration file or the board."""

    def __init__(
        self,
        directory,
        intrinsics: Optional[Tuple[np.ndarray, Optional[Tuple[int, int]]]] = None,
        device=None,
        every: int = 1,
        confident_only: bool = True,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fixed = intrinsics
        self.device = device
        self.every = max(1, int(every))
        self.confident_only = confident_only
        self._warned = False

    def _K(self, result) -> Optional[np.ndarray]:
        return result_intrinsics(result, self.fixed, self.device)

    def write(self, result, view) -> None:
        if result.seq % self.every:
            return
        K = self._K(result)
        if K is None:
            if not self._warned:
                log.warning(
                    "--save-pointcloud: no intrinsics (the source has none, no --intrinsics file and "
                    "no camera intrinsics in the device config); point clouds are skipped"
                )
                self._warned = True
            return
        dh, dw = result.depth.shape
        mask = result.confidence if self.confident_only else None
        points, idx = depth_to_points(result.depth, K, mask=mask)
        rgb = cv2.resize(result.frame.rgb, (dw, dh), interpolation=cv2.INTER_AREA).reshape(-1, 3)[idx]
        write_ply(
            self.dir / f"cloud_{result.seq:06d}.ply",
            points,
            rgb,
            comments=(
                f"model {result.model_version}",
                f"frame {result.frame.index}",
                "fx fy cx cy " + " ".join(f"{v:.3f}" for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])),
            ),
        )


def make_sink(uri: str, fps: float = 30.0, on_quit: Optional[Callable[[], None]] = None,
              intrinsics=None, device=None) -> Sink:
    """display://0 | file://out.mp4 | out.mp4 | out/frame_%05d.png | rerun://HOST:PORT | run.rrd | run.mcap

    `intrinsics` ((K, (h, w) or None) from a calibration file) and `device` (a DeviceConfig) give the
    recorded outputs (Rerun, MCAP) their camera model when the source has none."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""
    # -- recorded outputs for robotics viewers (edgedepth.runtime.sink_rerun / sink_mcap) --
    plain = (parts.netloc + parts.path).lower() if scheme in ("", "file") else ""
    if scheme in ("rerun", "rerun+file") or plain.endswith(".rrd"):
        from edgedepth.runtime.sink_rerun import make_rerun_sink

        return make_rerun_sink(uri, intrinsics=intrinsics, device=device)
    if scheme == "mcap+file" or plain.endswith(".mcap"):
        from edgedepth.runtime.sink_mcap import make_mcap_sink

        return make_mcap_sink(uri, intrinsics=intrinsics, device=device)
    # -- end of recorded outputs --
    if scheme == "display":
        return DisplaySink(title=f"edgedepth {parts.netloc or '0'}", on_quit=on_quit)
    if scheme == "file":
        target = unquote(parts.netloc + parts.path)
    elif scheme:
        raise ConfigError(
            f"unknown output {uri!r}; use display://0, a video path (out.mp4), an image "
            "pattern (out/frame_%05d.png), rerun://HOST:PORT, a .rrd or a .mcap path"
        )
    else:
        target = uri
    if re.search(r"%0?\d*d", target):
        return ImageSequenceSink(target)
    suffix = Path(target).suffix.lower()
    if suffix in VIDEO_FOURCC:
        return VideoFileSink(Path(target), fps=fps)
    if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        stem = Path(target)
        return ImageSequenceSink(str(stem.with_name(stem.stem + "_%05d" + stem.suffix)))
    raise ConfigError(
        f"output {uri!r}: use a video (.mp4/.avi/.mkv), an image pattern like out/frame_%05d.png, "
        "display://0, rerun://HOST:PORT, a Rerun recording (.rrd) or a ROS 2 recording (.mcap)"
    )
