"""From raw network outputs to a result downstream code can trust or refuse.

Depth is metric z-depth in metres. The uncertainty output is log(b) of a Laplacian on log-depth, so
exp(u) is the expected |log d_true - log d_pred| (roughly the expected relative error). A pixel is
*confident* when exp(u) <= `max_rel_error`; a frame is *reliable* when at least `min_confident_fraction`
of its pixels are confident and every depth value is finite. Code that acts on depth should check
`result.reliable` (and use `result.confidence`) to fail safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import cv2
import numpy as np

from edgedepth.errors import ConfigError
from edgedepth.runtime.sources import Frame


@dataclass
class DepthResult:
    frame: Frame
    seq: int  # position in this run (0, 1, 2, ...), unlike frame.index it has no gaps
    depth: np.ndarray  # (H, W) float32 metres at the model's input size
    uncertainty: np.ndarray  # (H, W) float32 log b
    confidence: np.ndarray  # (H, W) bool: expected relative error <= threshold
    confident_fraction: float
    reliable: bool
    infer_ms: float
    latency_ms: float = 0.0  # capture -> result
    backend: str = ""
    model_version: str = ""
    selected: bool = False
    scores: Dict[str, float] = field(default_factory=dict)
    metrics: Optional[Dict[str, float]] = None  # against the source's ground truth, when it has one


class Postprocessor:
    """Turns (depth, uncertainty) into a DepthResult; the mask buffer is reused via a small ring."""

    def __init__(self, max_rel_error: float = 0.25, min_confident_fraction: float = 0.5, ring: int = 4):
        if not max_rel_error > 0:
            raise ConfigError(
                f"confidence threshold must be > 0 (expected relative error), got {max_rel_error}"
            )
        if not 0.0 <= min_confident_fraction <= 1.0:
            raise ConfigError(f"minimum confident fraction must be in [0, 1], got {min_confident_fraction}")
        self.max_rel_error = float(max_rel_error)
        self.log_threshold = np.float32(math.log(self.max_rel_error))
        self.min_confident_fraction = float(min_confident_fraction)
        self._ring = max(2, int(ring))
        self._masks: list = []
        self._slot = 0

    def _mask_buffer(self, shape) -> np.ndarray:
        if not self._masks or self._masks[0].shape != shape:
            self._masks = [np.empty(shape, dtype=bool) for _ in range(self._ring)]
        buf = self._masks[self._slot]
        self._slot = (self._slot + 1) % self._ring
        return buf

    def __call__(
        self,
        frame: Frame,
        seq: int,
        depth: np.ndarray,
        uncertainty: np.ndarray,
        infer_ms: float,
        backend: str = "",
        model_version: str = "",
    ) -> DepthResult:
        d = depth.reshape(depth.shape[-2:])
        u = uncertainty.reshape(uncertainty.shape[-2:])
        conf = np.less_equal(u, self.log_threshold, out=self._mask_buffer(u.shape))
        fraction = float(np.count_nonzero(conf)) / conf.size
        # one pass, no temporary: a NaN or inf anywhere makes the sum non-finite
        finite = math.isfinite(cv2.sumElems(d)[0]) if d.dtype == np.float32 else bool(np.isfinite(d.sum()))
        return DepthResult(
            frame=frame,
            seq=seq,
            depth=d,
            uncertainty=u,
            confidence=conf,
            confident_fraction=fraction,
            reliable=finite and fraction >= self.min_confident_fraction,
            infer_ms=infer_ms,
            backend=backend,
            model_version=model_version,
        )
