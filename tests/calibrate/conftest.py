"""Calibration fixtures on top of the shared ones in tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory, exported, frames_dir):
    """The exported bundle after `calibrate --target trt` (minmax, 12 frames)."""
    from edgedepth.calibrate.pipeline import calibrate_model

    bdir, _ = exported
    report = calibrate_model(str(bdir / "model.onnx"), str(frames_dir), "trt", "minmax", n_frames=12)
    return bdir, report
