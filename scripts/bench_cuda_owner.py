#!/usr/bin/env python3
"""Cost of handing each call to the CUDA owner thread (edgedepth.backends.tensorrt.cuda.CudaOwner).

The TensorRT backend runs every CUDA call on one owner thread, so each frame pays one hand-over from the
calling thread and back. This measures that hand-over alone: the owner is started with a stand-in for
pycuda.driver that does no CUDA work, and `call` runs an empty function. Prints the median and p90 per
call in microseconds, interleaved with direct calls of the same function as the baseline.

    python scripts/bench_cuda_owner.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
import types


def stand_in_driver() -> types.SimpleNamespace:
    """Just enough of pycuda.driver for CudaOwner to start and stop; no GPU involved."""

    class Context:
        @staticmethod
        def pop() -> None:
            pass

        def push(self) -> None:
            pass

        def detach(self) -> None:
            pass

    class Device:
        @staticmethod
        def count() -> int:
            return 1

        def __init__(self, index: int) -> None:
            pass

        def compute_capability(self):
            return (0, 0)

        def name(self) -> str:
            return "stand-in"

        def retain_primary_context(self):
            return Context()

    return types.SimpleNamespace(init=lambda: None, Device=Device, Context=Context)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from edgedepth.backends.tensorrt.cuda import CudaOwner

    owner = CudaOwner(0, name="bench", driver=stand_in_driver())

    def nothing() -> None:
        return None

    handoff, direct = [], []
    try:
        for _ in range(args.rounds):
            for target, out in ((lambda: owner.call(nothing), handoff), (nothing, direct)):
                for _ in range(args.calls):
                    t0 = time.perf_counter_ns()
                    target()
                    out.append(time.perf_counter_ns() - t0)
    finally:
        owner.close()

    def q(values, p):
        return statistics.quantiles(values, n=100)[p - 1] / 1000

    print(f"owner hand-over: median {statistics.median(handoff) / 1000:.1f} us, p90 {q(handoff, 90):.1f} us "
          f"per call ({len(handoff)} calls)")
    print(f"direct call:     median {statistics.median(direct) / 1000:.2f} us, p90 {q(direct, 90):.2f} us")


if __name__ == "__main__":
    main()
