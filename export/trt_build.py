"""The `edgedepth build` stage: ONNX -> TensorRT engine for one board. The builder lives in
edgedepth.backends.tensorrt.build (shared with the runtime and the benchmarks); this module keeps the
export stage's import path."""

from edgedepth.backends.tensorrt.build import (  # noqa: F401
    DEFAULT_MAX_BATCH,
    MODEL_FP16,
    BuildPlan,
    _import_trt,
    api_for,
    build_engine,
    engine_is_current,
    engine_manifest,
    gpu_info,
    plan_build,
)
from edgedepth.backends.tensorrt.manifest import ENGINE_FORMAT, check_engine_manifest  # noqa: F401
