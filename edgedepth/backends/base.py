"""The interface every inference backend implements: one loaded model, a batch in, metres out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from edgedepth.modelmeta import ModelInfo


class Outputs(tuple):
    """What `Backend.infer` returns: the pair (depth, uncertainty), which callers unpack as before, and
    `.selection`, the graph's frame-selection features (export/selection_graph.py) or None."""

    selection: Optional[np.ndarray]

    def __new__(cls, depth: np.ndarray, uncertainty: np.ndarray, selection: Optional[np.ndarray] = None):
        obj = super().__new__(cls, (depth, uncertainty))
        obj.selection = selection
        return obj


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
        """(1,3,h,w) float, or (1,H,W,3) camera bytes for a model with preprocessing inside its graph."""
        return self.info.input_shape

    @property
    def input_dtype(self):
        return self.info.input.dtype

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """`input_shape` batch -> depth in metres (1,1,h,w), uncertainty log b (1,1,h,w)."""
        raise NotImplementedError

    def warmup(self, runs: int = 3) -> None:
        batch = np.zeros(self.input_shape, dtype=self.input_dtype)
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
