"""TensorRT implicit-INT8 calibrator logic and cache files, tested with a fake base class."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.backends.tensorrt.calibrator import (
    CalibrationBatches,
    make_entropy_calibrator,
    read_trt_cache,
    trt_version_code,
    write_trt_cache,
)
from edgedepth.errors import DataError


class FakeCalibratorBase:
    """What tensorrt.IInt8EntropyCalibrator2 looks like to a subclass."""

    def __init__(self):
        self.base_initialised = True


def test_batches_and_device_pointers(tmp_path):
    x = np.arange(7 * 3 * 2 * 2, dtype=np.float32).reshape(7, 3, 2, 2)
    uploaded = []

    def upload(batch):
        uploaded.append(batch.copy())
        return 1000 + len(uploaded)

    cal = make_entropy_calibrator(x, 3, str(tmp_path / "c.cache"), base=FakeCalibratorBase, upload=upload)
    assert isinstance(cal, FakeCalibratorBase) and cal.base_initialised
    assert cal.get_batch_size() == 3
    assert cal.get_batch(["image"]) == [1001]
    assert cal.get_batch(["image"]) == [1002]
    assert cal.get_batch(["image"]) is None  # the partial 7th frame is dropped
    np.testing.assert_array_equal(uploaded[1], x[3:6])
    assert uploaded[0].flags["C_CONTIGUOUS"]


def test_cache_read_write(tmp_path):
    path = tmp_path / "sub" / "calibration.cache"
    cal = make_entropy_calibrator(np.zeros((2, 3, 4, 4), np.float32), 1, str(path), base=FakeCalibratorBase,
                                  upload=lambda b: 1)
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(b"TRT-8502-EntropyCalibration2\nimage: 3c010204\n"))
    assert path.read_bytes().startswith(b"TRT-8502")
    again = make_entropy_calibrator(None, 1, str(path), base=FakeCalibratorBase)
    assert again.read_calibration_cache() == path.read_bytes()
    assert again.get_batch(["image"]) is None


def test_batches_validate_input():
    with pytest.raises(DataError, match="float32"):
        CalibrationBatches(np.zeros((2, 3, 4, 4), np.float64), 1)
    with pytest.raises(DataError, match="batch size"):
        CalibrationBatches(np.zeros((2, 3, 4, 4), np.float32), 3)
    b = CalibrationBatches(np.zeros((5, 3, 4, 4), np.float32), 2)
    assert len(b) == 2 and len(list(b)) == 2 and b.nbytes == 2 * 3 * 4 * 4 * 4


def test_cache_from_ranges_round_trips(tmp_path):
    assert trt_version_code("8.5.2") == 8502 and trt_version_code("10.3.0") == 100300
    path = write_trt_cache({"image": (-2.1, 2.6), "relu": (0.0, 1.27)}, str(tmp_path / "c"), "8.5.2")
    header, scales = read_trt_cache(str(path))
    assert header == "TRT-8502-EntropyCalibration2"
    assert scales["image"] == pytest.approx(2.6 / 127, rel=1e-6)
    assert scales["relu"] == pytest.approx(0.01, rel=1e-6)
    (tmp_path / "bad").write_text("hello\n")
    with pytest.raises(DataError):
        read_trt_cache(str(tmp_path / "bad"))
