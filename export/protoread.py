"""Read an ONNX file straight from protobuf: kept for imports (edgedepth.onnxproto, edgedepth.onnxgraph)."""

from edgedepth.onnxgraph import read_model  # noqa: F401
from edgedepth.onnxproto import _value_info, graph_summary, graph_summary_bytes, has_qdq  # noqa: F401
