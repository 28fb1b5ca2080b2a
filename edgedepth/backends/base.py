"""The interface every inference backend implements: one loaded model, float32 batch in, metres out."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np

from edgedepth.modelmeta import ModelInfo


class Backend:
    """One loaded model. `infer` returns arrays that stay valid for the next `ring - 1` calls."""

    name: str = "backend"
    info: ModelInfo
    model_path: str = ""
    model_sha256: str = ""
    reason: str = ""
    ring: int = 4

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        pre = self.info.preprocessing
        return (1, 3, pre.height, pre.width)

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """float32 (1,3,H,W) -> depth in metres (1,1,H,W), uncertainty log b (1,1,H,W)."""
        raise NotImplementedError

    def warmup(self, runs: int = 3) -> None:
        batch = np.zeros(self.input_shape, dtype=np.float32)
        for _ in range(runs):
            self.infer(batch)

    def close(self) -> None:
        """Release sessions, engines and device memory (safe to call twice, from any thread)."""

    def describe(self) -> str:
        return f"{self.name} ({Path(self.model_path).name}, model {self.info.name} v{self.info.version})"

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
