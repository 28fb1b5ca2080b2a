"""Depth metrics against hand-computed values (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgedepth.metrics import (
    depth_metrics,
    format_metrics_table,
    frame_metrics,
    mean_metrics,
    rankdata,
    spearman,
)


def test_frame_metrics_match_hand_computed_values():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]], dtype=np.float32)  # last pixel invalid
    pred = np.array([[1.1, 1.5], [4.0, 9.0]], dtype=np.float32)
    m = frame_metrics(pred, gt)
    # valid pairs: (1.1, 1), (1.5, 2), (4, 4)
    assert m["abs_rel"] == pytest.approx((0.1 / 1 + 0.5 / 2 + 0) / 3)
    assert m["sq_rel"] == pytest.approx((0.01 / 1 + 0.25 / 2 + 0) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0.25 + 0) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(1.1) ** 2 + math.log(0.75) ** 2) / 3))
    # ratios 1.1, 1.333, 1.0 -> d1 = 2/3, d2 = d3 = 1
    assert m["d1"] == pytest.approx(2 / 3)
    assert m["d2"] == pytest.approx(1.0) and m["d3"] == pytest.approx(1.0)
    # log ratios log(1.1), log(0.75), 0: median 0 = the global scale; the rest is scale-invariant
    assert m["log_scale"] == pytest.approx(0.0)
    assert m["si_abs_log"] == pytest.approx((math.log(1.1) - math.log(0.75)) / 3)


def test_predictions_are_clipped_and_out_of_range_truth_ignored():
    gt = np.array([2.0, 50.0, 0.05, np.nan])
    pred = np.array([100.0, 1.0, 1.0, 1.0])
    m = frame_metrics(pred, gt, min_depth=0.1, max_depth=10.0)
    # only gt=2.0 is valid; prediction clipped to 10 -> |10-2|/2 = 4
    assert m["abs_rel"] == pytest.approx(4.0)
    assert m["d3"] == 0.0
    assert frame_metrics(pred, np.zeros(4)) is None


def test_dataset_mean_is_over_frames_and_skips_empty_frames():
    a = (np.array([2.0, 2.0]), np.array([1.0, 1.0]))  # abs_rel 1.0
    b = (np.array([1.0, 1.0]), np.array([1.0, 1.0]))  # abs_rel 0.0
    c = (np.array([1.0]), np.array([0.0]))  # no valid pixel
    m = depth_metrics([a[0], b[0], c[0]], [a[1], b[1], c[1]])
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["frames"] == 2
    empty = mean_metrics([None])
    assert empty["frames"] == 0 and math.isnan(empty["abs_rel"])
    assert "AbsRel" in format_metrics_table({"all": m})


def test_spearman_and_ranks():
    assert list(rankdata([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # hand value: ranks a=(1,2,3,4,5), b=(2,1,4,3,5): d^2 sum = 4 -> 1 - 6*4/(5*24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_frame_uncertainty_aggregations():
    from edgedepth.metrics import frame_uncertainty

    u = np.log(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert frame_uncertainty(u) == pytest.approx(0.25)  # mean of b = exp(u)
    assert frame_uncertainty(u[None, None]) == pytest.approx(0.25)  # (1,1,H,W) maps from a runtime
    assert frame_uncertainty(u, method="mean_u") == pytest.approx(np.log([0.1, 0.2, 0.3, 0.4]).mean())
    assert frame_uncertainty(u, valid=np.array([[True, False], [False, True]])) == pytest.approx(0.25)
    assert frame_uncertainty(u, valid=np.array([[False, False], [True, True]])) == pytest.approx(0.35)
    assert frame_uncertainty(u, method="q90_b") == pytest.approx(np.exp(np.quantile(u, 0.9)))
    assert math.isnan(frame_uncertainty(u, valid=np.zeros((2, 2), bool)))
    with pytest.raises(ValueError):
        frame_uncertainty(u, method="max")


def test_a_pure_scale_error_is_all_log_scale_and_no_scale_invariant_error():
    gt = np.array([1.0, 2.0, 5.0, 9.0])
    m = frame_metrics(gt * 2.0, gt)
    assert m["log_scale"] == pytest.approx(math.log(2.0))
    assert m["si_abs_log"] == pytest.approx(0.0, abs=1e-12)
