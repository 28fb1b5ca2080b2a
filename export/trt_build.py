"""ONNX -> TensorRT engine for one board, across TensorRT 8.2 / 8.5-8.6 / 10.x / 11 (feature-tested).

The engine file stays a plain serialized engine; what it was built from and with goes in a JSON
manifest beside it, which the runtime checks (`check_engine_manifest`) before deserializing.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgedepth.export.protoread import graph_summary, has_qdq

from edgedepth import bundle
from edgedepth.devices import DeviceConfig, load_device, version_tuple
from edgedepth.errors import ConfigError, MissingDependencyError, ModelError

log = logging.getLogger(__name__)
ENGINE_FORMAT = "edgedepth-engine/1"
DEFAULT_MAX_BATCH = 8


@dataclass
class BuildPlan:
    """Everything the builder will be told; printed verbatim by --dry-run and stored in the manifest."""

    onnx: str
    onnx_sha256: str
    board: str
    trt_version: str
    api: str  # legacy-8.2 | pool-8.4+ | typed-10 | typed-11
    precision: str
    model_kind: str  # float | qdq-int8
    strongly_typed: bool
    flags: List[str]
    workspace_mib: int
    dla_core: Optional[int]
    gpu_fallback: bool
    int8_calibration_cache: Optional[str]
    convert_to_fp16_onnx: bool
    profile: Optional[Dict[str, List[int]]]
    timing_cache: Optional[str]
    engine_path: str
    manifest_path: str
    inputs: List[Dict[str, Any]] = field(default_factory=list)
    outputs: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def lines(self) -> List[str]:
        d = self.to_dict()
        width = max(len(k) for k in d)
        return [f"{k.ljust(width)}  {v}" for k, v in d.items() if k not in ("inputs", "outputs")] + [
            f"{'inputs'.ljust(width)}  " + ", ".join(f"{i['name']}{i['shape']}" for i in self.inputs),
            f"{'outputs'.ljust(width)}  " + ", ".join(f"{o['name']}{o['shape']}" for o in self.outputs),
        ]


def api_for(version: Tuple[int, ...]) -> str:
    if version >= (11,):
        return "typed-11"
    if version >= (10,):
        return "typed-10"
    if version >= (8, 4):
        return "pool-8.4+"
    return "legacy-8.2"


def plan_build(
    model_path: str,
    device,
    precision: Optional[str] = None,
    dla_core: Optional[int] = None,
    workspace_mib: Optional[int] = None,
    timing_cache: Optional[str] = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    trt_version: Optional[str] = None,
    out_dir: Optional[str] = None,
) -> BuildPlan:
    """Decide the builder settings for `model_path` on `device`; refuses impossible combinations."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; export it with `edgedepth export`")
    dev: DeviceConfig = load_device(device)
    version = trt_version or dev.tensorrt
    ver = version_tuple(version)
    api = api_for(ver)
    summary = graph_summary(str(path))
    qdq = has_qdq(summary)
    requested = precision or ("int8" if qdq and dev.int8 else dev.default_precision)
    prec, core = dev.check_request(requested, dla_core)
    notes: List[str] = []
    flags: List[str] = []
    strongly_typed = False
    calib_cache = None
    to_fp16 = False
    bdir = path.parent
    if qdq:
        if prec != "int8":
            raise ConfigError(
                f"{path.name} is an INT8 Q/DQ model; build it with --precision int8, or build "
                f"{bundle.MODEL_FP32} for {prec}"
            )
        if core is not None:
            raise ConfigError(
                "DLA does not take Q/DQ (explicit INT8) models on JetPack 5/6: build "
                f"{bundle.MODEL_FP32} with --precision int8 --dla-core {core} (uses "
                f"{bundle.CALIB_CACHE}), or drop --dla-core"
            )
        if api in ("typed-10", "typed-11"):
            strongly_typed = True  # Q/DQ fixes the types; no precision flags
        else:
            flags = ["INT8", "FP16"]  # TRT 8.x: Q/DQ networks need the INT8 flag; FP16 for the float rest
    elif prec == "int8":
        if api == "typed-11":
            raise ConfigError(
                "TensorRT 11 has no implicit INT8 calibration: build "
                f"{bundle.MODEL_INT8_TRT} (from `edgedepth calibrate --target trt`)"
            )
        cache = bdir / bundle.CALIB_CACHE
        if not cache.is_file():
            raise ConfigError(
                f"implicit INT8 needs {cache} (written by `edgedepth calibrate --target trt`); "
                f"or build {bundle.MODEL_INT8_TRT} instead"
            )
        calib_cache = str(cache)
        flags = ["INT8", "FP16"]
        if ver >= (10, 1):
            notes.append("implicit INT8 (calibrator) is deprecated since TensorRT 10.1; used here for DLA")
    elif prec == "fp16":
        if api == "typed-11":
            strongly_typed, to_fp16 = True, True
            notes.append("TensorRT 11 is always strongly typed: the ONNX is converted to FP16 with FP32 I/O")
        else:
            flags = ["FP16"]
    if core is not None:
        flags.append("GPU_FALLBACK")
    inputs, outputs = summary["inputs"], summary["outputs"]
    profile = None
    for inp in inputs:
        shape = inp["shape"]
        dyn = [i for i, d in enumerate(shape) if not isinstance(d, int) or d <= 0]
        if dyn and dyn != [0]:
            raise ConfigError(f"input '{inp['name']}' has dynamic dims {dyn}: re-export with a fixed --size")
        if dyn == [0]:
            rest = [int(d) for d in shape[1:]]
            profile = {"input": inp["name"], "min": [1] + rest, "opt": [1] + rest, "max": [max_batch] + rest}
    workspace = int(workspace_mib or dev.workspace_mib)
    if workspace <= 0:
        raise ConfigError("--workspace must be a positive number of MiB")
    engines = Path(out_dir) if out_dir else bdir / bundle.ENGINES_DIR
    label = prec if core is None else f"{prec}-dla{core}"  # GPU and DLA engines must not collide
    eng = engines / bundle.engine_file_name(dev.board, label, version)
    return BuildPlan(
        onnx=str(path),
        onnx_sha256=bundle.file_sha256(path),
        board=dev.board,
        trt_version=version,
        api=api,
        precision=prec,
        model_kind="qdq-int8" if qdq else "float",
        strongly_typed=strongly_typed,
        flags=flags,
        workspace_mib=workspace,
        dla_core=core,
        gpu_fallback=core is not None,
        int8_calibration_cache=calib_cache,
        convert_to_fp16_onnx=to_fp16,
        profile=profile,
        timing_cache=str(timing_cache) if timing_cache else None,
        engine_path=str(eng),
        manifest_path=str(eng.with_suffix(".json")),
        inputs=inputs,
        outputs=outputs,
        notes=notes,
    )


# --------------------------------------------------------------------------- environment facts
def gpu_info() -> Dict[str, Any]:
    """GPU name, SM and CUDA versions (pycuda, then cuda-python, then nvidia-smi); {} without a GPU."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {
            "gpu_name": dev.name(),
            "gpu_sm": f"{major}.{minor}",
            "cuda": ".".join(str(v) for v in cuda.get_version()),
            "cuda_driver": str(cuda.get_driver_version()),
        }
    except Exception:  # noqa: BLE001 - no pycuda, no driver or no GPU: try the next source
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout.splitlines()
            name, sm, driver = [s.strip() for s in out[0].split(",")]
            return {"gpu_name": name, "gpu_sm": sm, "cuda_driver": driver}
        except (subprocess.SubprocessError, OSError, IndexError, ValueError):
            return {}
    return {}


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed here: on a Jetson use the python3-libnvinfer that JetPack provides "
            "(apt install python3-libnvinfer), on x86 install the 'trt' extra (pip install "
            "'edgedepth[trt]'); `edgedepth build --dry-run` shows the settings without it"
        ) from exc
    return trt


def _fp16_onnx(src: str, dst: str) -> str:
    """FP16 copy of an ONNX model with FP32 inputs/outputs (TensorRT 11 strongly typed FP16)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
    onnx.save(model, dst)
    return dst


# --------------------------------------------------------------------------- the build
def build_engine(plan: BuildPlan, trt=None, verbose: bool = False) -> Dict[str, Any]:
    """Run the TensorRT builder per `plan`; write the engine and its manifest; return the manifest."""
    trt = trt or _import_trt()
    installed = str(getattr(trt, "__version__", "0"))
    if version_tuple(installed)[:2] != version_tuple(plan.trt_version)[:2]:
        raise ConfigError(
            f"TensorRT {installed} is installed but the plan targets {plan.trt_version} "
            f"({plan.board}); build on the board itself or pass a device config for this host"
        )
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    cause: object = "Builder returned None"
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # TensorRT raises a bare RuntimeError/TypeError when CUDA is unusable
        builder, cause = None, exc
    if builder is None:
        raise MissingDependencyError(
            f"TensorRT {installed} is installed but found no usable CUDA GPU ({cause}): "
            "build on the board or a host with an NVIDIA GPU; `--dry-run` works anywhere"
        )
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") and plan.api != "typed-11":
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # required on 8.x, no-op on 10
    if plan.strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise ConfigError(f"TensorRT {installed} cannot build strongly typed networks")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = plan.onnx
    tmp = None
    if plan.convert_to_fp16_onnx:
        tmp = tempfile.TemporaryDirectory(prefix="edgedepth-fp16-")
        onnx_path = _fp16_onnx(plan.onnx, str(Path(tmp.name) / "model.fp16.onnx"))
    try:
        ok = (
            parser.parse_from_file(onnx_path)
            if hasattr(parser, "parse_from_file")
            else parser.parse(Path(onnx_path).read_bytes())
        )
        if not ok:
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelError(
                f"TensorRT {installed} cannot parse {plan.onnx}: "
                + "; ".join(errors)
                + " (run `edgedepth lint` for the board)"
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
    config = builder.create_builder_config()
    workspace = plan.workspace_mib << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace  # TensorRT 8.2
    for name in plan.flags:
        if not hasattr(trt.BuilderFlag, name):
            raise ConfigError(f"TensorRT {installed} has no builder flag {name}")
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.dla_core is not None:
        if builder.num_DLA_cores <= plan.dla_core:
            raise ConfigError(
                f"this device has {builder.num_DLA_cores} DLA cores; --dla-core {plan.dla_core} "
                "is not available"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    if plan.int8_calibration_cache:
        from edgedepth.export.trt_calibrator import make_entropy_calibrator

        config.int8_calibrator = make_entropy_calibrator(
            None, 1, plan.int8_calibration_cache, base=trt.IInt8EntropyCalibrator2
        )
    if plan.profile:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            plan.profile["input"], plan.profile["min"], plan.profile["opt"], plan.profile["max"]
        )
        config.add_optimization_profile(profile)
    cache = None
    if plan.timing_cache:
        blob = Path(plan.timing_cache).read_bytes() if Path(plan.timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    if hasattr(builder, "build_serialized_network"):
        serialized = builder.build_serialized_network(network, config)
        data = bytes(serialized) if serialized is not None else None
    else:  # TensorRT 8.2
        engine = builder.build_engine(network, config)
        data = bytes(engine.serialize()) if engine is not None else None
    if not data:
        raise ModelError(
            "TensorRT failed to build the engine (see its log above; try -v, a larger "
            "--workspace, or `edgedepth lint`)"
        )
    build_s = time.perf_counter() - t0
    if cache is not None:
        Path(plan.timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    engine_path = Path(plan.engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_engine = engine_path.with_name(f".{engine_path.name}.tmp")
    tmp_engine.write_bytes(data)
    tmp_engine.replace(engine_path)
    manifest = engine_manifest(plan, installed, build_s, data)
    manifest["io"] = _engine_io(trt, logger, data) or manifest["io"]
    bundle.write_json_atomic(plan.manifest_path, manifest)
    bdir = engine_path.parent.parent
    if bdir == Path(plan.onnx).parent and (bdir / bundle.MODEL_FP32).is_file():
        bundle.write_manifest(bdir)
    return manifest


def engine_manifest(plan: BuildPlan, trt_version: str, build_s: float, data: bytes) -> Dict[str, Any]:
    gpu = gpu_info()
    return {
        "format": ENGINE_FORMAT,
        "engine": Path(plan.engine_path).name,
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "engine_bytes": len(data),
        "board": plan.board,
        "precision": plan.precision,
        "dla_core": plan.dla_core,
        "tensorrt": trt_version,
        "cuda": gpu.get("cuda"),
        "cuda_driver": gpu.get("cuda_driver"),
        "gpu_name": gpu.get("gpu_name"),
        "gpu_sm": gpu.get("gpu_sm"),
        "onnx": Path(plan.onnx).name,
        "onnx_sha256": plan.onnx_sha256,
        "io": [dict(i, mode="input") for i in plan.inputs] + [dict(o, mode="output") for o in plan.outputs],
        "builder": {k: v for k, v in plan.to_dict().items() if k not in ("inputs", "outputs", "onnx_sha256")},
        "build_time_s": round(build_s, 3),
        "timing_cache": plan.timing_cache,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _engine_io(trt, logger, data: bytes) -> List[Dict[str, Any]]:
    """I/O names, modes, dtypes and shapes as the engine reports them (8.5+ tensor API, 8.2 bindings)."""
    try:
        engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    except Exception:  # noqa: BLE001 - the manifest keeps the ONNX-derived I/O
        return []
    if engine is None:
        return []
    io = []
    if hasattr(engine, "num_io_tensors"):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
            io.append(
                {
                    "name": name,
                    "mode": mode,
                    "dtype": str(engine.get_tensor_dtype(name)),
                    "shape": list(engine.get_tensor_shape(name)),
                }
            )
    else:
        for i in range(engine.num_bindings):
            io.append(
                {
                    "name": engine.get_binding_name(i),
                    "mode": "input" if engine.binding_is_input(i) else "output",
                    "dtype": str(engine.get_binding_dtype(i)),
                    "shape": list(engine.get_binding_shape(i)),
                }
            )
    return io


def check_engine_manifest(
    manifest: Dict[str, Any], trt_version: str, gpu_sm: Optional[str], onnx_sha256: Optional[str] = None
) -> None:
    """Refuse an engine built for another TensorRT version, GPU architecture or ONNX file."""
    if manifest.get("format") != ENGINE_FORMAT:
        raise ModelError(
            f"engine manifest format {manifest.get('format')!r} is not {ENGINE_FORMAT}; rebuild "
            "the engine with `edgedepth build`"
        )
    name = manifest.get("engine", "engine")
    built = str(manifest.get("tensorrt", ""))
    if version_tuple(built)[:3] != version_tuple(trt_version)[:3]:
        raise ModelError(
            f"{name} was built with TensorRT {built} but this device has {trt_version}: engines "
            f"are not portable across versions; rebuild it here with `edgedepth build`"
        )
    if gpu_sm and manifest.get("gpu_sm") and str(manifest["gpu_sm"]) != str(gpu_sm):
        raise ModelError(
            f"{name} was built for SM {manifest['gpu_sm']} but this GPU is SM {gpu_sm}; rebuild "
            "it on this device with `edgedepth build`"
        )
    if onnx_sha256 and manifest.get("onnx_sha256") and manifest["onnx_sha256"] != onnx_sha256:
        raise ModelError(
            f"{name} was built from a different ONNX file than the bundle's; rebuild it with "
            "`edgedepth build`"
        )
