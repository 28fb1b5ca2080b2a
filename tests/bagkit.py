"""Writes small RGB-D ROS recordings (ROS 2 MCAP / ROS 1 .bag) with `rosbags`, for the import and
replay tests, and returns what it wrote so the tests can compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

RGB_TOPIC = "/camera/color/image_raw"
JPEG_TOPIC = "/camera/color/image_raw/compressed"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/color/camera_info"
T0_NS = 1_700_000_000_000_000_000


@dataclass
class Written:
    path: Path
    rgb: List[np.ndarray] = field(default_factory=list)  # RGB uint8, as decoded from what was written
    depth: List[np.ndarray] = field(default_factory=list)  # metres float32
    stamps: List[int] = field(default_factory=list)
    K: Optional[np.ndarray] = None


def frame_images(i: int, h: int, w: int, depth_kind: str):
    """A moving pattern (so frames differ) and its depth."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 4 + i * 3) % 256, (yy * 5 + i * 7) % 256, rng.integers(0, 256, (h, w))], -1)
    rgb = rgb.astype(np.uint8)
    mm = (500 + 20 * xx + 10 * yy + i).astype(np.uint16)
    mm[0, 0] = 0  # an invalid pixel
    if depth_kind == "32FC1":
        d = mm.astype(np.float32) / 1000.0 + np.float32(0.0001)  # not whole millimetres
        d[0, 0] = np.nan
        return rgb, d
    return rgb, mm


def write_recording(path: Path, n: int = 200, h: int = 48, w: int = 64, ros1: bool = False,
                    colour: str = "rgb8", depth: Optional[str] = "16UC1", info: bool = True,
                    fps: float = 30.0, depth_offset_ns: int = 0, stamp_zero: bool = False) -> Written:
    """colour: rgb8 | bgr8 | jpeg | png; depth: 16UC1 | 32FC1 | compressedDepth | None.
    ROS 2 goes to PATH (an MCAP rosbag2 folder); ROS 1 to PATH (a .bag file)."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    T = ts.types
    Header, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]
    K = np.array([[50.0, 0, 31.5], [0, 51.0, 23.5], [0, 0, 1]])
    out = Written(Path(path), K=K if info else None)

    def header(ns: int, seq: int = 0):
        t = Time(sec=ns // 10**9, nanosec=ns % 10**9)
        if stamp_zero:
            t = Time(sec=0, nanosec=0)
        return Header(seq=seq, stamp=t, frame_id="camera_color_optical_frame") if ros1 else \
            Header(stamp=t, frame_id="camera_color_optical_frame")

    def image(ns, seq, arr, enc):
        data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        return T["sensor_msgs/msg/Image"](header=header(ns, seq), height=arr.shape[0], width=arr.shape[1],
                                          encoding=enc, is_bigendian=0, step=data.size // arr.shape[0],
                                          data=data)

    def camera_info(ns, seq):
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
        kw = dict(header=header(ns, seq), height=h, width=w, distortion_model="plumb_bob",
                  binning_x=0, binning_y=0, roi=roi)
        if ros1:
            kw.update(D=np.zeros(5), K=K.reshape(-1), R=np.eye(3).reshape(-1), P=np.zeros(12))
        else:
            kw.update(d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12))
        return T["sensor_msgs/msg/CameraInfo"](**kw)

    compressed = colour in ("jpeg", "png")
    rgb_topic = JPEG_TOPIC if compressed else RGB_TOPIC
    rgb_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    msgs = []  # (log ns, topic, type, msg)
    for i in range(n):
        ns = T0_NS + int(round(i * 1e9 / fps))
        rgb, d = frame_images(i, h, w, depth or "16UC1")
        if colour == "rgb8":
            msg, seen = image(ns, i, rgb, "rgb8"), rgb
        elif colour == "bgr8":
            msg, seen = image(ns, i, rgb[..., ::-1], "bgr8"), rgb
        else:
            ok, enc = cv2.imencode(".jpg" if colour == "jpeg" else ".png", rgb[..., ::-1])
            seen = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]
            msg = T["sensor_msgs/msg/CompressedImage"](header=header(ns, i), format=colour,
                                                       data=enc.reshape(-1))
        msgs.append((ns, rgb_topic, rgb_type, msg))
        out.rgb.append(np.ascontiguousarray(seen))
        out.stamps.append(ns)
        if info:
            msgs.append((ns, INFO_TOPIC, "sensor_msgs/msg/CameraInfo", camera_info(ns, i)))
        if depth == "compressedDepth":  # image_transport: 12-byte header, then a 16-bit PNG in mm
            dns = ns + depth_offset_ns
            ok, png = cv2.imencode(".png", d)
            data = np.concatenate([np.zeros(12, np.uint8), png.reshape(-1)])
            msg = T["sensor_msgs/msg/CompressedImage"](header=header(dns, i),
                                                       format="16UC1; compressedDepth png", data=data)
            msgs.append((dns + 1000, DEPTH_TOPIC + "/compressedDepth", "sensor_msgs/msg/CompressedImage",
                         msg))
            out.depth.append(d.astype(np.float32) / 1000.0)
        elif depth:
            dns = ns + depth_offset_ns
            msgs.append((dns + 1000, DEPTH_TOPIC, "sensor_msgs/msg/Image", image(dns, i, d, depth)))
            metres = d.astype(np.float32) / 1000.0 if depth == "16UC1" else d
            out.depth.append(np.where(np.isfinite(metres), metres, 0).astype(np.float32))
    msgs.sort(key=lambda m: m[0])
    topics = {}
    if ros1:
        from rosbags.rosbag1 import Writer

        writer = Writer(Path(path))
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        writer = Writer(Path(path), version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        for ns, topic, typ, msg in msgs:
            if topic not in topics:
                topics[topic] = writer.add_connection(topic, typ, typestore=ts)
            data = ts.serialize_ros1(msg, typ) if ros1 else ts.serialize_cdr(msg, typ)
            writer.write(topics[topic], ns, data)
    return out


def mcap_file(bag_dir: Path) -> Path:
    """The .mcap file inside a rosbag2 folder."""
    files = sorted(Path(bag_dir).glob("*.mcap"))
    assert len(files) == 1, files
    return files[0]
