"""Core pinning for the live loop: the inference thread on a core of its own, the Python stages on the rest.

The inference thread wakes the postprocessing thread after every frame, and Linux likes to run a woken
thread on the waker's core (wake-affine scheduling). Unpinned, the pipeline's Python stages keep landing
on the core inference runs on and take time from it, worst when the machine is busy with other work; on
a small board every core counts. Pinning is best effort: where the platform has no affinity call, the
process may use a single core, or the call is refused, the loop runs unpinned.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import FrozenSet, Optional

from edgedepth.machine import allowed_cores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorePlan:
    inference: int  # the core the inference thread runs on, alone
    others: FrozenSet[int]  # capture, preprocessing, postprocessing, selection and sinks


def plan_cores() -> Optional[CorePlan]:
    """The last core this process may use for inference, the others for the rest; None with one core."""
    allowed = allowed_cores()
    if allowed is None or len(allowed) < 2:
        return None
    ordered = sorted(allowed)
    return CorePlan(ordered[-1], frozenset(ordered[:-1]))


def pin_thread(cores: FrozenSet[int]) -> bool:
    """Restrict the calling thread to `cores`; False (and a debug line) when the system refuses."""
    try:
        os.sched_setaffinity(0, cores)
    except (AttributeError, OSError, ValueError) as exc:
        log.debug("could not pin a loop thread to cores %s: %s", sorted(cores), exc)
        return False
    return True
