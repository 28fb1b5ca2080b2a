"""The teachers: an edgedepth model (.pt / edgedepth ONNX), any ONNX depth model, a transformers model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.errors import ConfigError, ModelError
from edgedepth.fsutil import file_sha256
from edgedepth.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edgedepth.teachers.base import (
    DISPARITY,
    METRIC,
    OUTPUT_KINDS,
    Teacher,
    TeacherOptions,
    input_size,
    normalise,
    to_image_size,
    use_cuda,
)

# ONNX metadata a depth model may carry to describe itself (JSON object; every field optional):
# {"output": "metric|relative|disparity", "size": [H, W], "multiple": 14, "mean": [...], "std": [...]}
KEY_TEACHER = "edgedepth.teacher"
DEFAULT_MULTIPLE = 14  # dynamic-shape ONNX depth models are mostly ViT/14 exports (Depth Anything, DPT)


class EdgeDepthTeacher(Teacher):
    """An edgedepth checkpoint (.pt) or an ONNX file exported by `edgedepth export`: metric depth."""

    backend = "edgedepth"

    def __init__(self, path: str, options: TeacherOptions = TeacherOptions()) -> None:
        super().__init__()
        from edgedepth.predictor import load_predictor

        if options.output not in (None, METRIC):
            raise ConfigError(f"{path} is an edgedepth model: its output is metric depth, "
                              f"not {options.output}")
        device = "cuda" if use_cuda(options.device) else "cpu"
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        self.source = str(path)
        self.file_sha256 = file_sha256(path)
        self.predictor = load_predictor(str(path), providers=providers,
                                        device=device if Path(path).suffix != ".onnx" else "cpu")
        pre = self.predictor.preprocessing
        self.kind, self.size, self.mean, self.std = METRIC, pre.size, pre.mean, pre.std
        self.multiple, self.batch_size = 32, options.batch_size
        self.detected = {"output": "edgedepth model", "input size": "model metadata",
                         "normalisation": "model metadata"}

    def identity_parts(self) -> Dict[str, object]:
        return {"sha256": self.file_sha256}

    def _predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        return [p.depth for p in self.predictor.predict_many(images)]


def _onnx_teacher_meta(props: Dict[str, str], source: str) -> Dict[str, object]:
    if KEY_TEACHER not in props:
        return {}
    try:
        meta = json.loads(props[KEY_TEACHER])
    except ValueError as exc:
        raise ModelError(f"{source}: metadata '{KEY_TEACHER}' is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{source}: metadata '{KEY_TEACHER}' must be a JSON object")
    return meta


class OnnxTeacher(Teacher):
    """Any ONNX depth model: input N x 3 x H x W float32, first output (N,1,H,W) or (N,H,W)."""

    backend = "onnxruntime"

    def __init__(self, path: str, options: TeacherOptions = TeacherOptions()) -> None:
        super().__init__()
        import onnxruntime as ort

        self.source = str(path)
        self.file_sha256 = file_sha256(path)
        providers = ["CPUExecutionProvider"]
        if options.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif options.device == "cuda":
            raise ConfigError("--teacher-device cuda: onnxruntime has no CUDA provider here "
                              "(install onnxruntime-gpu)")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        meta = _onnx_teacher_meta(props, self.source)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise ModelError(f"{path}: input {inp.name} has shape {shape}; a depth teacher takes "
                             "N x 3 x H x W")
        fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.fixed_batch = fixed[0]

        def pick(name: str, option, from_meta, default, what: str):
            if option is not None:
                self.detected[what] = "option"
                return option
            if from_meta is not None:
                self.detected[what] = f"metadata {KEY_TEACHER}"
                return from_meta
            self.detected[what] = "default"
            return default

        kind = pick("output", options.output, meta.get("output"), None, "output")
        if kind is None:
            raise ConfigError(f"{path} does not say what it outputs (no '{KEY_TEACHER}' metadata): give "
                              f"--teacher-output {'|'.join(OUTPUT_KINDS)} (Depth Anything, MiDaS and DPT "
                              "output disparity; Metric3D, ZoeDepth and the metric Depth Anything: metric)")
        if kind not in OUTPUT_KINDS:
            raise ModelError(f"{path}: output kind {kind!r} is not one of {', '.join(OUTPUT_KINDS)}")
        self.kind = str(kind)
        if fixed[2] and fixed[3]:
            self.size = (int(fixed[2]), int(fixed[3]))
            self.multiple = 1
            self.detected["input size"] = "fixed in the model's input shape"
            if options.size is not None and tuple(options.size) != self.size:
                raise ConfigError(f"{path} takes a fixed {self.size[0]}x{self.size[1]} input; "
                                  f"--teacher-size {options.size[0]}x{options.size[1]} cannot change it")
        else:
            self.multiple = int(pick("multiple", options.multiple, meta.get("multiple"), DEFAULT_MULTIPLE,
                                     "input size"))
            size = options.size or meta.get("size")
            self.size = tuple(int(v) for v in size) if size else None  # type: ignore[assignment]
        self.mean = tuple(float(v) for v in pick("mean", options.mean, meta.get("mean"), IMAGENET_MEAN,
                                                 "normalisation"))  # type: ignore[assignment]
        self.std = tuple(float(v) for v in (options.std or meta.get("std") or IMAGENET_STD))  # type: ignore
        self.batch_size = self.fixed_batch or options.batch_size
        self.providers = self.session.get_providers()

    def identity_parts(self) -> Dict[str, object]:
        return {"sha256": self.file_sha256, "size": self.size, "multiple": self.multiple,
                "mean": self.mean, "std": self.std}

    def _run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if self.fixed_batch and n != self.fixed_batch:
            pad = np.zeros((self.fixed_batch - n,) + batch.shape[1:], np.float32)
            batch = np.concatenate([batch, pad])
        out = np.asarray(self.session.run(None, {self.input_name: batch})[0], np.float32)
        if out.ndim == 4:
            out = out[:, 0]
        if out.ndim != 3:
            raise ModelError(f"{self.source}: first output has shape {out.shape}; "
                             "expected (N,1,H,W) or (N,H,W)")
        return out[:n]

    def _predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(input_size(img.shape[:2], self.size, self.multiple), []).append(i)
        out: List[Optional[np.ndarray]] = [None] * len(images)
        for hw, idx in groups.items():
            batch = np.stack([normalise(images[i], hw, self.mean, self.std) for i in idx])
            pred = self._run(batch)
            for j, i in enumerate(idx):
                out[i] = to_image_size(pred[j], images[i].shape[:2])
        return out  # type: ignore[return-value]


def _hf_kind(config) -> Tuple[str, str]:
    """(output kind, why) from a transformers config."""
    est = getattr(config, "depth_estimation_type", None)
    if est == "metric":
        return METRIC, "config depth_estimation_type=metric"
    if est == "relative":
        return DISPARITY, "config depth_estimation_type=relative (relative inverse depth)"
    model_type = str(getattr(config, "model_type", ""))
    if model_type in ("zoedepth", "depth_pro"):
        return METRIC, f"model type {model_type}"
    return DISPARITY, f"model type {model_type or '?'} (DPT-style relative inverse depth)"


class HFTeacher(Teacher):
    """A transformers depth-estimation model (hub id after `hf:`, or a save_pretrained folder)."""

    backend = "transformers"

    def __init__(self, name: str, options: TeacherOptions = TeacherOptions()) -> None:
        super().__init__()
        try:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError as exc:
            raise ConfigError("Hugging Face teachers need the 'teachers' extra: "
                              "pip install 'edgedepth[teachers]'") from exc
        self.source = f"hf:{name}" if not Path(name).is_dir() else str(name)
        self.name = name
        self.torch = torch
        self.device = "cuda" if use_cuda(options.device) else "cpu"
        try:
            self.processor = AutoImageProcessor.from_pretrained(name)
            self.model = AutoModelForDepthEstimation.from_pretrained(name).eval().to(self.device)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the transformers depth model {name!r}: {exc}") from exc
        kind, why = _hf_kind(self.model.config)
        self.kind = options.output or kind
        self.detected["output"] = "option" if options.output else why
        proc = self.processor
        self.mean = tuple(getattr(proc, "image_mean", None) or IMAGENET_MEAN)  # type: ignore[assignment]
        self.std = tuple(getattr(proc, "image_std", None) or IMAGENET_STD)  # type: ignore[assignment]
        self.multiple = int(getattr(proc, "ensure_multiple_of", 1) or 1)
        size = getattr(proc, "size", None)
        side = getattr(size, "height", None) or (size.get("height") if isinstance(size, dict) else None)
        self.short_side = int(side or 518)
        self.size = tuple(options.size) if options.size else None  # type: ignore[assignment]
        self.detected["input size"] = "image processor (keep aspect, multiple of "\
                                      f"{self.multiple}, short side {self.short_side})"
        self.detected["normalisation"] = "image processor"
        self.batch_size = options.batch_size
        self._identity = self._weights_identity()

    def _weights_identity(self) -> str:
        p = Path(self.name)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".json", ".safetensors", ".bin"))
            return ",".join(f"{f.name}:{file_sha256(f)}" for f in files)
        return f"{self.name}@{getattr(self.model.config, '_commit_hash', None) or 'unversioned'}"

    def identity_parts(self) -> Dict[str, object]:
        return {"weights": self._identity, "size": self.size}

    def describe(self) -> Dict[str, str]:
        rows = super().describe()
        rows["model type"] = str(getattr(self.model.config, "model_type", "?"))
        rows["device"] = self.device
        return rows

    def _predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        torch = self.torch
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, img in enumerate(images):
            hw = input_size(img.shape[:2], self.size, self.multiple, self.short_side)
            groups.setdefault(hw, []).append(i)
        out: List[Optional[np.ndarray]] = [None] * len(images)
        for hw, idx in groups.items():
            batch = np.stack([normalise(images[i], hw, self.mean, self.std) for i in idx])
            with torch.no_grad():
                pred = self.model(pixel_values=torch.from_numpy(batch).to(self.device)).predicted_depth
            pred = pred.float().cpu().numpy()
            if pred.ndim == 4:
                pred = pred[:, 0]
            for j, i in enumerate(idx):
                out[i] = to_image_size(pred[j], images[i].shape[:2])
        return out  # type: ignore[return-value]


def open_teacher(spec: str, options: Optional[TeacherOptions] = None) -> Teacher:
    """A teacher from `spec`: a .pt checkpoint, an .onnx file (edgedepth export or any depth model),
    `hf:ORG/NAME` (downloads through transformers) or a folder saved with save_pretrained."""
    opts = (options or TeacherOptions()).validate()
    spec = str(spec)
    if spec.startswith("hf:"):
        return HFTeacher(spec[3:], opts)
    p = Path(spec)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"teacher folder {spec} has no config.json: pass a folder written by "
                              "save_pretrained, hf:ORG/NAME, a .pt checkpoint or an .onnx file")
        return HFTeacher(spec, opts)
    if not p.is_file():
        raise ConfigError(f"teacher {spec} does not exist: pass a .pt checkpoint, an .onnx file, "
                          "hf:ORG/NAME or a save_pretrained folder")
    if p.suffix.lower() == ".onnx":
        from edgedepth.modelmeta import KEY_PREPROCESSING
        from edgedepth.onnxproto import onnx_header

        try:  # the metadata props from the file's bytes: no session just to read them
            props = onnx_header(p)["metadata"]
        except (ModelError, OSError) as exc:
            raise ModelError(f"cannot load ONNX model {p}: {exc}") from exc
        if KEY_PREPROCESSING in props:
            return EdgeDepthTeacher(spec, opts)
        return OnnxTeacher(spec, opts)
    return EdgeDepthTeacher(spec, opts)
