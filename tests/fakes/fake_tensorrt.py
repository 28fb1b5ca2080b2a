"""Strict stand-ins for the `tensorrt` module of TensorRT 8.2, 8.5, 8.6, 10.3 and 11.4.

Attribute sets and enum values come from trt_api/tensorrt-<version>.json: `dir()` and `__members__` of the
real bindings wheels (8.6.1, 10.3.0, 11.4.0.106), imported with their native libraries replaced by empty
stand-ins. 8.2 and 8.5 have no wheel for this Python; they are derived from 8.6.1 by removing what the
TensorRT 8.4, 8.5 and 8.6 release notes list as added (REMOVED_IN below).

Strict means: reading a name the real class lacks raises AttributeError (so `hasattr` feature tests see
what they would see on the board); reading a real name this fake does not model raises NotModelled;
setting an attribute the real class lacks, or a read-only one, raises AttributeError, as pybind does.

Engines are JSON blobs made by the fake builder from the ONNX file's I/O. With the fake pycuda, the
execution context reads its input from device memory and writes depth = 1 + mean of the input channels,
uncertainty = -depth, so data really flows through the backend's buffers; every call that would touch the
GPU needs a current CUDA context on the calling thread.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
REMOVED_IN = {
    # added in 8.6
    "8.5": {
        "module": {"HardwareCompatibilityLevel", "TempfileControlFlag"},
        "IBuilderConfig": {"builder_optimization_level", "hardware_compatibility_level", "max_aux_streams",
                           "plugins_to_serialize"},
        "IExecutionContext": {"set_aux_streams"},
        "BuilderFlag": {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8"},
        "DataType": {"FP8"},
        "Runtime": {"engine_host_code_allowed", "load_runtime", "tempfile_control_flags",
                    "temporary_directory"},
    },
    # added in 8.4 / 8.5: the memory pools and the name-based tensor API
    "8.2": {
        "module": {"MemoryPoolType", "TensorIOMode", "TensorLocation"},
        "IBuilderConfig": {"set_memory_pool_limit", "get_memory_pool_limit"},
        "ICudaEngine": {"num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape",
                        "get_tensor_dtype", "get_tensor_location", "get_tensor_format",
                        "get_tensor_format_desc", "get_tensor_bytes_per_component",
                        "get_tensor_components_per_element", "get_tensor_vectorized_dim",
                        "get_tensor_profile_shape"},
        "IExecutionContext": {"execute_async_v3", "set_input_shape", "get_tensor_shape", "set_tensor_address",
                              "get_tensor_address"},
        "BuilderFlag": {"ENABLE_TACTIC_HEURISTIC", "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS"},
        "DataType": {"UINT8"},
    },
}


class NotModelled(AssertionError):
    """The code under test touched a real TensorRT attribute that this fake does not implement."""


def api(version: str) -> Dict[str, Any]:
    """Real attribute lists and enum values for `version` (8.2, 8.5, 8.6, 10.3, 11.4)."""
    major_minor = ".".join(version.split(".")[:2])
    bases = {"8.2": "8.6.1", "8.5": "8.6.1", "8.6": "8.6.1", "10.3": "10.3.0", "11.4": "11.4.0.106"}
    base = bases[major_minor]
    data = json.loads((HERE / "trt_api" / f"tensorrt-{base}.json").read_text())
    removals = []
    if major_minor in ("8.5", "8.2"):
        removals.append(REMOVED_IN["8.5"])
    if major_minor == "8.2":
        removals.append(REMOVED_IN["8.2"])
    for rem in removals:
        data["module"] = [n for n in data["module"] if n not in rem.get("module", ())]
        for cls, names in data["classes"].items():
            data["classes"][cls] = [n for n in names if n not in rem.get(cls, ())]
        for enum, members in data["enums"].items():
            data["enums"][enum] = {k: v for k, v in members.items() if k not in rem.get(enum, ())}
        data["enums"] = {k: v for k, v in data["enums"].items() if k not in rem.get("module", ())}
    return data


class _EnumValue:
    __slots__ = ("name", "value", "enum")

    def __init__(self, enum: str, name: str, value: int) -> None:
        self.enum, self.name, self.value = enum, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other) -> bool:
        return isinstance(other, _EnumValue) and (other.enum, other.value) == (self.enum, self.value)

    def __hash__(self) -> int:
        return hash((self.enum, self.value))

    def __repr__(self) -> str:
        return f"<{self.enum}.{self.name}: {self.value}>"

    __str__ = __repr__


def _enum(name: str, members: Dict[str, int]) -> type:
    ns = {k: _EnumValue(name, k, v) for k, v in members.items()}
    ns["__members__"] = dict(ns)
    return type(name, (), ns)


class _StrictMeta(type):
    """Class-level lookups hidden the same way (`hasattr(trt.Builder, "build_engine")` on 10.x is False)."""

    def __getattribute__(cls, name: str):
        if not name.startswith("_"):
            real = type.__getattribute__(cls, "_REAL")
            if real is not None and name not in real:
                cls_name = type.__getattribute__(cls, "__name__")
                raise AttributeError(f"type object 'tensorrt.{cls_name}' has no attribute '{name}'")
        return type.__getattribute__(cls, name)


class _Strict(metaclass=_StrictMeta):
    """Attribute access limited to the real class's names (`_REAL`), of which `_SETTABLE` may be set."""

    _REAL = None  # set per fake class
    _SETTABLE: frozenset = frozenset()

    def __getattribute__(self, name: str):
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        if name not in cls._REAL:
            raise AttributeError(f"'tensorrt.{cls.__name__}' object has no attribute '{name}'")
        try:
            return object.__getattribute__(self, name)
        except AttributeError:
            raise NotModelled(f"{cls.__name__}.{name} exists in TensorRT but not in this fake") from None

    def __setattr__(self, name: str, value) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        cls = type(self)
        if name not in cls._REAL:
            raise AttributeError(f"'tensorrt.{cls.__name__}' object has no attribute '{name}'")
        if name not in cls._SETTABLE:
            raise AttributeError(f"can't set attribute '{name}' of 'tensorrt.{cls.__name__}'")
        object.__setattr__(self, name, value)


def make(version: str, cuda=None, calls: Optional[List[tuple]] = None) -> types.ModuleType:
    """A fake `tensorrt` module for `version`; `cuda` is the fake pycuda module (GPU checks) or None."""
    data = api(version)
    real_classes = {k: frozenset(v) for k, v in data["classes"].items()}
    enums = {k: _enum(k, v) for k, v in data["enums"].items()}
    calls = [] if calls is None else calls
    major = int(version.split(".")[0])
    import importlib.machinery

    mod = types.ModuleType("tensorrt")
    mod.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    mod.__version__ = version
    mod.calls = calls
    mod.cuda = cuda

    def need_context(what: str) -> None:
        if cuda is not None:
            cuda._require_context(what)

    def cls(name: str, impl: type, settable=()) -> type:
        real = real_classes[name]  # methods implemented for other versions are hidden by _REAL
        return _StrictMeta(name, (impl, _Strict), {"_REAL": real, "_SETTABLE": frozenset(settable) & real})

    dtype_np = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
                "UINT8": np.uint8, "INT64": np.int64}
    DataType = enums["DataType"]

    def nptype(dt):
        if not isinstance(dt, _EnumValue) or dt.enum != "DataType":
            raise TypeError(f"nptype(): incompatible argument {dt!r}")
        return dtype_np[dt.name]

    class _Logger:
        def __init__(self, min_severity=None) -> None:
            object.__setattr__(self, "min_severity", min_severity)

    for sev, val in (("INTERNAL_ERROR", 0), ("ERROR", 1), ("WARNING", 2), ("INFO", 3), ("VERBOSE", 4)):
        setattr(_Logger, sev, val)
    Logger = cls("Logger", _Logger, settable={"min_severity"})

    class _Network:
        def __init__(self, flags: int) -> None:
            self._flags = flags
            self._io: List[dict] = []

        def _explicit(self) -> bool:
            if major >= 10:
                return True  # EXPLICIT_BATCH is ignored from 10.0 and gone in 11
            return bool(self._flags & (1 << 0))

    Network = cls("INetworkDefinition", _Network)

    class _Parser:
        def __init__(self, network, logger) -> None:
            self._network, self._errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, i: int) -> str:
            return self._errors[i]

        def parse(self, model: bytes, path: Optional[str] = None) -> bool:
            calls.append(("parse", bytes(model[:4])))
            return self._parse(bytes(model))

        def parse_from_file(self, path: str) -> bool:
            calls.append(("parse", path))
            return self._parse(Path(path).read_bytes())

        def _parse(self, blob: bytes) -> bool:
            if not self._network._explicit():
                self._errors.append("Network must have explicit batch dimension (EXPLICIT_BATCH)")
                return False
            try:
                from edgedepth.onnxproto import graph_summary_bytes
            except ImportError:  # an older tree: the export stage's reader
                import tempfile

                from edgedepth.export.protoread import graph_summary

                def graph_summary_bytes(data, name):
                    with tempfile.NamedTemporaryFile(suffix=".onnx") as fh:
                        fh.write(data)
                        fh.flush()
                        return graph_summary(fh.name)

            summary = graph_summary_bytes(blob, "model")
            self._network._io = ([dict(i, mode="input") for i in summary["inputs"]]
                                 + [dict(o, mode="output") for o in summary["outputs"]])
            self._network._op_types = summary["op_types"]
            return True

    OnnxParser = cls("OnnxParser", _Parser)

    class _HostMemory:
        def __init__(self, data: bytes) -> None:
            self._data = data

        def __bytes__(self) -> bytes:
            return self._data

        @property
        def nbytes(self) -> int:
            return len(self._data)

    HostMemory = cls("IHostMemory", _HostMemory)

    class _TimingCache:
        def __init__(self, blob: bytes) -> None:
            self._blob = blob

        def serialize(self):
            return HostMemory(b"TIMING:" + self._blob)

    TimingCache = cls("ITimingCache", _TimingCache)

    class _Profile:
        def set_shape(self, name, min, opt, max) -> None:  # noqa: A002 - the real keyword names
            calls.append(("profile", name, tuple(min), tuple(opt), tuple(max)))

    Profile = cls("IOptimizationProfile", _Profile)

    class _Config:
        def __init__(self) -> None:
            object.__setattr__(self, "_flags", [])
            object.__setattr__(self, "_pools", {})
            object.__setattr__(self, "_cache", None)

        def set_flag(self, flag) -> None:
            if not isinstance(flag, _EnumValue) or flag.enum != "BuilderFlag":
                raise TypeError(f"set_flag(): incompatible function arguments ({flag!r})")
            self._flags.append(flag.name)
            calls.append(("flag", flag.name))

        def set_memory_pool_limit(self, pool, size: int) -> None:
            if not isinstance(pool, _EnumValue) or pool.enum != "MemoryPoolType":
                raise TypeError("set_memory_pool_limit(): incompatible function arguments")
            self._pools[pool.name] = int(size)
            calls.append(("pool", pool.name, int(size)))

        def create_timing_cache(self, blob: bytes):
            calls.append(("timing", bytes(blob)))
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

        def add_optimization_profile(self, profile) -> int:
            return 0

        def __setattr__(self, name, value) -> None:
            _Strict.__setattr__(self, name, value)
            calls.append(("set", name, value.name if isinstance(value, _EnumValue) else value))

    Config = cls("IBuilderConfig", _Config,
                 settable={"max_workspace_size", "default_device_type", "DLA_core", "int8_calibrator",
                           "profile_stream"})

    def engine_blob(network, config) -> bytes:
        calibrator = getattr(config, "_cal", None)
        return json.dumps({"trt": version, "io": network._io, "flags": config._flags,
                           "calibrated": calibrator}).encode()

    def run_calibrator(config, network) -> Optional[str]:
        cal = config.__dict__.get("int8_calibrator")
        if cal is None:
            return None
        if "INT8" not in config._flags:
            return None
        need_context("calibration")
        cache = cal.read_calibration_cache()
        if cache:
            return "cache"
        names = [i["name"] for i in network._io if i["mode"] == "input"]
        batches = 0
        while True:
            ptrs = cal.get_batch(names)
            if ptrs is None:
                break
            for p in ptrs:
                if cuda is not None:
                    cuda.read_device(p, 4)
            batches += 1
        cal.write_calibration_cache(f"TRT-{version}-EntropyCalibration2\nimage: 3c010204\n".encode())
        return f"{batches} batches"

    class _Builder:
        def __init__(self, logger) -> None:
            if cuda is not None and not cuda.S.initialised:
                raise TypeError("pybind11::init(): factory function returned nullptr (no CUDA device)")

        @property
        def num_DLA_cores(self) -> int:
            return 2

        @property
        def platform_has_fast_fp16(self) -> bool:
            return True

        def create_network(self, flags: int = 0):
            calls.append(("network", int(flags)))
            return Network(int(flags))

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            object.__setattr__(config, "_cal", run_calibrator(config, network))
            return HostMemory(engine_blob(network, config))

        def build_engine(self, network, config):
            calls.append(("build_engine",))
            object.__setattr__(config, "_cal", run_calibrator(config, network))
            return Engine(json.loads(engine_blob(network, config)))

    Builder = cls("Builder", _Builder)

    class _Engine:
        def __init__(self, spec: dict) -> None:
            need_context("cudaMalloc (engine weights)")
            self._spec = spec
            self._io = spec["io"]
            self._ctx = cuda.Context.get_current() if cuda is not None else None
            self._freed = False

        def _dtype(self, io):
            return getattr(DataType, "FLOAT" if io.get("dtype") in (None, "float32") else "HALF")

        # 8.x bindings API
        @property
        def num_bindings(self) -> int:
            return len(self._io)

        def get_binding_name(self, i: int) -> str:
            return self._io[i]["name"]

        def binding_is_input(self, i: int) -> bool:
            return self._io[i]["mode"] == "input"

        def get_binding_shape(self, i: int):
            return tuple(self._io[i]["shape"])

        def get_binding_dtype(self, i: int):
            return self._dtype(self._io[i])

        # 8.5+ tensor API
        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, i: int) -> str:
            return self._io[i]["name"]

        def _named(self, name: str) -> dict:
            for io in self._io:
                if io["name"] == name:
                    return io
            raise RuntimeError(f"no tensor {name}")

        def get_tensor_mode(self, name: str):
            return enums["TensorIOMode"].INPUT if self._named(name)["mode"] == "input" else \
                enums["TensorIOMode"].OUTPUT

        def get_tensor_shape(self, name: str):
            return tuple(self._named(name)["shape"])

        def get_tensor_dtype(self, name: str):
            return self._dtype(self._named(name))

        def serialize(self):
            return HostMemory(json.dumps(self._spec).encode())

        def create_execution_context(self):
            need_context("cudaMalloc (activations)")
            return ExecContext(self)

        def __del__(self) -> None:
            _gpu_release(self, "ICudaEngine")

    Engine = cls("ICudaEngine", _Engine)

    def _gpu_release(obj, what: str) -> None:
        ctx = getattr(obj, "_ctx", None)
        if cuda is None or ctx is None:
            return
        if cuda.Context.get_current() is not ctx:
            cuda.S.leaks.append(f"{what} destroyed without its CUDA context current: its memory leaks")

    class _ExecContext:
        def __init__(self, engine) -> None:
            self._engine = engine
            self._addr: Dict[str, int] = {}
            self._ctx = cuda.Context.get_current() if cuda is not None else None

        # 8.x
        def get_binding_shape(self, i: int):
            return self._engine.get_binding_shape(i)

        def set_binding_shape(self, i: int, shape) -> bool:
            return True

        def execute_async_v2(self, bindings, stream_handle, input_consumed=None) -> bool:
            names = [io["name"] for io in self._engine._io]
            return self._run(dict(zip(names, bindings)), stream_handle, "execute_async_v2")

        # 8.5+
        def get_tensor_shape(self, name: str):
            return self._engine.get_tensor_shape(name)

        def set_input_shape(self, name: str, shape) -> bool:
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self._addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            return self._run(self._addr, stream_handle, "execute_async_v3")

        def _run(self, addr: Dict[str, int], stream_handle: int, api: str) -> bool:
            calls.append(("execute", api))
            need_context("enqueue")
            if cuda is None:
                return True
            if stream_handle not in cuda.S.streams:
                raise RuntimeError("enqueue: invalid stream handle")
            io = {i["name"]: i for i in self._engine._io}
            inp = next(i for i in self._engine._io if i["mode"] == "input")
            shape = tuple(inp["shape"])
            x = cuda.read_device(addr[inp["name"]], int(np.prod(shape)) * 4).view(np.float32).reshape(shape)
            depth = 1.0 + x.mean(axis=1, keepdims=True)
            outputs = [("depth", depth), ("uncertainty", -depth)]
            if "selection" in io:  # the selector's features: a constant the tests can recognise
                outputs.append(("selection", np.full(tuple(io["selection"]["shape"]), depth.mean())))
            for name, value in outputs:
                if name in io:
                    cuda.write_device(addr[name], value.astype(np.float32).reshape(-1).view(np.uint8))
            return True

        def __del__(self) -> None:
            _gpu_release(self, "IExecutionContext")

    ExecContext = cls("IExecutionContext", _ExecContext)

    class _Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes):
            try:
                spec = json.loads(bytes(blob))
            except ValueError:
                return None  # real TensorRT logs "Serialization assertion ... failed" and returns None
            if spec.get("trt") != version:
                return None  # an engine of another TensorRT version
            return Engine(spec)

    Runtime = cls("Runtime", _Runtime)

    class _CalibBase:
        def __init__(self) -> None:
            pass

    namespace: Dict[str, Any] = dict(enums)
    namespace.update(Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime, nptype=nptype)
    if "IInt8EntropyCalibrator2" in real_classes:
        namespace["IInt8EntropyCalibrator2"] = type("IInt8EntropyCalibrator2", (_CalibBase,), {})
    real_module = set(data["module"])
    for name, value in namespace.items():
        if name not in real_module:
            raise NotModelled(f"fake tensorrt {version} would add {name}, which the real module lacks")
        setattr(mod, name, value)
    return mod


def install(monkeypatch, version: str, cuda=None) -> types.ModuleType:
    trt = make(version, cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt
