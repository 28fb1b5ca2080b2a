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
from edgedepth.calibrate import accuracy_gate
from edgedepth.calibrate import quantize as q

from edgedepth import bundle
from edgedepth.data.frames import FrameSet, embed, k_center_greedy, load_frameset, split_calibration
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
                    device: Optional[str] = None, threads: int = 1, bench_rounds: int = 30,
                    progress: bool = False) -> Dict[str, Any]:
    """Quantize BUNDLE/model.onnx for `target`; write the artifact if the gate passes; return the report.

    `progress` shows a bar of the steps on stderr (when it is a terminal): the run takes tens of seconds.

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
    from tqdm import tqdm

    steps = tqdm(total=3 + len(methods), desc=f"calibrate {target}", unit="step",
                 disable=None if progress else True, leave=False)
    steps.set_postfix_str("frames")
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
    steps.update(1)
    steps.set_postfix_str("pre-process")

    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pre_model = cache / f"pre-{bundle.file_sha256(model_path)[:16]}.onnx"
    if not pre_model.is_file():
        q.pre_process(str(model_path), str(pre_model))
    times["pre_process"] = time.perf_counter() - t0 - sum(times.values())
    steps.update(1)
    steps.set_postfix_str("FP32 reference")

    fp32_pred = accuracy_gate.predict(str(model_path), x_hold, threads)
    steps.update(1)
    fp32_metrics = accuracy_gate.score(fp32_pred, gt, fp32_pred, pre)
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
                            bench_rounds, times, t0, steps)
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
                from edgedepth.backends.tensorrt.calibrator import write_trt_cache

                if dev is not None:  # the header names the TensorRT that reads it; another version skips it
                    write_trt_cache(ranges, str(bdir / bundle.CALIB_CACHE), dev.tensorrt)
                    section["trt_cache"] = {"file": bundle.CALIB_CACHE, "from_method": best["method"],
                                            "tensors": len(ranges), "tensorrt": dev.tensorrt}
                else:
                    section["trt_cache"] = {"file": None, "why": "no --device: the implicit-INT8 cache (DLA) "
                                            "must name the board's TensorRT; calibrate again with --device"}
                fb = best.get("fallback") or {}
                section["float_layers"] = list(fb.get("float_layers", [])) if fb.get("passed") else []
                _write_mixed_fp16(bdir, out_name, section)
        elif (bdir / out_name).exists():
            os.unlink(bdir / out_name)  # a stale artifact must not outlive a refused calibration
            _write_mixed_fp16(bdir, out_name, {})
    finally:
        steps.close()
        work.cleanup()
    times["total"] = time.perf_counter() - t0
    section["times_s"] = {k: round(v, 3) for k, v in times.items()}
    report.setdefault("targets", {})[target] = section
    bundle.write_json_atomic(report_path, report)
    if (bdir / bundle.MODEL_FP32).is_file():
        bundle.write_manifest(bdir, {"calibration": {t: {"written": s.get("written"), "method": s.get(
            "chosen_method"), "gate_passed": s.get("gate_passed"), "float_layers": s.get("float_layers", [])}
            for t, s in report["targets"].items()}})
    if not section["written"]:
        reasons = "; ".join(best["gate"]["reasons"]) if best else "no method produced a model"
        raise GateRefused(f"INT8 {target} model refused by the accuracy gate ({reasons}); report written to "
                          f"{report_path}. Try --method auto, more/better --frames, or --allow-drop")
    return report


def _write_mixed_fp16(bdir: Path, out_name: str, section: Dict[str, Any]) -> None:
    """Beside a mixed TensorRT model, its FP16 copy (float layers FP16, Q/DQ kept): what a strongly typed
    build on TensorRT 10.12+ / 11 parses, made here because the board has no `onnx` to convert with.
    A copy left from an earlier calibration goes when the new model has no float layers."""
    from edgedepth.backends.tensorrt.build import fp16_onnx_name

    stale = bdir / fp16_onnx_name(out_name)
    if section.get("float_layers"):
        from edgedepth.export.fp16 import write_fp16_onnx

        section["fp16_onnx"] = write_fp16_onnx(bdir / out_name).name
    elif stale.exists():
        os.unlink(stale)


def _run_methods(target, methods, fp32_model, pre_model, cache, calib: FrameSet, x_cal, x_hold, gt, fp32_pred,
                 fp32_metrics, pre, section, workdir, threads, bench_rounds, times, t0, steps
                 ) -> Optional[dict]:
    results: List[dict] = []
    for m in methods:
        steps.set_postfix_str(f"method {m}")
        tm = time.perf_counter()
        cache_file = q.ranges_cache_path(cache, pre_model, calib.names, m)
        ranges = q.calibrate_ranges(pre_model, x_cal, m, cache_file)
        t_cal = time.perf_counter() - tm

        def accept(path: str) -> "tuple[bool, dict]":
            pred = accuracy_gate.predict(path, x_hold, threads)
            metrics = accuracy_gate.score(pred, gt, fp32_pred, pre)
            decision = accuracy_gate.decide(fp32_metrics, metrics)
            return decision["passed"], {"metrics": metrics, "gate": decision}

        entry: Dict[str, Any] = {"calibration_s": round(t_cal, 3)}
        if target == "trt":
            path = str(Path(workdir) / f"trt-{m}.onnx")
            q.quantize_trt(pre_model, path, ranges, m)
            ok, info = accept(path)
            fallback = None
            if not ok:  # leave the most sensitive layers un-quantized until the gate passes
                fallback = _float_fallback(pre_model, fp32_model, path, ranges, m, accept, x_cal, x_hold,
                                           pre, workdir, threads, bench_rounds)
                fallback["full_int8"] = info  # what the gate refused
                if fallback["passed"]:
                    path, ok = fallback.pop("path"), True
                    info = {"metrics": fallback["metrics"], "gate": fallback["gate"]}
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
        steps.update(1)
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


SENSITIVITY_FRAMES = 32  # calibration frames the per-layer sensitivity is measured on (evenly spaced)


def _float_fallback(pre_model, fp32_model, full_path, ranges, method, accept, x_cal, x_hold, pre, workdir,
                    threads, bench_rounds) -> Dict[str, Any]:
    """calibrate/fallback.py on this method's ranges; with CPU timings of FP32 / full / mixed INT8."""
    from edgedepth.calibrate.fallback import cpu_latency, float_fallback

    sub = Path(workdir) / f"fallback-{method}"
    sub.mkdir(parents=True, exist_ok=True)
    x_sens = x_cal[np.linspace(0, len(x_cal) - 1, min(len(x_cal), SENSITIVITY_FRAMES)).astype(int)]
    fp32_sens = accuracy_gate.predict(fp32_model, x_sens, threads)
    res = float_fallback(pre_model, full_path,
                         lambda out, exclude: q.quantize_trt(pre_model, out, ranges, method, exclude=exclude),
                         accept, x_sens, fp32_sens, pre, str(sub), threads)
    if res["passed"]:
        res["cpu_latency"] = cpu_latency(fp32_model, full_path, res["path"], x_hold, bench_rounds, threads)
        log.info("%s: %d of %d quantized layers kept in float; INT8 still covers %.1f%% of the MACs",
                 method, len(res["float_layers"]), res["quantized_layers"],
                 100 * res["share"]["int8_mac_fraction"])
    return res


def _confirm_speed(fp32: str, int8: str, inputs: np.ndarray, rounds: int, threads: int) -> Dict[str, Any]:
    """FP32 vs the chosen INT8 model, interleaved in one run (the figure the report quotes)."""
    from edgedepth.calibrate.speed import interleaved_latency

    res = interleaved_latency([fp32, int8], inputs, rounds, threads=threads)
    return {"fp32_ms": round(res[fp32]["median_ms"], 3), "int8_ms": round(res[int8]["median_ms"], 3),
            "ratio": round(res[fp32]["median_ms"] / res[int8]["median_ms"], 3),
            "paired_ratio_median": round(res[int8]["paired_ratio_median"], 3), "rounds": rounds,
            "threads": threads, "input": list(inputs.shape[1:])}
