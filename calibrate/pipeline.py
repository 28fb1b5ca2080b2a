"""`edgedepth calibrate`: frames -> ranges -> quantized model -> accuracy gate -> artifact + report.

One calibration (per method) serves both targets: ranges are cached (see `cache_dir`) keyed by the
pre-processed model and the calibration frames, so `--target cpu` after `--target trt` reuses them.
The report (calibration.json) is always written, even when the gate refuses the artifact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
from edgedepth.calibrate import gate
from edgedepth.calibrate import quantize as q
from edgedepth.calibrate.frames import FrameSet, embed, k_center_greedy, load_frameset, split_calibration

from edgedepth import bundle
from edgedepth.errors import ConfigError, GateRefused, ModelError

log = logging.getLogger(__name__)

TARGETS = ("trt", "cpu")
FP16_MAX = 65504.0
POOL_MIN = 1024  # frames decoded for selection: max(4 x --frames, this), evenly spaced over --data


def cache_dir() -> Path:
    """Where pre-processed models and calibration ranges are cached (keyed by content hashes):
    $EDGEDEPTH_CACHE, else $XDG_CACHE_HOME/edgedepth, else ~/.cache/edgedepth - never inside a bundle."""
    root = os.environ.get("EDGEDEPTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgedepth")
    return Path(root) / "calibration"


def _frames(model_info, data: str, n_frames: int, holdout: Optional[str]):
    """Calibration and held-out frames at the size the model file takes: the model's input size, or
    the camera size of a model with preprocessing inside its graph (uint8 input)."""
    pre, spec = model_info.preprocessing, model_info.input
    h, w = (spec.height, spec.width) if spec.is_uint8 else (pre.height, pre.width)
    frames = load_frameset(data, h, w, limit=max(4 * n_frames, POOL_MIN))
    if holdout:
        held = load_frameset(holdout, h, w)
        calib_idx = k_center_greedy(embed(frames.rgb), n_frames)
        return frames.subset(calib_idx), held
    calib_idx, hold_idx = split_calibration(frames, n_frames)
    return frames.subset(calib_idx), frames.subset(hold_idx)


def _depth_at(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Ground truth (N,H,W) at the model's output size (nearest: no invented depths at edges)."""
    if depth.shape[1:] == (height, width):
        return depth
    return np.stack([cv2.resize(d, (width, height), interpolation=cv2.INTER_NEAREST) for d in depth])


def _read_report(path: Path) -> Dict[str, Any]:
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                return data
        except ValueError:
            log.warning("replacing unreadable calibration report %s", path)
    return {}


def calibrate_model(model_path: str, data: str, target: str = "trt", method: str = "minmax",
                    n_frames: int = 256, allow_drop: bool = False, holdout: Optional[str] = None,
                    device: Optional[str] = None, threads: int = 1, bench_rounds: int = 30
                    ) -> Dict[str, Any]:
    """Quantize BUNDLE/model.onnx for `target`; write the artifact if the gate passes; return the report.

    Raises GateRefused (after writing the report) when no method passes and allow_drop is False.
    """
    from edgedepth.export.parity import model_inputs

    from edgedepth.modelmeta import read_onnx_info

    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}'; choose trt (TensorRT Q/DQ) or cpu (onnxruntime CPU)")
    methods = list(q.METHODS) if method == "auto" else [method]
    for m in methods:
        q._ort_method(m)
    if n_frames < 1:
        raise ConfigError("--frames must be at least 1")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path} does not exist; run `edgedepth export` first")
    bdir = model_path.parent
    dev = None
    if device:
        from edgedepth.devices import load_device

        dev = load_device(device)
        if target == "trt":
            dev.check_request("int8", None)
    t0 = time.perf_counter()
    times: Dict[str, float] = {}
    info = read_onnx_info(str(model_path))
    pre = info.preprocessing
    calib, held = _frames(info, data, n_frames, holdout)
    # what the model file takes: float (N,3,h,w) preprocessed here, or a uint8 graph's camera bytes
    x_cal = model_inputs(calib.rgb, pre, info.input)
    x_hold = model_inputs(held.rgb, pre, info.input)
    gt = _depth_at(held.depth, pre.height, pre.width) if held.has_depth else None
    times["frames"] = time.perf_counter() - t0

    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pre_model = cache / f"pre-{bundle.file_sha256(model_path)[:16]}.onnx"
    if not pre_model.is_file():
        q.pre_process(str(model_path), str(pre_model))
    times["pre_process"] = time.perf_counter() - t0 - sum(times.values())

    fp32_pred = gate.predict(str(model_path), x_hold, threads)
    fp32_metrics = gate.score(fp32_pred, gt, fp32_pred, pre)
    times["fp32_eval"] = time.perf_counter() - t0 - sum(times.values())

    report_path = bdir / bundle.CALIB_REPORT
    report = _read_report(report_path)
    report.update({
        "model": {"path": bundle.MODEL_FP32, "sha256": bundle.file_sha256(model_path)},
        "input_size": [pre.height, pre.width],
        "input_format": info.input.format,
    })
    section: Dict[str, Any] = {
        "method_requested": method, "gate_reference": "ground truth" if gt is not None else "FP32 output",
        "frames": {"source": calib.source, "selection": "k-center greedy on image statistics",
                   "calibration": calib.names, "holdout_source": held.source, "holdout": held.names},
        "fp32_metrics": fp32_metrics, "methods": {}, "allow_drop": bool(allow_drop),
    }
    work = tempfile.TemporaryDirectory(prefix="edgedepth-calib-")
    try:
        best = _run_methods(target, methods, str(model_path), str(pre_model), cache, calib, x_cal,
                            x_hold, gt, fp32_pred, fp32_metrics, pre, section, work.name, threads,
                            bench_rounds, times, t0)
        if report.get("activation_ranges_model") != report["model"]["sha256"]:
            mm = q.calibrate_ranges(str(pre_model), x_cal, "minmax",
                                    q.ranges_cache_path(cache, str(pre_model), calib.names, "minmax"))
            ranges = q.read_ranges(mm)
            report["activation_ranges"] = ranges
            report["activation_ranges_model"] = report["model"]["sha256"]
            report["fp16_overflow"] = sorted(n for n, (lo, hi) in ranges.items()
                                             if max(abs(lo), abs(hi)) > FP16_MAX)
        out_name = bundle.MODEL_INT8_TRT if target == "trt" else bundle.MODEL_INT8_CPU
        passed = best is not None and best["gate"]["passed"]
        write = passed or (allow_drop and best is not None)
        section.update(chosen_method=best["method"] if best else None, gate_passed=passed,
                       written=bool(write), artifact=out_name if write else None)
        if target == "cpu" and best is not None:
            section["speedup"] = best["speed"]["ratio"]  # FP32 / INT8 median latency, interleaved
        if write:
            shutil.copyfile(best["path"], bdir / out_name)
            if target == "trt":
                ranges = q.read_ranges(best["ranges"])
                from edgedepth.calibrate.calibrator import write_trt_cache

                write_trt_cache(ranges, str(bdir / bundle.CALIB_CACHE), dev.tensorrt if dev else "8.5.2")
                section["trt_cache"] = {"file": bundle.CALIB_CACHE, "from_method": best["method"],
                                        "tensors": len(ranges)}
        elif (bdir / out_name).exists():
            os.unlink(bdir / out_name)  # a stale artifact must not outlive a refused calibration
    finally:
        work.cleanup()
    times["total"] = time.perf_counter() - t0
    section["times_s"] = {k: round(v, 3) for k, v in times.items()}
    report.setdefault("targets", {})[target] = section
    bundle.write_json_atomic(report_path, report)
    if (bdir / bundle.MODEL_FP32).is_file():
        bundle.write_manifest(bdir, {"calibration": {t: {"written": s.get("written"), "method": s.get(
            "chosen_method"), "gate_passed": s.get("gate_passed")} for t, s in report["targets"].items()}})
    if not section["written"]:
        reasons = "; ".join(best["gate"]["reasons"]) if best else "no method produced a model"
        raise GateRefused(f"INT8 {target} model refused by the accuracy gate ({reasons}); report written to "
                          f"{report_path}. Try --method auto, more/better --frames, or --allow-drop")
    return report


def _run_methods(target, methods, fp32_model, pre_model, cache, calib: FrameSet, x_cal, x_hold, gt, fp32_pred,
                 fp32_metrics, pre, section, workdir, threads, bench_rounds, times, t0) -> Optional[dict]:
    results: List[dict] = []
    for m in methods:
        tm = time.perf_counter()
        cache_file = q.ranges_cache_path(cache, pre_model, calib.names, m)
        ranges = q.calibrate_ranges(pre_model, x_cal, m, cache_file)
        t_cal = time.perf_counter() - tm

        def accept(path: str) -> "tuple[bool, dict]":
            pred = gate.predict(path, x_hold, threads)
            metrics = gate.score(pred, gt, fp32_pred, pre)
            decision = gate.decide(fp32_metrics, metrics)
            return decision["passed"], {"metrics": metrics, "gate": decision}

        entry: Dict[str, Any] = {"calibration_s": round(t_cal, 3)}
        if target == "trt":
            path = str(Path(workdir) / f"trt-{m}.onnx")
            q.quantize_trt(pre_model, path, ranges, m)
            ok, info = accept(path)
            fallback = None
            if not ok:  # keep the stem conv and the heads in float, the usual accuracy-sensitive layers
                groups = q.layer_types(pre_model)
                keep_float = groups.get("conv_full_3x3", [])[:1] + groups.get("conv_head", [])
                fb_path = str(Path(workdir) / f"trt-{m}-partial.onnx")
                q.quantize_trt(pre_model, fb_path, ranges, m, exclude=keep_float)
                ok2, info2 = accept(fb_path)
                fallback = {"float_nodes": keep_float, "passed": ok2, **info2}
                if ok2:
                    path, ok, info = fb_path, ok2, info2
            entry.update(info, path=path, fallback=fallback, summary=q.qdq_summary(path))
        else:
            from edgedepth.calibrate.cpu_select import select_cpu_layout

            sel = select_cpu_layout(pre_model, ranges, m, x_hold, workdir + f"/{m}", bench_rounds,
                                    threads, accept)
            final = _confirm_speed(fp32_model, sel["path"], x_hold, max(100, bench_rounds * 3), threads)
            ok, info = accept(sel["path"])
            entry.update(info, path=sel["path"], layout=sel, speed=final)
        entry["quantize_s"] = round(time.perf_counter() - tm - t_cal, 3)
        entry["method"] = m
        entry["ranges"] = ranges
        results.append(entry)
        section["methods"][m] = {k: v for k, v in entry.items() if k not in ("path", "ranges")}
    times["methods"] = time.perf_counter() - t0 - sum(times.values())
    if target == "cpu":
        for r in results:
            section["methods"][r["method"]]["speedup"] = r["speed"]["ratio"]
    passing = [r for r in results if r["gate"]["passed"]]
    pool = passing or results
    if not pool:
        return None
    if target == "cpu" and passing:
        return max(pool, key=lambda r: r["speed"]["ratio"])
    return max(pool, key=lambda r: (r["metrics"]["d1"], -r["metrics"]["abs_rel"]))


def _confirm_speed(fp32: str, int8: str, inputs: np.ndarray, rounds: int, threads: int) -> Dict[str, Any]:
    """FP32 vs the chosen INT8 model, interleaved in one run (the figure the report quotes)."""
    from edgedepth.calibrate.speed import interleaved_latency

    res = interleaved_latency([fp32, int8], inputs, rounds, threads=threads)
    return {"fp32_ms": round(res[fp32]["median_ms"], 3), "int8_ms": round(res[int8]["median_ms"], 3),
            "ratio": round(res[fp32]["median_ms"] / res[int8]["median_ms"], 3),
            "paired_ratio_median": round(res[int8]["paired_ratio_median"], 3), "rounds": rounds,
            "threads": threads, "input": list(inputs.shape[1:])}
