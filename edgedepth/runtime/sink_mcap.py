"""Depth recorded as ROS 2 messages in an MCAP file, for Foxglove and `ros2 bag play` (rosbags' writer).

    run.mcap | mcap+file://out/run.mcap?cloud_every=10&ns=/edgedepth&frame_id=camera_optical_frame

Topics (NS = `ns`, default /edgedepth), all stamped with the frame's capture time (wall clock):

    NS/color/image_raw          sensor_msgs/Image rgb8, the input frame
    NS/color/camera_info        sensor_msgs/CameraInfo at the colour image's size
    NS/depth/image_raw          sensor_msgs/Image 32FC1, metric depth in metres (NaN: no depth)
    NS/depth/camera_info        sensor_msgs/CameraInfo at the depth map's size (the model's input size)
    NS/uncertainty/image_raw    sensor_msgs/Image 32FC1, expected relative depth error exp(u)
    NS/points                   sensor_msgs/PointCloud2 (x, y, z in metres, rgb), confident pixels only,
                                every `cloud_every`-th frame (default 10; 0 = none)
    NS/selection/score          std_msgs/Float32, the selection score of each frame
    NS/selection/kept           std_msgs/Bool, true for a frame kept for upload

Camera infos and point clouds need intrinsics (--intrinsics, the source's or the device config's); without
them only the images and the selection topics are written. The file is written as a rosbag2 (MCAP storage)
in a hidden folder beside the target and moved into place, as one self-describing .mcap file (schemas,
channels, statistics and the index are inside), when the run ends. Writing runs in the output's own thread
(edgedepth.runtime.sink_thread). Needs the `recordings` (or `viewers`) extra: rosbags.
"""

from __future__ import annotations

import logging
import shutil
import struct
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import cv2
import numpy as np

from edgedepth.errors import ConfigError, require
from edgedepth.runtime.pointcloud import depth_to_points
from edgedepth.runtime.sink_thread import BackgroundSink, ViewerFrame

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD = "sensor_msgs/msg/PointCloud2"
FLOAT32 = "std_msgs/msg/Float32"
BOOL = "std_msgs/msg/Bool"
TOPICS = {  # suffix -> message type
    "/color/image_raw": IMAGE,
    "/color/camera_info": CAMERA_INFO,
    "/depth/image_raw": IMAGE,
    "/depth/camera_info": CAMERA_INFO,
    "/uncertainty/image_raw": IMAGE,
    "/points": POINT_CLOUD,
    "/selection/score": FLOAT32,
    "/selection/kept": BOOL,
}


class McapSink(BackgroundSink):
    name = "mcap"

    def __init__(self, path, cloud_every: int = 10, ns: str = "/edgedepth",
                 frame_id: str = "camera_optical_frame", confident_only: bool = True,
                 intrinsics=None, device=None, queue_size: int = 64):
        require("rosbags", extra="recordings")
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f"{self.path} exists already; choose a new .mcap path")
        self.cloud_every = max(0, int(cloud_every))
        self.ns = "/" + ns.strip("/") if ns.strip("/") else ""
        self.frame_id = frame_id
        self.confident_only = confident_only
        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bag_dir = self.path.with_name(f".{self.path.stem}.rosbag2")
        if self._bag_dir.exists():
            shutil.rmtree(self._bag_dir)  # a previous run's leftover (it ended without closing)
        self.writer = Writer(self._bag_dir, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: Dict[str, object] = {
            suffix: self.writer.add_connection(self.ns + suffix, msgtype, typestore=self.store)
            for suffix, msgtype in TOPICS.items()
        }
        self._frames = 0
        self._info_cache: Dict[str, tuple] = {}
        log.info("recording ROS 2 depth topics under %s to %s", self.ns or "/", self.path)
        super().__init__(intrinsics=intrinsics, device=device, queue_size=queue_size)

    # -- messages ---------------------------------------------------------------------------------------
    def _header(self, stamp_ns: int):
        t = self.store.types
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return t["std_msgs/msg/Header"](stamp=stamp, frame_id=self.frame_id)

    def _image(self, stamp_ns: int, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        return self.store.types[IMAGE](
            header=self._header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
            step=int(array.strides[0]), data=array.view(np.uint8).reshape(-1),
        )

    def _camera_info(self, stamp_ns: int, K: np.ndarray, h: int, w: int):
        t = self.store.types
        k = np.asarray(K, dtype=np.float64).reshape(9)
        p = np.zeros(12, dtype=np.float64)
        p[[0, 1, 2, 4, 5, 6, 10]] = k[[0, 1, 2, 3, 4, 5, 8]]  # P = [K | 0]: a monocular camera
        return t[CAMERA_INFO](
            header=self._header(stamp_ns), height=h, width=w, distortion_model="plumb_bob",
            d=np.zeros(5, dtype=np.float64), k=k, r=np.eye(3, dtype=np.float64).reshape(9), p=p,
            binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False),
        )

    def _cloud(self, stamp_ns: int, f: ViewerFrame):
        t = self.store.types
        h, w = f.depth.shape
        mask = f.confidence if self.confident_only else None
        points, idx = depth_to_points(f.depth, f.K_depth, mask=mask)
        rgb = cv2.resize(f.rgb, (w, h), interpolation=cv2.INTER_AREA).reshape(-1, 3)[idx].astype(np.uint32)
        rec = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
        rec["x"], rec["y"], rec["z"] = points[:, 0], points[:, 1], points[:, 2]
        rec["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]  # PCL's packed rgb (read as float32)
        pf = t["sensor_msgs/msg/PointField"]
        fields = [pf(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(("x", "y", "z", "rgb"))]
        return t[POINT_CLOUD](
            header=self._header(stamp_ns), height=1, width=len(points), fields=fields, is_bigendian=False,
            point_step=16, row_step=16 * len(points), data=rec.view(np.uint8).reshape(-1), is_dense=True,
        )

    def _write(self, suffix: str, stamp_ns: int, msg) -> None:
        data = self.store.serialize_cdr(msg, TOPICS[suffix])
        self.writer.write(self.connections[suffix], stamp_ns, data)

    def _write_info(self, suffix: str, stamp_ns: int, K: np.ndarray, h: int, w: int) -> None:
        """CameraInfo, serialised once per camera model: later frames only patch the header stamp (the
        first field after CDR's 4-byte encapsulation header: int32 sec, uint32 nanosec, little-endian)."""
        key = (suffix, h, w, K.tobytes())
        cached = self._info_cache.get(suffix)
        if cached is None or cached[0] != key:
            data = self.store.serialize_cdr(self._camera_info(stamp_ns, K, h, w), CAMERA_INFO)
            self._info_cache[suffix] = cached = (key, bytearray(data))
        data = cached[1]
        struct.pack_into("<iI", data, 4, *divmod(int(stamp_ns), 1_000_000_000))
        self.writer.write(self.connections[suffix], stamp_ns, bytes(data))

    def emit(self, f: ViewerFrame) -> None:
        stamp = int(round(f.wall_time * 1e9))
        h, w = f.depth.shape
        H, W = f.rgb.shape[:2]
        self._write("/color/image_raw", stamp, self._image(stamp, f.rgb, "rgb8"))
        depth = np.where(np.isfinite(f.depth) & (f.depth > 0), f.depth, np.nan).astype(np.float32)
        self._write("/depth/image_raw", stamp, self._image(stamp, depth, "32FC1"))
        self._write("/uncertainty/image_raw", stamp,
                    self._image(stamp, np.exp(f.uncertainty).astype(np.float32), "32FC1"))
        if f.K_depth is not None:
            self._write_info("/color/camera_info", stamp, f.K_rgb, H, W)
            self._write_info("/depth/camera_info", stamp, f.K_depth, h, w)
            if self.cloud_every and self._frames % self.cloud_every == 0:
                self._write("/points", stamp, self._cloud(stamp, f))
        score = self.store.types[FLOAT32](data=float(f.scores.get("score", float("nan"))))
        self._write("/selection/score", stamp, score)
        self._write("/selection/kept", stamp, self.store.types[BOOL](data=bool(f.selected)))
        self._frames += 1

    def finish(self) -> None:
        self.writer.close()
        inner = self._bag_dir / f"{self._bag_dir.name}.mcap"
        inner.replace(self.path)
        shutil.rmtree(self._bag_dir, ignore_errors=True)
        log.info("wrote %s (%d frames; play it with `ros2 bag play %s` or open it in Foxglove)",
                 self.path, self._frames, self.path)


def make_mcap_sink(uri: str, intrinsics=None, device=None) -> McapSink:
    """PATH.mcap or mcap+file://PATH.mcap?cloud_every=N&ns=/edgedepth&frame_id=camera_optical_frame."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""
    path = unquote(parts.netloc + parts.path) if scheme in ("mcap+file", "file") else uri.split("?", 1)[0]
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(params) - {"cloud_every", "ns", "frame_id", "confident_only"}
    if unknown:
        raise ConfigError(f"{uri!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                          "use cloud_every, ns, frame_id, confident_only")
    try:
        cloud_every = int(params.get("cloud_every", 10))
    except ValueError:
        raise ConfigError(f"{uri!r}: cloud_every must be an integer (0 = no point clouds)") from None
    if cloud_every < 0:
        raise ConfigError(f"{uri!r}: cloud_every must be >= 0 (0 = no point clouds)")
    kwargs: Dict[str, Optional[object]] = {}
    if "ns" in params:
        kwargs["ns"] = params["ns"]
    if "frame_id" in params:
        kwargs["frame_id"] = params["frame_id"]
    if "confident_only" in params:
        kwargs["confident_only"] = params["confident_only"].lower() not in ("0", "false", "no")
    return McapSink(path, cloud_every=cloud_every, intrinsics=intrinsics, device=device, **kwargs)
