"""libgomp's wait policy for CPU training, chosen before torch loads libgomp (it reads the policy once).

By default an OpenMP worker spins for a while after each parallel region, waiting for the next one. On an
idle machine that is what makes small CPU steps fast; when another process holds a core, the spinning
worker burns the time slice the other thread needs. Measured on a 2-core x86 with 2 torch threads
(`small`, batch 8, 96x128, one full training step, an ad hoc timer): idle, 61 ms with the default policy
and 150 ms with OMP_WAIT_POLICY=PASSIVE; beside one busy process, 195 ms default and 164 ms passive.
So: passive only when the CPUs this process may use are already busy, measured over a short sample.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

BUSY_THRESHOLD = 0.3  # busy share of the usable CPUs above which training waits passively


def _cpu_times(cpus) -> Optional[tuple]:
    """(busy, total) jiffies summed over `cpus` from /proc/stat, None where there is no /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        vals = [int(v) for v in rest.split()]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        busy += sum(vals[:8]) - idle
        total += sum(vals[:8])
    return (busy, total) if total else None


def cpu_busy_share(sample_s: float = 0.3) -> Optional[float]:
    """Share (0..1) of the CPUs this process may run on that other work kept busy over `sample_s`."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    first = _cpu_times(cpus)
    if first is None:
        return None
    time.sleep(sample_s)
    second = _cpu_times(cpus)
    if second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


def choose_wait_policy(sample_s: float = 0.3) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE when the usable CPUs are busy; a policy set by the user is kept.
    Returns the policy in force ("default" when libgomp's own applies). Call before importing torch."""
    if os.environ.get("OMP_WAIT_POLICY"):
        return os.environ["OMP_WAIT_POLICY"]
    busy = cpu_busy_share(sample_s)
    if busy is not None and busy > BUSY_THRESHOLD:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        log.info("CPUs %.0f %% busy with other work: OpenMP threads wait passively", 100 * busy)
        return "PASSIVE"
    return "default"
