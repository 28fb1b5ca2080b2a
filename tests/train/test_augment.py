"""Augmentations keep metric depth true to the picture."""

from __future__ import annotations

import pytest
import torch

from edgedepth.train.augment import Augment

GEOMETRY_ONLY = dict(flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0, channel_gain=0.0, noise_std=0.0)


def _ramp(b: int, h: int = 48, w: int = 64) -> torch.Tensor:
    """An image whose value is the column index: its slope measures the horizontal magnification."""
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w) / w
    return cols.expand(b, 3, h, w).clone()


def test_zoom_divides_depth_by_the_magnification_of_the_picture():
    gen = torch.Generator().manual_seed(3)
    aug = Augment(zoom=0.5, zoom_prob=1.0, **GEOMETRY_ONLY)
    rgb, depth = _ramp(16), torch.full((16, 1, 48, 64), 4.0)
    out_rgb, out_depth = aug(rgb, depth, gen)
    # the slope of the ramp in the middle of the frame, relative to the original: 1 / magnification s
    mid = out_rgb[:, 0, 24, 16:48]
    slope = (mid[:, -1] - mid[:, 0]) / (31 / 64)
    scale = out_depth[:, 0, 24, 32] / 4.0  # depth is divided by s
    assert torch.all(scale < 1.0) and torch.all(scale >= 1 / 1.5 - 1e-6)
    assert torch.allclose(slope, scale, atol=0.01), (slope, scale)
    # one factor per frame: a constant plane stays constant
    flat = out_depth.view(16, -1)
    assert torch.allclose(flat.min(dim=1).values, flat.max(dim=1).values)


def test_zoom_never_blends_invalid_depth_into_valid_pixels():
    gen = torch.Generator().manual_seed(0)
    aug = Augment(zoom=0.25, zoom_prob=1.0, **GEOMETRY_ONLY)
    depth = torch.full((8, 1, 48, 64), 2.0)
    depth[:, :, :, 30:34] = 0.0  # an invalid band
    _, out = aug(torch.rand(8, 3, 48, 64), depth, gen)
    for frame in out:
        values = torch.unique(frame)
        assert len(values) <= 2 and values.min() == 0.0  # 0 stays 0; every valid pixel is 2 / s


def test_zoom_off_or_unchosen_leaves_geometry_alone():
    gen = torch.Generator().manual_seed(1)
    rgb, depth = torch.rand(4, 3, 48, 64), torch.rand(4, 1, 48, 64) + 1
    for aug in (Augment(zoom=0.0, **GEOMETRY_ONLY), Augment(zoom=0.5, zoom_prob=0.0, **GEOMETRY_ONLY)):
        out_rgb, out_depth = aug(rgb, depth, gen)
        assert torch.allclose(out_depth, depth)
        assert torch.allclose(out_rgb, rgb, atol=1e-5)


@pytest.mark.parametrize("zoom", [-0.1, 1.5])
def test_train_config_rejects_a_zoom_out_of_range(zoom, tmp_path):
    from edgedepth.errors import ConfigError
    from edgedepth.train.config import TrainConfig

    (tmp_path / "rgb").mkdir()  # a folder-format dataset, as far as the spec check looks
    with pytest.raises(ConfigError, match="zoom"):
        TrainConfig(data=[str(tmp_path)], out=str(tmp_path / "run"), epochs=1, zoom=zoom).validate()
