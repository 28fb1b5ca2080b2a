"""Preprocessing.apply against the formula it implements: (rgb / 255 - mean) / std, NCHW float32."""

import numpy as np
import pytest

from edgedepth.errors import ConfigError
from edgedepth.preprocess import Preprocessing


def _reference(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    x = (rgb.astype(np.float64) / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def test_apply_matches_the_formula_into_a_preallocated_buffer():
    pre = Preprocessing(height=32, width=64, mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    rgb = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    buf = np.full((1, 3, 32, 64), np.nan, np.float32)
    out = pre.apply(rgb, out=buf)
    assert out is buf and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(rgb, pre), atol=1e-5)


def test_apply_takes_views_and_other_sizes():
    pre = Preprocessing(height=32, width=64)
    bgr = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    rgb_view = bgr[..., ::-1]  # negative strides
    np.testing.assert_allclose(
        pre.apply(rgb_view), _reference(np.ascontiguousarray(rgb_view), pre), atol=1e-5
    )
    big = np.repeat(np.repeat(bgr, 2, axis=0), 2, axis=1)  # 64x128 -> area-resized to 32x64
    assert pre.apply(big).shape == (1, 3, 32, 64)
    np.testing.assert_allclose(pre.apply(big), _reference(bgr, pre), atol=1e-5)


def test_apply_rejects_a_grey_image():
    with pytest.raises(ConfigError, match="HxWx3"):
        Preprocessing(height=32, width=64).apply(np.zeros((32, 64), np.uint8))
