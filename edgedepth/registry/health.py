"""Decide whether a freshly swapped-in model is healthy, from its first frames on the device.

The live loop feeds each of the new model's first N frames (depth map + latency) into a HealthCheck;
as soon as a verdict exists it either keeps the model (and confirms the version to the updater) or
swaps the old one back and marks the version bad. Rules, in order:

1. the model failed to load, or inference raised            -> roll back at once;
2. any depth value is NaN or +-inf                          -> roll back at once;
3. after N frames: more than `max_degenerate_fraction` of the frames are degenerate (all zero,
   all <= 0, or one constant value)                         -> roll back;
4. after N frames: median latency (warm-up frames excluded) above `latency_budget_factor` x the old
   model's median latency (and above `min_latency_budget_ms`, default 5 ms: at sub-millisecond
   inference scheduler jitter alone exceeds 2-4x), or above `max_latency_ms` -> roll back;
5. otherwise healthy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class HealthVerdict:
    healthy: bool
    reason: str
    frames: int
    median_latency_ms: Optional[float] = None
    baseline_latency_ms: Optional[float] = None
    degenerate_frames: int = 0

    @property
    def rollback(self) -> bool:
        return not self.healthy

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class HealthCheck:
    """Accumulates the first `frames` results of a new model and returns a verdict when it has one."""

    def __init__(self, frames: int = 20, latency_budget_factor: float = 2.0,
                 baseline_latency_ms: Optional[float] = None, max_latency_ms: Optional[float] = None,
                 warmup_frames: int = 2, max_degenerate_fraction: float = 0.5,
                 min_latency_budget_ms: float = 5.0):
        if frames < 1 or warmup_frames < 0 or latency_budget_factor <= 0:
            raise ValueError("HealthCheck needs frames >= 1, warmup_frames >= 0, latency_budget_factor > 0")
        self.frames = int(frames)
        self.latency_budget_factor = float(latency_budget_factor)
        self.baseline_latency_ms = baseline_latency_ms
        self.max_latency_ms = max_latency_ms
        self.warmup_frames = int(warmup_frames)
        self.max_degenerate_fraction = float(max_degenerate_fraction)
        # below this absolute budget a slower median is scheduler noise, not a slower model (0.4 -> 1.6 ms)
        self.min_latency_budget_ms = float(min_latency_budget_ms)
        self.seen = 0
        self.degenerate = 0
        self.latencies: List[float] = []
        self.verdict: Optional[HealthVerdict] = None

    @property
    def decided(self) -> bool:
        return self.verdict is not None

    def _decide(self, healthy: bool, reason: str) -> HealthVerdict:
        self.verdict = HealthVerdict(healthy, reason, self.seen, self._median_latency(),
                                     self.baseline_latency_ms, self.degenerate)
        (log.info if healthy else log.warning)("model health check: %s (%s)",
                                              "healthy" if healthy else "ROLL BACK", reason)
        return self.verdict

    def load_failed(self, error: object) -> HealthVerdict:
        """The new model could not be loaded or an inference call raised."""
        return self._decide(False, f"model failed to load or run: {error}")

    def observe(self, depth: Optional[np.ndarray], latency_ms: Optional[float]) -> Optional[HealthVerdict]:
        """Feed one frame's depth output and inference latency; returns the verdict once decided."""
        if self.verdict is not None:
            return self.verdict
        self.seen += 1
        if depth is None:
            return self.load_failed(f"frame {self.seen} produced no output")
        arr = np.asarray(depth)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - finite.sum())
            return self._decide(False, f"frame {self.seen}: {bad} of {arr.size} depth values are NaN/inf")
        if arr.size == 0 or not (arr > 0).any() or float(arr.max()) == float(arr.min()):
            self.degenerate += 1
        if latency_ms is not None and math.isfinite(latency_ms) and latency_ms >= 0:
            if self.seen > self.warmup_frames:
                self.latencies.append(float(latency_ms))
        elif latency_ms is not None:
            log.warning("health check: ignoring invalid latency %r", latency_ms)
        if self.seen >= self.frames:
            return self._final()
        return None

    def _median_latency(self) -> Optional[float]:
        return float(np.median(self.latencies)) if self.latencies else None

    def _final(self) -> HealthVerdict:
        if self.degenerate > self.max_degenerate_fraction * self.seen:
            return self._decide(False, f"{self.degenerate} of {self.seen} frames are degenerate "
                                       "(all zero, non-positive or constant depth)")
        med = self._median_latency()
        if med is not None and self.baseline_latency_ms:
            budget = max(self.latency_budget_factor * float(self.baseline_latency_ms),
                         self.min_latency_budget_ms)
            if med > budget:
                return self._decide(False, f"median latency {med:.1f} ms is over "
                                           f"{self.latency_budget_factor:g}x the previous model's "
                                           f"{self.baseline_latency_ms:.1f} ms")
        if med is not None and self.max_latency_ms is not None and med > self.max_latency_ms:
            return self._decide(False, f"median latency {med:.1f} ms is over the "
                                       f"{self.max_latency_ms:.1f} ms budget")
        lat = f"median latency {med:.1f} ms" if med is not None else "no latency samples"
        return self._decide(True, f"{self.seen} frames finite and non-degenerate, {lat}")


def assess(depths: Sequence[Optional[np.ndarray]], latencies_ms: Sequence[Optional[float]],
           load_error: Optional[object] = None, **options: Any) -> HealthVerdict:
    """One-shot verdict over recorded results (options as for HealthCheck; frames defaults to all)."""
    options.setdefault("frames", max(1, len(depths)))
    check = HealthCheck(**options)
    if load_error is not None:
        return check.load_failed(load_error)
    for depth, lat in zip(depths, latencies_ms):
        verdict = check.observe(depth, lat)
        if verdict is not None:
            return verdict
    return check._final() if check.seen else check.load_failed("no frames were observed")
