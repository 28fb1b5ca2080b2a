"""Read an ONNX file's I/O and op types straight from protobuf: kept for imports, see edgedepth.onnxproto."""

from edgedepth.onnxproto import _value_info, graph_summary, graph_summary_bytes, has_qdq  # noqa: F401
