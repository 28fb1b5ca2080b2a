"""`edgedepth bench`: every runtime a user could pick, timed in one run on the same frames and threads.

    report = run_bench("bundle/", checkpoint="best.pt", threads=2)
    print(format_report(report)); write_json(report, "bench.json"); write_chart(report, "bench.png")

Per input size: load every runtime (a failure is a row with its reason, not an error), score accuracy on
the held-out frames (--data, else synthetic frames rendered with a fixed seed), time all runtimes
round-robin (edgedepth.bench.timing), then measure each one's peak memory in a fresh subprocess
(edgedepth.bench.memory). Last, the live loop's pipeline efficiency: loop fps over bare-backend fps on a
replayed synthetic:// clip, with the backend `edgedepth run` would choose.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth import bundle as bundle_layout
from edgedepth.bench.memory import measure_in_subprocess
from edgedepth.bench.runtimes import (
    LOOP_KEY,
    RuntimeSpec,
    discover_runtimes,
    ensure_model_file,
    find_checkpoint,
    open_runner,
    parse_backends,
)
from edgedepth.bench.timing import TimedRuntime, latency_summary, round_robin
from edgedepth.errors import ConfigError, DataError, EdgeDepthError, ModelError
from edgedepth.machine import load_average, machine_info, usable_cores
from edgedepth.metrics import frame_metrics, mean_metrics
from edgedepth.preprocess import Preprocessing, resize_depth

log = logging.getLogger(__name__)

SYNTH_SEED = 900_000  # far from the seeds training sets are rendered with: held-out views
REFERENCE_KEY = "ort-fp32"


@dataclass
class EvalFrame:
    rgb: np.ndarray
    depth: np.ndarray
    name: str


@dataclass
class SizeResult:
    height: int
    width: int
    rows: List[Dict[str, Any]] = field(default_factory=list)

    def row(self, key: str) -> Optional[Dict[str, Any]]:
        return next((r for r in self.rows if r["key"] == key), None)


@dataclass
class BenchReport:
    bundle: str
    model: Dict[str, Any]
    machine: Dict[str, Any]
    threads: int
    runs: int
    block: int
    data: str
    frames: int
    checkpoint: Optional[str]
    sizes: List[SizeResult] = field(default_factory=list)
    loop: Optional[Dict[str, Any]] = None
    elapsed_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ratios"] = {f"{s.height}x{s.width}": size_ratios(s) for s in self.sizes}
        return d


# ------------------------------------------------------------------------------------------- inputs
def bundle_preprocessing(bundle: Path) -> Tuple[Preprocessing, Dict[str, Any], Dict[str, Any]]:
    """(preprocessing, model info, manifest) of a bundle; ModelError when it is not one."""
    fp32 = bundle / bundle_layout.MODEL_FP32
    if not bundle.is_dir() or not fp32.is_file():
        raise ModelError(f"{bundle} is not a bundle with {bundle_layout.MODEL_FP32}; make one with "
                         "`edgedepth export CKPT --out BUNDLE`")
    manifest: Dict[str, Any] = {}
    if (bundle / bundle_layout.MANIFEST).is_file():
        manifest = bundle_layout.read_manifest(bundle)
    model = bundle_layout.model_info_dict(fp32)
    if "preprocessing" not in model:
        raise ModelError(f"{fp32} carries no edgedepth preprocessing metadata; re-export it with "
                         "`edgedepth export`")
    manifest.setdefault("model", model)
    return Preprocessing.from_dict(model["preprocessing"]), model, manifest


def eval_frames(data: Optional[str], n: int, pre: Preprocessing, domain: str = "indoor",
                seed: int = SYNTH_SEED) -> Tuple[List[EvalFrame], str]:
    """`n` held-out frames with ground truth: spread evenly over --data, else rendered synthetically."""
    if n <= 0:
        raise ConfigError("--frames must be positive")
    if data:
        from edgedepth.data.dataset import open_datasets

        ds = open_datasets(data)
        if len(ds) == 0:
            raise DataError(f"{data} holds no frames")
        idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).astype(int))
        frames = []
        for i in idx:
            s = ds[int(i)]
            if s.depth is None:
                raise DataError(f"frame {s.name} of {data} has no ground-truth depth to score against")
            frames.append(EvalFrame(s.rgb, s.depth, str(s.name)))
        return frames, f"{len(frames)} frames of {data}"
    from edgedepth.data import synth

    synth.check_domain(domain)
    frames = []
    for i in range(n):
        f = synth.render_frame(domain, seed + i, pre.height, pre.width)
        frames.append(EvalFrame(f.rgb, f.depth, f"{domain}-{seed + i}"))
    return frames, f"{len(frames)} synthetic {domain} frames (seeds {seed}..{seed + n - 1}, rendered here)"


# ------------------------------------------------------------------------------------------- accuracy
def score(runner, batches: Sequence[np.ndarray], frames: Sequence[EvalFrame], pre: Preprocessing
          ) -> Tuple[Dict[str, float], List[np.ndarray]]:
    """Mean metrics at the ground truth's resolution (edgedepth.evaluation's convention) + raw outputs."""
    preds, rows = [], []
    for batch, fr in zip(batches, frames):
        depth = np.array(runner.infer(batch), dtype=np.float32, copy=True)  # backends reuse output rings
        preds.append(depth)
        h, w = fr.depth.shape[:2]
        rows.append(frame_metrics(resize_depth(depth, h, w), fr.depth, None, pre.min_depth, pre.max_depth))
    m = mean_metrics(rows)
    return {k: m[k] for k in ("abs_rel", "d1", "rmse", "frames")}, preds


def relative_difference(preds: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """Mean over frames of mean |d - d_ref| / d_ref (model resolution): how far a runtime drifts."""
    vals = [float(np.mean(np.abs(p - r) / np.maximum(np.abs(r), 1e-6))) for p, r in zip(preds, ref)]
    return float(np.mean(vals)) if vals else float("nan")


# ------------------------------------------------------------------------------------------- one size
def bench_size(bundle: Path, size: Tuple[int, int], native: Tuple[int, int], wanted: Sequence[str],
               threads: int, checkpoint, frames: List[EvalFrame], pre: Preprocessing, runs: int, block: int,
               memory: bool, workdir: Path, say: Callable[[str], None], budget_s: Optional[float] = None
               ) -> SizeResult:
    h, w = size
    pre_s = dataclasses.replace(pre, height=h, width=w)
    result = SizeResult(h, w)
    specs, skipped = discover_runtimes(bundle, wanted, size, native, threads, checkpoint, workdir)
    batches = [pre_s.apply(f.rgb) for f in frames]
    loaded: List[Tuple[RuntimeSpec, Any, Dict[str, Any]]] = []
    preds: Dict[str, List[np.ndarray]] = {}
    for spec in specs:
        row = _new_row(spec)
        result.rows.append(row)
        t0 = time.perf_counter()
        try:
            runner = open_runner(spec)
        except EdgeDepthError as exc:
            row.update(status="failed", reason=str(exc))
            say(f"  {spec.label}: cannot run - {exc}")
            continue
        row["load_s"] = round(time.perf_counter() - t0, 3)
        try:
            row["accuracy"], preds[spec.key] = score(runner, batches, frames, pre_s)
        except Exception as exc:  # a runtime that breaks on real frames is reported, not fatal
            row.update(status="failed", reason=f"inference failed on the evaluation frames: {exc}")
            runner.close()
            continue
        loaded.append((spec, runner, row))
        say(f"  {spec.label}: loaded in {row['load_s']:.2f} s, AbsRel {row['accuracy']['abs_rel']:.4f}")
    ref_key = REFERENCE_KEY if REFERENCE_KEY in preds else next(iter(preds), None)
    for spec, _runner, row in loaded:
        if ref_key is not None and spec.key != ref_key:
            row["rel_diff_vs"] = {"runtime": ref_key,
                                  "mean_rel_depth_diff": relative_difference(preds[spec.key], preds[ref_key])}
    for u in skipped:
        result.rows.append({"key": u.key, "label": u.label, "engine": "", "precision": u.precision,
                            "device": u.device, "status": "skipped", "reason": u.reason})

    timed = [TimedRuntime(spec.key, _infer_fn(runner, batches)) for spec, runner, _ in loaded]
    if timed:
        say(f"  timing {len(timed)} runtimes: {runs} runs each, round-robin blocks of {block}")
        round_robin(timed, runs=runs, block=block, budget_s=budget_s)
    for (_spec, _runner, row), t in zip(loaded, timed):
        if t.error:
            row.update(status="failed", reason=f"failed while timed: {t.error}")
        else:
            row["latency_ms"] = latency_summary(t.samples_ms, t.block_fps)
    if memory:
        for spec, _runner, row in loaded:
            if row["status"] == "ok":
                ensure_model_file(spec)
                row["memory"] = measure_in_subprocess(spec.to_dict())
                say(f"  {spec.label}: peak RSS {row['memory'].get('peak_rss_mb', '?')} MiB"
                    + (f" ({row['memory']['error']})" if "error" in row["memory"] else ""))
    for _spec, runner, _row in loaded:
        runner.close()
    return result


def _new_row(spec: RuntimeSpec) -> Dict[str, Any]:
    return {"key": spec.key, "label": spec.label, "engine": spec.engine, "precision": spec.precision,
            "device": spec.device, "model_file": spec.path, "threads": spec.threads, "note": spec.note,
            "status": "ok", "reason": ""}


def _infer_fn(runner, batches: Sequence[np.ndarray]) -> Callable[[int], object]:
    n = len(batches)
    return lambda i: runner.infer(batches[i % n])


def size_ratios(s: SizeResult) -> Dict[str, float]:
    """p50 speed-ups of every timed runtime over PyTorch eager (the acceptance figure: ort-fp32)."""
    base = s.row("pytorch")
    if base is None or "latency_ms" not in base:
        return {}
    p50 = base["latency_ms"]["p50"]
    return {f"{r['key']}_vs_pytorch": round(p50 / r["latency_ms"]["p50"], 3)
            for r in s.rows if r["key"] != "pytorch" and "latency_ms" in r and r["latency_ms"]["p50"] > 0}


# ------------------------------------------------------------------------------------------- live loop
def loop_efficiency(bundle: Path, threads: int, frames: int = 0, rounds: int = 8, domain: str = "indoor",
                    seconds: float = 0.6) -> Dict[str, Any]:
    """Loop fps / bare backend fps on a replayed synthetic:// clip: the median over interleaved rounds of
    each round's ratio (bare and loop measured back to back, their order alternating).

    The backend is the one `edgedepth run` picks (`auto`). The clip is rendered once and replayed, so the
    figure measures the pipeline (capture thread, preprocessing, inference, postprocessing), not the
    scene renderer."""
    from edgedepth.data import synth
    from edgedepth.runtime.backends import load_backend
    from edgedepth.runtime.capture import open_source
    from edgedepth.runtime.loop import DepthLoop

    backend = load_backend(bundle, backend="auto", threads=threads)
    pre = backend.info.preprocessing
    clip = 30
    if frames <= 0:  # auto: rounds of about `seconds` each, so scheduler noise averages out
        batch = np.zeros(backend.input_shape, dtype=np.float32)
        backend.warmup(3)
        t0 = time.perf_counter()
        for _ in range(10):
            backend.infer(batch)
        per = (time.perf_counter() - t0) / 10
        frames = int(min(3000, max(60, seconds / max(per, 1e-5))))
    uri = f"synthetic://{domain}?seed=7&size={pre.height}x{pre.width}&cache={clip}"
    try:
        # The bare backend gets the very frames the source replays (same stream, seed and order): inference
        # time can depend on the input, so both sides must see the same one.
        stream = synth.SceneStream(domain, seed=7, height=pre.height, width=pre.width)
        batches = [pre.apply(stream.next().rgb) for _ in range(clip)]
        bare, loop = [], []
        for r in range(rounds):
            steps = (_bare_fps, _loop_fps) if r % 2 == 0 else (_loop_fps, _bare_fps)
            for step in steps:
                if step is _bare_fps:
                    bare.append(_bare_fps(backend, batches, frames))
                else:
                    loop.append(_loop_fps(backend, uri, frames, pre, open_source, DepthLoop))
        b, lp = statistics.median(bare), statistics.median(loop)
        # each round's bare and loop figures were taken back to back: their ratio cancels slow drift
        pair = sorted(x / y for x, y in zip(loop, bare) if y > 0)
        return {"backend": backend.describe(), "reason": backend.reason, "source": uri,
                "frames_per_round": frames, "rounds": rounds, "bare_fps": round(b, 2),
                "loop_fps": round(lp, 2),
                "efficiency": round(statistics.median(pair), 3) if pair else float("nan"),
                "efficiency_range": [round(pair[0], 3), round(pair[-1], 3)] if pair else [],
                "bare_fps_rounds": [round(x, 2) for x in bare],
                "loop_fps_rounds": [round(x, 2) for x in loop]}
    finally:
        backend.close()


def _bare_fps(backend, batches, n: int) -> float:
    backend.warmup(2)
    t0 = time.perf_counter()
    for i in range(n):
        backend.infer(batches[i % len(batches)])
    return n / (time.perf_counter() - t0)


def _loop_fps(backend, uri: str, n: int, pre: Preprocessing, open_source, DepthLoop) -> float:  # noqa: N803
    stamps: List[float] = []
    source = open_source(uri, default_size=(pre.height, pre.width))
    try:
        DepthLoop(source, backend, max_frames=n, on_result=lambda r: stamps.append(time.perf_counter())).run()
    finally:
        source.close()
    warm = min(5, len(stamps) // 5)  # the first results include thread start-up
    if len(stamps) - warm < 3:
        raise ModelError(f"the live loop produced only {len(stamps)} results on {uri}")
    return (len(stamps) - 1 - warm) / (stamps[-1] - stamps[warm])


# ------------------------------------------------------------------------------------------- the run
def run_bench(bundle: str, checkpoint: Optional[str] = None, backends: Optional[str] = None,
              sizes: Optional[List[Tuple[int, int]]] = None, threads: Optional[int] = None,
              data: Optional[str] = None, frames: int = 16, runs: int = 100, block: int = 10,
              memory: bool = True, domain: str = "indoor", loop_frames: int = 0,
              budget_s: Optional[float] = 60.0, say: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Measure every available runtime of `bundle` (see the module docstring); returns the report."""
    t_start = time.perf_counter()
    root = Path(bundle)
    pre, model, manifest = bundle_preprocessing(root)
    wanted = parse_backends(backends)
    threads = int(threads or usable_cores())
    if threads <= 0 or runs <= 0 or block <= 0:
        raise ConfigError("--threads, --runs and --block must be positive")
    native = (pre.height, pre.width)
    sizes = list(sizes or [native])
    ckpt = find_checkpoint(root, checkpoint, manifest) if {"pytorch", "pytorch-cuda"} & set(wanted) \
        else (None, "not requested (--backends)")
    report = BenchReport(bundle=str(root), model={k: model.get(k) for k in ("name", "version", "size",
                                                                             "checkpoint_sha256")},
                         machine=machine_info(), threads=threads, runs=runs, block=block, data="",
                         frames=frames, checkpoint=str(ckpt[0]) if ckpt[0] else None)
    with tempfile.TemporaryDirectory(prefix="edgedepth-bench-") as work:
        for h, w in sizes:
            pre_s = dataclasses.replace(pre, height=h, width=w)
            # --data: the same frames at every size (the preprocessing resizes); synthetic: rendered per size
            if data is None or not report.data:
                eval_set, report.data = eval_frames(data, frames, pre_s, domain)
            say(f"size {h}x{w}: {report.data}")
            report.sizes.append(bench_size(root, (h, w), native, wanted, threads, ckpt, eval_set, pre, runs,
                                           block, memory, Path(work), say, budget_s))
    if LOOP_KEY in wanted:
        say("live loop: pipeline efficiency on synthetic://")
        try:
            report.loop = loop_efficiency(root, threads, frames=loop_frames, domain=domain)
        except EdgeDepthError as exc:
            report.loop = {"error": str(exc)}
    report.machine["load_average_end"] = load_average()
    report.elapsed_s = round(time.perf_counter() - t_start, 1)
    return report
