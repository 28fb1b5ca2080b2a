"""Evaluation protocols (crops, depth caps, median scaling) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.errors import ConfigError
from edgedepth.eval_protocol import Protocol, apply_protocol, crop_mask, median_scale
from edgedepth.metrics import frame_metrics


def box(mask):
    rows, cols = np.where(mask)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1, int(mask.sum())


def test_nyu_eigen_crop():
    assert box(crop_mask(480, 640, "eigen", "nyu")) == (45, 471, 41, 601, 426 * 560)
    # at half size the bounds halve, rounding half up: 22.5 -> 23, 235.5 -> 236, 20.5 -> 21, 300.5 -> 301
    assert box(crop_mask(240, 320, "eigen", "folder")) == (23, 236, 21, 301, 213 * 280)


def test_kitti_eigen_and_garg_crops():
    # 375x1242: eigen rows int(124.66)=124 .. int(342.57)=342, cols int(44.65)=44 .. int(1197.35)=1197
    assert box(crop_mask(375, 1242, "eigen", "kitti")) == (124, 342, 44, 1197, 218 * 1153)
    # garg rows int(153.04)=153 .. int(371.96)=371
    assert box(crop_mask(375, 1242, "garg", "kitti")) == (153, 371, 44, 1197, 218 * 1153)
    assert crop_mask(4, 5, "none").all()
    with pytest.raises(ConfigError, match="unknown crop"):
        crop_mask(4, 5, "square")


def test_median_scaling_by_hand():
    pred = np.array([[1.0, 2.0], [3.0, 10.0]])
    gt = np.full((2, 2), 2.0)
    assert median_scale(pred, gt, np.ones((2, 2), bool)) == pytest.approx(0.8)  # median 2 / median 2.5
    proto = Protocol(median_scaling=True).for_dataset("nyu")
    p, mask, lo, hi = apply_protocol(pred, gt, proto, "nyu", 0.1, 40)
    np.testing.assert_allclose(p, [[0.8, 1.6], [2.4, 8.0]])
    assert (lo, hi) == (1e-3, 10.0)
    m = frame_metrics(p, gt, mask, lo, hi)
    assert m["abs_rel"] == pytest.approx((0.6 + 0.2 + 0.2 + 3.0) / 4)  # |p-g|/g with g = 2: 1.2/2, 0.4/2, ...
    assert m["d1"] == pytest.approx(0.25)  # ratios 2.5, 1.25, 1.2, 4: only 1.2 < 1.25
    p0, mask0, lo, hi = apply_protocol(pred, gt, Protocol().for_dataset("nyu"), "nyu", 0.1, 40)
    m_off = frame_metrics(p0, gt, mask0, lo, hi)
    assert m_off["abs_rel"] == pytest.approx((0.5 + 0 + 0.5 + 4.0) / 4)  # 10 is clipped to 10 m: |10-2|/2


def test_depth_caps_per_dataset_and_model_range_for_folders():
    gt = np.array([[5.0, 9.0, 11.0, 0.0005, 70.0]])
    pred = np.full_like(gt, 50.0)
    _, mask, lo, hi = apply_protocol(pred, gt, Protocol().for_dataset("nyu"), "nyu", 0.1, 40.0)
    assert mask.tolist() == [[True, True, False, False, False]] and hi == 10.0
    _, mask, lo, hi = apply_protocol(pred, gt, Protocol().for_dataset("kitti"), "kitti", 0.1, 40.0)
    assert mask.tolist() == [[True, True, True, False, True]] and (lo, hi) == (1e-3, 80.0)
    proto = Protocol().for_dataset("folder")  # no standard cap: the model's own range, as before
    _, mask, lo, hi = apply_protocol(pred, gt, proto, "folder", 0.1, 40.0)
    assert (lo, hi) == (0.1, 40.0) and mask.tolist() == [[True, True, True, False, False]]
    proto = Protocol(max_depth=20).for_dataset("folder")
    _, mask, lo, hi = apply_protocol(pred, gt, proto, "folder", 0.1, 40)
    assert (lo, hi) == (1e-3, 20.0) and mask.tolist() == [[True, True, True, False, False]]
    m = frame_metrics(pred, gt, mask, lo, hi)  # predictions of 50 m clip to 20 m
    assert m["rmse"] == pytest.approx(np.sqrt(((20 - 5) ** 2 + (20 - 9) ** 2 + (20 - 11) ** 2) / 3))
