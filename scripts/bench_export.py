#!/usr/bin/env python
"""Export/quantization acceptance: export + calibrate(trt) + calibrate(cpu) + lint of the `small` model.

Prints each stage's wall time and the export figures with their targets:
- total of the four stages (target <= 60 s on this machine);
- ONNX vs PyTorch max relative depth error on 32 validation frames (target <= 1e-4);
- TensorRT-target INT8 delta1 drop vs FP32 on held-out frames (target <= 0.01);
- CPU-target INT8 speed-up over FP32 in onnxruntime at 224x224, interleaved medians in one run
  (target >= 1.3x, inside the same accuracy gate), with the per-layer-type table behind it.

    python scripts/bench_export.py --data runs/bench-data/val_indoor        # a dataset folder
    python scripts/bench_export.py --ckpt runs/acceptance/best.pt --data DIR

Checkpoint: --ckpt, else runs/acceptance/best.pt when the training acceptance made one, else a
`small` model trained for --train-minutes on --data, else (if that fails) random weights - the
output says which. Without --data, 160 synthetic frames (mixed domains) are rendered first (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"total_s": 60.0, "parity": 1e-4, "d1_drop": 0.01, "cpu_speedup": 1.3}


def _run(args, timeout=900):
    cmd = [sys.executable, "-m", "edgedepth", *args]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return res, time.perf_counter() - t


def make_data(out: Path, frames: int, size: str) -> str:
    from edgedepth.data.synth import DOMAINS, write_synth_dataset

    h, w = (int(v) for v in size.split("x"))
    per = max(1, frames // len(DOMAINS))
    dirs = []
    for i, dom in enumerate(DOMAINS):
        dirs.append(str(write_synth_dataset(out / dom, dom, per, h, w, seed=9000 + i, progress=False)))
    return ",".join(dirs)


def pick_checkpoint(args, data: str, work: Path):
    if args.ckpt:
        return Path(args.ckpt), "given checkpoint"
    acc = REPO / "runs" / "acceptance" / "best.pt"
    if acc.is_file():
        return acc, "training acceptance checkpoint runs/acceptance/best.pt"
    out = work / "train"
    res, dt = _run(
        [
            "train",
            "--data",
            str(data),
            "--model",
            "small",
            "--size",
            "96x128",
            "--minutes",
            str(args.train_minutes),
            "--out",
            str(out),
            "--no-progress",
            "--workers",
            "1",
        ]
    )
    if res.returncode == 0 and (out / "best.pt").is_file():
        return out / "best.pt", f"`small` trained here for {args.train_minutes} min ({dt:.0f} s)"
    print("training failed, falling back to random weights:\n" + res.stderr[-2000:])
    from edgedepth.checkpoint import save_checkpoint
    from edgedepth.models import build_model
    from edgedepth.models.catalog import model_config
    from edgedepth.preprocess import Preprocessing

    path = work / "random.pt"
    save_checkpoint(path, build_model("small"), model_config("small"), Preprocessing(224, 224), name="random")
    return path, "RANDOM WEIGHTS (no trained checkpoint available)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=None, help="checkpoint to export (default: see above)")
    ap.add_argument("--data", default=None, help="dataset folder(s) DIR or DIR,DIR (rgb/ and depth/)")
    ap.add_argument("--size", default="224x224", help="export size HxW")
    ap.add_argument("--frames", type=int, default=128, help="calibration frames")
    ap.add_argument("--method", default="minmax", help="calibration method for the trt target")
    ap.add_argument("--device", default="orin-nano-8gb", help="board for export opset and lint")
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--out", default=None, help="bundle folder (default: a temporary one)")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench-export-")
    work = Path(tmp.name)
    data = args.data or make_data(work / "data", 160, args.size)
    ckpt, ckpt_note = pick_checkpoint(args, data, work)
    bdir = Path(args.out) if args.out else work / "bundle"
    if bdir.exists():
        for name in ("calibration.json", "model.int8.trt.onnx", "model.int8.cpu.onnx"):
            if (bdir / name).exists():
                os.unlink(bdir / name)
    print(f"checkpoint: {ckpt} ({ckpt_note})")
    print(f"data: {data}; bundle: {bdir}; size {args.size}; device {args.device}")

    stages = {}
    res, stages["export"] = _run(
        [
            "export",
            str(ckpt),
            "--out",
            str(bdir),
            "--size",
            args.size,
            "--device",
            args.device,
            "--data",
            str(data),
            "--frames",
            "32",
        ]
    )
    print(res.stdout.strip())
    if res.returncode:
        print(res.stderr)
        return 1
    res, stages["calibrate trt"] = _run(
        [
            "calibrate",
            str(bdir / "model.onnx"),
            "--data",
            str(data),
            "--target",
            "trt",
            "--method",
            args.method,
            "--frames",
            str(args.frames),
            "--device",
            args.device,
        ]
    )
    print(res.stdout.strip() + res.stderr.strip())
    res, stages["calibrate cpu"] = _run(
        [
            "calibrate",
            str(bdir / "model.onnx"),
            "--data",
            str(data),
            "--target",
            "cpu",
            "--method",
            args.method,
            "--frames",
            str(args.frames),
        ]
    )
    print(res.stdout.strip() + res.stderr.strip())
    res_lint, stages["lint"] = _run(["lint", str(bdir / "model.int8.trt.onnx"), "--device", args.device])
    print(res_lint.stdout.strip() + res_lint.stderr.strip())
    total = sum(stages.values())

    man = json.loads((bdir / "manifest.json").read_text())
    rep = json.loads((bdir / "calibration.json").read_text())
    parity = man["export"]["max_rel_depth"]
    trt = rep["targets"]["trt"]
    trt_m = trt["methods"][trt["chosen_method"]] if trt.get("chosen_method") else None
    cpu = rep["targets"]["cpu"]
    cpu_m = cpu["methods"][cpu["chosen_method"]] if cpu.get("chosen_method") else None
    print("\n== per layer type (CPU, only that type quantized vs FP32, ms) ==")
    if cpu_m:
        for kind, row in sorted(cpu_m["layout"]["per_type"].items(), key=lambda kv: -kv[1]["saved_ms"]):
            print(
                f"  {kind:20s} nodes {row['nodes']:3d}  FP32 {row['fp32_ms']:.2f}  INT8-only-this "
                f"{row['only_this_int8_ms']:.2f}  speed-up {row['speedup']:.2f}x"
            )
        print(f"  chosen: {cpu_m['layout']['chosen']} [format {cpu_m['layout']['format']}]")
    print("\n== stages (s) ==")
    for name, sec in stages.items():
        print(f"  {name:14s} {sec:6.1f}")
    rows = [
        (
            "total export+calibrate(trt)+calibrate(cpu)+lint [s]",
            total,
            TARGETS["total_s"],
            total <= TARGETS["total_s"],
        ),
        (
            "ONNX vs PyTorch max relative depth error (32 frames)",
            parity,
            TARGETS["parity"],
            parity <= TARGETS["parity"],
        ),
    ]
    if trt_m:
        drop = trt_m["gate"]["d1_drop"]
        rows.append(
            (
                "TRT-target INT8 delta1 drop vs FP32 (held out)",
                drop,
                TARGETS["d1_drop"],
                drop <= TARGETS["d1_drop"] and trt["written"],
            )
        )
    if cpu_m:
        ratio = cpu_m["speed"]["ratio"]
        rows.append(
            (
                f"CPU-target INT8 speed-up vs FP32 ({cpu_m['speed']['input']}, gate "
                f"{'pass' if cpu['gate_passed'] else 'FAIL'})",
                ratio,
                TARGETS["cpu_speedup"],
                ratio >= TARGETS["cpu_speedup"] and cpu["gate_passed"],
            )
        )
    print("\n== acceptance ==")
    for name, value, target, ok in rows:
        print(f"  {name:75s} {value:10.4g}  (target {target:g})  {'PASS' if ok else 'FAIL'}")
    print(f"  lint of the TRT-target model for {args.device}: exit {res_lint.returncode}")
    print(f"checkpoint used: {ckpt_note}")
    from edgedepth.bench.record import figure, record_results

    record_results("bench_export", f"Export and quantization for {args.device}",
                   [figure(name, float(f"{value:.4g}"), target=f"{target:g} ({'PASS' if ok else 'FAIL'})")
                    for name, value, target, ok in rows]
                   + [figure("lint of the TensorRT-target model, exit code", res_lint.returncode)],
                   notes=[f"Checkpoint: {ckpt_note}."])
    return 0 if all(r[3] for r in rows) and res_lint.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
