"""Latency statistics and interleaved (round-robin) timing of several runtimes.

Timed runs are taken in blocks: block b runs every runtime in turn (the order rotated by b, so each
runtime is first equally often), each runtime doing `warmup` untimed runs and then `block` timed ones.
Machine noise (another process, frequency changes, a thermal dip) then lands on all runtimes alike
instead of on whichever ran during it. Figures are medians / percentiles over the pooled runs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

QUANTILES = (50, 95, 99)


def percentiles(samples_ms: Sequence[float], qs: Sequence[float] = QUANTILES) -> Dict[str, float]:
    """{'p50': ..., 'p95': ..., 'p99': ...} with linear interpolation between order statistics
    (numpy's default; the q-th percentile of n samples sits at rank q/100 * (n - 1)). NaN when empty."""
    arr = np.asarray([s for s in samples_ms if math.isfinite(s)], dtype=np.float64)
    if arr.size == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(arr, qs))}


def latency_summary(samples_ms: Sequence[float], block_fps: Sequence[float] = ()) -> Dict[str, float]:
    """Percentiles, mean, min and throughput (median of per-block frames/s; else 1000/mean)."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    out = percentiles(arr)
    out["mean"] = float(arr.mean()) if arr.size else float("nan")
    out["min"] = float(arr.min()) if arr.size else float("nan")
    out["runs"] = int(arr.size)
    if len(block_fps):
        out["fps"] = float(np.median(block_fps))
    else:
        out["fps"] = 1000.0 / out["mean"] if arr.size and out["mean"] > 0 else float("nan")
    return out


@dataclass
class TimedRuntime:
    """One runtime in the round robin: a callable doing one inference on input i."""

    name: str
    run: Callable[[int], object]
    samples_ms: List[float] = field(default_factory=list)
    block_fps: List[float] = field(default_factory=list)
    error: Optional[str] = None


def round_robin(runtimes: Sequence[TimedRuntime], runs: int, block: int = 5, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter,
                on_block: Optional[Callable[[int, int], None]] = None, budget_s: Optional[float] = None,
                min_blocks: int = 2) -> List[TimedRuntime]:
    """Time `runs` runs of every runtime in interleaved blocks (see the module docstring).

    A runtime that raises is dropped from later blocks with its error recorded; the others go on.
    With `budget_s`, no new block starts once that many seconds have passed (after `min_blocks`), so a
    very slow runtime shortens the run for all alike; every runtime keeps the same number of runs."""
    if runs <= 0 or block <= 0:
        raise ValueError("runs and block must be positive")
    blocks = math.ceil(runs / block)
    counter = 0
    started = clock()
    for b in range(blocks):
        if budget_s is not None and b >= min_blocks and clock() - started > budget_s:
            log.warning("timing budget of %.0f s reached after %d of %d blocks", budget_s, b, blocks)
            break
        n = min(block, runs - b * block)
        live = [r for r in runtimes if r.error is None]
        if not live:
            break
        shift = b % len(live)
        for rt in live[shift:] + live[:shift]:
            try:
                for _ in range(warmup):  # settles caches and the other runtimes' idle threads
                    rt.run(counter)
                    counter += 1
                t_block = clock()
                for _ in range(n):
                    t0 = clock()
                    rt.run(counter)
                    rt.samples_ms.append((clock() - t0) * 1000.0)
                    counter += 1
                elapsed = clock() - t_block
                if elapsed > 0:
                    rt.block_fps.append(n / elapsed)
            except Exception as exc:  # one runtime failing mid-run must not end the benchmark
                rt.error = f"{type(exc).__name__}: {exc}"
                log.warning("runtime %s failed during timing: %s", rt.name, rt.error)
        if on_block is not None:
            on_block(b + 1, blocks)
    return list(runtimes)
