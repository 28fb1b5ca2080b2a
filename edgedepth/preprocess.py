"""The preprocessing contract that travels with the weights (checkpoint -> ONNX metadata -> runtime).

Pure numpy + OpenCV so the device side can use it without torch. Images are RGB uint8 HxWx3
everywhere inside edgedepth (loaders convert from OpenCV's BGR).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from edgedepth.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Output names of every edgedepth network / ONNX file / engine.
OUTPUT_DEPTH = "depth"  # metric z-depth in metres, shape (N, 1, H, W), strictly positive
OUTPUT_UNCERTAINTY = "uncertainty"  # log of the Laplacian scale b on log-depth, shape (N, 1, H, W)
# optional: the frame selector's per-frame features computed in the graph (export/selection_graph.py):
# [mean exp(uncertainty), log depth every s-th pixel (row-major), 12x16 RGB thumbnail 0..255 (planar)]
OUTPUT_SELECTION = "selection"
SELECTION_THUMB = (12, 16)  # rows, columns
SELECTION_STRIDE = 8  # the maps are sampled every 8 pixels, by the graph and by the CPU alike
SELECTION_NODE_PREFIX = "selection/"  # the branch's node names; calibration keeps them in float
INPUT_NAME = "image"  # normalised RGB, float32, shape (N, 3, H, W); or the camera's uint8 (N, H, W, 3)

# What a model file's input tensor takes (`edgedepth export --input-format`, metadata 'edgedepth.input').
INPUT_FLOAT = "float-nchw"  # normalised RGB float32 (N,3,H,W) at the model's size: preprocess on the CPU
INPUT_UINT8_RGB = "uint8-hwc-rgb"  # the camera's bytes (N,H,W,3) uint8 RGB at the camera's size; the graph
INPUT_UINT8_BGR = "uint8-hwc-bgr"  # ... (or BGR, OpenCV's order) resizes, reorders and normalises itself
INPUT_FORMATS = (INPUT_FLOAT, INPUT_UINT8_RGB, INPUT_UINT8_BGR)

OUTPUT_DOC = {
    OUTPUT_DEPTH: "metric z-depth along the optical axis, metres, float32 (N,1,H,W), > 0",
    OUTPUT_UNCERTAINTY: "per-pixel log(b) of a Laplacian on log-depth; higher = less certain, "
    "expected |log d_true - log d_pred| ~= exp(uncertainty)",
}


def selection_grid(map_hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """The shape of `map[::stride, ::stride]` for a map of `map_hw`."""
    return -(-map_hw[0] // stride), -(-map_hw[1] // stride)


def selection_length(map_hw: Tuple[int, int], stride: int) -> int:
    """Length of the 'selection' output for depth maps of `map_hw` sampled every `stride` pixels."""
    gh, gw = selection_grid(map_hw, stride)
    return 1 + gh * gw + 3 * SELECTION_THUMB[0] * SELECTION_THUMB[1]


@dataclass(frozen=True)
class Preprocessing:
    """Input size, normalisation and depth range a model was trained with."""

    height: int
    width: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    min_depth: float = 0.1
    max_depth: float = 40.0
    depth_units: str = "metres"
    channel_order: str = "RGB"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0 or self.height % 32 or self.width % 32:
            raise ConfigError(
                f"input size {self.height}x{self.width} must be positive multiples of 32 "
                f"(the encoder downsamples 5 times); try {max(32, round(self.height / 32) * 32)}x"
                f"{max(32, round(self.width / 32) * 32)}"
            )
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(f"depth range must satisfy 0 < min_depth < max_depth, got "
                              f"{self.min_depth}..{self.max_depth}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need three values each and std must be positive")

    @property
    def size(self) -> Tuple[int, int]:
        return self.height, self.width

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        return cls.from_dict(json.loads(text))

    def apply(self, rgb: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """RGB uint8 HxWx3 (any size) -> float32 (1, 3, H, W) normalised network input.

        Pass `out` (a preallocated (1,3,H,W) float32 array) to avoid allocations in a hot loop.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ConfigError(f"expected an RGB image HxWx3, got shape {rgb.shape}")
        if rgb.shape[:2] != (self.height, self.width):
            interp = cv2.INTER_AREA if rgb.shape[0] > self.height else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (self.width, self.height), interpolation=interp)
        if out is None:
            out = np.empty((1, 3, self.height, self.width), dtype=np.float32)
        if not rgb.flags.c_contiguous:  # e.g. a BGR->RGB view img[..., ::-1]: OpenCV wants a plain layout
            rgb = np.ascontiguousarray(rgb)
        # per channel: x / 255 / std - mean / std in one OpenCV pass from a contiguous plane into `out`
        # (half the time of numpy on strided HWC views; ~20 us at 96x128)
        for c, plane in enumerate(cv2.split(rgb)):
            cv2.addWeighted(plane, 1.0 / (255.0 * self.std[c]), plane, 0.0, -self.mean[c] / self.std[c],
                            dst=out[0, c], dtype=cv2.CV_32F)
        return out


@dataclass(frozen=True)
class InputSpec:
    """The input tensor of a model file: float (preprocessed on the CPU) or the camera's uint8 image
    at `height` x `width`, which the graph itself resizes to the model's size and normalises."""

    format: str = INPUT_FLOAT
    height: int = 0  # camera image size the uint8 graph takes (0 for float-nchw)
    width: int = 0

    def __post_init__(self) -> None:
        if self.format not in INPUT_FORMATS:
            raise ConfigError(f"unknown input format {self.format!r}; choose one of "
                              f"{', '.join(INPUT_FORMATS)}")
        if self.is_uint8 and (self.height <= 0 or self.width <= 0):
            raise ConfigError(f"input format {self.format} needs the camera's image size, got "
                              f"{self.height}x{self.width}")

    @property
    def is_uint8(self) -> bool:
        return self.format != INPUT_FLOAT

    @property
    def bgr(self) -> bool:
        return self.format == INPUT_UINT8_BGR

    def shape(self, pre: "Preprocessing") -> Tuple[int, int, int, int]:
        """The batch-1 input shape: (1,H,W,3) camera bytes or (1,3,h,w) float at the model's size."""
        return (1, self.height, self.width, 3) if self.is_uint8 else (1, 3, pre.height, pre.width)

    @property
    def dtype(self):
        return np.uint8 if self.is_uint8 else np.float32

    def to_dict(self) -> dict:
        d = {"format": self.format}
        if self.is_uint8:
            d.update(height=self.height, width=self.width, layout="NHWC", dtype="uint8",
                     channel_order="BGR" if self.bgr else "RGB")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        return cls(str(d.get("format", INPUT_FLOAT)), int(d.get("height", 0)), int(d.get("width", 0)))

    def pack(self, rgb: np.ndarray, bgr: Optional[np.ndarray] = None,
             out: Optional[np.ndarray] = None) -> np.ndarray:
        """A camera frame (RGB uint8 HxWx3; `bgr`: the same frame in OpenCV's order when the source had
        it) -> the uint8 graph's (1,H,W,3) input. A frame at the graph's size and channel order is
        passed as a view, no copy; another size is resized here (the graph then only normalises it),
        another channel order is converted into `out`."""
        src = bgr if self.bgr and bgr is not None else rgb
        if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
            raise ConfigError(f"expected a uint8 image HxWx3, got {src.dtype} {src.shape}")
        if src.shape[:2] != (self.height, self.width):
            interp = cv2.INTER_AREA if src.shape[0] > self.height else cv2.INTER_LINEAR
            src = cv2.resize(src, (self.width, self.height), interpolation=interp)
        if self.bgr and src is not bgr:
            if out is None or out.shape != (1, self.height, self.width, 3):
                out = np.empty((1, self.height, self.width, 3), np.uint8)
            cv2.cvtColor(np.ascontiguousarray(src), cv2.COLOR_RGB2BGR, dst=out[0])
            return out
        return np.ascontiguousarray(src)[None]


def resize_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float depth map (HxW) back to an image's size, keeping metric values."""
    if depth.shape[:2] == (height, width):
        return depth
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR)
