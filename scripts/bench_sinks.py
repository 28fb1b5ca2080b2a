#!/usr/bin/env python
"""Throughput of the live loop with a recorded output (Rerun .rrd, MCAP) over the loop without it.

    python scripts/bench_sinks.py [MODEL] [--size 96x128] [--frames 300] [--rounds 5] [--threads 1]
                                  [--outputs rrd,mcap] [--json out.json]

MODEL: a bundle directory or an .onnx file; without one, the `small` network (random weights: the figure
is about the pipeline, not the depth) is exported at --size with torch. The source is
synthetic://indoor?...&cache=64 (rendered once, replayed) with hard-frame selection on, onnxruntime CPU.
Rounds are interleaved (no output, then each output, order alternated); the ratio is loop fps with the
output / loop fps without it, as a ratio of medians and as the median of the per-round ratios (robust to
load that drifts between rounds). Process CPU time per frame (all threads, the writer's included) and the
frames an output dropped because its writer thread fell behind are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedepth.runtime.backends import load_backend  # noqa: E402
from edgedepth.runtime.capture import open_source  # noqa: E402
from edgedepth.runtime.loop import DepthLoop  # noqa: E402
from edgedepth.runtime.selection import FrameSelector, SelectionConfig  # noqa: E402
from edgedepth.runtime.sinks import make_sink  # noqa: E402


def export_small(path: Path, h: int, w: int) -> Path:
    import onnx
    import torch

    from edgedepth.modelmeta import ModelInfo
    from edgedepth.models import build_model
    from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY, Preprocessing

    torch.manual_seed(0)
    model = build_model("small").eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, h, w), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_DEPTH, OUTPUT_UNCERTAINTY], opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    info = ModelInfo(preprocessing=Preprocessing(height=h, width=w), name="bench-small", size="small")
    for key, value in info.to_metadata_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def loop_fps(backend, uri, n, h, w, sink=None):
    """(frames/s, process CPU ms per frame) over the steady part of one run of the loop."""
    stamps = []
    source = open_source(uri, default_size=(h, w))
    loop = DepthLoop(source, backend, sinks=[sink] if sink is not None else (),
                     selector=FrameSelector(SelectionConfig(mode="hard", rate=0.05)), max_frames=n,
                     on_result=lambda r: stamps.append((time.perf_counter(), time.process_time())))
    loop.run()  # closes the sink (its writer drains and the file is finished) after the last frame
    source.close()
    warm = min(10, len(stamps) // 10)
    frames = len(stamps) - 1 - warm
    return frames / (stamps[-1][0] - stamps[warm][0]), (stamps[-1][1] - stamps[warm][1]) / frames * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--size", default="96x128")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--outputs", default="rrd,rrd-every,mcap",
                    help="comma list of rrd (Rerun recording, default max_fps=30), rrd-every (Rerun, every "
                         "frame's images: max_fps=0), mcap")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    work = Path(tempfile.mkdtemp(prefix="edgedepth-bench-sinks-"))
    model = args.model or str(export_small(work / "model.onnx", h, w))
    backend = load_backend(model, backend="ort-cpu", threads=args.threads)
    backend.warmup(5)
    uri = f"synthetic://indoor?seed=1&size={h}x{w}&cache=64"
    kinds = [k.strip() for k in args.outputs.split(",") if k.strip()]
    fps = {"none": []}
    cpu = {"none": []}
    dropped = {k: [] for k in kinds}
    fps.update({k: [] for k in kinds})
    cpu.update({k: [] for k in kinds})
    for r in range(args.rounds):
        order = ["none", *kinds] if r % 2 == 0 else [*kinds, "none"]
        for kind in order:
            sink = None
            if kind != "none":
                target = {"rrd": "{}.rrd", "rrd-every": "{}-every.rrd?max_fps=0", "mcap": "{}.mcap"}[kind]
                sink = make_sink(target.format(work / f"round{r}"))
            f, c = loop_fps(backend, uri, args.frames, h, w, sink)
            fps[kind].append(f)
            cpu[kind].append(c)
            if sink is not None:
                dropped[kind].append(sink.dropped)
    base = statistics.median(fps["none"])
    base_cpu = statistics.median(cpu["none"])
    result = {"size": f"{h}x{w}", "frames": args.frames, "rounds": args.rounds, "threads": args.threads,
              "model": args.model or "small (random weights, exported here)",
              "fps_without_output": round(base, 1), "cpu_ms_per_frame_without_output": round(base_cpu, 3),
              "outputs": {}}
    print(f"loop at {h}x{w}, onnxruntime CPU ({args.threads} thread(s)), {args.frames} frames x "
          f"{args.rounds} rounds, hard selection on")
    print(f"  no output:   {base:7.1f} fps, {base_cpu:.2f} CPU ms/frame (medians; fps per round "
          f"{', '.join(f'{v:.0f}' for v in fps['none'])})")
    for kind in kinds:
        med = statistics.median(fps[kind])
        paired = statistics.median(a / b for a, b in zip(fps[kind], fps["none"]))  # same round, adjacent
        med_cpu = statistics.median(cpu[kind])
        result["outputs"][kind] = {"fps": round(med, 1), "ratio_of_medians": round(med / base, 3),
                                   "median_paired_ratio": round(paired, 3),
                                   "cpu_ms_per_frame": round(med_cpu, 3),
                                   "fps_per_round": [round(v, 1) for v in fps[kind]],
                                   "dropped_per_round": dropped[kind]}
        print(f"  with {kind:9s}:  {med:7.1f} fps, {med_cpu:.2f} CPU ms/frame (medians; fps per round "
              f"{', '.join(f'{v:.0f}' for v in fps[kind])})")
        print(f"    throughput ratio with/without: {med / base:.3f} (medians), {paired:.3f} (median of "
              f"per-round pairs); frames dropped by the writer per round: {dropped[kind]}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    backend.close()


if __name__ == "__main__":
    main()
