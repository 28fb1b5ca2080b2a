"""The live loop's small parts: its input buffer pool and the records it passes between its threads."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from edgedepth.runtime.backends import Backend


class BufferPool:
    """Reused (1,3,H,W) float32 input buffers. There are as many as can be in flight at once (waiting,
    in inference, being filled), so taking one never waits; a size change (model swap) or an unexpected
    shortage allocates a new one. A deque: append/pop are atomic, no lock or condition per frame."""

    def __init__(self, shape, count: int = 3):
        self.free: "deque[np.ndarray]" = deque(
            np.empty(shape, dtype=np.float32) for _ in range(max(2, count))
        )

    def acquire(self, shape) -> np.ndarray:
        try:
            buf = self.free.pop()
        except IndexError:
            return np.empty(shape, dtype=np.float32)
        return buf if buf.shape == tuple(shape) else np.empty(shape, dtype=np.float32)

    def release(self, buf: np.ndarray) -> None:
        self.free.append(buf)


@dataclass
class Swap:
    backend: Backend
    health_check: object = None
    on_verdict: Optional[Callable] = None
    close_replaced: bool = False


@dataclass
class Probation:
    generation: int
    old: Backend
    new: Backend
    check: object
    on_verdict: Optional[Callable]


@dataclass
class LoopSummary:
    frames: int
    submitted: int
    errors: int
    reason: str
    stats: dict


@dataclass
class Verdict:
    healthy: bool
    reason: str
