"""Fixtures: a tiny ONNX teacher and a tiny randomly initialised Depth Anything, built by the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from teacher_models import make_hf_depth_anything, make_onnx_teacher  # noqa: E402


@pytest.fixture(scope="session")
def onnx_disparity(tmp_path_factory) -> Path:
    return make_onnx_teacher(tmp_path_factory.mktemp("onnx") / "disp.onnx")


@pytest.fixture(scope="session")
def hf_relative(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return make_hf_depth_anything(tmp_path_factory.mktemp("hf") / "da-relative")
