"""Fixtures for the engine tests: strict fake pycuda / TensorRT (tests/fakes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).resolve().parents[1] / "fakes"
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))

import fake_pycuda  # noqa: E402
import fake_tensorrt  # noqa: E402,F401


@pytest.fixture
def cuda(monkeypatch):
    """The fake pycuda installed as `pycuda.driver`; after the test: no abort, no leak, nothing left."""
    fake_pycuda.install(monkeypatch)
    yield fake_pycuda
    state = fake_pycuda.check()
    assert state["this_stack"] == 0, "the test thread ended with a CUDA context pushed (pycuda aborts)"
