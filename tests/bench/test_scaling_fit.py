"""The scaling curve's log-linear fit: slope per doubling, extrapolated crossing, its bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.bench.scaling import StudyConfig
from edgedepth.bench.scaling_fit import loglinear_fit, study_fits
from edgedepth.errors import ConfigError


def _runs(a, b, sizes, noise, seeds=2, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    frames = [n for n in sizes for _ in range(seeds)]
    values = [a + b * np.log2(n) + rng.normal(0, noise) for n in frames]
    return frames, values


def test_slope_per_doubling_and_crossing_beyond_the_data():
    # d1 = 0.5 + 0.03 log2 n reaches 0.86 at log2 n = 12, i.e. 4096 frames: fit on 256..2048 only.
    frames, values = _runs(0.5, 0.03, [256, 512, 1024, 2048], noise=0.0)
    fit = loglinear_fit(frames, values, 0.86, "d1")
    assert fit["per_doubling"] == pytest.approx(0.03) and fit["intercept"] == pytest.approx(0.5)
    assert fit["crossing_frames"] == pytest.approx(4096, rel=1e-6)
    assert fit["crossing_doublings_beyond_largest"] == pytest.approx(1.0)
    assert fit["bootstrap_never"] == 0 and "4.1e+03" in fit["note"]


def test_bootstrap_interval_covers_the_truth_about_as_often_as_it_says():
    hits = 0
    for k in range(20):  # two seeds per size, as the study runs; truth: AbsRel 0.15 at log2 n = 15
        frames, values = _runs(0.30, -0.01, [256, 512, 1024, 2048, 4096], noise=0.004, rng_seed=k)
        fit = loglinear_fit(frames, values, 0.15, "abs_rel", boot=300)
        lo, hi = fit["crossing_90"]
        assert lo < fit["crossing_frames"] < hi and fit["per_doubling"] < 0 < fit["per_doubling_se"]
        hits += lo < 2 ** 15 < hi
    assert hits >= 15  # a nominal 90 % interval


def test_a_curve_moving_away_never_crosses():
    frames, values = _runs(0.8, -0.01, [256, 512, 1024], noise=0.0)
    fit = loglinear_fit(frames, values, 0.9, "d1")
    assert fit["crossing_frames"] is None and "no crossing" in fit["note"]
    with pytest.raises(ConfigError):
        loglinear_fit([256, 256], [0.5, 0.6], 0.9, "d1")  # one size: no slope
    with pytest.raises(ConfigError):
        loglinear_fit([256, 512], [0.5, 0.6], 0.9, "accuracy")


def test_study_fits_use_only_the_sizes_whose_compute_follows_the_rule(tmp_path):
    cfg = StudyConfig(out_dir=str(tmp_path), rule="proportional", steps=64, epochs=4, max_steps=1024)
    rows = [{"frames": n, "filled": {"d1": 0.5 + 0.01 * k, "abs_rel": 0.3 - 0.01 * k}}
            for k, n in enumerate([128, 256, 512, 1024, 4096, 8192])]
    fits = study_fits(cfg, rows, {"filled": {"d1": 0.9, "abs_rel": 0.1}})
    # 128 frames get the 64-step floor (4 epochs would be 32), 8192 the 1024 cap (4 epochs: 2048)
    assert fits["d1"]["fit_frames"] == [256, 512, 1024, 4096]
