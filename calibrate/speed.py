"""Latency of ONNX models in onnxruntime (CPU), measured interleaved so that load drifts hit all alike."""

from __future__ import annotations

import time
from typing import Dict, Sequence

import numpy as np

from edgedepth.preprocess import INPUT_NAME


def interleaved_latency(paths: Sequence[str], inputs: np.ndarray, rounds: int = 30, warmup: int = 3,
                        threads: int = 1) -> Dict[str, Dict[str, float]]:
    """Median / p90 latency (ms) per model; each round runs every model once, in rotating order."""
    from edgedepth.export.parity import ort_session

    sessions = {p: ort_session(p, threads) for p in paths}
    feeds = [{INPUT_NAME: inputs[i % len(inputs)][None]} for i in range(max(1, rounds))]
    for s in sessions.values():
        for i in range(warmup):
            s.run(None, feeds[i % len(feeds)])
    times: Dict[str, list] = {p: [] for p in paths}
    order = list(paths)
    for r in range(rounds):
        order = order[1:] + order[:1]
        for p in order:
            t = time.perf_counter()
            sessions[p].run(None, feeds[r])
            times[p].append((time.perf_counter() - t) * 1000.0)
    out = {p: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
           for p, v in times.items()}
    base = times[paths[0]]
    for p, v in times.items():  # per-round ratios vs the first model: robust to load drifting between rounds
        out[p]["paired_ratio_median"] = float(np.median(np.asarray(base) / np.asarray(v)))
    return out
