"""ROS recordings as RGB-D frames (torch-free): ROS 2 bags (MCAP or sqlite3) and ROS 1 .bag files.

Reading goes through `rosbags` (the `recordings` extra), which carries the message definitions of the
standard ROS 1 / ROS 2 types, so no ROS installation is needed. What is read:

* colour: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or sensor_msgs/CompressedImage (JPEG/PNG);
* depth (optional): sensor_msgs/Image 16UC1 / mono16 (millimetres) or 32FC1 (metres), or a
  CompressedImage in image_transport's compressedDepth format (PNG after a 12-byte header);
* intrinsics (optional): sensor_msgs/CameraInfo K (the latest message before a frame, else the first);
* timestamps: each message's header stamp (the receive time where the stamp is 0).

Each colour frame is paired with the depth image nearest in time within a tolerance (RealSense's
aligned depth carries the colour frame's own stamp). Topics default to RealSense's standard names
(/camera/color/image_raw, .../compressed, /camera/aligned_depth_to_color/image_raw,
/camera/color/camera_info, also under the /camera/camera/ namespace of newer drivers), else to the only
topic of the right type.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from edgedepth.errors import DataError, require

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
RGB_TOPICS = ("color/image_raw", "color/image_raw/compressed", "color/image_rect_color",
              "color/image_rect_color/compressed")
DEPTH_TOPICS = ("aligned_depth_to_color/image_raw", "aligned_depth_to_color/image_raw/compressedDepth",
                "depth/image_rect_raw", "depth/image_raw")
INFO_TOPICS = ("color/camera_info",)
BAG_SUFFIXES = (".mcap", ".db3", ".bag")


def is_recording(path: Union[str, Path]) -> bool:
    """A ROS bag: a .mcap/.db3/.bag file or a rosbag2 directory (one with metadata.yaml)."""
    p = Path(path)
    if p.is_dir():
        return (p / "metadata.yaml").is_file()
    return p.suffix.lower() in BAG_SUFFIXES


@dataclass
class TopicChoice:
    rgb: str
    depth: Optional[str]
    info: Optional[str]


@dataclass
class BagFrame:
    """One colour message, its paired depth message (or None) and the intrinsics known at the time.

    Decoding is lazy (`rgb()`, `depth()`) so frames dropped by subsampling cost no image decode."""

    index: int  # position among all colour messages of the recording (0 = the first)
    stamp_ns: int  # header stamp (or receive time), nanoseconds
    t: float  # seconds since the recording's first message (receive time)
    rgb_msg: Any
    rgb_type: str
    depth_msg: Any = None
    depth_type: str = ""
    depth_dt: Optional[float] = None  # depth stamp - colour stamp, seconds
    intrinsics: Optional[np.ndarray] = None
    _rgb: Optional[np.ndarray] = field(default=None, repr=False)

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = decode_colour(self.rgb_msg, self.rgb_type)
        return self._rgb

    def depth(self) -> Optional[np.ndarray]:
        return None if self.depth_msg is None else decode_depth(self.depth_msg, self.depth_type)


# -- message decoding --------------------------------------------------------------------------------
def stamp_ns(msg: Any, fallback: int) -> int:
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return int(fallback)
    ns = int(getattr(stamp, "sec", 0)) * 1_000_000_000 + int(
        getattr(stamp, "nanosec", getattr(stamp, "nsec", 0)))
    return ns if ns > 0 else int(fallback)


def _raw_image(msg: Any) -> Tuple[np.ndarray, str]:
    """(HxWxC or HxW array in the message's own dtype, encoding) of a sensor_msgs/Image."""
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    kinds = {"rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4), "mono8": ("u1", 1),
             "8uc1": ("u1", 1), "8uc3": ("u1", 3), "16uc1": ("u2", 1), "mono16": ("u2", 1),
             "32fc1": ("f4", 1)}
    if enc not in kinds:
        raise DataError(f"image encoding {msg.encoding!r} is not supported; use rgb8, bgr8, rgba8, bgra8, "
                        "mono8 (colour) or 16UC1, mono16, 32FC1 (depth)")
    kind, ch = kinds[enc]
    dtype = np.dtype(kind).newbyteorder(">" if int(getattr(msg, "is_bigendian", 0)) else "<")
    buf = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), np.uint8)
    row = w * ch * dtype.itemsize
    if h * w == 0 or step < row or buf.size < step * (h - 1) + row:
        raise DataError(f"image message {w}x{h} {msg.encoding} holds {buf.size} bytes with step {step}: "
                        "truncated or inconsistent")
    rows = np.lib.stride_tricks.as_strided(buf, (h, row), (step, 1))
    arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, ch) if ch > 1 else \
        np.ascontiguousarray(rows).view(dtype).reshape(h, w)
    return arr.astype(dtype.newbyteorder("="), copy=False), enc


def decode_colour(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 HxWx3 from an Image or CompressedImage message."""
    if msgtype == COMPRESSED:
        img = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot decode a compressed image (format {msg.format!r}); JPEG or PNG expected")
        return np.ascontiguousarray(img[..., ::-1])
    arr, enc = _raw_image(msg)
    if arr.dtype != np.uint8:
        raise DataError(f"colour topic carries {enc} images; choose the colour topic with --topic")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if enc in ("bgr8", "8uc3"):
        return np.ascontiguousarray(arr[..., ::-1])
    if enc == "bgra8":
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    return arr


def decode_depth(msg: Any, msgtype: str) -> np.ndarray:
    """Depth in metres (float32 HxW, 0 = invalid) from 16UC1 mm / 32FC1 m images or compressedDepth."""
    if msgtype == COMPRESSED:
        data = np.asarray(msg.data, np.uint8)
        if "compresseddepth" in str(msg.format).lower():
            data = data[12:]  # image_transport's ConfigHeader: format, depthQuantA, depthQuantB
        raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            raise DataError(f"compressed depth (format {msg.format!r}) is not a 16-bit PNG in millimetres")
        return raw.astype(np.float32) / np.float32(1000.0)
    arr, enc = _raw_image(msg)
    if arr.ndim != 2 or enc not in ("16uc1", "mono16", "32fc1"):
        raise DataError(f"depth topic carries {enc} images; depth must be 16UC1 (mm) or 32FC1 (m)")
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / np.float32(1000.0)
    d = arr.astype(np.float32)
    return np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)


def camera_k(msg: Any) -> Optional[np.ndarray]:
    """3x3 K of a CameraInfo (ROS 2 `k`, ROS 1 `K`), or None when it is all zeros (uncalibrated)."""
    k = getattr(msg, "k", None)
    if k is None:
        k = getattr(msg, "K", None)
    if k is None:
        return None
    K = np.asarray(k, np.float64).reshape(3, 3)
    return K if np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 else None


# -- the recording -----------------------------------------------------------------------------------
class Recording:
    """An open ROS 1 / ROS 2 bag: its topics, and its colour frames paired with depth and intrinsics."""

    def __init__(self, path: Union[str, Path]):
        rosbags_hl = require("rosbags.highlevel", "recordings")
        typesys = require("rosbags.typesys", "recordings")
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DataError(f"recording {self.path} does not exist")
        if not is_recording(self.path):
            raise DataError(f"{self.path} is not a ROS bag: give a .mcap, .db3 or .bag file or a rosbag2 "
                            "folder with metadata.yaml")
        ros1 = self.path.suffix.lower() == ".bag"
        store = typesys.get_typestore(typesys.Stores.ROS1_NOETIC if ros1 else typesys.Stores.ROS2_HUMBLE)
        try:
            self.reader = rosbags_hl.AnyReader([self.path], default_typestore=store)
            self.reader.open()
        except Exception as exc:  # rosbags raises its own error classes and OSError/ValueError
            raise DataError(f"cannot read recording {self.path}: {exc}") from exc
        self.ros1 = ros1
        self.topics: Dict[str, str] = {c.topic: c.msgtype for c in self.reader.connections}

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def start_ns(self) -> int:
        return int(self.reader.start_time)

    @property
    def duration_s(self) -> float:
        return max(0, int(self.reader.end_time) - int(self.reader.start_time)) / 1e9

    def describe_topics(self) -> str:
        return ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in sorted(self.topics.items())) or "none"

    def choose_topics(self, rgb: Optional[str] = None, depth: Optional[str] = None,
                      info: Optional[str] = None) -> TopicChoice:
        """The topics to read: given ones (checked), else RealSense's names, else the only candidate.

        depth/info "none" turn that stream off; when not given and not found, it is simply absent."""
        colour_types = (IMAGE, COMPRESSED)
        rgb_t = self._pick("colour", rgb, colour_types, RGB_TOPICS, exclude="depth")
        depth_t = None if _off(depth) else self._pick(
            "depth", depth, colour_types, DEPTH_TOPICS, include="depth", optional=True)
        info_t = None if _off(info) else self._pick(
            "camera info", info, (CAMERA_INFO,), INFO_TOPICS, exclude="depth", optional=True,
            near=rgb_t)
        return TopicChoice(rgb_t, depth_t, info_t)

    def _pick(self, what: str, given: Optional[str], types, names, include: str = "", exclude: str = "",
              optional: bool = False, near: str = "") -> Optional[str]:
        if given:
            if given not in self.topics:
                raise DataError(f"{what} topic {given!r} is not in {self.path}; its topics: "
                                f"{self.describe_topics()}")
            if self.topics[given] not in types:
                raise DataError(f"{what} topic {given} carries {self.topics[given]}, not "
                                f"{' or '.join(types)}")
            return given
        cands = [t for t, m in self.topics.items() if m in types
                 and (not include or include in t.lower()) and not (exclude and exclude in t.lower())]
        for name in names:
            hits = sorted(t for t in cands if t.endswith("/" + name) or t == name)
            if hits:
                return hits[0]
        if near:  # the camera_info beside the colour topic: /ns/image_raw -> /ns/camera_info
            base = near.rsplit("/compressed", 1)[0].rsplit("/", 1)[0]
            if f"{base}/camera_info" in cands:
                return f"{base}/camera_info"
        if len(cands) == 1:
            return cands[0]
        if optional and not cands:
            return None
        option = {"colour": "--topic", "depth": "--depth-topic", "camera info": "--info-topic"}[what]
        raise DataError(f"cannot choose the {what} topic of {self.path} among "
                        f"{', '.join(sorted(cands)) or 'none'}; name it with {option} (topics: "
                        f"{self.describe_topics()})")

    def frames(self, topics: TopicChoice, start: Optional[float] = None, end: Optional[float] = None,
               tolerance: float = 0.02, wait: float = 2.0) -> Iterator[BagFrame]:
        """Colour frames in recorded order, each with the nearest depth within `tolerance` seconds.

        start/end: seconds since the recording's first message (receive time) bound the colour frames.
        A colour frame waits at most `wait` seconds of recording for its depth partner."""
        t0 = self.start_ns
        lo = None if start is None else t0 + int(start * 1e9)
        hi = None if end is None else t0 + int(end * 1e9)
        margin = int(max(tolerance, wait) * 1e9) + 1
        conns = [c for c in self.reader.connections if c.topic in (topics.rgb, topics.depth, topics.info)]
        pending: Deque[BagFrame] = deque()
        depth_buf: Deque[Tuple[int, Any, str]] = deque()
        tol = int(tolerance * 1e9)
        newest_depth = -1
        K = None
        index = 0
        emitted_upto = -(1 << 62)

        def ready(f: BagFrame, now_ns: int, final: bool) -> bool:
            return final or topics.depth is None or newest_depth > f.stamp_ns + tol or \
                now_ns - (t0 + int(f.t * 1e9)) > margin

        def emit(f: BagFrame) -> BagFrame:
            best = None
            for ds, dmsg, dtype in depth_buf:
                dt = ds - f.stamp_ns
                if abs(dt) <= tol and (best is None or abs(dt) < abs(best[0])):
                    best = (dt, dmsg, dtype)
            if best is not None:
                f.depth_dt, f.depth_msg, f.depth_type = best[0] / 1e9, best[1], best[2]
            if f.intrinsics is None and K is not None:
                f.intrinsics = K
            return f

        def prune() -> None:
            floor = (pending[0].stamp_ns if pending else emitted_upto) - tol
            while depth_buf and depth_buf[0][0] < floor:
                depth_buf.popleft()

        try:
            # read from the start so that frame indices count every colour message and the camera
            # info recorded before `start` is known; messages before the range are not decoded
            messages = self.reader.messages(connections=conns, stop=None if hi is None else hi + margin)
            for conn, log_ns, raw in messages:
                if conn.topic == topics.rgb and ((lo is not None and log_ns < lo) or
                                                 (hi is not None and log_ns >= hi)):
                    index += 1
                    continue
                if conn.topic == topics.depth and lo is not None and log_ns < lo - margin:
                    continue
                msg = self._deserialize(raw, conn.msgtype, conn.topic)
                if msg is None:
                    index += conn.topic == topics.rgb
                    continue
                if conn.topic == topics.info:
                    K = camera_k(msg) if camera_k(msg) is not None else K
                elif conn.topic == topics.rgb:
                    pending.append(BagFrame(index, stamp_ns(msg, log_ns), (log_ns - t0) / 1e9, msg,
                                            conn.msgtype, intrinsics=K))
                    index += 1
                else:
                    s = stamp_ns(msg, log_ns)
                    depth_buf.append((s, msg, conn.msgtype))
                    newest_depth = max(newest_depth, s)
                while pending and ready(pending[0], log_ns, False):
                    f = pending.popleft()
                    emitted_upto = f.stamp_ns
                    yield emit(f)
                prune()
            while pending:
                yield emit(pending.popleft())
        except DataError:
            raise
        except Exception as exc:  # a corrupt chunk or index: rosbags' own error classes
            raise DataError(f"cannot read recording {self.path}: {exc}") from exc

    def _deserialize(self, raw: bytes, msgtype: str, topic: str) -> Any:
        try:
            return self.reader.deserialize(raw, msgtype)
        except Exception as exc:  # one bad message must not end the import
            import logging

            logging.getLogger(__name__).warning("skipping an undecodable %s message on %s: %s",
                                                msgtype, topic, exc)
            return None


def _off(option: Optional[str]) -> bool:
    return option is not None and str(option).strip().lower() in ("none", "off", "")


def open_recording(path: Union[str, Path]) -> Recording:
    return Recording(path)


def summarise_topics(path: Union[str, Path]) -> List[str]:
    """'topic (type, N messages)' lines of a recording, for error messages and `data import --list`."""
    with Recording(path) as rec:
        counts: Dict[str, int] = {}
        for c in rec.reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(getattr(c, "msgcount", 0) or 0)
        return [f"{t}  {m}  {counts.get(t, 0)} messages" for t, m in sorted(rec.topics.items())]
