"""INT8 calibration: frame selection, onnxruntime quantization per target, accuracy gate."""
