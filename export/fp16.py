"""FP16 copy of an ONNX model with FP32 inputs/outputs, for strongly typed TensorRT 11 FP16 engines.

Runs on the workstation (it needs `onnx`, which a device install does not have); the board's build then
parses BUNDLE/model.fp16.onnx, whose metadata names the sha256 of the FP32 model it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgedepth.backends.tensorrt.build import KEY_FP16_OF, MODEL_FP16
from edgedepth.errors import require
from edgedepth.fsutil import file_sha256


def write_fp16_onnx(src, dst: Optional[str] = None) -> Path:
    """Convert `src` to FP16 (keep_io_types) into `dst` (default: model.fp16.onnx beside it)."""
    onnx = require("onnx", "train")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = Path(src)
    out = Path(dst) if dst else src.with_name(MODEL_FP16)
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    props = {p.key: p.value for p in model.metadata_props}
    props[KEY_FP16_OF] = file_sha256(src)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    tmp = out.with_name(f".{out.name}.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out
