"""Depth + uncertainty for images of any size from a checkpoint (.pt, torch) or an ONNX file (onnxruntime).

torch is imported only when a .pt checkpoint (or an in-memory torch model) is used, so a device with
the base install can predict from ONNX. The model's preprocessing (input size, normalisation, depth
range) comes from the checkpoint or the ONNX metadata, never from constants. Images are resized to
the model input and the outputs resized back; depth is metric metres clipped to the model's range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from edgedepth.errors import ModelError
from edgedepth.modelmeta import ModelInfo
from edgedepth.preprocess import Preprocessing, resize_depth

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@dataclass
class Prediction:
    depth: np.ndarray  # HxW float32 metres at the image's size
    uncertainty: np.ndarray  # HxW float32 log b at the image's size
    mean_uncertainty: float  # mean of the model-resolution uncertainty map u = log b (device-side score)
    mean_scale: float = float("nan")  # mean of b = exp(u): the expected |log-depth error| of the frame


class Predictor:
    """Runs one model file. `Predictor(path)`; `predict(rgb)`; `predict_many(rgbs)`; `run(batch)`."""

    def __init__(self, path: Any, providers: Optional[Sequence[str]] = None, device: str = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model {self.path} does not exist; pass a checkpoint (.pt) or an ONNX file")
        self.kind = "onnx" if self.path.suffix.lower() == ".onnx" else "torch"
        if self.kind == "torch":
            from edgedepth.checkpoint import checkpoint_info, model_from_checkpoint

            model, ckpt = model_from_checkpoint(self.path, map_location=device)
            self._init_torch(model, checkpoint_info(ckpt), device)
        else:
            self._init_onnx(providers)

    @classmethod
    def from_torch(cls, model: Any, preprocessing: Preprocessing, device: str = "cpu") -> "Predictor":
        """Wrap an in-memory torch model (e.g. during a training round)."""
        self = cls.__new__(cls)
        self.path, self.kind = Path("<memory>"), "torch"
        self._init_torch(model, ModelInfo(preprocessing=preprocessing), device)
        return self

    def _init_torch(self, model: Any, info: ModelInfo, device: str) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.info = info
        self.preprocessing = info.preprocessing
        self.max_batch, self.fixed_batch = 32, None

    def _init_onnx(self, providers: Optional[Sequence[str]]) -> None:
        from edgedepth.backends.onnxruntime.runner import OrtRunner

        # the same runner `edgedepth run` uses, without its fixed-shape IO binding (any batch size here)
        self.runner = OrtRunner(self.path, providers=list(providers or ["CPUExecutionProvider"]),
                                io_binding=False, check_io=False)
        self.session = self.runner.session
        self.info = self.runner.info
        self.preprocessing = self.info.preprocessing
        self.input_name = self.runner.input_name
        self.output_names = self.runner.output_names
        self.fixed_batch = self.runner.fixed_batch
        self.max_batch = self.fixed_batch or 32

    @property
    def size(self) -> Tuple[int, int]:
        return self.preprocessing.size

    def run(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Normalised input (N,3,H,W) float32 -> (depth (N,H,W), uncertainty (N,H,W)) at model size."""
        depths: List[np.ndarray] = []
        uncs: List[np.ndarray] = []
        step = self.max_batch
        for s in range(0, batch.shape[0], step):
            part = np.ascontiguousarray(batch[s:s + step], dtype=np.float32)
            if self.kind == "onnx" and self.fixed_batch and part.shape[0] != self.fixed_batch:
                pad = np.zeros((self.fixed_batch - part.shape[0],) + part.shape[1:], np.float32)
                d, u = self._run_onnx(np.concatenate([part, pad]))
                d, u = d[:part.shape[0]], u[:part.shape[0]]
            else:
                d, u = self._run_torch(part) if self.kind == "torch" else self._run_onnx(part)
            depths.append(d)
            uncs.append(u)
        pre = self.preprocessing
        depth = np.clip(np.concatenate(depths), pre.min_depth, pre.max_depth).astype(np.float32)
        return depth, np.concatenate(uncs).astype(np.float32)

    def _run_torch(self, part: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            d, u = self.model(torch.from_numpy(part).to(self.device))
        return d[:, 0].float().cpu().numpy(), u[:, 0].float().cpu().numpy()

    def _run_onnx(self, part: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        d, u = self.runner.run(part)
        return d[:, 0], u[:, 0]

    def predict_many(self, images: Sequence[np.ndarray]) -> List[Prediction]:
        """RGB uint8 HxWx3 images (any sizes) -> one Prediction each, at each image's size."""
        if not len(images):
            return []
        pre = self.preprocessing
        batch = np.empty((len(images), 3, pre.height, pre.width), dtype=np.float32)
        for i, img in enumerate(images):
            pre.apply(img, out=batch[i:i + 1])
        depth, unc = self.run(batch)
        out = []
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            d = np.clip(resize_depth(depth[i], h, w), pre.min_depth, pre.max_depth)
            out.append(Prediction(d.astype(np.float32), resize_depth(unc[i], h, w).astype(np.float32),
                                  float(unc[i].mean()), float(np.exp(unc[i]).mean())))
        return out

    def predict(self, image: np.ndarray) -> Prediction:
        """One RGB uint8 HxWx3 image -> Prediction at its size."""
        return self.predict_many([image])[0]


def load_predictor(model: Any, providers: Optional[Sequence[str]] = None, device: str = "cpu") -> Predictor:
    """A Predictor from a path, or the Predictor itself if one is passed."""
    return model if isinstance(model, Predictor) else Predictor(model, providers, device)
