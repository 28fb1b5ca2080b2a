"""Fixtures for the runtime tests: a tiny exported ONNX model (torch/onnx are fine in tests)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

MODEL_H, MODEL_W = 64, 96


def export_tiny_onnx(
    path: Path, height: int = MODEL_H, width: int = MODEL_W, version: str = "7", seed: int = 0
) -> Path:
    """Export build_model("tiny") with edgedepth metadata to `path` (FP32, opset 17, fixed shape)."""
    import onnx
    import torch

    from edgedepth.modelmeta import ModelInfo
    from edgedepth.models import build_model
    from edgedepth.preprocess import INPUT_NAME, OUTPUT_DEPTH, OUTPUT_UNCERTAINTY, Preprocessing

    torch.manual_seed(seed)
    model = build_model("tiny").eval()
    dummy = torch.zeros(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            dummy,
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_DEPTH, OUTPUT_UNCERTAINTY],
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    info = ModelInfo(
        preprocessing=Preprocessing(height=height, width=width),
        name="tiny-test",
        version=version,
        size="tiny",
        checkpoint_sha256="0" * 64,
    )
    for key, value in info.to_metadata_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("model") / "model.onnx")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_onnx) -> Path:
    """A minimal bundle directory: model.onnx only."""
    import shutil

    bundle = tmp_path_factory.mktemp("bundle")
    shutil.copy(tiny_onnx, bundle / "model.onnx")
    return bundle


@pytest.fixture(scope="session")
def onnx_factory():
    """export_tiny_onnx itself, for tests that need another size or version."""
    return export_tiny_onnx

