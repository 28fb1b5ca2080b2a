"""The teacher interface: a bigger depth model that labels frames for a smaller one to learn from.

Every teacher (an edgedepth checkpoint, any ONNX depth model, a Hugging Face transformers model) turns
RGB uint8 frames of any size into one float32 map per frame at that frame's size, in its output kind:
metric depth (metres), relative depth, or relative inverse depth (disparity); see
edgedepth.teachers.align for how relative outputs become metric. `identity` names the model and every
setting that changes its output, so cached labels (edgedepth.teachers.cache) are reused only for the
same teacher.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edgedepth.errors import ConfigError
from edgedepth.preprocess import IMAGENET_MEAN, IMAGENET_STD
from edgedepth.teachers.align import DISPARITY, METRIC, OUTPUT_DOC, OUTPUT_KINDS, RELATIVE

__all__ = ["DISPARITY", "METRIC", "OUTPUT_KINDS", "RELATIVE", "Teacher", "TeacherOptions", "input_size"]


@dataclass
class TeacherOptions:
    """What the command line may say about a teacher; None = detect (model metadata, then defaults)."""

    output: Optional[str] = None  # metric | relative | disparity
    size: Optional[Tuple[int, int]] = None  # network input HxW (rounded to `multiple`)
    multiple: Optional[int] = None  # input sides must be multiples of this (14 for ViT-S/14 backbones)
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8

    def validate(self) -> "TeacherOptions":
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise ConfigError(f"teacher output must be one of {', '.join(OUTPUT_KINDS)}, got {self.output!r}")
        if self.multiple is not None and self.multiple < 1:
            raise ConfigError(f"--teacher-multiple must be >= 1, got {self.multiple}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"teacher input size must be HEIGHTxWIDTH, got {self.size}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) != 3:
                raise ConfigError(f"--teacher-{name} needs three comma-separated values, got {v}")
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError("--teacher-std values must be > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"teacher device must be auto, cpu or cuda, got {self.device!r}")
        if self.batch_size < 1:
            raise ConfigError("teacher batch size must be >= 1")
        return self

    def key(self) -> Dict[str, object]:
        """The settings that change the output (not device or batch size)."""
        d = asdict(self)
        d.pop("device")
        d.pop("batch_size")
        return d


def input_size(image_hw: Tuple[int, int], size: Optional[Tuple[int, int]], multiple: int,
               short_side: int = 518) -> Tuple[int, int]:
    """The network input HxW for an image: `size` if given, else the image scaled so its short side is
    `short_side`, keeping the aspect ratio; both sides rounded to the nearest multiple of `multiple`."""
    if size is not None:
        h, w = size
    else:
        ih, iw = image_hw
        f = short_side / float(min(ih, iw))
        h, w = ih * f, iw * f
    m = max(1, int(multiple))
    return max(m, int(round(h / m)) * m), max(m, int(round(w / m)) * m)


def normalise(rgb: np.ndarray, hw: Tuple[int, int], mean, std) -> np.ndarray:
    """RGB uint8 HxWx3 -> (3,h,w) float32: resized (bicubic), /255, minus mean, over std."""
    h, w = hw
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def to_image_size(out: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """A model-resolution map resized (bilinear) to the image's HxW."""
    h, w = hw
    out = np.asarray(out, np.float32)
    if out.shape == (h, w):
        return out
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def use_cuda(device: str) -> bool:
    if device == "cpu":
        return False
    try:
        import torch
    except ImportError:
        return False
    ok = bool(torch.cuda.is_available())
    if device == "cuda" and not ok:
        raise ConfigError("--teacher-device cuda: no CUDA device is visible to torch")
    return ok


class Teacher:
    """Base class. Subclasses set `kind`, `source`, `identity_parts` and implement `_predict`."""

    kind: str = METRIC
    source: str = ""
    backend: str = ""
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    multiple: int = 1
    size: Optional[Tuple[int, int]] = None
    batch_size: int = 8
    detected: Dict[str, str]  # field -> where its value came from (metadata, option, default)

    def __init__(self) -> None:
        self.detected = {}
        self.frames_run = 0  # frames actually sent through the model (cache misses)

    # -- identity ----------------------------------------------------------------------------------
    def identity_parts(self) -> Dict[str, object]:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """sha256 of the model and every setting that changes the labels."""
        blob = json.dumps({"kind": self.kind, "backend": self.backend, **self.identity_parts()},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def sha256(self) -> str:  # what lineage records
        return self.identity

    @property
    def path(self) -> str:
        return self.source

    # -- prediction --------------------------------------------------------------------------------
    def _predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError

    def predict_many(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        """One float32 map per RGB uint8 image, at its size, in the teacher's output kind; batched."""
        out: List[np.ndarray] = []
        for s in range(0, len(images), self.batch_size):
            part = list(images[s:s + self.batch_size])
            out.extend(np.asarray(o, np.float32) for o in self._predict(part))
            self.frames_run += len(part)
        return out

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.predict_many([rgb])[0]

    def describe(self) -> Dict[str, str]:
        """What was detected, for `edgedepth teacher check`."""
        size = f"{self.size[0]}x{self.size[1]}" if self.size else \
            f"image aspect, short side {getattr(self, 'short_side', 518)}"
        rows = {
            "teacher": self.source,
            "backend": self.backend,
            "output": f"{self.kind} ({OUTPUT_DOC[self.kind]})",
            "input size": f"{size}, multiples of {self.multiple}",
            "normalisation": f"mean {tuple(round(v, 4) for v in self.mean)} "
                             f"std {tuple(round(v, 4) for v in self.std)}",
            "identity": self.identity[:16],
        }
        for k, where in self.detected.items():
            if k in rows:
                rows[k] += f"  [{where}]"
        return rows

