"""TensorRT engine backend via pycuda, for TensorRT 8.2 (JetPack 4.6) through 10.x (JetPack 6).

Page-locked host buffers, device buffers allocated once, one CUDA stream, async copies. The API is
chosen by feature tests, not version strings: `execute_async_v3` + `set_tensor_address` where the
context has them (8.5+, 10.x), else the bindings API (`execute_async_v2`, 8.2). The engine's manifest
(engines/<name>.json, written by `edgedepth build`) is checked before the engine is deserialised:
an engine built for another TensorRT version or another board is refused with a clear message.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgedepth.errors import ModelError, require
from edgedepth.fsutil import file_sha256
from edgedepth.modelmeta import ModelInfo
from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY, Preprocessing
from edgedepth.runtime.backends import Backend

log = logging.getLogger(__name__)


def read_manifest(engine_path: Path) -> dict:
    manifest_path = engine_path.with_suffix(".json")
    if not manifest_path.is_file():
        raise ModelError(
            f"{engine_path.name} has no manifest {manifest_path.name} beside it; rebuild it with "
            "`edgedepth build` so its TensorRT version, board and model hash are recorded"
        )
    try:
        return json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"engine manifest {manifest_path} is unreadable ({exc}); rebuild the engine"
        ) from exc


def check_manifest(
    engine_path: Path, manifest: dict, trt_version: str, board: Optional[str], gpu_sm: Optional[str] = None
) -> None:
    """Refuse an engine built for another TensorRT, GPU, board or ONNX, or whose bytes changed."""
    onnx_path = _source_onnx(engine_path, manifest)
    onnx_sha = file_sha256(onnx_path) if onnx_path is not None else None
    try:  # the export engineer's check (edgedepth build writes the manifest) is authoritative
        from edgedepth.export.trt_build import check_engine_manifest
    except ImportError:  # pragma: no cover - a device install without the export package
        check_engine_manifest = None
    if check_engine_manifest is not None:
        check_engine_manifest(manifest, trt_version, gpu_sm, onnx_sha)
    else:
        built_with = str(manifest.get("tensorrt") or manifest.get("tensorrt_version") or "")
        if built_with and built_with.split(".")[:3] != trt_version.split(".")[:3]:
            raise ModelError(
                f"{engine_path.name} was built with TensorRT {built_with} but this device has "
                f"{trt_version}: engines are not portable across versions; rebuild it here with "
                "`edgedepth build`"
            )
    built_for = manifest.get("board")
    if board and built_for and built_for != board:
        raise ModelError(
            f"{engine_path.name} was built for board {built_for}, not {board}; build one for this "
            f"board with `edgedepth build BUNDLE/model.onnx --device {board}`"
        )
    want = manifest.get("engine_sha256")
    if want and file_sha256(engine_path) != want:
        raise ModelError(
            f"{engine_path.name}: its sha256 does not match its manifest; the file is corrupt or "
            "was replaced - rebuild it with `edgedepth build`"
        )


def _source_onnx(engine_path: Path, manifest: dict) -> Optional[Path]:
    """The bundle's ONNX file the engine was built from (BUNDLE/engines/x.engine -> BUNDLE/<onnx>)."""
    name = manifest.get("onnx")
    if not name:
        return None
    for folder in (engine_path.parent.parent, engine_path.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def info_from_manifest(manifest: dict, engine_path: Path) -> ModelInfo:
    """Preprocessing and identity: from the manifest when it carries them, else from the source ONNX."""
    from edgedepth.modelmeta import KEY_PREPROCESSING, read_onnx_info

    props = manifest.get("metadata_props") or manifest.get("metadata")
    if isinstance(props, dict) and KEY_PREPROCESSING in props:
        return ModelInfo.from_metadata_props(
            {str(k): str(v) for k, v in props.items()}, source=str(engine_path)
        )
    pre = manifest.get("preprocessing")
    if isinstance(pre, dict):
        model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
        return ModelInfo(
            preprocessing=Preprocessing.from_dict(pre),
            name=str(model.get("name", "edgedepth")),
            version=str(model.get("version", "0")),
            size=str(model.get("size", "")),
            checkpoint_sha256=str(model.get("checkpoint_sha256", "")),
        )
    onnx_path = _source_onnx(engine_path, manifest)
    if onnx_path is not None:
        return read_onnx_info(str(onnx_path))
    raise ModelError(
        f"{engine_path.name}: neither its manifest nor the bundle ({manifest.get('onnx')!r} missing) "
        "says how to preprocess frames; keep the engine inside its bundle's engines/ folder"
    )


class _Tensor:
    def __init__(self, name: str, shape: Tuple[int, ...], dtype, is_input: bool):
        self.name, self.shape, self.dtype, self.is_input = name, shape, dtype, is_input
        self.device = None
        self.hosts: List[np.ndarray] = []


class TrtBackend(Backend):
    """A deserialised TensorRT engine with preallocated page-locked buffers and one stream."""

    def __init__(self, engine_path, board: Optional[str] = None, device_index: int = 0, ring: int = 4):
        trt = require("tensorrt", "trt")
        cuda = require("pycuda.driver", "trt")
        self._trt, self._cuda = trt, cuda
        self.model_path = str(engine_path)
        path = Path(engine_path)
        manifest = read_manifest(path)
        cuda.init()
        if cuda.Device.count() <= device_index:
            raise ModelError(f"no CUDA GPU {device_index} for {path.name} (found {cuda.Device.count()})")
        dev = cuda.Device(device_index)
        major, minor = dev.compute_capability()
        check_manifest(path, manifest, str(trt.__version__), board, gpu_sm=f"{major}.{minor}")
        self.info = info_from_manifest(manifest, path)
        self.model_sha256 = str(manifest.get("onnx_sha256") or manifest.get("model_sha256") or "")
        self.name = "trt"
        self.ring = max(2, int(ring))
        self._threads = set()
        self._lock = threading.Lock()
        if hasattr(dev, "retain_primary_context"):
            self._ctx, self._own_ctx = dev.retain_primary_context(), False
        else:  # very old pycuda
            self._ctx, self._own_ctx = dev.make_context(), True
            self._ctx.pop()
        self._ensure_context()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(
                f"TensorRT could not deserialise {path.name} (see the TensorRT log above); "
                "rebuild it on this device with `edgedepth build`"
            )
        self.context = self.engine.create_execution_context()
        self._v3 = hasattr(self.context, "execute_async_v3") and hasattr(self.engine, "num_io_tensors")
        self.stream = cuda.Stream()
        self.tensors: Dict[str, _Tensor] = {}
        self._bindings: List[int] = []
        self._setup_tensors()
        self._slot = 0

    # -- set-up -------------------------------------------------------------------------------------
    def _ensure_context(self) -> None:
        ident = threading.get_ident()
        if ident not in self._threads:
            self._ctx.push()  # CUDA contexts are per thread: the loop infers from its own thread
            self._threads.add(ident)

    def _setup_tensors(self) -> None:
        trt, cuda = self._trt, self._cuda
        in_shape = self.input_shape  # (1,H,W,3) uint8 for a model that preprocesses inside its graph
        specs = []
        if self._v3:
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                if is_input and -1 in tuple(self.engine.get_tensor_shape(name)):
                    self.context.set_input_shape(name, in_shape)
                specs.append((name, is_input, trt.nptype(self.engine.get_tensor_dtype(name))))
            shapes = {name: tuple(self.context.get_tensor_shape(name)) for name, _, _ in specs}
        else:
            for i in range(self.engine.num_bindings):
                name = self.engine.get_binding_name(i)
                is_input = self.engine.binding_is_input(i)
                if is_input and -1 in tuple(self.engine.get_binding_shape(i)):
                    self.context.set_binding_shape(i, in_shape)
                specs.append((name, is_input, trt.nptype(self.engine.get_binding_dtype(i))))
            shapes = {name: tuple(self.context.get_binding_shape(i)) for i, (name, _, _) in enumerate(specs)}
        names = {name for name, _, _ in specs}
        if not {INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY} <= names:
            raise ModelError(
                f"{self.model_path}: engine tensors {sorted(names)} lack '{INPUT_NAME}', "
                f"'{OUTPUT_DEPTH}' or '{OUTPUT_UNCERTAINTY}'; rebuild it from an edgedepth export"
            )
        if shapes[INPUT_NAME] != in_shape:
            raise ModelError(
                f"{self.model_path}: engine input {shapes[INPUT_NAME]} does not match the "
                f"manifest's preprocessing {in_shape}"
            )
        for name, is_input, dtype in specs:
            tensor = _Tensor(name, shapes[name], dtype, is_input)
            count = 1 if is_input else self.ring
            size = int(np.prod(tensor.shape))
            tensor.hosts = [cuda.pagelocked_empty(size, dtype).reshape(tensor.shape) for _ in range(count)]
            tensor.device = cuda.mem_alloc(tensor.hosts[0].nbytes)
            if self._v3:
                self.context.set_tensor_address(name, int(tensor.device))
            self.tensors[name] = tensor
            self._bindings.append(int(tensor.device))
        self._input = self.tensors[INPUT_NAME]
        self._outputs = [t for t in self.tensors.values() if not t.is_input]

    # -- inference ----------------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if batch.shape != self.input_shape:
            raise ModelError(f"input must be {self.input_shape}, got {batch.shape}")
        cuda = self._cuda
        with self._lock:
            self._ensure_context()
            slot = self._slot
            self._slot = (slot + 1) % self.ring
            host_in = self._input.hosts[0]
            np.copyto(host_in, batch, casting="same_kind")
            cuda.memcpy_htod_async(self._input.device, host_in, self.stream)
            if self._v3:
                ok = self.context.execute_async_v3(stream_handle=self.stream.handle)
            else:
                ok = self.context.execute_async_v2(bindings=self._bindings, stream_handle=self.stream.handle)
            if ok is False:
                raise ModelError("TensorRT execution failed (see the TensorRT log)")
            for tensor in self._outputs:
                cuda.memcpy_dtoh_async(tensor.hosts[slot], tensor.device, self.stream)
            self.stream.synchronize()
            depth = self.tensors[OUTPUT_DEPTH].hosts[slot]
            unc = self.tensors[OUTPUT_UNCERTAINTY].hosts[slot]
        if depth.dtype != np.float32:  # an engine with FP16 outputs
            depth, unc = depth.astype(np.float32), unc.astype(np.float32)
        return depth, unc

    def close(self) -> None:
        if getattr(self, "tensors", None) is None:
            return
        try:
            self._ensure_context()
            for tensor in self.tensors.values():
                if tensor.device is not None:
                    tensor.device.free()
                    tensor.device = None
            self.context = None
            self.engine = None
        finally:
            self.tensors = None
            if self._own_ctx:
                self._ctx.detach()
