"""ONNX -> TensorRT engine for one board, across TensorRT 8.2 / 8.5-8.6 / 10.x / 11 (feature-tested).

The engine file stays a plain serialized engine; what it was built from and with goes in a JSON
manifest beside it (manifest.py), which the runtime checks before deserializing. Version gates compare
integer tuples. The builder runs on a CudaOwner thread (cuda.py), so the calibrator's device memory and
the build's CUDA context are made and released on one thread. An engine whose manifest matches the plan
is not built again (`engine_is_current`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edgedepth import bundle
from edgedepth.backends.tensorrt.manifest import ENGINE_FORMAT, check_engine_manifest, version_tuple
from edgedepth.devices import DeviceConfig, load_device
from edgedepth.errors import ConfigError, MissingDependencyError, ModelError
from edgedepth.onnxproto import graph_summary, has_qdq, onnx_header

log = logging.getLogger(__name__)
DEFAULT_MAX_BATCH = 8
MODEL_FP16 = (
    "model.fp16.onnx"  # FP16 copy with FP32 I/O for strongly typed TensorRT 11 (made on the workstation)
)
STRONG_TYPING_ONLY = (10, 12)  # weak typing and the FP16/INT8 builder flags are deprecated from here on
KEY_FP16_OF = "edgedepth.fp16_of"  # its metadata: sha256 of the FP32 ONNX it was converted from
__all__ = ["ENGINE_FORMAT", "check_engine_manifest"]


@dataclass
class BuildPlan:
    """Everything the builder will be told; printed verbatim by --dry-run and stored in the manifest."""

    onnx: str
    onnx_sha256: str
    board: str
    trt_version: str
    api: str  # legacy-8.2 | pool-8.4+ | typed-10 | typed-11
    precision: str
    model_kind: str  # float | qdq-int8 | qdq-int8-mixed (weighted layers left without Q/DQ)
    strongly_typed: bool
    flags: List[str]
    workspace_mib: int
    dla_core: Optional[int]
    gpu_fallback: bool
    int8_calibration_cache: Optional[str]
    convert_to_fp16_onnx: bool
    fp16_onnx: Optional[str]
    float_layers_fp16: Optional[str]  # how a mixed model's float layers get FP16: builder-flags | fp16-onnx
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


def fp16_onnx_name(onnx_name: str) -> str:
    """The FP16 copy's file name beside an ONNX file: model.onnx -> model.fp16.onnx,
    model.int8.trt.onnx -> model.int8.trt.fp16.onnx."""
    name = Path(onnx_name).name
    return f"{name[: -len('.onnx')] if name.endswith('.onnx') else name}.fp16.onnx"


def mixed_fp16_method(version: Tuple[int, ...]) -> str:
    """How the float (non-Q/DQ) layers of a mixed Q/DQ model are made to run in FP16 on a TensorRT version.

    - 8.x and 10.0-10.11: "builder-flags". A weakly typed network with the INT8 and FP16 flags: Q/DQ fixes
      the INT8 layers and TensorRT picks FP16 kernels for the rest. The bundle's Q/DQ ONNX builds as it
      is on the board (no second file, no `onnx` there), and TensorRT keeps choosing precision across
      the INT8/float boundaries itself. These versions support weak typing without deprecation.
    - 10.12+ and 11: "fp16-onnx". Weak typing and BuilderFlag.FP16 are deprecated in 10.12 and gone in 11,
      and a strongly typed network runs a layer in its ONNX tensor type. So the float part is converted to
      FP16 inside the ONNX on the workstation (export/fp16.py: Q/DQ pairs, their FP32 scales and the INT8
      layers untouched, Casts at the boundaries, FP32 graph I/O) and that copy is built strongly typed.
    """
    return "fp16-onnx" if version >= STRONG_TYPING_ONLY else "builder-flags"


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
    version = str(trt_version or dev.tensorrt)
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
    float_fp16: Optional[str] = None
    bdir = path.parent
    float_layers: List[str] = []
    if qdq:
        from edgedepth.onnxgraph import float_weighted_layers, read_model

        float_layers = float_weighted_layers(read_model(str(path)).graph)
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
        if float_layers:
            float_fp16 = mixed_fp16_method(ver)
            if float_fp16 == "fp16-onnx":
                strongly_typed, to_fp16 = True, True
                notes.append(
                    f"mixed model: {len(float_layers)} weighted layers without Q/DQ run in FP16 from "
                    f"{fp16_onnx_name(path.name)} (float part converted to FP16 on the workstation, Q/DQ "
                    f"kept), built strongly typed: TensorRT {version} has no weak typing to rely on"
                )
            else:
                flags = ["INT8", "FP16"]
                notes.append(
                    f"mixed model: {len(float_layers)} weighted layers without Q/DQ run in FP16 through the "
                    f"INT8 + FP16 builder flags (weakly typed network on TensorRT {version})"
                )
        elif api in ("typed-10", "typed-11"):
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
        check_cache_version(cache, version)
        calib_cache = str(cache)
        flags = ["INT8", "FP16"]
        if ver >= (10, 1):
            notes.append("implicit INT8 (calibrator) is deprecated since TensorRT 10.1; used here for DLA")
    elif prec == "fp16":
        if api == "typed-11":
            strongly_typed, to_fp16 = True, True
            notes.append(
                f"TensorRT 11 is always strongly typed: builds {MODEL_FP16} (FP16 with FP32 I/O, "
                "converted on the workstation)"
            )
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
        model_kind=("qdq-int8-mixed" if float_layers else "qdq-int8") if qdq else "float",
        strongly_typed=strongly_typed,
        flags=flags,
        workspace_mib=workspace,
        dla_core=core,
        gpu_fallback=core is not None,
        int8_calibration_cache=calib_cache,
        convert_to_fp16_onnx=to_fp16,
        fp16_onnx=str(bdir / fp16_onnx_name(path.name)) if to_fp16 else None,
        float_layers_fp16=float_fp16,
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


def check_cache_version(cache: Path, trt_version: str) -> None:
    """Refuse a calibration cache of another TensorRT: TensorRT would skip it and calibrate nothing."""
    from edgedepth.backends.tensorrt.calibrator import cache_header_version

    written = cache_header_version(cache)
    if written is not None and written[:2] != version_tuple(trt_version)[:2]:
        raise ConfigError(
            f"{cache.name} was written for TensorRT {'.'.join(map(str, written))}, not {trt_version}: "
            "TensorRT ignores a cache of another version. Run `edgedepth calibrate --target trt "
            "--device <board>` again "
            "for this board"
        )


def fp16_onnx_for(plan: "BuildPlan") -> str:
    """The FP16 ONNX a strongly typed build parses: BUNDLE/model.fp16.onnx for a TensorRT 11 FP16 build,
    BUNDLE/model.int8.trt.fp16.onnx for a mixed Q/DQ model on TensorRT 10.12+, made from this very file.

    Converting needs `onnx` (absent from a device install), so it happens on the workstation:
    `edgedepth build MODEL --device BOARD` there writes it when `onnx` is importable."""
    path = Path(plan.fp16_onnx or Path(plan.onnx).with_name(fp16_onnx_name(Path(plan.onnx).name)))
    how = (
        f"make it on the workstation with `edgedepth build {Path(plan.onnx).name} --device {plan.board} "
        "--fp16-onnx-only` and copy it into the bundle"
    )
    if not path.is_file():
        raise ConfigError(
            f"TensorRT {plan.trt_version} builds this strongly typed FP16 network from {path.name}, "
            f"which is missing: {how}"
        )
    source = onnx_header(path)["metadata"].get(KEY_FP16_OF)
    if source != plan.onnx_sha256:
        raise ConfigError(f"{path.name} was not converted from this {Path(plan.onnx).name}: {how}")
    return str(path)


# --------------------------------------------------------------------------- the build
def _build_owner():
    """A CudaOwner for the build when pycuda is here (the calibrator's device memory lives on it), else None:
    TensorRT then uses the CUDA runtime's primary context on the calling thread and no pycuda is involved."""
    import importlib.util

    if importlib.util.find_spec("pycuda") is None:
        return None
    from edgedepth.backends.tensorrt.cuda import CudaOwner

    return CudaOwner(0, name="edgedepth-build")


def build_engine(plan: BuildPlan, trt=None, verbose: bool = False) -> Dict[str, Any]:
    """Run the TensorRT builder per `plan`; write the engine and its manifest; return the manifest."""
    trt = trt or _import_trt()
    installed = str(getattr(trt, "__version__", "0"))
    if version_tuple(installed)[:2] != version_tuple(plan.trt_version)[:2]:
        raise ConfigError(
            f"TensorRT {installed} is installed but the plan targets {plan.trt_version} "
            f"({plan.board}); build on the board itself or pass a device config for this host"
        )
    onnx_path = fp16_onnx_for(plan) if plan.convert_to_fp16_onnx else plan.onnx
    owner = _build_owner()
    if owner is None:
        data, io, build_s = _build(plan, trt, onnx_path, verbose, None)
    else:
        try:
            data, io, build_s = owner.call(_build, plan, trt, onnx_path, verbose, owner)
        finally:
            owner.close()
    engine_path = Path(plan.engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_engine = engine_path.with_name(f".{engine_path.name}.tmp")
    tmp_engine.write_bytes(data)
    tmp_engine.replace(engine_path)
    manifest = engine_manifest(plan, installed, build_s, data)
    manifest["io"] = io or manifest["io"]
    bundle.write_json_atomic(plan.manifest_path, manifest)
    bdir = engine_path.parent.parent
    if bdir == Path(plan.onnx).parent and (bdir / bundle.MODEL_FP32).is_file():
        bundle.write_manifest(bdir)
    return manifest


def _network_flags(trt, plan: BuildPlan, installed: str) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "EXPLICIT_BATCH") and version_tuple(installed) < (10,):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # required on 8.x; deprecated no-op on 10; gone in 11
    if plan.strongly_typed:
        if not hasattr(creation, "STRONGLY_TYPED"):
            raise ConfigError(f"TensorRT {installed} cannot build strongly typed networks")
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def _build(
    plan: BuildPlan, trt, onnx_path: str, verbose: bool, owner
) -> Tuple[bytes, List[Dict[str, Any]], float]:
    """The builder calls, on the CUDA owner thread when there is one: (engine bytes, engine I/O, seconds)."""
    installed = str(trt.__version__)
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
    network = builder.create_network(_network_flags(trt, plan, installed))
    parser = trt.OnnxParser(network, logger)
    ok = (
        parser.parse_from_file(onnx_path)
        if hasattr(parser, "parse_from_file")
        else parser.parse(Path(onnx_path).read_bytes())
    )
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(
            f"TensorRT {installed} cannot parse {onnx_path}: "
            + "; ".join(errors)
            + " (run `edgedepth lint` for the board)"
        )
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
    calibrator = None
    if plan.int8_calibration_cache:
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise ConfigError(
                f"TensorRT {installed} has no implicit INT8 calibration: build {bundle.MODEL_INT8_TRT}"
            )
        from edgedepth.backends.tensorrt.calibrator import make_entropy_calibrator

        calibrator = make_entropy_calibrator(None, 1, plan.int8_calibration_cache, trt=trt, owner=owner)
        config.int8_calibrator = calibrator
    try:
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
        if hasattr(builder, "build_serialized_network"):  # every release since 8.0
            serialized = builder.build_serialized_network(network, config)
            data = bytes(serialized) if serialized is not None else b""
        else:  # pragma: no cover - TensorRT 7
            engine = builder.build_engine(network, config)
            data = bytes(engine.serialize()) if engine is not None else b""
    finally:
        if calibrator is not None:
            calibrator.release()
    if not data:
        raise ModelError(
            "TensorRT failed to build the engine (see its log above; try -v, a larger --workspace, "
            "or `edgedepth lint`)"
        )
    build_s = time.perf_counter() - t0
    if cache is not None:
        Path(plan.timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return data, _engine_io(trt, logger, data), build_s


def _engine_io(trt, logger, data: bytes) -> List[Dict[str, Any]]:
    """I/O names, modes, dtypes and shapes as the built engine reports them ([] if it cannot load here)."""
    from edgedepth.backends.tensorrt.engine import io_summary

    try:
        engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    except Exception:  # noqa: BLE001 - the manifest keeps the ONNX-derived I/O
        return []
    if engine is None:
        return []
    try:
        return io_summary(trt, engine)
    finally:
        del engine


def engine_is_current(
    plan: BuildPlan, trt_version: str, gpu_sm: Optional[str] = None
) -> Optional[Dict[str, Any]]:
    """The manifest of an engine already built from this ONNX with these settings and TensorRT (and for
    this GPU's SM when known), else None."""
    import json

    eng, man = Path(plan.engine_path), Path(plan.manifest_path)
    if not (eng.is_file() and man.is_file()):
        return None
    try:
        manifest = json.loads(man.read_text())
        check_engine_manifest(manifest, trt_version, gpu_sm, plan.onnx_sha256)
    except (OSError, ValueError, ModelError):
        return None
    want = {k: v for k, v in plan.to_dict().items() if k not in ("inputs", "outputs", "onnx_sha256", "notes")}
    built = {k: v for k, v in (manifest.get("builder") or {}).items() if k != "notes"}
    if {k: built.get(k) for k in want} != want:
        return None
    if manifest.get("engine_sha256") != bundle.file_sha256(eng):
        return None
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
