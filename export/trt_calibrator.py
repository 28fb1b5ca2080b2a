"""TensorRT implicit-INT8 calibration: the calibrate stage's entry to the shared calibrator
(edgedepth.backends.tensorrt.calibrator)."""

from edgedepth.backends.tensorrt.calibrator import (  # noqa: F401
    CalibrationBatches,
    cache_header_version,
    make_entropy_calibrator,
    read_trt_cache,
    trt_version_code,
    write_trt_cache,
)
