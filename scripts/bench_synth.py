"""Frames per second of the synthetic renderer, single process, per domain and size.

Prints two figures per (domain, size): `stream` (SceneStream: a video, a new scene every 150 frames, so
per-scene work such as shadow maps is amortised) and `frame` (render_frame: a new random scene for every
frame, what `edgedepth data synth` without --sequence does).

    python scripts/bench_synth.py [--frames 200] [--sizes 96x128,240x320] [--domains indoor,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from edgedepth.data import synth


def _rate(fn, frames: int):
    """(frames per wall-clock second, frames per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    for i in range(frames):
        fn(i)
    return frames / (time.perf_counter() - t), frames / (time.process_time() - c)


def bench_stream(domain: str, h: int, w: int, frames: int):
    st = synth.SceneStream(domain, seed=123, height=h, width=w)
    st.next()  # warm-up: texture bank, ray tables
    return _rate(lambda i: st.next(), frames)


def bench_frames(domain: str, h: int, w: int, frames: int):
    synth.render_frame(domain, 10_000, h, w)
    return _rate(lambda i: synth.render_frame(domain, i, h, w), frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--frames", type=int, default=200, help="frames per measurement (96x128; fewer at larger sizes)"
    )
    ap.add_argument("--sizes", default="96x128,240x320")
    ap.add_argument("--domains", default=",".join(synth.DOMAINS))
    args = ap.parse_args()
    print(
        f"numpy {np.__version__}, python {platform.python_version()}, {platform.machine()}, "
        f"cpus {os.cpu_count()}, single process"
    )
    print("fps = frames per wall-clock second; cpu = frames per CPU second of this process (what a busy")
    print("machine would give without contention)")
    print(f"{'domain':<9} {'size':>8} {'stream fps':>11} {'(cpu)':>7} {'frame fps':>10} {'(cpu)':>7}")
    recorded = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        n = max(20, int(args.frames * (96 * 128) / (h * w)))
        rates = []
        for d in args.domains.split(","):
            s, f = bench_stream(d, h, w, n), bench_frames(d, h, w, max(10, n // 2))
            rates.append(s + f)
            print(f"{d:<9} {size:>8} {s[0]:>11.1f} {s[1]:>7.1f} {f[0]:>10.1f} {f[1]:>7.1f}", flush=True)
            recorded.append([d, size] + [round(v, 1) for v in s + f])
        hm = [len(rates) / sum(1 / r[k] for r in rates) for k in range(4)]
        print(f"{'all':<9} {size:>8} {hm[0]:>11.1f} {hm[1]:>7.1f} {hm[2]:>10.1f} {hm[3]:>7.1f}  (harm. mean)")
    from edgedepth.bench.record import record_results, table

    record_results("bench_synth", "Synthetic renderer throughput", tables=[table(
        ["domain", "size", "stream fps", "(cpu)", "frame fps", "(cpu)"], recorded)])


if __name__ == "__main__":
    main()
