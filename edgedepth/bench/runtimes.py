"""The runtimes `edgedepth bench` compares, each behind the same calls: `infer(batch) -> depth`, `close()`.

A `RuntimeSpec` is plain data (JSON-able) so the same runtime can be rebuilt in a fresh subprocess for
its peak-memory figure. `discover_runtimes` lists, for one input size, every runtime the bundle and
this machine could offer, and for each one it cannot, the reason:

    pytorch        PyTorch eager on the CPU, from the checkpoint (--checkpoint, or found via the bundle)
    pytorch-cuda   the same on a CUDA GPU, when torch sees one
    opencv         OpenCV DNN (cv2.dnn.readNetFromONNX) on model.onnx
    ort-fp32       ONNX Runtime CPU, model.onnx
    ort-int8-cpu   ONNX Runtime CPU, model.int8.cpu.onnx
    ort-int8-trt   ONNX Runtime CPU, model.int8.trt.onnx (the TensorRT-target Q/DQ graph)
    ort-cuda       ONNX Runtime CUDA execution provider, model.onnx
    trt-<prec>     TensorRT engines in BUNDLE/engines (edgedepth's TensorRT backend)

Every runtime gets the same preprocessed float32 (1,3,H,W) batch and returns depth in metres (H,W).
torch, onnx, onnxruntime and OpenCV are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth import bundle as bundle_layout
from edgedepth.errors import ConfigError, EdgeDepthError, ModelError
from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_SELECTION, Preprocessing
from edgedepth.sizes import NETWORK_MULTIPLE
from edgedepth.sizes import parse_sizes as parse_sizes_text

log = logging.getLogger(__name__)

# key -> (label, engine, precision, device); the order is the table's order.
RUNTIMES: Dict[str, Tuple[str, str, str, str]] = {
    "pytorch": ("PyTorch eager", "pytorch", "fp32", "cpu"),
    "opencv": ("OpenCV DNN", "opencv", "fp32", "cpu"),
    "ort-fp32": ("ONNX Runtime FP32", "onnxruntime", "fp32", "cpu"),
    "ort-int8-cpu": ("ONNX Runtime INT8 (cpu layout)", "onnxruntime", "int8", "cpu"),
    "ort-int8-trt": ("ONNX Runtime INT8 (trt Q/DQ)", "onnxruntime", "int8", "cpu"),
    "pytorch-cuda": ("PyTorch eager CUDA", "pytorch", "fp32", "cuda"),
    "ort-cuda": ("ONNX Runtime CUDA EP", "onnxruntime", "fp32", "cuda"),
    "trt": ("TensorRT", "tensorrt", "", "cuda"),
}
LOOP_KEY = "loop"  # not a runtime: the live loop's pipeline efficiency
SELECTABLE = tuple(RUNTIMES) + (LOOP_KEY,)
ORT_FILES = {"ort-fp32": bundle_layout.MODEL_FP32, "ort-int8-cpu": bundle_layout.MODEL_INT8_CPU,
             "ort-int8-trt": bundle_layout.MODEL_INT8_TRT, "ort-cuda": bundle_layout.MODEL_FP32}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class RuntimeSpec:
    """One runtime at one input size: enough to rebuild it in another process."""

    key: str
    label: str
    engine: str
    precision: str
    device: str
    path: str
    height: int
    width: int
    threads: int
    note: str = ""
    options: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RuntimeSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Unavailable:
    """A runtime that is not part of this run, and why."""

    key: str
    label: str
    reason: str
    precision: str = ""
    device: str = ""


def parse_backends(text: Optional[str]) -> List[str]:
    """'all' / None -> every key; else a comma list checked against SELECTABLE (trt-fp16 style allowed)."""
    if text is None or text.strip() in ("", "all"):
        return list(SELECTABLE)
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in SELECTABLE and not k.startswith("trt-")]
    if bad:
        raise ConfigError(f"unknown backend(s) {', '.join(bad)}; choose from {', '.join(SELECTABLE)} "
                          "(trt-fp16 / trt-int8 pick one TensorRT precision)")
    return keys


def parse_sizes(text: Optional[str]) -> List[Tuple[int, int]]:
    """'224x224,320x320' -> [(224, 224), (320, 320)]; each side a positive multiple of 32."""
    return parse_sizes_text(text, multiple_of=NETWORK_MULTIPLE)


# ------------------------------------------------------------------------------------------- discovery
def find_checkpoint(bundle: Path, explicit: Optional[str], manifest: Dict[str, Any]
                    ) -> Tuple[Optional[Path], str]:
    """(checkpoint, note) for PyTorch eager, or (None, reason).

    Order: --checkpoint; a path named by the bundle's lineage.json / manifest (keys `checkpoint`,
    `checkpoint_path`, also under `export`/`lineage`); a .pt beside or inside the bundle whose SHA-256 is
    the one the exported model records. A found file whose hash differs from the model's is used with a
    note (the two runtimes then run different weights)."""
    from edgedepth.checkpoint import file_sha256

    want = str((manifest.get("model") or {}).get("checkpoint_sha256") or "")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            return None, f"checkpoint {path} does not exist (--checkpoint)"
        return path, _hash_note(path, want, file_sha256)
    candidates: List[Path] = []
    sources: List[Dict[str, Any]] = [manifest, manifest.get("export") or {}, manifest.get("lineage") or {}]
    lineage_file = bundle / bundle_layout.LINEAGE
    if lineage_file.is_file():
        try:
            lineage = json.loads(lineage_file.read_text())
            if isinstance(lineage, dict):
                sources += [lineage, lineage.get("export") or {}]
        except (OSError, ValueError):
            log.warning("bundle %s: unreadable %s ignored", bundle, bundle_layout.LINEAGE)
    for src in sources:
        for key in ("checkpoint", "checkpoint_path", "source_checkpoint"):
            value = src.get(key) if isinstance(src, dict) else None
            if isinstance(value, dict):
                value = value.get("path")
            if isinstance(value, str) and value:
                p = Path(value)
                candidates.append(p if p.is_absolute() else (bundle / p))
    named = [p for p in candidates if p.is_file()]
    for p in named:
        if not want or file_sha256(p) == want:
            return p, f"found via the bundle's lineage ({p})"
    if want:
        for folder in (bundle, bundle.parent):
            for p in sorted(folder.iterdir()):
                if p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and file_sha256(p) == want:
                    return p, f"found beside the bundle by its SHA-256 ({p})"
    if named:
        p = named[0]
        return p, _hash_note(p, want, file_sha256)
    return None, ("no checkpoint: pass --checkpoint CKPT (the bundle's manifest/lineage names none and "
                  "no .pt beside the bundle matches its checkpoint_sha256)")


def _hash_note(path: Path, want: str, sha) -> str:
    if want and sha(path) != want:
        return (f"{path.name}: SHA-256 differs from the checkpoint the bundle was exported from - "
                "PyTorch runs other weights than the ONNX runtimes")
    return str(path)


def _ort_providers() -> List[str]:
    from edgedepth.backends.onnxruntime.session import available_providers

    return available_providers()


def _torch_cuda() -> Tuple[bool, str]:
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} sees no CUDA GPU"
    return True, torch.cuda.get_device_name(0)


def discover_runtimes(bundle: Path, wanted: Sequence[str], size: Tuple[int, int], native: Tuple[int, int],
                      threads: int, checkpoint: Tuple[Optional[Path], str], workdir: Path
                      ) -> Tuple[List[RuntimeSpec], List[Unavailable]]:
    """Runtimes to measure at `size` (HxW) and the ones that cannot run here, with reasons.

    ONNX models are fixed-size; at a size other than the bundle's `native` one the same graph is rewritten
    with that input size into `workdir` (edgedepth's networks are fully convolutional and upsample by
    scale factors). TensorRT engines are only measured at the size they were built for."""
    h, w = size
    specs: List[RuntimeSpec] = []
    skipped: List[Unavailable] = []

    def spec(key: str, path: Path, note: str = "", **kw) -> RuntimeSpec:
        label, engine, precision, device = RUNTIMES[key]
        return RuntimeSpec(key, label, engine, kw.pop("precision", precision), device, str(path), h, w,
                           threads, note, kw)

    def skip(key: str, reason: str, label: Optional[str] = None, precision: Optional[str] = None) -> None:
        base, _, prec, device = RUNTIMES.get(key, RUNTIMES["trt"])
        skipped.append(Unavailable(key, label or base, reason, precision if precision is not None else prec,
                                   device))

    onnx_at_size: Dict[str, Path] = {}

    def onnx_file(name: str) -> Optional[Path]:
        src = bundle / name
        if (h, w) == tuple(native) or name in onnx_at_size:
            return onnx_at_size.get(name, src)
        onnx_at_size[name] = resize_onnx(src, workdir / f"{h}x{w}" / name, h, w)
        return onnx_at_size[name]

    def want(key: str) -> bool:
        return key in wanted or (key == "trt" and any(k.startswith("trt-") for k in wanted))

    providers = _ort_providers()
    for key in RUNTIMES:
        if not want(key):
            continue
        if key in ("pytorch", "pytorch-cuda"):
            ckpt, note = checkpoint
            if ckpt is None:
                skip(key, note)
                continue
            if key == "pytorch-cuda":
                ok, why = _torch_cuda()
                if not ok:
                    skip(key, why)
                    continue
                note = f"{why}; {note}"
            if importlib.util.find_spec("torch") is None:
                skip(key, "torch is not installed (pip install edgedepth[train])")
                continue
            specs.append(spec(key, ckpt, note))
        elif key == "opencv":
            if importlib.util.find_spec("cv2") is None:
                skip(key, "OpenCV (cv2) is not installed")
                continue
            _add_onnx(specs, skip, spec, key, bundle, onnx_file)
        elif key in ORT_FILES:
            if not providers:
                skip(key, "onnxruntime is not installed")
                continue
            if key == "ort-cuda" and "CUDAExecutionProvider" not in providers:
                skip(key, f"onnxruntime here has no CUDAExecutionProvider ({', '.join(providers)})")
                continue
            _add_onnx(specs, skip, spec, key, bundle, onnx_file)
        elif key == "trt":
            _add_engines(specs, skip, spec, bundle, wanted, (h, w))
    return specs, skipped


def _add_onnx(specs, skip, spec, key: str, bundle: Path, onnx_file) -> None:
    name = bundle_layout.MODEL_FP32 if key == "opencv" else ORT_FILES[key]
    if not (bundle / name).is_file():
        target = "cpu" if "cpu" in key else "trt"
        how = f"`edgedepth calibrate BUNDLE/model.onnx --target {target}`"
        refused = "int8" in key and _gate_refused(bundle, target)
        skip(key, f"no {name} in the bundle" + (f": {refused}" if refused else
                                                  f" (make it with {how})" if "int8" in key else ""))
        return
    try:
        path = onnx_file(name)
    except EdgeDepthError as exc:
        skip(key, str(exc))
        return
    if path == bundle / name:
        specs.append(spec(key, path))
    else:
        specs.append(spec(key, path, f"{name} rewritten to this input size", source=str(bundle / name)))


def _gate_refused(bundle: Path, target: str) -> str:
    """Why calibration.json says the INT8 model for `target` was not written ('' when it does not say)."""
    try:
        report = json.loads((bundle / bundle_layout.CALIB_REPORT).read_text())
        entry = report["targets"][target]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not isinstance(entry, dict) or entry.get("written") is not False:
        return ""
    method = entry.get("chosen_method") or entry.get("method_requested") or "?"
    return (f"its calibration ({method}) was refused by the accuracy gate ({bundle_layout.CALIB_REPORT}); "
            "`edgedepth calibrate --allow-drop` writes it anyway")


def _add_engines(specs, skip, spec, bundle: Path, wanted: Sequence[str], size: Tuple[int, int]) -> None:
    from edgedepth.runtime.backends import find_engines

    engines = find_engines(bundle, None)
    picked = [k[4:] for k in wanted if k.startswith("trt-")]
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        missing = "tensorrt" if importlib.util.find_spec("tensorrt") is None else "pycuda"
        for prec in picked or ["fp16", "int8"]:
            skip("trt", f"{missing} is not installed (TensorRT runs on a GPU or Jetson: JetPack's TensorRT "
                        "+ pycuda)", label=f"TensorRT {prec.upper()}", precision=prec)
        return
    if not engines:
        for prec in picked or ["fp16", "int8"]:
            skip("trt", f"no engine in {bundle / bundle_layout.ENGINES_DIR}; build one on this board with "
                        "`edgedepth build BUNDLE --device <board>`", label=f"TensorRT {prec.upper()}",
                 precision=prec)
        return
    for engine in engines:
        parts = engine.name.split(".")  # model.<board>.<precision>.trt<ver>.engine
        board, prec = parts[1], parts[2]
        if picked and prec not in picked:
            continue
        label = f"TensorRT {prec.upper()} ({board})"
        shape = _engine_size(engine)
        if shape is not None and shape != tuple(size):
            skip("trt", f"{engine.name} was built for {shape[0]}x{shape[1]}", label=label, precision=prec)
            continue
        specs.append(spec("trt", engine, f"engine {engine.name}", precision=prec))
        specs[-1].label = label
        specs[-1].key = f"trt-{prec}-{board}"


def _engine_size(engine: Path) -> Optional[Tuple[int, int]]:
    manifest = engine.with_suffix(".json")
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    for io in data.get("io") or []:  # edgedepth build's manifest: the engine's own I/O
        shape = io.get("shape") if isinstance(io, dict) else None
        if io.get("mode") == "input" and isinstance(shape, list) and len(shape) == 4:
            if all(isinstance(x, int) and x > 0 for x in shape[-2:]):
                return int(shape[-2]), int(shape[-1])
    for key in ("input_size", "input", "size"):
        v = data.get(key)
        if isinstance(v, list) and len(v) >= 2 and all(isinstance(x, int) for x in v[-2:]):
            return int(v[-2]), int(v[-1])
    return None


def resize_onnx(src: Path, dst: Path, height: int, width: int) -> Path:
    """Write `src` with input/output spatial sizes HxW and its metadata's preprocessing updated."""
    from edgedepth.errors import require
    from edgedepth.modelmeta import KEY_PREPROCESSING

    onnx = require("onnx", "train")
    model = onnx.load(str(src))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name == OUTPUT_SELECTION and len(dims) == 2:  # (N, K): K follows the map size
            dims[1].dim_param = "selection_length"
            continue
        if len(dims) != 4:
            raise ModelError(f"{src.name}: tensor {value.name} is not 4-D; cannot change its input size")
        dims[2].dim_value, dims[3].dim_value = height, width
    del model.graph.value_info[:]  # stale intermediate shapes; onnxruntime infers them again
    for prop in model.metadata_props:
        if prop.key == KEY_PREPROCESSING:
            pre = Preprocessing.from_json(prop.value)
            prop.value = dataclasses.replace(pre, height=height, width=width).to_json()
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def ensure_model_file(spec: RuntimeSpec) -> None:
    """Write a rewritten-size model again if its temporary file went away (e.g. a /tmp cleaner)."""
    source = spec.options.get("source")
    if source and not Path(spec.path).is_file():
        resize_onnx(Path(source), Path(spec.path), spec.height, spec.width)


# ------------------------------------------------------------------------------------------- runners
class Runner:
    """A loaded runtime. `infer` takes float32 (1,3,H,W) and returns depth (H,W) in metres."""

    def __init__(self, spec: RuntimeSpec):
        self.spec = spec

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Drop the model."""


class TorchRunner(Runner):
    def __init__(self, spec: RuntimeSpec):
        super().__init__(spec)
        import torch

        from edgedepth.checkpoint import model_from_checkpoint

        self.torch = torch
        if spec.device == "cpu":
            torch.set_num_threads(spec.threads)
        model, _ = model_from_checkpoint(spec.path)
        self.device = torch.device("cuda" if spec.device == "cuda" else "cpu")
        self.model = model.to(self.device).eval()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            depth, _unc = self.model(torch.from_numpy(batch).to(self.device))
            out = depth[0, 0].cpu().numpy()  # .cpu() waits for a GPU to finish
        return out

    def close(self) -> None:
        self.model = None


class OpenCVRunner(Runner):
    def __init__(self, spec: RuntimeSpec):
        super().__init__(spec)
        import cv2

        cv2.setNumThreads(spec.threads)
        try:
            net = cv2.dnn.readNetFromONNX(spec.path)
        except cv2.error as exc:
            raise ModelError(f"OpenCV {cv2.__version__} cannot load {Path(spec.path).name}: "
                             f"{_first_line(exc)}") from exc
        if net is None or net.empty():
            raise ModelError(f"OpenCV {cv2.__version__} returned an empty network for {Path(spec.path).name}")
        # defaults: OpenCV's own backend on the CPU (OpenCV 5's graph engine warns if they are set)
        names = list(net.getUnconnectedOutLayersNames())
        self.output = OUTPUT_DEPTH if OUTPUT_DEPTH in names else (names[0] if names else "")
        self.net, self.cv2 = net, cv2

    def infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            self.net.setInput(batch, INPUT_NAME)
            out = self.net.forward(self.output) if self.output else self.net.forward()
        except self.cv2.error as exc:
            raise ModelError(f"OpenCV DNN forward failed: {_first_line(exc)}") from exc
        return np.asarray(out).reshape(batch.shape[2], batch.shape[3])

    def close(self) -> None:
        self.net = None


class BackendRunner(Runner):
    """edgedepth's own runtime backends (ONNX Runtime, TensorRT): what `edgedepth run` executes."""

    def __init__(self, spec: RuntimeSpec):
        super().__init__(spec)
        if spec.engine == "tensorrt":
            from edgedepth.backends.tensorrt.engine import TrtRunner

            self.backend = TrtRunner(spec.path)
        else:
            from edgedepth.backends.onnxruntime.runner import OrtRunner
            from edgedepth.backends.onnxruntime.session import providers_for

            providers = providers_for("ort-cuda" if spec.device == "cuda" else "ort-cpu")
            self.backend = OrtRunner(spec.path, providers=providers, threads=spec.threads)
        want = (1, 3, spec.height, spec.width)
        if tuple(self.backend.input_shape) != want:
            raise ModelError(f"{Path(spec.path).name} takes {self.backend.input_shape}, not {want}")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        depth, _unc = self.backend.infer(batch)
        return depth[0, 0]

    def close(self) -> None:
        self.backend.close()


RUNNERS = {"pytorch": TorchRunner, "opencv": OpenCVRunner, "onnxruntime": BackendRunner,
           "tensorrt": BackendRunner}


def library_module(spec: RuntimeSpec) -> str:
    """The library a runtime loads (imported first in the memory probe, to split library and model cost)."""
    return {"pytorch": "torch", "opencv": "cv2", "onnxruntime": "onnxruntime", "tensorrt": "tensorrt"}[
        spec.engine]


def open_runner(spec: RuntimeSpec) -> Runner:
    """Load the runtime and check one inference gives a finite (H,W) depth map; ModelError otherwise."""
    try:
        runner = RUNNERS[spec.engine](spec)
    except EdgeDepthError:
        raise
    except Exception as exc:  # each library raises its own types for a model it cannot take
        raise ModelError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    probe = np.zeros((1, 3, spec.height, spec.width), dtype=np.float32)
    try:
        depth = runner.infer(probe)
    except EdgeDepthError:
        runner.close()
        raise
    except Exception as exc:  # a runtime that loads but cannot execute the graph
        runner.close()
        raise ModelError(f"first inference failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    if depth.shape != (spec.height, spec.width) or not np.all(np.isfinite(depth)):
        runner.close()
        raise ModelError(f"output is not a finite {spec.height}x{spec.width} depth map (got {depth.shape})")
    return runner


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # OpenCV's messages end with the useful line ("error: (-2:Unspecified error) ... in function ...").
    line = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else repr(exc))
    return line[:300]
