#!/usr/bin/env python3
"""Hot swap of TensorRT models on a real GPU: is the old model's GPU memory all given back?

    python3 scripts/trt_swap_check.py BUNDLE_A BUNDLE_B [--board BOARD] [--frames 300] [--tolerance-mib 8]

Loads bundle A's engine and runs frames from a loop thread (as `edgedepth run` does), loads bundle B from
an update thread, swaps, closes A from that update thread, runs frames on B, closes B. GPU memory is read
with the CUDA driver's cuMemGetInfo (on a probe thread holding the device's primary context) before
loading, with A, after the swap and after closing. Prints those figures and the frames per second of
each phase; exits 1 when memory after the swap differs from memory with A by more than the tolerance (two
bundles of one model size use the same memory) or does not come back after closing, else 0. On a Jetson
the GPU shares system memory, so other processes move these figures: keep the board otherwise idle.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

MIB = 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle_a")
    ap.add_argument("bundle_b")
    ap.add_argument("--device", default=None, help="board name (device_configs), for the engine choice")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--tolerance-mib", type=float, default=8.0)
    args = ap.parse_args()

    import numpy as np

    from edgedepth.backends.tensorrt.cuda import CudaOwner
    from edgedepth.runtime.backends import load_backend

    probe = CudaOwner(0, name="memory-probe")
    used = {}

    def mark(label: str) -> None:
        free, total = probe.mem_info()
        used[label] = (total - free) / MIB
        print(f"gpu memory used {label:<18} {used[label]:9.1f} MiB (of {total / MIB:.0f} MiB)", flush=True)

    def run_frames(backend, label: str) -> None:
        x = np.random.default_rng(0).standard_normal(backend.input_shape).astype(np.float32)
        errors = []

        def loop() -> None:  # the live loop's own thread; it ends afterwards, as the loop's does
            try:
                for _ in range(args.frames):
                    depth, _unc = backend.infer(x)
                    if not np.isfinite(depth).all():
                        raise RuntimeError("non-finite depth")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t0 = time.perf_counter()
        t = threading.Thread(target=loop, name=f"loop-{label}")
        t.start()
        t.join()
        if errors:
            raise errors[0]
        dt = time.perf_counter() - t0
        fps = args.frames / dt
        print(f"{label}: {args.frames} frames in {dt:.2f} s ({fps:.1f} fps), {backend.describe()}")

    try:
        mark("before load")
        model_a = load_backend(args.bundle_a, backend="trt", device=args.device)
        run_frames(model_a, "model A")
        mark("with model A")
        box = {}

        def update() -> None:  # the update thread: load the new model, swap, close the old one
            box["b"] = load_backend(args.bundle_b, backend="trt", device=args.device)
            model_a.close()

        t = threading.Thread(target=update, name="update")
        t.start()
        t.join()
        model_b = box["b"]
        run_frames(model_b, "model B")
        mark("after swap to B")
        model_b.close()
        mark("after close")
    finally:
        probe.close()
    swap = used["after swap to B"] - used["with model A"]
    back = used["after close"] - used["before load"]
    ok = abs(swap) <= args.tolerance_mib and abs(back) <= args.tolerance_mib
    print(f"swap changed gpu memory by {swap:+.1f} MiB; after closing both {back:+.1f} MiB vs before "
          f"(tolerance {args.tolerance_mib} MiB): {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
