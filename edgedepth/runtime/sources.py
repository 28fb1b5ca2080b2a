"""Input sources as URIs (the jetson-inference convention) and the raw readers behind them.

    0 | v4l2:///dev/video0?width=1280&height=720&fps=30&fourcc=MJPG   USB/V4L2 camera (OpenCV)
        (&timeout=S: seconds to wait for the camera to open and for its first frame; default 10)
    csi://0                                    CSI camera via GStreamer nvarguscamerasrc (Jetson)
    rtsp://host:8554/stream                    network stream (OpenCV/FFmpeg)
    file://video.mp4 | video.mp4 | img.png | images/   video file, one image, or a directory of images
    synthetic://indoor?seed=1&fps=30&size=224x224&realtime=1           the scene generator as a camera
    synthetic://mix?indoor=0.8&night=0.1&fog=0.1&seed=1&segment=30     a mix of domains
    mcap://rec.mcap?topic=...&pace=recorded|fast | bag://rs.bag | rec.mcap   ROS 2 / ROS 1 recordings
                                               (edgedepth.runtime.source_recording)
    (synthetic options: cache=N renders N frames once and replays them, to measure the pipeline rather
    than the renderer, which costs ~20 ms per 224x224 frame on one core)

A raw reader (`RawSource`) only opens, reads one frame and closes; `edgedepth.runtime.capture.Source`
adds the capture thread, latest-frame semantics and reconnection on top, for every reader alike.
Frames are RGB uint8 HxWx3.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np

from edgedepth.errors import ConfigError, SourceError
from edgedepth.runtime.deadline import call_with_deadline
from edgedepth.runtime.frame import Frame, RawSource
from edgedepth.sizes import parse_size

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".h264", ".h265")


def _now() -> Tuple[float, float]:
    return time.monotonic(), time.time()


# ----------------------------------------------------------------------------------------------------
# OpenCV-backed readers: V4L2, CSI (GStreamer), RTSP, video files


def opencv_has_gstreamer() -> bool:
    """True when this OpenCV build was compiled with GStreamer (JetPack's is; pip's wheels are not)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1].upper()
    return False


def csi_pipeline(
    sensor_id: int = 0,
    sensor_mode: int = -1,
    capture_width: int = 1920,
    capture_height: int = 1080,
    output_width: int = 960,
    output_height: int = 540,
    fps: int = 30,
    flip_method: int = 0,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), ending in a BGR appsink."""
    mode = f" sensor-mode={int(sensor_mode)}" if sensor_mode is not None and int(sensor_mode) >= 0 else ""
    return (
        f"nvarguscamerasrc sensor-id={int(sensor_id)}{mode} ! "
        f"video/x-raw(memory:NVMM), width=(int){int(capture_width)}, height=(int){int(capture_height)}, "
        f"framerate=(fraction){int(fps)}/1 ! "
        f"nvvidconv flip-method={int(flip_method)} ! "
        f"video/x-raw, width=(int){int(output_width)}, height=(int){int(output_height)}, "
        "format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def csi_pipeline_from_device(sensor_id: int, device=None, params: Optional[Dict[str, str]] = None) -> str:
    """Build the CSI pipeline from a board's device config (`DeviceConfig.camera`) and URI overrides."""
    cam = getattr(device, "camera", None) if device is not None else None
    keys = (
        "sensor_mode",
        "capture_width",
        "capture_height",
        "output_width",
        "output_height",
        "fps",
        "flip_method",
    )
    values: Dict[str, int] = {}
    for key in keys:
        if cam is not None and getattr(cam, key, None) is not None:
            values[key] = int(getattr(cam, key))
    if cam is not None and getattr(cam, "sensor_id", None) is not None and sensor_id < 0:
        sensor_id = int(cam.sensor_id)
    for key, val in (params or {}).items():
        alias = {
            "width": "output_width",
            "height": "output_height",
            "flip": "flip_method",
            "mode": "sensor_mode",
        }.get(key, key)
        if alias in keys:
            values[alias] = _int_param(key, val)
    return csi_pipeline(sensor_id=max(sensor_id, 0), **values)


def _int_param(key: str, value: str) -> int:
    try:
        return int(float(value))
    except ValueError as exc:
        raise ConfigError(f"source parameter {key}={value!r} must be a number") from exc


DEFAULT_TIMEOUT_S = 10.0  # a live source must open, and then deliver its first frame, within this
WAIT_LOG_EVERY_S = 3.0  # ... and says what it waits for this often meanwhile


class OpenCVSource(RawSource):
    """cv2.VideoCapture around a device index/path, a GStreamer pipeline, a stream URL or a file.

    A live source (camera, stream) opens and delivers its first frame within `timeout` seconds or
    open() raises SourceError saying which of the two it was waiting for; meanwhile a line is logged
    every few seconds. FFmpeg streams also get `timeout` as their open and read timeouts, so a stream
    that goes silent later ends a read (and the capture thread reconnects) instead of blocking."""

    def __init__(
        self,
        uri: str,
        target,
        api: int = cv2.CAP_ANY,
        live: bool = True,
        finite: bool = False,
        props: Optional[Dict[int, float]] = None,
        fourcc: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        self.uri, self.target, self.api = uri, target, api
        self.timeout = float(timeout)
        self.log_every = WAIT_LOG_EVERY_S
        self._first: Optional[Tuple[np.ndarray, float, float]] = None  # the frame open() waited for
        self.live, self.finite = live, finite
        self.props = dict(props or {})
        self.fourcc = fourcc
        self.cap = None
        self.index = 0
        self.fps = 0.0

    def _capture(self):
        if self.api == cv2.CAP_FFMPEG and self.live:
            ms = int(self.timeout * 1000) + 1000  # a second after ours: our message, then FFmpeg gives up
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(self.target, self.api, params)
        return cv2.VideoCapture(self.target, self.api)

    def open(self) -> None:
        self.close()
        if self.live:
            cap = call_with_deadline(
                self._capture, f"source {self.uri}: waiting for it to open (connecting; no answer yet)",
                self.timeout, self.log_every, cleanup=lambda c: c.release(),
                hint="Is the address right and the server or camera up?" + self._hint(),
            )
        else:
            cap = self._capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.uri}" + self._hint())
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc[:4].ljust(4)))
        for prop, value in self.props.items():
            cap.set(prop, value)
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._first = None
        if self.live:
            ok, bgr = call_with_deadline(
                cap.read, f"source {self.uri}: opened; waiting for its first frame", self.timeout,
                self.log_every, cleanup=lambda _: cap.release(),
                hint="It accepted the connection but sends no video: is the stream publishing (e.g. "
                "`ffprobe URL`), the camera streaming to another program, or a format/fourcc it cannot "
                "deliver?",
            )
            if not ok or bgr is None:
                cap.release()
                raise SourceError(f"source {self.uri} opened but delivered no frame (the first read failed)"
                                  + self._hint())
            self._first = (bgr, *_now())
        self.cap = cap
        self.index = 0

    def _hint(self) -> str:
        if self.api == cv2.CAP_GSTREAMER and not opencv_has_gstreamer():
            return (
                ": this OpenCV build has no GStreamer support (cv2.getBuildInformation() says "
                "'GStreamer: NO'; pip's opencv-python wheels never have it). On a Jetson use JetPack's "
                "system OpenCV (python3-opencv) - see scripts/JETSON.md"
            )
        if isinstance(self.target, int) or str(self.target).startswith("/dev/"):
            return ": is the camera plugged in and not used by another program? (ls /dev/video*)"
        return ""

    def read(self) -> Optional[Frame]:
        if self.cap is None:
            return None
        if self._first is not None:
            (bgr, captured, wall), self._first = self._first, None
            ok = True
        else:
            ok, bgr = self.cap.read()
            captured, wall = _now()
        if not ok or bgr is None:
            return None
        if bgr.ndim == 2:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        elif bgr.shape[2] == 4:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.finite:
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            t = pos / 1000.0 if pos and pos > 0 else self.index / (self.fps or 30.0)
        else:
            t = captured
        frame = Frame(rgb=rgb, index=self.index, t=t, captured=captured, wall_time=wall,
                      bgr=bgr if bgr.ndim == 3 and bgr.shape[2] == 3 else None)
        self.index += 1
        return frame

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


# ----------------------------------------------------------------------------------------------------
# Images: one file or a directory


class ImageSource(RawSource):
    """One image file or every image in a directory (sorted by name), read once (or again with --loop)."""

    live = False
    finite = True

    def __init__(self, uri: str, path: Path, fps: float = 30.0):
        self.uri, self.path, self.fps = uri, path, fps
        self.files: List[Path] = []
        self.pos = 0

    def open(self) -> None:
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise SourceError(f"{self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        elif self.path.is_file():
            files = [self.path]
        else:
            raise SourceError(f"{self.path} does not exist")
        self.files, self.pos = files, 0

    def read(self) -> Optional[Frame]:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            index = self.pos
            self.pos += 1
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("skipping unreadable image %s", path)
                continue
            captured, wall = _now()
            return Frame(
                rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                index=index,
                t=index / self.fps,
                captured=captured,
                wall_time=wall,
                extra={"path": str(path)},
            )
        return None


# ----------------------------------------------------------------------------------------------------
# Synthetic scenes as a camera


_CLIPS: Dict[tuple, list] = {}  # the last rendered clip (cache=N), reused when the same URI is reopened


class SyntheticSource(RawSource):
    """The data engine's scene generator as a camera: each frame carries ground-truth depth and K."""

    finite = False

    def __init__(
        self,
        uri: str,
        domain: str,
        mix: Optional[Dict[str, float]],
        seed: int,
        height: int,
        width: int,
        fps: float,
        realtime: bool,
        scene_length: int = 150,
        segment_length: int = 30,
        cache: int = 0,
    ):
        self.uri, self.domain, self.mix = uri, domain, mix
        self.seed, self.height, self.width = seed, height, width
        self.fps, self.realtime = fps, realtime
        self.live = realtime  # paced like a camera: stale frames are dropped, as with a real one
        self.scene_length, self.segment_length = scene_length, segment_length
        self.cache = int(cache)  # >0: render this many frames at open() and replay them (a recorded clip)
        self._clip: List[object] = []
        self.stream = None
        self.index = 0
        self.t0 = 0.0

    def open(self) -> None:
        try:
            from edgedepth.data import synth
        except ImportError as exc:
            raise SourceError(f"synthetic sources need edgedepth.data.synth ({exc})") from exc
        if self.mix is not None:
            unknown = sorted(set(self.mix) - set(synth.DOMAINS))
            if unknown:
                raise ConfigError(
                    f"unknown domain(s) {unknown} in {self.uri}; known: {sorted(synth.DOMAINS)}"
                )
            self.stream = synth.MixedStream(
                self.mix,
                seed=self.seed,
                height=self.height,
                width=self.width,
                segment_length=self.segment_length,
            )
        else:
            if self.domain not in synth.DOMAINS:
                raise ConfigError(f"unknown synthetic domain {self.domain!r}; known: {sorted(synth.DOMAINS)}")
            self.stream = synth.SceneStream(
                self.domain,
                seed=self.seed,
                height=self.height,
                width=self.width,
                scene_length=self.scene_length,
            )
        if self.cache > 0 and len(self._clip) != self.cache:
            key = (self.domain, tuple(sorted((self.mix or {}).items())), self.seed, self.height, self.width,
                   self.scene_length, self.segment_length, self.cache)
            if key not in _CLIPS:
                log.info("rendering %d synthetic frames to replay (%s)", self.cache, self.uri)
                _CLIPS.clear()  # keep one clip in memory at most
                _CLIPS[key] = [self.stream.next() for _ in range(self.cache)]
            self._clip = _CLIPS[key]
        self.index = 0
        self.t0 = time.monotonic()

    def read(self) -> Optional[Frame]:
        if self.stream is None:
            return None
        if self.realtime and self.fps > 0:
            due = self.t0 + self.index / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sf = self._clip[self.index % len(self._clip)] if self._clip else self.stream.next()
        captured, wall = _now()
        frame = Frame(
            rgb=sf.rgb,
            index=self.index,
            t=self.index / self.fps if self.fps > 0 else 0.0,
            captured=captured,
            wall_time=wall,
            depth_gt=sf.depth,
            intrinsics=sf.intrinsics,
            pose=sf.pose,
            domain=sf.domain,
            extra={"scene_seed": getattr(sf, "scene_seed", None)},
        )
        self.index += 1
        return frame

    def close(self) -> None:
        self.stream = None


# ----------------------------------------------------------------------------------------------------
# URI parsing


def _params(query: str) -> Dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


def _flag(value: Optional[str]) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def make_raw_source(uri: str, device=None, default_size: Tuple[int, int] = (224, 224)) -> RawSource:
    """Parse a source URI (see the module doc) into its reader; nothing is opened yet."""
    uri = str(uri).strip()
    if not uri:
        raise ConfigError("empty source URI")
    if re.fullmatch(r"\d+", uri):  # --camera 0
        return _v4l2_source(uri, f"/dev/video{uri}", {})
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""  # 'C:' paths are not schemes
    params = _params(parts.query)
    if scheme == "v4l2":
        return _v4l2_source(uri, unquote(parts.netloc + parts.path) or "/dev/video0", params)
    if scheme == "csi":
        return _csi_source(uri, parts, params, device)
    if scheme in ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp"):
        return OpenCVSource(
            uri, uri, cv2.CAP_FFMPEG, live=True, finite=False, props={cv2.CAP_PROP_BUFFERSIZE: 1.0}
        )
    if scheme == "synthetic":
        return _synthetic_source(uri, parts, params, default_size)
    from edgedepth.runtime.source_recording import is_recording_uri, recording_source

    if is_recording_uri(uri):
        return recording_source(uri)
    if scheme == "file":
        path = Path(unquote(parts.netloc + parts.path))
        return _path_source(uri, path, params)
    if scheme:
        raise ConfigError(
            f"unknown source scheme {scheme!r} in {uri!r}; use one of v4l2://, csi://, "
            "rtsp://, file://, synthetic:// or a plain path / camera index"
        )
    return _path_source(uri, Path(uri), {})


def _v4l2_source(uri: str, dev: str, params: Dict[str, str]) -> OpenCVSource:
    props: Dict[int, float] = {}
    for key, prop in (
        ("width", cv2.CAP_PROP_FRAME_WIDTH),
        ("height", cv2.CAP_PROP_FRAME_HEIGHT),
        ("fps", cv2.CAP_PROP_FPS),
    ):
        if key in params:
            props[prop] = float(_int_param(key, params[key]))
    props[cv2.CAP_PROP_BUFFERSIZE] = 1.0  # we want the newest frame, not a queue of old ones
    m = re.fullmatch(r"/dev/video(\d+)", dev)
    target = int(m.group(1)) if m else dev
    return OpenCVSource(
        uri, target, cv2.CAP_V4L2, live=True, finite=False, props=props, fourcc=params.get("fourcc") or None,
        timeout=float(params.get("timeout", DEFAULT_TIMEOUT_S)),
    )


def _csi_source(uri, parts, params, device) -> OpenCVSource:
    sensor = parts.netloc or parts.path.strip("/") or "0"
    if not sensor.isdigit():
        raise ConfigError(f"csi:// needs a sensor index, e.g. csi://0 (got {uri!r})")
    pipeline = csi_pipeline_from_device(int(sensor), device, params)
    return OpenCVSource(uri, pipeline, cv2.CAP_GSTREAMER, live=True, finite=False)


def _synthetic_source(uri, parts, params, default_size) -> SyntheticSource:
    name = (parts.netloc or parts.path.strip("/")).lower()
    if not name:
        raise ConfigError("synthetic:// needs a domain or 'mix', e.g. synthetic://indoor?seed=1")
    size = parse_size(params["size"]) if "size" in params else tuple(default_size)
    seed = _int_param("seed", params.get("seed", "0"))
    fps = float(params.get("fps", "30"))
    reserved = {"seed", "fps", "size", "realtime", "segment", "scene_length", "cache"}
    mix = None
    if name == "mix":
        try:
            mix = {k: float(v) for k, v in params.items() if k not in reserved}
        except ValueError as exc:
            raise ConfigError(f"domain weights in {uri!r} must be numbers") from exc
        if not mix or sum(mix.values()) <= 0:
            raise ConfigError(
                f"synthetic://mix needs positive domain weights, e.g. "
                f"synthetic://mix?indoor=0.8&night=0.2 (got {uri!r})"
            )
    return SyntheticSource(
        uri,
        name,
        mix,
        seed,
        int(size[0]),
        int(size[1]),
        fps,
        realtime=_flag(params.get("realtime", "0")),
        scene_length=_int_param("scene_length", params.get("scene_length", "150")),
        segment_length=_int_param("segment", params.get("segment", "30")),
        cache=_int_param("cache", params.get("cache", "0")),
    )


def _path_source(uri: str, path: Path, params: Dict[str, str]) -> RawSource:
    fps = float(params.get("fps", "30"))
    if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSource(uri, path, fps=fps)
    if path.suffix.lower() in VIDEO_EXTENSIONS or path.is_file():
        if not path.exists():
            raise SourceError(f"video file {path} does not exist")
        return OpenCVSource(uri, str(path), cv2.CAP_ANY, live=False, finite=True)
    if re.fullmatch(r"/dev/video\d+", str(path)):
        return _v4l2_source(uri, str(path), params)
    raise SourceError(
        f"{path} does not exist (expected a video file, an image, a directory of images, "
        "a camera index or a source URI)"
    )
