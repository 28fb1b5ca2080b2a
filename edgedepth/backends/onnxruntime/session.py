"""The one way edgedepth opens an onnxruntime InferenceSession: providers, threads, optimisation, spinning.

Used by the runtime backend, the Predictor, the export parity check, calibration and the benchmarks, so a
model behaves the same everywhere and every load error reads the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

from edgedepth.errors import ModelError

PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def available_providers() -> List[str]:
    """onnxruntime's execution providers here; [] when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def providers_for(backend: str) -> List[str]:
    """Provider list for a backend name (ort-cpu, ort-cuda, ort-trt); anything else: the best available."""
    if backend in PROVIDERS:
        return list(PROVIDERS[backend])
    available = available_providers()
    return [p for p in PROVIDERS["ort-trt"] if p in available] or ["CPUExecutionProvider"]


def open_session(
    model: Union[str, Path, bytes],
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: Optional[int] = None,
    optimize: bool = True,
    spin: Optional[bool] = None,
):
    """An InferenceSession on `providers` (the first must exist here; later ones are used if present).

    threads: intra-op threads (None: onnxruntime's default, every core); optimize False disables graph
    optimisation (exact operator-level comparisons); spin False stops idle workers spinning, which on few
    cores steal CPU from the threads beside inference. Any load failure is a ModelError."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = list(providers) or ["CPUExecutionProvider"]
    if providers[0] not in available and providers[0] != "CPUExecutionProvider":
        raise ModelError(
            f"onnxruntime here has no {providers[0]} (available: {', '.join(available)}); "
            "install onnxruntime-gpu (JetPack: the Jetson Zoo wheel) or use --backend ort-cpu"
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    if spin is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(
            source, sess_options=opts, providers=[p for p in providers if p in available]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        name = "in-memory model" if isinstance(model, bytes) else str(model)
        raise ModelError(f"cannot load ONNX model {name}: {exc}") from exc
