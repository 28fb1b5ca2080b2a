"""ROS recordings as a camera: ROS 2 bags (MCAP, sqlite3) and ROS 1 .bag files replayed into the loop.

    mcap://rec.mcap?topic=/camera/color/image_raw&pace=recorded     (also a rosbag2 folder, a .db3)
    bag://rs.bag?pace=fast                                           ROS 1
    rec.mcap | rs.bag | rosbag2_folder/                              a plain path, paced as recorded

Options: topic, depth_topic, info_topic (defaults: RealSense's names, see edgedepth.data.bagfile; 'none'
turns depth or intrinsics off), pace=recorded (default: frames come at their recorded times and, like a
live camera, a frame the loop does not take in time is dropped) or pace=fast (every frame, as fast as the
loop takes them), start / end (e.g. 10s, 1m: times since the recording's start), tolerance (largest
colour-depth time difference, default 20ms).

Each Frame carries the paired depth (metres) as depth_gt and the CameraInfo K as intrinsics, so
`edgedepth run --evaluate` scores the model against the recorded depth. Needs the `recordings` extra.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from edgedepth.errors import ConfigError, DataError, SourceError
from edgedepth.runtime.frame import Frame, RawSource

log = logging.getLogger(__name__)

SCHEMES = ("mcap", "bag", "rosbag")
SUFFIXES = (".mcap", ".bag", ".db3")
PACES = ("recorded", "fast")


class RecordingSource(RawSource):
    finite = True

    def __init__(self, uri: str, path: Path, topic: Optional[str] = None, depth_topic: Optional[str] = None,
                 info_topic: Optional[str] = None, pace: str = "recorded", start: Optional[float] = None,
                 end: Optional[float] = None, tolerance: float = 0.02):
        if pace not in PACES:
            raise ConfigError(f"pace={pace!r} in {uri!r}: use pace=recorded or pace=fast")
        self.uri, self.path = uri, path
        self.topic, self.depth_topic, self.info_topic = topic, depth_topic, info_topic
        self.pace, self.start, self.end, self.tolerance = pace, start, end, tolerance
        self.live = pace == "recorded"
        self.rec = None
        self._frames = None
        self._clock0: Optional[float] = None
        self._t_first = 0.0

    def open(self) -> None:
        from edgedepth.data.bagfile import Recording

        self.close()
        try:
            self.rec = Recording(self.path)
            topics = self.rec.choose_topics(self.topic, self.depth_topic, self.info_topic)
        except DataError as exc:
            self.close()
            raise SourceError(str(exc)) from exc
        log.info("replaying %s: colour %s, depth %s, camera info %s, pace %s", self.path, topics.rgb,
                 topics.depth or "-", topics.info or "-", self.pace)
        self._frames = self.rec.frames(topics, self.start, self.end, self.tolerance)
        self._clock0 = None
        # live while playing at the recorded pace (stale frames dropped like a camera's); set to False at
        # the end so that the capture thread treats the end as the end of a file, not a lost stream
        self.live = self.pace == "recorded"

    def read(self) -> Optional[Frame]:
        while self._frames is not None:
            try:
                f = next(self._frames, None)
            except DataError as exc:
                log.error("recording %s: %s", self.path, exc)
                f = None
            if f is None:
                self.live = False
                return None
            try:
                rgb, depth = f.rgb(), f.depth()
            except DataError as exc:  # one bad message: skip it, keep replaying
                log.warning("recording %s: skipping colour frame %d: %s", self.path, f.index, exc)
                continue
            if self.pace == "recorded":
                now = time.monotonic()
                if self._clock0 is None:
                    self._clock0, self._t_first = now, f.t
                delay = self._clock0 + (f.t - self._t_first) - now
                if delay > 0:
                    time.sleep(delay)
            captured, wall = time.monotonic(), time.time()
            return Frame(rgb=rgb, index=f.index, t=f.t, captured=captured, wall_time=wall, depth_gt=depth,
                         intrinsics=f.intrinsics, extra={"stamp_ns": f.stamp_ns, "path": str(self.path)})
        return None

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None
        if self.rec is not None:
            self.rec.close()
            self.rec = None


def is_recording_uri(uri: str) -> bool:
    """A URI or plain path this module reads (mcap://, bag://, rosbag://, *.mcap, *.bag, *.db3)."""
    from edgedepth.data.bagfile import is_recording

    scheme = urlsplit(uri).scheme.lower()
    if scheme in SCHEMES:
        return True
    return len(scheme) <= 1 and is_recording(uri)  # *.mcap / *.db3 / *.bag, or a rosbag2 folder


def recording_source(uri: str) -> RecordingSource:
    """Parse a recording URI (see the module doc); nothing is opened yet."""
    from edgedepth.durations import optional_duration as parse_duration

    parts = urlsplit(uri)
    if parts.scheme.lower() in SCHEMES:
        path = Path(unquote(parts.netloc + parts.path)).expanduser()
        params: Dict[str, str] = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    else:
        path, params = Path(uri).expanduser(), {}
    if not str(path) or str(path) == ".":
        raise ConfigError(f"{uri!r} names no recording; write e.g. mcap:///data/rec.mcap?pace=fast")
    if not path.exists():
        raise SourceError(f"recording {path} does not exist")
    known = {"topic", "depth_topic", "info_topic", "pace", "start", "end", "tolerance"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in {uri!r}; "
                          f"known: {', '.join(sorted(known))}")
    tolerance = parse_duration(params.get("tolerance", "20ms"))
    return RecordingSource(uri, path, params.get("topic") or None, params.get("depth_topic") or None,
                           params.get("info_topic") or None, params.get("pace", "recorded").lower(),
                           parse_duration(params.get("start")), parse_duration(params.get("end")),
                           0.02 if tolerance is None else tolerance)
