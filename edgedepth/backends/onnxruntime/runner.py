"""ONNX Runtime behind the Backend interface: CPU, CUDA or TensorRT execution provider; FP32 or INT8 ONNX.

Inputs are bound from the caller's (preallocated) buffer and outputs are written into a small ring of
preallocated arrays through IO binding, so a frame costs no output allocation. onnxruntime releases
the GIL while it runs, so preprocessing and postprocessing of neighbouring frames overlap with it.
`run(batch)` takes any batch size (the Predictor's and the parity checks' path).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.backends.base import Backend, Outputs
from edgedepth.backends.onnxruntime.session import open_session
from edgedepth.errors import ModelError
from edgedepth.fsutil import file_sha256
from edgedepth.machine import usable_cores
from edgedepth.modelmeta import read_onnx_info
from edgedepth.preprocess import (
    INPUT_NAME,
    OUTPUT_DEPTH,
    OUTPUT_SELECTION,
    OUTPUT_UNCERTAINTY,
    selection_length,
)

log = logging.getLogger(__name__)


def pipeline_threads(cores: Optional[int] = None) -> int:
    """Intra-op threads for CPU inference inside the live loop: every core but one, at least one.

    The loop runs capture, preprocessing, postprocessing and selection in threads beside inference; with
    every core given to onnxruntime they preempt its workers and each frame waits for the straggler.
    scripts/bench_loop.py on 2 cores (96x128 `small`; commit 3862958, 2026-11-29): 1 thread, loop 751 fps
    = 0.97x bare inference at 1 thread; 2 threads, loop 876 fps = 0.82x bare at 2 threads (1066 fps). A
    live loop is paced by its camera, so headroom and steady latency matter more than a saturated CPU's
    peak; for offline throughput pass `edgedepth run --threads N`."""
    return max(1, int(usable_cores() if cores is None else cores) - 1)


class OrtRunner(Backend):
    """An onnxruntime InferenceSession with IO binding into a ring of preallocated outputs."""

    def __init__(
        self,
        model_path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: Optional[int] = None,
        io_binding: bool = True,
        spin: Optional[bool] = None,
        ring: int = 4,
        optimize: bool = True,
        check_io: bool = True,
    ):
        import onnxruntime as ort

        self.model_path = str(model_path)
        self.session = open_session(self.model_path, providers, threads=threads, optimize=optimize, spin=spin)
        self.info = read_onnx_info(self.model_path)
        self.model_sha256 = file_sha256(Path(self.model_path))
        self.providers = self.session.get_providers()
        self.name = {"TensorrtExecutionProvider": "ort-trt", "CUDAExecutionProvider": "ort-cuda"}.get(
            self.providers[0], "ort-cpu"
        )
        inputs = self.session.get_inputs()
        names = [o.name for o in self.session.get_outputs()]
        self.input_name = INPUT_NAME if any(i.name == INPUT_NAME for i in inputs) else inputs[0].name
        batch_dim = inputs[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.output_names = [n for n in (OUTPUT_DEPTH, OUTPUT_UNCERTAINTY) if n in names] or names[:2]
        self._in_shape, self._in_dtype = self.input_shape, np.dtype(self.input_dtype)
        if check_io:
            self._check_io()
        self.ring = max(2, int(ring))
        pre = self.info.preprocessing
        out_shape = (self._in_shape[0], 1, pre.height, pre.width)
        # the frame selector's features, when the graph computes them (export/selection_graph.py); the
        # length follows from the metadata's stride, also where a rewritten graph left it symbolic
        stride = self.info.selection_stride
        self.selection_shape = ((self._in_shape[0], selection_length((pre.height, pre.width), stride))
                                if stride and OUTPUT_SELECTION in names else None)
        self._outputs: List[Outputs] = [
            Outputs(np.empty(out_shape, np.float32), np.empty(out_shape, np.float32),
                    np.empty(self.selection_shape, np.float32) if self.selection_shape else None)
            for _ in range(self.ring)
        ]
        self._slot = 0
        # one IO binding per ring slot, its outputs bound once: a frame binds only its input
        self._bindings: List[object] = []
        self._bound_out: List[Tuple[object, object]] = []
        if io_binding and check_io:
            for slot in self._outputs:
                binding = self.session.io_binding()
                names = (OUTPUT_DEPTH, OUTPUT_UNCERTAINTY, OUTPUT_SELECTION)
                values = tuple(ort.OrtValue.ortvalue_from_numpy(a) for a in (*slot, slot.selection)
                               if a is not None)
                for name, value in zip(names, values):
                    binding.bind_ortvalue_output(name, value)
                self._bindings.append(binding)
                self._bound_out.append(values)  # the OrtValues must live as long as their binding

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
        want = self._in_shape
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
        if not self._bindings:
            names = [OUTPUT_DEPTH, OUTPUT_UNCERTAINTY] + ([OUTPUT_SELECTION] if self.selection_shape else [])
            return Outputs(*self.session.run(names, {INPUT_NAME: batch}))
        binding = self._bindings[slot]
        if not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch)
        binding.bind_cpu_input(INPUT_NAME, batch)
        self.session.run_with_iobinding(binding)
        return self._outputs[slot]

    def run(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """A batch of any N (N,3,h,w float32, or N,H,W,3 uint8 for a model with preprocessing in its graph)
        -> fresh (depth, uncertainty) arrays (N,1,h,w); pads a fixed batch."""
        n = batch.shape[0]
        if self.fixed_batch and n != self.fixed_batch:
            if n > self.fixed_batch:
                parts = [self.run(batch[i : i + self.fixed_batch]) for i in range(0, n, self.fixed_batch)]
                return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            pad = np.zeros((self.fixed_batch - n,) + batch.shape[1:], self._in_dtype)
            d, u = self.run(np.concatenate([batch, pad]))
            return d[:n], u[:n]
        feed = np.ascontiguousarray(batch, self._in_dtype)
        outs = self.session.run(self.output_names, {self.input_name: feed})
        d = outs[0]
        u = outs[1] if len(outs) > 1 else np.zeros_like(d)
        return d, u

    def close(self) -> None:
        self._bindings = []
        self._bound_out = []
        self.session = None


OrtBackend = OrtRunner  # the name the runtime has always used
