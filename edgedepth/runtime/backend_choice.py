"""`--backend auto` by measurement on the machine that runs the model, cached per bundle and machine.

A calibration report's speed figure was measured on the workstation that calibrated the bundle; on
another CPU the INT8 model can be the slower one. So `choose_backend` loads every candidate the bundle
and this machine offer (TensorRT engines for the board, onnxruntime's GPU providers, the FP32 model and
the INT8-cpu model when it passed its accuracy gate on the CPU), times `runs` warm inferences of each,
keeps the fastest (median) and logs the figures behind the choice. The result is cached as a small
JSON file keyed by the bundle's model files (SHA-256) and the machine (CPU, cores, GPUs, library
versions, threads), written atomically; a later start reads it and measures nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgedepth.errors import EdgeDepthError, ModelError
from edgedepth.fsutil import file_sha256, write_bytes_atomic

log = logging.getLogger(__name__)

CHOICE_VERSION = 1
DEFAULT_RUNS = 20
WARMUP_RUNS = 3


def cache_dir() -> Path:
    """Where choices are cached: $EDGEDEPTH_CACHE/backend-choice, else ~/.cache/edgedepth/backend-choice."""
    root = os.environ.get("EDGEDEPTH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgedepth"
    )
    return Path(root) / "backend-choice"


def candidates(bundle: Path, board: Optional[str]) -> Tuple[List[Tuple[str, Path]], List[str]]:
    """(backend, model file) pairs worth timing for this bundle on this machine, and why others are not."""
    import importlib.util

    import onnxruntime as ort

    from edgedepth.runtime.backends import ENGINES_DIR, FP32_ONNX, INT8_CPU_ONNX, find_engines

    found: List[Tuple[str, Path]] = []
    notes: List[str] = []
    engines = find_engines(bundle, board)
    if engines:
        missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
        if not missing:
            found.append(("trt", engines[0]))
        else:
            notes.append(f"engines in {ENGINES_DIR}/ not tried: {', '.join(missing)} not installed")
    fp32 = bundle / FP32_ONNX
    if not fp32.is_file():
        raise ModelError(f"{bundle} has no {FP32_ONNX}: is it an edgedepth bundle? (`edgedepth export`)")
    providers = ort.get_available_providers()
    if "TensorrtExecutionProvider" in providers and "CUDAExecutionProvider" in providers:
        found.append(("ort-trt", fp32))
    if "CUDAExecutionProvider" in providers:
        found.append(("ort-cuda", fp32))
    found.append(("ort-cpu", fp32))
    int8 = bundle / INT8_CPU_ONNX
    if int8.is_file():
        passed, why = int8_cpu_gate(bundle)
        if passed:
            found.append(("ort-cpu", int8))
        else:
            notes.append(f"{INT8_CPU_ONNX} not tried: {why}")
    return found, notes


def int8_cpu_gate(bundle: Path) -> Tuple[bool, str]:
    """Did the bundle's INT8-cpu model pass its accuracy gate (calibration.json, `edgedepth calibrate`)?"""
    from edgedepth.runtime.backends import CALIBRATION_REPORT

    try:
        report = json.loads((bundle / CALIBRATION_REPORT).read_text())
    except (OSError, ValueError) as exc:
        return False, f"no readable {CALIBRATION_REPORT} to say it passed its accuracy gate ({exc})"
    section = (report.get("targets") or {}).get("cpu") or {}
    if not section.get("gate_passed"):
        return False, f"it did not pass its accuracy gate ({CALIBRATION_REPORT})"
    return True, "passed its accuracy gate"


def machine_key(threads: Optional[int]) -> Dict[str, object]:
    """What makes a timing valid on this machine only."""
    from edgedepth.machine import cpu_model, gpus, library_versions, usable_cores

    libs = library_versions()
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "gpus": gpus(),
        "onnxruntime": libs.get("onnxruntime"),
        "tensorrt": libs.get("tensorrt"),
        "threads": threads,
    }


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def measure(backend, runs: int = DEFAULT_RUNS) -> Dict[str, float]:
    """Median and 90th percentile of `runs` warm inferences, in milliseconds."""
    batch = np.zeros(backend.input_shape, dtype=getattr(backend, "input_dtype", np.float32))
    for _ in range(WARMUP_RUNS):
        backend.infer(batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.infer(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {"median_ms": round(statistics.median(times), 4),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 4), "runs": runs}


def _load(kind: str, path: Path, threads: Optional[int]):
    from edgedepth.runtime.backends import load_backend

    return load_backend(path, backend=kind, threads=threads)


def choose_backend(bundle, device=None, threads: Optional[int] = None, runs: int = DEFAULT_RUNS,
                   cache: Optional[Path] = None, remeasure: bool = False):
    """Load the fastest backend for `bundle` on this machine (measured, or read from the cache).

    Returns the loaded backend, its `reason` naming the figures behind the choice."""
    from edgedepth.runtime.backends import board_name

    bundle = Path(bundle)
    board = board_name(device)
    found, notes = candidates(bundle, board)
    files = sorted({str(p.relative_to(bundle)): p for _, p in found}.items())
    bundle_hash = _digest({name: file_sha256(p) for name, p in files})
    machine = machine_key(threads)
    path = (cache or cache_dir()) / f"{bundle_hash}-{_digest(machine)}.json"
    record = None if remeasure else _read(path)
    if record is not None:
        choice = record["choice"]
        try:
            be = _load(choice["backend"], bundle / choice["model"], threads)
        except EdgeDepthError as exc:
            log.warning("cached backend choice %s no longer loads (%s); measuring again", path, exc)
        else:
            be.reason = f"measured on this machine ({record['measured_at']}, cached in {path}): " + _summary(
                record)
            log.info("backend auto: %s", be.reason)
            return be
    results, best, best_ms = [], None, float("inf")
    for kind, model in found:
        entry: Dict[str, object] = {"backend": kind, "model": str(model.relative_to(bundle))}
        try:
            be = _load(kind, model, threads)
        except EdgeDepthError as exc:
            entry["error"] = str(exc)
            results.append(entry)
            log.warning("backend auto: %s %s does not load here: %s", kind, model.name, exc)
            continue
        try:
            entry.update(measure(be, runs))
        except Exception as exc:  # a candidate that fails to run is skipped, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
            be.close()
            results.append(entry)
            continue
        results.append(entry)
        log.info("backend auto: %s %s %.3f ms median of %d runs", kind, model.name, entry["median_ms"], runs)
        if entry["median_ms"] < best_ms:
            if best is not None:
                best[0].close()
            best, best_ms = (be, entry), float(entry["median_ms"])
        else:
            be.close()
    if best is None:
        raise ModelError(f"no backend for {bundle} runs on this machine: "
                         + "; ".join(f"{r['backend']} {r['model']}: {r.get('error')}" for r in results))
    be, entry = best
    record = {
        "version": CHOICE_VERSION, "bundle": str(bundle), "bundle_hash": bundle_hash, "machine": machine,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs,
        "candidates": results, "notes": notes,
        "choice": {"backend": entry["backend"], "model": entry["model"], "median_ms": entry["median_ms"]},
    }
    try:
        write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:  # a read-only home must not stop the loop; the next start measures again
        log.warning("cannot cache the backend choice in %s: %s", path, exc)
    be.reason = "measured on this machine: " + _summary(record)
    log.info("backend auto: %s", be.reason)
    return be


def _summary(record: dict) -> str:
    choice = record["choice"]
    parts = []
    for r in record["candidates"]:
        label = f"{r['backend']} {Path(r['model']).name}"
        parts.append(f"{label} {r['median_ms']:.3f} ms" if "median_ms" in r else f"{label} failed")
    text = (f"{choice['backend']} {Path(choice['model']).name} is the fastest "
            f"(median of {record['runs']} warm runs: " + ", ".join(parts) + ")")
    if record.get("notes"):
        text += "; " + "; ".join(record["notes"])
    return text


def _read(path: Path) -> Optional[dict]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable backend choice cache %s (%s)", path, exc)
        return None
    if record.get("version") != CHOICE_VERSION or not isinstance(record.get("choice"), dict):
        return None
    return record


def load_for_run(model, backend: str = "auto", device=None, threads: Optional[int] = None):
    """What `edgedepth run` loads: a bundle with --backend auto is chosen by measurement; anything
    else (an explicit backend, a single .onnx or .engine file) goes to load_backend as given."""
    from edgedepth.runtime.backends import load_backend

    if backend == "auto" and Path(model).is_dir():
        return choose_backend(model, device=device, threads=threads)
    return load_backend(model, backend=backend, device=device, threads=threads)
