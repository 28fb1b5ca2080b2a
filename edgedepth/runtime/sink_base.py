"""The interface every output of the live loop implements (edgedepth.runtime.sinks and the recorded
outputs built on edgedepth.runtime.sink_thread)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from edgedepth.runtime.postprocess import DepthResult


class Sink:
    wants_view = False  # needs the composed input | depth image

    def write(self, result: DepthResult, view: Optional[np.ndarray]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass
