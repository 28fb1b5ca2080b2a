"""ONNX Runtime backend of the live loop: edgedepth.backends.onnxruntime under the runtime's names."""

from edgedepth.backends.onnxruntime.runner import OrtRunner, pipeline_threads  # noqa: F401
from edgedepth.backends.onnxruntime.session import PROVIDERS, providers_for  # noqa: F401

OrtBackend = OrtRunner
