"""A captured frame and the reader interface every source implements (the readers themselves live in
edgedepth.runtime.sources and edgedepth.runtime.source_recording)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


@dataclass
class Frame:
    """One captured frame. `t` is the source's clock in seconds (capture time for live sources, the
    position in the stream for files and synthetic scenes); `captured` is time.monotonic() at capture
    (for non-live sources: when the loop took the frame), the start of the latency clock."""

    rgb: np.ndarray
    index: int
    t: float
    captured: float
    wall_time: float
    depth_gt: Optional[np.ndarray] = None  # metres, 0 = invalid (synthetic sources)
    intrinsics: Optional[np.ndarray] = None  # 3x3 K at rgb's resolution
    pose: Optional[np.ndarray] = None  # 4x4 camera-to-world, metres
    domain: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)
    bgr: Optional[np.ndarray] = None  # the same image in OpenCV's order, when the source read it so


class RawSource:
    """A reader of frames. `read()` returns None when no frame could be read (end or failure)."""

    uri: str = ""
    live: bool = False  # frames arrive on their own clock: keep only the latest (drop stale ones)
    finite: bool = True  # the stream ends (files); live cameras and synthetic streams do not

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; open() may be called again afterwards (reconnect, --loop)."""

    def describe(self) -> str:
        return self.uri
