"""Run a TensorRT engine (TensorRT 8.2 / JetPack 4.6 through 11) behind the Backend interface, via pycuda.

Every CUDA and TensorRT call runs on the backend's CudaOwner thread (see cuda.py), whichever thread
calls `infer` or `close`: buffers, pinned memory, the stream, the execution context and the engine are
made and released there, so closing a model after a hot swap releases all of it and no thread ends
with a context pushed. Page-locked host buffers, device buffers allocated once, one stream, async
copies. The I/O API is chosen by feature tests on the engine, not by version strings: the name-based
tensor API (`num_io_tensors`, `set_tensor_address`, `execute_async_v3`; 8.5+, the only one in 10/11)
where the engine has it, else the bindings API (`num_bindings`, `execute_async_v2`; 8.2).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edgedepth.backends.base import Backend, Outputs
from edgedepth.backends.tensorrt.cuda import CudaOwner
from edgedepth.backends.tensorrt.manifest import check_gpu, check_manifest, info_from_manifest, read_manifest
from edgedepth.errors import ModelError, require
from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_SELECTION, OUTPUT_UNCERTAINTY

log = logging.getLogger(__name__)


@dataclass
class TensorSpec:
    """One engine I/O tensor as the engine reports it."""

    index: int
    name: str
    is_input: bool
    shape: Tuple[int, ...]
    dtype: Any  # the TensorRT DataType
    hosts: List[np.ndarray] = field(default_factory=list)  # page-locked: the input, or an output's staging
    ring: List[np.ndarray] = field(default_factory=list)  # outputs handed to callers: plain numpy memory
    device: Any = None


def has_tensor_api(engine) -> bool:
    """Whether the engine speaks the name-based tensor API (TensorRT 8.5+; the only one from 10.0)."""
    return hasattr(engine, "num_io_tensors")


def engine_io(trt, engine) -> List[TensorSpec]:
    """The engine's inputs and outputs with their (build-time) shapes and dtypes, for either API."""
    specs = []
    if has_tensor_api(engine):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            specs.append(
                TensorSpec(
                    i, name, is_input, tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)
                )
            )
    else:
        for i in range(engine.num_bindings):
            specs.append(
                TensorSpec(
                    i,
                    engine.get_binding_name(i),
                    bool(engine.binding_is_input(i)),
                    tuple(engine.get_binding_shape(i)),
                    engine.get_binding_dtype(i),
                )
            )
    return specs


def io_summary(trt, engine) -> List[Dict[str, Any]]:
    """engine_io as JSON-able dicts (for the engine manifest)."""
    return [
        {
            "name": s.name,
            "mode": "input" if s.is_input else "output",
            "dtype": str(s.dtype),
            "shape": list(s.shape),
        }
        for s in engine_io(trt, engine)
    ]


class TrtRunner(Backend):
    """A deserialised TensorRT engine with preallocated page-locked buffers and one stream."""

    def __init__(self, engine_path, board: Optional[str] = None, device_index: int = 0, ring: int = 4):
        self._trt = require("tensorrt", "trt")
        require("pycuda.driver", "trt")
        self.model_path = str(engine_path)
        self.name = "trt"
        self.ring = max(2, int(ring))
        self.tensors: Dict[str, TensorSpec] = {}
        self._lock = threading.Lock()
        self._closed = False
        path = Path(engine_path)
        manifest = read_manifest(path)
        # everything that needs no GPU is checked before any CUDA work starts
        check_manifest(path, manifest, str(self._trt.__version__), board)
        self.info = info_from_manifest(manifest, path)
        self.model_sha256 = str(manifest.get("onnx_sha256") or manifest.get("model_sha256") or "")
        self._owner = CudaOwner(device_index)
        try:
            check_gpu(dict(manifest, engine=path.name), self._owner.device_facts.get("gpu_sm"))
            self._owner.call(self._load, path.read_bytes())
        except BaseException:
            self.close()
            raise
        self._slot = 0

    # -- on the owner thread ---------------------------------------------------------------------------
    def _load(self, blob: bytes) -> None:
        trt, cuda = self._trt, self._owner.cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise ModelError(
                f"TensorRT could not deserialise {Path(self.model_path).name} (see the TensorRT log above); "
                "rebuild it on this device with `edgedepth build`"
            )
        self.context = self.engine.create_execution_context()
        self._v3 = has_tensor_api(self.engine) and hasattr(self.context, "execute_async_v3")
        self.stream = cuda.Stream()
        in_shape = self.input_shape  # (1,H,W,3) uint8 for a model that preprocesses inside its graph
        specs = engine_io(trt, self.engine)
        names = {s.name for s in specs}
        if not {INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY} <= names:
            raise ModelError(
                f"{self.model_path}: engine tensors {sorted(names)} lack '{INPUT_NAME}', "
                f"'{OUTPUT_DEPTH}' or '{OUTPUT_UNCERTAINTY}'; rebuild it from an edgedepth export"
            )
        for s in specs:  # dynamic batch: fix it to 1 before asking for the output shapes
            if s.is_input and -1 in s.shape:
                if self._v3:
                    self.context.set_input_shape(s.name, in_shape)
                else:
                    self.context.set_binding_shape(s.index, in_shape)
        for s in specs:
            s.shape = tuple(
                self.context.get_tensor_shape(s.name) if self._v3 else self.context.get_binding_shape(s.index)
            )
        by_name = {s.name: s for s in specs}
        if by_name[INPUT_NAME].shape != in_shape:
            raise ModelError(
                f"{self.model_path}: engine input {by_name[INPUT_NAME].shape} does not match the "
                f"manifest's preprocessing {in_shape}"
            )
        self._bindings: List[int] = []
        for s in specs:
            dtype = trt.nptype(s.dtype)
            # Results are copied from one page-locked staging buffer into a ring of ordinary arrays: a caller
            # may still hold a result when the model is closed (a hot swap between frames), and page-locked
            # memory is freed explicitly at close, on the owner thread.
            s.hosts = [cuda.pagelocked_empty(s.shape, dtype)]
            if not s.is_input:
                s.ring = [np.empty(s.shape, np.float32) for _ in range(self.ring)]
            self.tensors[s.name] = s  # registered before mem_alloc, so a failure below still frees the hosts
            s.device = cuda.mem_alloc(s.hosts[0].nbytes)
            if self._v3:
                self.context.set_tensor_address(s.name, int(s.device))
            self._bindings.append(int(s.device))
        self._input = by_name[INPUT_NAME]
        self._outputs = [s for s in specs if not s.is_input]

    def _infer(self, batch: np.ndarray, slot: int) -> Tuple[np.ndarray, np.ndarray]:
        cuda = self._owner.cuda
        host_in = self._input.hosts[0]
        np.copyto(host_in, batch, casting="same_kind")
        cuda.memcpy_htod_async(self._input.device, host_in, self.stream)
        if self._v3:
            ok = self.context.execute_async_v3(self.stream.handle)
        else:
            ok = self.context.execute_async_v2(self._bindings, self.stream.handle)
        if ok is False:
            raise ModelError("TensorRT execution failed (see the TensorRT log)")
        for s in self._outputs:
            cuda.memcpy_dtoh_async(s.hosts[0], s.device, self.stream)
        self.stream.synchronize()
        for s in self._outputs:
            np.copyto(s.ring[slot], s.hosts[0], casting="unsafe")  # FP16 outputs become float32 here
        selection = self.tensors.get(OUTPUT_SELECTION)
        return Outputs(self.tensors[OUTPUT_DEPTH].ring[slot], self.tensors[OUTPUT_UNCERTAINTY].ring[slot],
                       selection.ring[slot] if selection is not None else None)

    def _release(self) -> None:
        """Free device memory, pinned memory, the stream and the TensorRT objects, on the owner thread."""
        for s in self.tensors.values():
            if s.device is not None:
                s.device.free()
                s.device = None
            for host in s.hosts:
                base = host.base
                if base is not None and hasattr(base, "free"):
                    base.free()
            s.hosts = []
        self.tensors = {}
        self._input = None
        self._outputs = []
        # the last references: each destructor releases its GPU memory here, with the context current
        for attr in ("stream", "context", "engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    # -- any thread ----------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if batch.shape != self.input_shape:
            raise ModelError(f"input must be {self.input_shape}, got {batch.shape}")
        with self._lock:
            if self._closed:
                raise ModelError(f"{Path(self.model_path).name} was closed; load it again")
            slot = self._slot
            self._slot = (slot + 1) % self.ring
            return self._owner.call(self._infer, batch, slot)

    def mem_info(self) -> Tuple[int, int]:
        """(free, total) GPU memory bytes as the CUDA driver reports them, read on the owner thread."""
        return self._owner.mem_info()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        owner = getattr(self, "_owner", None)
        if owner is not None:
            owner.close(release=self._release)


TrtBackend = TrtRunner  # the name the runtime has always used
