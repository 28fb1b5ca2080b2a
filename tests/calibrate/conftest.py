"""Calibration fixtures on top of the shared ones in tests/conftest.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_ckpt, frames_dir, export_tiny_bundle):
    """Calibration writes into its bundle, so it gets its own (the export tests' one stays pristine)."""
    return export_tiny_bundle(tmp_path_factory, tiny_ckpt, frames_dir)


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory, exported, frames_dir):
    """The exported bundle after `calibrate --target trt --device xavier-nx` (minmax, 12 frames)."""
    from edgedepth.calibrate.pipeline import calibrate_model

    bdir, _ = exported
    report = calibrate_model(str(bdir / "model.onnx"), str(frames_dir), "trt", "minmax", n_frames=12,
                             device="xavier-nx")
    return bdir, report
