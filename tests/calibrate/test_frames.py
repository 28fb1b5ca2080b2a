"""Calibration frames: coverage selection (k-center greedy), hold-out split, folder loading."""

from __future__ import annotations

import numpy as np

from edgedepth.data.frames import FrameSet, embed, k_center_greedy, load_frameset, split_calibration


def _clustered(n_common=30):
    """30 near-identical grey frames, then 3 rare ones (dark, saturated red, high-frequency texture)."""
    rng = np.random.default_rng(0)
    common = np.clip(128 + rng.normal(0, 2, size=(n_common, 32, 32, 3)), 0, 255).astype(np.uint8)
    dark = np.full((1, 32, 32, 3), 10, np.uint8)
    red = np.zeros((1, 32, 32, 3), np.uint8)
    red[..., 0] = 250
    checker = ((np.indices((32, 32)).sum(0) % 2) * 255).astype(np.uint8)[None, :, :, None].repeat(3, axis=3)
    return np.concatenate([common, dark, red, checker])


def test_k_center_covers_rare_frames_that_first_n_misses():
    rgb = _clustered()
    picked = k_center_greedy(embed(rgb), 4)
    assert len(set(picked)) == 4
    assert {30, 31, 32} <= set(picked)  # all three rare frames; the first 4 would be all grey
    assert k_center_greedy(embed(rgb), 100) == list(range(len(rgb)))


def test_split_is_disjoint_deterministic_and_holds_out_a_quarter():
    rgb = _clustered()
    fs = FrameSet(rgb, None, [f"f{i}" for i in range(len(rgb))])
    calib, hold = split_calibration(fs, 8)
    assert not set(calib) & set(hold) and len(calib) == 8
    assert len(hold) == len(rgb) // 4
    assert (calib, hold) == split_calibration(fs, 8)


def test_load_folder_resizes_and_reads_depth(frames_dir):
    fs = load_frameset(str(frames_dir), 32, 64)
    assert fs.rgb.shape == (24, 32, 64, 3) and fs.rgb.dtype == np.uint8
    assert fs.depth.shape == (24, 32, 64) and fs.has_depth
    assert 1.0 <= fs.depth[fs.depth > 0].min() and fs.depth.max() <= 10.01
