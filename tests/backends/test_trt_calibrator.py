"""The implicit-INT8 calibrator's device memory lives on a CUDA owner thread and is freed there."""

from __future__ import annotations

import threading

import fake_pycuda
import fake_tensorrt
import numpy as np


def test_calibrator_uploads_on_an_owner_and_releases_everything(monkeypatch, cuda):
    trt = fake_tensorrt.install(monkeypatch, "10.3.0", cuda=fake_pycuda)
    from edgedepth.backends.tensorrt.calibrator import make_entropy_calibrator

    x = np.arange(4 * 3 * 2 * 2, dtype=np.float32).reshape(4, 3, 2, 2)
    cal = make_entropy_calibrator(x, 2, None, trt=trt)
    assert isinstance(cal, trt.IInt8EntropyCalibrator2)
    ptrs = []
    t = threading.Thread(target=lambda: ptrs.append(cal.get_batch(["image"])))  # TensorRT's build thread
    t.start()
    t.join()
    (ptr,) = ptrs[0]
    alloc = fake_pycuda.S.live[ptr]
    np.testing.assert_array_equal(alloc.data[: x[:2].nbytes].view(np.float32).reshape(2, 3, 2, 2), x[:2])
    assert cal.get_batch(["image"]) == [ptr]  # the one allocation is reused
    assert cal.get_batch(["image"]) is None
    cal.release()
    state = fake_pycuda.check()
    assert state["leaks"] == [] and state["live_bytes"] == 0 and state["primary_retains"] == 0


def test_tensorrt_11_has_no_implicit_int8_calibrator(monkeypatch):
    import pytest

    from edgedepth.backends.tensorrt.calibrator import make_entropy_calibrator
    from edgedepth.errors import ConfigError

    trt = fake_tensorrt.make("11.4.0")
    with pytest.raises(ConfigError, match="removed in 11"):
        make_entropy_calibrator(None, 1, None, trt=trt)
