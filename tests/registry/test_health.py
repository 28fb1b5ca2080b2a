"""HealthCheck: the first frames of a new model decide keep or roll back."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.registry.health import HealthCheck, assess


def good(seed=0):
    return np.random.default_rng(seed).uniform(0.5, 10.0, size=(1, 1, 32, 32)).astype(np.float32)


def test_healthy_model_passes_after_n_frames():
    check = HealthCheck(frames=5, baseline_latency_ms=10.0)
    for i in range(4):
        assert check.observe(good(i), 11.0) is None
    verdict = check.observe(good(4), 11.0)
    assert verdict.healthy and verdict.frames == 5 and verdict.median_latency_ms == pytest.approx(11.0)


def test_nan_rolls_back_at_once():
    check = HealthCheck(frames=10)
    assert check.observe(good(), 5.0) is None
    bad = good()
    bad[0, 0, 3, 4] = np.nan
    bad[0, 0, 5, 6] = np.inf
    verdict = check.observe(bad, 5.0)
    assert verdict is not None and verdict.rollback and "2 of 1024" in verdict.reason and verdict.frames == 2


def test_slow_model_rolls_back():
    lats = [100.0, 50.0] + [25.0] * 8  # warm-up frames excluded; 25 ms vs 10 ms baseline, budget 2x
    verdict = assess([good(i) for i in range(10)], lats, baseline_latency_ms=10.0, latency_budget_factor=2.0)
    assert verdict.rollback and "latency" in verdict.reason
    assert verdict.median_latency_ms == pytest.approx(25.0)
    ok = assess([good(i) for i in range(10)], [100.0, 50.0] + [19.0] * 8, baseline_latency_ms=10.0)
    assert ok.healthy  # the slow warm-up frames alone do not condemn a model


def test_all_zero_or_constant_output_rolls_back():
    zeros = [np.zeros((32, 32), np.float32)] * 6
    assert "degenerate" in assess(zeros, [1.0] * 6).reason
    const = [np.full((32, 32), 3.0, np.float32)] * 6
    assert assess(const, [1.0] * 6).rollback
    mixed = [good(i) for i in range(5)] + [np.zeros((32, 32), np.float32)]
    assert assess(mixed, [1.0] * 6).healthy  # one blank frame out of six is tolerated


def test_load_error_and_absolute_budget():
    assert assess([], [], load_error=RuntimeError("bad engine")).rollback
    assert HealthCheck().load_failed("boom").reason.endswith("boom")
    assert assess([good()] * 4, [30.0] * 4, max_latency_ms=20.0, warmup_frames=0).rollback
    assert assess([None], [1.0]).rollback


def test_latency_rule_has_an_absolute_floor():
    """0.4 ms -> 1.6 ms is scheduler noise at sub-millisecond inference, not a slower model."""
    import numpy as np

    from edgedepth.registry.health import assess

    depths = [np.linspace(1.0, 5.0, 64, dtype=np.float32).reshape(8, 8) for _ in range(10)]
    assert assess(depths, [1.6] * 10, baseline_latency_ms=0.4, latency_budget_factor=2.0).healthy
    slow = assess(depths, [9.0] * 10, baseline_latency_ms=0.4, latency_budget_factor=2.0)
    assert not slow.healthy and "latency" in slow.reason
    assert not assess(depths, [1.6] * 10, baseline_latency_ms=0.4, latency_budget_factor=2.0,
                      min_latency_budget_ms=0.0).healthy
