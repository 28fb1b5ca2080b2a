"""ONNX export, parity, lint and TensorRT engine builds (installed as edgedepth.export)."""
