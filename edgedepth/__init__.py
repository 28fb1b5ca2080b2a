"""edgedepth: train, quantize, deploy and continuously improve a compact depth network on Jetson-class GPUs.

Importing this package is cheap: torch, onnx, tensorrt, pycuda and boto3 are imported lazily
inside the functions that need them, so a device with only the base install can run the loop.
"""

__version__ = "0.1.0"

from edgedepth.errors import EdgeDepthError  # noqa: E402

__all__ = ["EdgeDepthError", "__version__"]
