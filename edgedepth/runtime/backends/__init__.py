"""Inference backends behind one small interface, and the choice of the best one for a bundle.

    backend = load_backend("bundle/", backend="auto", device="orin-nano")
    depth, uncertainty = backend.infer(batch)   # float32 (1,3,H,W) -> metres (1,1,H,W), log b (1,1,H,W)

`auto` takes, in order: a TensorRT engine built for this board (manifest checked) when tensorrt and pycuda
import; ONNX Runtime on CUDA when that provider exists; ONNX Runtime on the CPU with the INT8-cpu model
when the bundle's calibration report says it passed its gate and is faster; else the FP32 model.
`backend.reason` says which and why. tensorrt, pycuda and onnxruntime are imported lazily. The engines
themselves live in edgedepth.backends (shared with build, calibration and the benchmarks); this module
is the runtime's choice among them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional, Tuple, Union

from edgedepth.backends.base import Backend  # noqa: F401  (the runtime's name for the interface)
from edgedepth.errors import ConfigError, EdgeDepthError, ModelError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "trt", "ort-cuda", "ort-trt", "ort-cpu")
# Bundle layout (docs/architecture.md, "Contract: the bundle"); written by export, calibrate and build.
FP32_ONNX = "model.onnx"
INT8_CPU_ONNX = "model.int8.cpu.onnx"
INT8_TRT_ONNX = "model.int8.trt.onnx"  # used by `edgedepth build`, not loaded here
CALIBRATION_REPORT = "calibration.json"
ENGINES_DIR = "engines"
PRECISION_PREFERENCE = ("int8", "fp16", "fp32", "best")


# ----------------------------------------------------------------------------------------------------
# What the bundle offers


def board_name(device) -> Optional[str]:
    """Board name from a DeviceConfig, a device name or None."""
    if device is None:
        return None
    if isinstance(device, str):
        return device
    for attr in ("board", "name"):
        value = getattr(device, attr, None)
        if isinstance(value, str) and value:
            return value
    return None


def find_engines(bundle: Path, board: Optional[str]) -> List[Path]:
    """Engines in bundle/engines for `board` (any board when None), best precision first."""
    folder = bundle / ENGINES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.engine"):
        parts = path.name.split(".")  # model.<board>.<precision>.trt<ver>.engine
        if len(parts) < 5:
            continue
        eng_board, precision = parts[1], parts[2]
        if board is not None and eng_board != board:
            continue
        rank = PRECISION_PREFERENCE.index(precision) if precision in PRECISION_PREFERENCE else 99
        found.append((rank, path.name, path))
    return [p for _, _, p in sorted(found)]


def cpu_int8_verdict(bundle: Path) -> Tuple[bool, str]:
    """(use the INT8-cpu model?, why) from the bundle's calibration report."""
    if not (bundle / INT8_CPU_ONNX).is_file():
        return False, f"no {INT8_CPU_ONNX} in the bundle"
    report_path = bundle / CALIBRATION_REPORT
    if not report_path.is_file():
        return False, f"{INT8_CPU_ONNX} present but no {CALIBRATION_REPORT} to say it passed its gate"
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"{CALIBRATION_REPORT} unreadable ({exc})"
    entry = _cpu_entry(report)
    if entry is None:
        return False, f"{CALIBRATION_REPORT} has no verdict for the cpu target"
    passed = _first(entry, ("gate_passed", "passed", "accepted", "ok"))
    if isinstance(entry.get("gate"), dict):
        passed = _first(entry["gate"], ("passed", "ok")) if passed is None else passed
    speedup = _first(entry, ("speedup", "speedup_vs_fp32", "cpu_speedup"))
    chosen = (entry.get("methods") or {}).get(entry.get("chosen_method") or "")
    if speedup is None and isinstance(chosen, dict) and isinstance(chosen.get("speed"), dict):
        speedup = chosen["speed"].get("ratio")  # edgedepth calibrate: fp32_ms / int8_ms, interleaved
    if entry.get("written") is False:
        return False, f"{CALIBRATION_REPORT}: the cpu INT8 model was not written (gate refused it)"
    if speedup is None:
        fp32 = _first(entry, ("fp32_ms", "fp32_latency_ms", "latency_fp32_ms"))
        int8 = _first(entry, ("int8_ms", "int8_latency_ms", "latency_int8_ms", "latency_ms"))
        if fp32 and int8:
            speedup = float(fp32) / float(int8)
    if not passed:
        return False, f"{INT8_CPU_ONNX} did not pass its accuracy gate ({CALIBRATION_REPORT})"
    if speedup is None:
        return False, f"{CALIBRATION_REPORT} does not say whether {INT8_CPU_ONNX} is faster"
    if float(speedup) <= 1.0:
        return False, f"{INT8_CPU_ONNX} passed its gate but is not faster than FP32 ({float(speedup):.2f}x)"
    return True, f"{INT8_CPU_ONNX} passed its gate and is {float(speedup):.2f}x faster than FP32 on CPU"


def _first(d: dict, keys) -> Optional[object]:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _cpu_entry(report: dict) -> Optional[dict]:
    for container in ("targets", "artifacts", "models", "results"):
        sub = report.get(container)
        if isinstance(sub, dict):
            for key in ("cpu", "int8.cpu", INT8_CPU_ONNX, "ort-cpu"):
                if isinstance(sub.get(key), dict):
                    return sub[key]
        if isinstance(sub, list):
            for item in sub:
                if isinstance(item, dict) and item.get("target") == "cpu":
                    return item
    for key in ("cpu", "int8_cpu"):
        if isinstance(report.get(key), dict):
            return report[key]
    return None


def _ort_providers() -> List[str]:
    from edgedepth.backends.onnxruntime.session import available_providers

    return available_providers()


def _trt_importable() -> Tuple[bool, str]:
    import importlib.util

    for mod in ("tensorrt", "pycuda"):
        if importlib.util.find_spec(mod) is None:
            return False, f"{mod} is not installed"
    return True, ""


# ----------------------------------------------------------------------------------------------------
# Loading


def load_backend(
    bundle_or_model: Union[str, Path], backend: str = "auto", device=None, threads: Optional[int] = None
) -> Backend:
    """Load the best (or the requested) backend for a bundle directory, an .onnx file or an .engine."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    path = Path(bundle_or_model)
    if not path.exists():
        raise ModelError(f"{path} does not exist (expected a bundle directory, an .onnx file or an .engine)")
    board = board_name(device)
    if path.is_file() and path.suffix == ".engine":
        if backend not in ("auto", "trt"):
            raise ConfigError(f"{path.name} is a TensorRT engine: use --backend trt (or auto), not {backend}")
        return _load_trt(path, board, reason="a TensorRT engine was given")
    if path.is_file():
        return _load_ort_for(path, backend, reason=f"an ONNX file was given ({path.name})", threads=threads)
    if not path.is_dir():
        raise ModelError(f"{path} is neither a bundle directory nor a model file")
    return _load_from_bundle(path, backend, board, threads)


def _load_from_bundle(bundle: Path, backend: str, board: Optional[str], threads: Optional[int]) -> Backend:
    fp32 = bundle / FP32_ONNX
    notes = []
    if backend in ("auto", "trt"):
        ok, why = _trt_importable()
        engines = find_engines(bundle, board)
        if backend == "trt" and not ok:
            raise ModelError(
                f"--backend trt: {why}; on a Jetson use JetPack's TensorRT and pycuda (scripts/JETSON.md)"
            )
        if backend == "trt" and not engines:
            raise ModelError(
                f"--backend trt: no engine for board {board or '(any)'} in {bundle / ENGINES_DIR}; "
                f"build one on the board with `edgedepth build {bundle / FP32_ONNX} --device <board>`"
            )
        if ok and engines:
            errors = []
            for engine in engines:
                try:
                    return _load_trt(
                        engine,
                        board,
                        reason=f"engine {engine.name} matches this board and TensorRT is importable",
                    )
                except EdgeDepthError as exc:
                    if backend == "trt" and len(engines) == 1:
                        raise
                    errors.append(f"{engine.name}: {exc}")
                    log.warning("skipping engine %s: %s", engine.name, exc)
            if backend == "trt":
                raise ModelError("no usable engine: " + "; ".join(errors))
            notes.append("no engine passed its manifest check")
        elif backend == "auto":
            notes.append(why if not ok else f"no engine for board {board or '(unknown)'}")
    if backend in ("auto", "ort-cuda", "ort-trt") and fp32.is_file():
        providers = _ort_providers()
        if backend == "ort-trt" or (backend == "auto" and "TensorrtExecutionProvider" in providers):
            if backend == "ort-trt" or "CUDAExecutionProvider" in providers:
                # the FP32 model: TensorRT builds its own engine from it (cached by onnxruntime)
                return _load_ort_for(
                    fp32,
                    "ort-trt",
                    reason="; ".join(notes + ["onnxruntime has the TensorRT execution provider"]),
                    threads=threads,
                )
        if backend == "ort-cuda" or (backend == "auto" and "CUDAExecutionProvider" in providers):
            return _load_ort_for(
                fp32,
                "ort-cuda",
                reason="; ".join(notes + ["onnxruntime has the CUDA execution provider"]),
                threads=threads,
            )
        notes.append("onnxruntime has no GPU provider")
    use_int8, why = cpu_int8_verdict(bundle)
    notes.append(why)
    model = bundle / INT8_CPU_ONNX if use_int8 else fp32
    if not model.is_file():
        raise ModelError(f"{bundle} has no {FP32_ONNX}: is it an edgedepth bundle? (`edgedepth export`)")
    return _load_ort_for(model, "ort-cpu", reason="; ".join(notes), threads=threads)


def _load_ort_for(model: Path, backend: str, reason: str, threads: Optional[int]) -> Backend:
    from edgedepth.backends.onnxruntime.runner import OrtRunner as OrtBackend
    from edgedepth.backends.onnxruntime.session import providers_for

    if model.suffix != ".onnx":
        raise ModelError(f"{model} is not an .onnx model")
    providers = providers_for(backend if backend != "auto" else "ort-auto")
    result = OrtBackend(model, providers=providers, threads=threads)
    result.reason = reason
    log.info("backend %s: %s", result.describe(), reason)
    return result


def _load_trt(engine: Path, board: Optional[str], reason: str) -> Backend:
    from edgedepth.backends.tensorrt.engine import TrtRunner as TrtBackend

    result = TrtBackend(engine, board=board)
    result.reason = reason
    log.info("backend %s: %s", result.describe(), reason)
    return result
