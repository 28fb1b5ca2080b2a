"""TensorRT implicit-INT8 calibration (what DLA needs on JetPack 5/6): calibrator class and cache file.

The calibrator class is made on demand (`make_entropy_calibrator`) so this module imports without
TensorRT; the batching and cache logic lives in `CalibrationBatches`, testable on its own.

Cache format (text, what TensorRT's calibrators read and write): a header line such as
`TRT-8502-EntropyCalibration2`, then one `tensor_name: <hex>` line per tensor, the hex being the
big-endian IEEE-754 float32 bytes of the scale (= amax / 127).
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from edgedepth.errors import DataError, require

log = logging.getLogger(__name__)


def trt_version_code(version: str) -> int:
    """'8.5.2' -> 8502, '10.3.0' -> 100300 (the number TensorRT writes in cache headers)."""
    parts = [int(p) for p in str(version).split(".")[:3]] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * 1000 + minor * 100 + patch if major < 10 else major * 10000 + minor * 100 + patch


def write_trt_cache(ranges: Dict[str, Tuple[float, float]], path: str, trt_version: str = "8.5.2",
                    algorithm: str = "EntropyCalibration2") -> Path:
    """Write a TensorRT calibration cache from activation ranges ({tensor: (lo, hi)}); symmetric amax."""
    lines = [f"TRT-{trt_version_code(trt_version)}-{algorithm}"]
    for name in sorted(ranges):
        lo, hi = ranges[name]
        amax = max(abs(float(lo)), abs(float(hi)))
        scale = amax / 127.0 if amax > 0 else 1.0 / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def read_trt_cache(path: str) -> Tuple[str, Dict[str, float]]:
    """(header, {tensor: scale}) of a TensorRT calibration cache."""
    text = Path(path).read_text().splitlines()
    if not text or not text[0].startswith("TRT-"):
        raise DataError(f"{path} is not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)")
    scales = {}
    for line in text[1:]:
        if not line.strip():
            continue
        name, _, hexval = line.rpartition(":")
        try:
            scales[name.strip()] = struct.unpack(">f", bytes.fromhex(hexval.strip()))[0]
        except ValueError as exc:
            raise DataError(f"{path}: bad cache line {line!r}") from exc
    return text[0], scales


class CalibrationBatches:
    """Batches of preprocessed frames (N,3,H,W float32) and the cache file, without TensorRT.

    A partial final batch is dropped: TensorRT's calibrators expect exactly `batch_size` per batch.
    """

    def __init__(self, inputs: Optional[np.ndarray], batch_size: int,
                 cache_path: Optional[str] = None) -> None:
        if inputs is None:  # cache-only: TensorRT reads the cache and never asks for a batch
            inputs = np.zeros((0, 3, 1, 1), dtype=np.float32)
            self.inputs, self.batch_size, self.index = inputs, int(batch_size), 0
            self.cache_path = Path(cache_path) if cache_path else None
            return
        if inputs.ndim != 4 or inputs.dtype != np.float32:
            raise DataError(f"calibration inputs must be float32 (N,3,H,W), got {inputs.dtype} "
                            f"{inputs.shape}")
        if batch_size < 1 or batch_size > len(inputs):
            raise DataError(f"batch size {batch_size} must be between 1 and the {len(inputs)} frames")
        self.inputs = inputs
        self.batch_size = int(batch_size)
        self.cache_path = Path(cache_path) if cache_path else None
        self.index = 0

    def __len__(self) -> int:
        return len(self.inputs) // self.batch_size

    @property
    def nbytes(self) -> int:
        return int(self.batch_size * np.prod(self.inputs.shape[1:]) * 4)

    def next_batch(self) -> Optional[np.ndarray]:
        if self.index + self.batch_size > len(self.inputs):
            return None
        batch = np.ascontiguousarray(self.inputs[self.index:self.index + self.batch_size])
        self.index += self.batch_size
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        self.index = 0
        while True:
            b = self.next_batch()
            if b is None:
                return
            yield b

    def read_cache(self) -> Optional[bytes]:
        if self.cache_path is not None and self.cache_path.is_file():
            log.info("using TensorRT calibration cache %s", self.cache_path)
            return self.cache_path.read_bytes()
        return None

    def write_cache(self, cache) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.tmp{os.getpid()}")
        tmp.write_bytes(bytes(cache))
        os.replace(tmp, self.cache_path)


def _pycuda_uploader() -> Callable[[np.ndarray], int]:
    """Host batch -> device pointer, reusing one allocation (pycuda)."""
    cuda = require("pycuda.driver", "trt")
    try:
        import pycuda.autoprimaryctx  # noqa: F401  (TensorRT 8.5+)
    except ImportError:
        import pycuda.autoinit  # noqa: F401
    state: Dict[str, object] = {}

    def upload(batch: np.ndarray) -> int:
        if state.get("nbytes") != batch.nbytes:
            state["mem"] = cuda.mem_alloc(batch.nbytes)
            state["nbytes"] = batch.nbytes
        cuda.memcpy_htod(state["mem"], batch)
        return int(state["mem"])

    return upload


def make_entropy_calibrator(inputs: Optional[np.ndarray], batch_size: int, cache_path: Optional[str] = None,
                            base: Optional[type] = None,
                            upload: Optional[Callable[[np.ndarray], int]] = None):
    """An IInt8EntropyCalibrator2 over `inputs` that reads/writes `cache_path` (inputs None: cache only).

    `base` defaults to tensorrt.IInt8EntropyCalibrator2 and `upload` (host batch -> device pointer) to a
    pycuda allocation; tests pass fakes for both.
    """
    if base is None:
        trt = require("tensorrt", "trt")
        base = trt.IInt8EntropyCalibrator2
    batches = CalibrationBatches(inputs, batch_size, cache_path)
    uploader = upload

    class EntropyCalibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.batches = batches

        def get_batch_size(self) -> int:
            return self.batches.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            nonlocal uploader
            batch = self.batches.next_batch()
            if batch is None:
                return None
            if uploader is None:
                uploader = _pycuda_uploader()
            return [int(uploader(batch))] * max(1, len(names))

        def read_calibration_cache(self) -> Optional[bytes]:
            return self.batches.read_cache()

        def write_calibration_cache(self, cache) -> None:
            self.batches.write_cache(cache)

    return EntropyCalibrator()
