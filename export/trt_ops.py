"""What each TensorRT release's ONNX parser and DLA accept: the export stage's view of
edgedepth.backends.tensorrt.ops."""

from edgedepth.backends.tensorrt.ops import (  # noqa: F401
    DLA_LIMITS,
    DLA_OPS,
    OP_TABLE,
    QDQ_TYPES,
    first_version_with,
    qdq_types,
    supported_ops,
)
