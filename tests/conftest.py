"""Shared test helpers. Fixtures are made by the tests themselves; nothing is downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


def cli_env() -> dict:
    """Environment for running `python -m edgedepth` in a subprocess."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable


# -- workstation fixtures shared by tests/export and tests/calibrate -----------------------------


def make_checkpoint(path: Path, size=(64, 64), seed: int = 0) -> Path:
    import torch

    from edgedepth.checkpoint import save_checkpoint
    from edgedepth.models import build_model
    from edgedepth.models.catalog import model_config
    from edgedepth.preprocess import Preprocessing

    torch.manual_seed(seed)
    model = build_model("tiny")
    with torch.no_grad():  # BN statistics that folding must get right
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
    return save_checkpoint(path, model, model_config("tiny"), Preprocessing(*size), name="tiny-test")


def make_folder(root: Path, n: int = 24, size=(48, 64), seed: int = 0) -> Path:
    """rgb/*.png + depth/*.png (uint16 mm): smooth random images, depth correlated with brightness."""
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (9, 9), 3)
        img = np.clip(img.astype(np.float32) * rng.uniform(0.3, 1.5), 0, 255).astype(np.uint8)
        depth = 1.0 + 9.0 * img.mean(axis=2) / 255.0
        cv2.imwrite(str(root / "rgb" / f"{i:04d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "depth" / f"{i:04d}.png"), (depth * 1000).astype(np.uint16))
    return root


@pytest.fixture(scope="session", autouse=True)
def calibration_cache(tmp_path_factory):
    """Keep calibration caches out of the user's ~/.cache during tests."""
    import os

    old = os.environ.get("EDGEDEPTH_CACHE")
    os.environ["EDGEDEPTH_CACHE"] = str(tmp_path_factory.mktemp("edgedepth-cache"))
    yield
    if old is None:
        os.environ.pop("EDGEDEPTH_CACHE", None)
    else:
        os.environ["EDGEDEPTH_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("frames"))


def export_tiny(tmp_path_factory, tiny_ckpt, frames_dir):
    """(bundle dir, export report) of the tiny checkpoint at 64x64, opset 13, in a new directory."""
    from edgedepth.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("bundle")
    report = export_onnx(str(tiny_ckpt), str(out), opset=13, data=str(frames_dir), parity_frames=8)
    return out, report


@pytest.fixture(scope="session")
def export_tiny_bundle():
    """The export_tiny function, for conftests that need a bundle of their own."""
    return export_tiny


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_ckpt, frames_dir):
    """A freshly exported tiny bundle that export tests only read."""
    return export_tiny(tmp_path_factory, tiny_ckpt, frames_dir)
