#!/usr/bin/env python
"""Parity and CPU cost of the uint8-input graph (`edgedepth export --input-format uint8-hwc-*`).

For each camera size, exports the checkpoint with preprocessing inside the graph and prints:
- the max (and mean) relative depth error of that graph on the camera's uint8 frames against the float
  pipeline on the same frames (edgedepth.preprocess on the CPU, then the float graph), the export's own
  check (tolerance 1e-4 without a resize, 2e-2 with one);
- the CPU time per frame the runtime spends before inference: Preprocessing.apply (resize + normalise
  into float) for the float model, InputSpec.pack (a view of the frame's bytes, or a conversion) for
  the uint8 model; medians of interleaved rounds.

    python scripts/bench_input_parity.py --ckpt runs/acceptance/best.pt --cameras 96x128,192x256,480x640
    python scripts/bench_input_parity.py               # an untrained `small` network (labelled as such)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def checkpoint(args, work: Path):
    if args.ckpt:
        return Path(args.ckpt), f"checkpoint {args.ckpt}"
    import torch
    from edgedepth.export.onnx import parse_size

    from edgedepth.checkpoint import save_checkpoint
    from edgedepth.models import build_model
    from edgedepth.models.catalog import model_config
    from edgedepth.preprocess import Preprocessing

    torch.manual_seed(0)
    path = work / "random.pt"
    save_checkpoint(path, build_model("small"), model_config("small"), Preprocessing(*parse_size(args.size)),
                    name="random-small")
    return path, "RANDOM WEIGHTS `small` (no --ckpt given)"


def cpu_cost(pre, spec, frames, rounds: int = 5, reps: int = 200):
    """Median microseconds per frame of the float preprocessing and of the uint8 hand-over."""
    out = np.empty((1, 3, pre.height, pre.width), np.float32)
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    f_us, u_us = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(reps):
            pre.apply(frames[i % len(frames)], out=out)
        f_us.append((time.perf_counter() - t0) / reps * 1e6)
        t0 = time.perf_counter()
        for i in range(reps):
            spec.pack(frames[i % len(frames)], bgr=bgr[i % len(frames)])
        u_us.append((time.perf_counter() - t0) / reps * 1e6)
    return statistics.median(f_us), statistics.median(u_us)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--size", default="96x128", help="model input size for the untrained network")
    ap.add_argument("--cameras", default="96x128,192x256,480x640", help="camera sizes HxW, comma-separated")
    ap.add_argument("--format", default="uint8-hwc-bgr", choices=["uint8-hwc-bgr", "uint8-hwc-rgb"])
    ap.add_argument("--data", default=None, help="frames (DIR[,DIR]); default: synthetic frames")
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from edgedepth.export.onnx import export_onnx

    from edgedepth.data.frames import get_frames
    from edgedepth.modelmeta import read_onnx_info
    from edgedepth.runtime.sources import parse_size

    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        work = Path(tmp)
        ckpt, label = checkpoint(args, work)
        print(f"model: {label}; input format {args.format}; {args.frames} frames "
              f"({args.data or 'synthetic'})")
        rows = []
        for cam in (parse_size(c) for c in args.cameras.split(",") if c.strip()):
            out = work / f"u8-{cam[0]}x{cam[1]}"
            rep = export_onnx(str(ckpt), str(out), data=args.data, parity_frames=args.frames,
                              input_format=args.format, input_size=cam)
            g = rep["input_graph"]
            info = read_onnx_info(str(out / "model.onnx"))
            frames = get_frames(args.data, 16, cam[0], cam[1], seed=7).rgb
            f_us, u_us = cpu_cost(info.preprocessing, info.input, list(frames))
            rows.append((cam, g, f_us, u_us))
            print(f"camera {cam[0]}x{cam[1]} -> model {info.preprocessing.height}x{info.preprocessing.width} "
                  f"(resize {g['resize']}): max relative depth error {g['max_rel_depth']:.2e}, mean "
                  f"{g['mean_rel_depth']:.2e}, max |uncertainty diff| {g['max_abs_uncertainty']:.2e} "
                  f"(tolerance {g['tolerance']:.0e}); CPU before inference: float preprocessing "
                  f"{f_us:.1f} us/frame, uint8 hand-over {u_us:.1f} us/frame")
        worst = max(r[1]["max_rel_depth"] for r in rows)
        print(f"max relative depth error over all camera sizes: {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
