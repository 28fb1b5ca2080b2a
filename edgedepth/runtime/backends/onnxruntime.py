"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider; FP32 or INT8 ONNX.

Inputs are bound from the caller's (preallocated) buffer and outputs are written into a small ring of
preallocated arrays through IO binding, so a frame costs no output allocation. onnxruntime releases
the GIL while it runs, so preprocessing and postprocessing of neighbouring frames overlap with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.bench.machine import usable_cores
from edgedepth.errors import ModelError
from edgedepth.fsutil import file_sha256
from edgedepth.modelmeta import read_onnx_info
from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY
from edgedepth.runtime.backends import Backend

log = logging.getLogger(__name__)

PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def pipeline_threads(cores: Optional[int] = None) -> int:
    """Intra-op threads for CPU inference inside the live loop: every core but one, at least one.

    The loop runs capture, preprocessing, postprocessing and selection in threads beside inference; with
    every core given to onnxruntime they preempt its workers and each frame waits for the straggler.
    Measured on 2 cores (96x128 `small`, scripts/bench_loop.py): 1 thread, loop 751 fps = 0.97x bare
    inference at 1 thread; 2 threads, loop 876 fps = 0.82x bare at 2 threads (1066 fps). A live loop is
    paced by its camera, so headroom and steady latency matter more than a saturated CPU's peak; for
    offline throughput pass `edgedepth run --threads N`."""
    return max(1, int(usable_cores() if cores is None else cores) - 1)


def providers_for(backend: str) -> List[str]:
    if backend in PROVIDERS:
        return list(PROVIDERS[backend])
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PROVIDERS["ort-trt"] if p in available] or ["CPUExecutionProvider"]


class OrtBackend(Backend):
    """An onnxruntime InferenceSession with IO binding into a ring of preallocated outputs."""

    def __init__(
        self,
        model_path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: Optional[int] = None,
        io_binding: bool = True,
        spin: Optional[bool] = None,
        ring: int = 4,
    ):
        import onnxruntime as ort

        self.model_path = str(model_path)
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available and p != "CPUExecutionProvider"]
        if missing and providers[0] in missing:
            raise ModelError(
                f"onnxruntime here has no {providers[0]} (available: {', '.join(available)}); "
                "install onnxruntime-gpu (JetPack: the Jetson Zoo wheel) or use --backend ort-cpu"
            )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        if spin is not None:  # idle workers spin by default; on few cores they steal the pipeline's CPU
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(
                self.model_path, sess_options=opts, providers=[p for p in providers if p in available]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelError(f"cannot load ONNX model {self.model_path}: {exc}") from exc
        self.info = read_onnx_info(self.model_path, session=self.session)
        self.model_sha256 = file_sha256(Path(self.model_path))
        self.providers = self.session.get_providers()
        self.name = {"TensorrtExecutionProvider": "ort-trt", "CUDAExecutionProvider": "ort-cuda"}.get(
            self.providers[0], "ort-cpu"
        )
        self._in_shape, self._in_dtype = self.input_shape, np.dtype(self.input_dtype)
        self._check_io()
        self.ring = max(2, int(ring))
        pre = self.info.preprocessing
        out_shape = (1, 1, pre.height, pre.width)
        self._outputs: List[Tuple[np.ndarray, np.ndarray]] = [
            (np.empty(out_shape, np.float32), np.empty(out_shape, np.float32)) for _ in range(self.ring)
        ]
        self._slot = 0
        self._binding = None
        self._bound_out: List[Tuple[object, object]] = []
        if io_binding:
            self._binding = self.session.io_binding()
            self._bound_out = [
                (ort.OrtValue.ortvalue_from_numpy(d), ort.OrtValue.ortvalue_from_numpy(u))
                for d, u in self._outputs
            ]

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or OUTPUT_DEPTH not in outputs or OUTPUT_UNCERTAINTY not in outputs:
            raise ModelError(
                f"{self.model_path}: expected input '{INPUT_NAME}' and outputs '{OUTPUT_DEPTH}', "
                f"'{OUTPUT_UNCERTAINTY}' (got inputs {list(inputs)}, outputs {outputs}); re-export it with "
                "`edgedepth export`"
            )
        dims = inputs[INPUT_NAME].shape
        want = self.input_shape
        expected_type = "tensor(uint8)" if self.info.input.is_uint8 else "tensor(float)"
        fixed = [(d, w) for d, w in zip(dims[1:], want[1:]) if isinstance(d, int)]
        if len(dims) != 4 or any(d != w for d, w in fixed) or inputs[INPUT_NAME].type != expected_type:
            raise ModelError(
                f"{self.model_path}: input {inputs[INPUT_NAME].type} {dims} does not match its metadata "
                f"({self.info.input.format}, {want}); re-export it"
            )

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if batch.dtype != self._in_dtype or batch.shape != self._in_shape:
            raise ModelError(f"input must be {self._in_dtype.name} {self._in_shape}, got "
                             f"{batch.dtype} {batch.shape}")
        slot = self._slot
        self._slot = (slot + 1) % self.ring
        if self._binding is None:
            depth, unc = self.session.run([OUTPUT_DEPTH, OUTPUT_UNCERTAINTY], {INPUT_NAME: batch})
            return depth, unc
        binding = self._binding
        if not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch)
        binding.bind_cpu_input(INPUT_NAME, batch)
        d_val, u_val = self._bound_out[slot]
        binding.bind_ortvalue_output(OUTPUT_DEPTH, d_val)
        binding.bind_ortvalue_output(OUTPUT_UNCERTAINTY, u_val)
        self.session.run_with_iobinding(binding)
        return self._outputs[slot]

    def close(self) -> None:
        self._binding = None
        self._bound_out = []
        self.session = None
