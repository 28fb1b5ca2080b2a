"""TensorRT backend of the live loop: edgedepth.backends.tensorrt under the runtime's names."""

from edgedepth.backends.tensorrt.engine import TrtRunner  # noqa: F401
from edgedepth.backends.tensorrt.manifest import (  # noqa: F401
    check_manifest,
    info_from_manifest,
    read_manifest,
)

TrtBackend = TrtRunner
