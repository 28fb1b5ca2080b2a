"""One exception root for the toolkit. Messages say what went wrong and what to do next."""

from __future__ import annotations


class EdgeDepthError(Exception):
    """Base class of every error edgedepth raises on purpose (bad input, missing extra, ...)."""


class ConfigError(EdgeDepthError):
    """A config file or command-line combination is invalid."""


class DataError(EdgeDepthError):
    """An input file (image, depth map, dataset, upload) is missing, unreadable or inconsistent."""


class ModelError(EdgeDepthError):
    """A checkpoint, ONNX model or engine cannot be loaded or does not match its manifest."""


class MissingDependencyError(EdgeDepthError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class GateRefused(EdgeDepthError):
    """An accuracy gate refused an artifact (quantized model or promotion candidate)."""


class SourceError(EdgeDepthError):
    """A camera or stream source cannot be opened or has failed."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"'{module}' is not installed: install the '{extra}' extra "
            f"(pip install 'edgedepth[{extra}]')"
            + (" or use the TensorRT/pycuda that JetPack provides" if extra == "trt" else "")
            + f" ({exc})"
        ) from exc
