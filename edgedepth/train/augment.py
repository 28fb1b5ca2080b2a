"""Batch augmentations that keep metric depth consistent, run on the training device.

Allowed: horizontal flip (image and depth together), photometric changes (brightness, contrast,
saturation, per-channel gain, Gaussian noise). Not used: any rescaling or cropping-and-resizing,
which would change the apparent size of objects and so their metric depth under fixed intrinsics.
All randomness comes from an explicit torch.Generator so a run is reproducible for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch


@dataclass
class Augment:
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    channel_gain: float = 0.08
    noise_std: float = 0.03
    noise_prob: float = 0.5

    def __call__(self, rgb: torch.Tensor, depth: torch.Tensor, gen: torch.Generator
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """rgb float (B,3,H,W) in [0,1], depth (B,1,H,W) -> augmented copies."""
        b = rgb.shape[0]

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            r = torch.rand((b,) + shape, generator=gen)
            return (lo + (hi - lo) * r).to(rgb.device)

        if self.flip > 0:
            flip = (torch.rand(b, generator=gen) < self.flip).to(rgb.device)
            if bool(flip.any()):
                rgb = torch.where(flip.view(b, 1, 1, 1), rgb.flip(-1), rgb)
                depth = torch.where(flip.view(b, 1, 1, 1), depth.flip(-1), depth)
        rgb = rgb * uniform(1 - self.brightness, 1 + self.brightness, 1, 1, 1)
        mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - mean) * uniform(1 - self.contrast, 1 + self.contrast, 1, 1, 1) + mean
        grey = rgb.mean(dim=1, keepdim=True)
        rgb = (rgb - grey) * uniform(1 - self.saturation, 1 + self.saturation, 1, 1, 1) + grey
        rgb = rgb * uniform(1 - self.channel_gain, 1 + self.channel_gain, 3, 1, 1)
        if self.noise_std > 0:
            on = (torch.rand(b, 1, 1, 1, generator=gen) < self.noise_prob).to(rgb.dtype).to(rgb.device)
            sigma = uniform(0, self.noise_std, 1, 1, 1) * on
            noise = torch.randn(rgb.shape, generator=gen).to(rgb.device)
            rgb = rgb + noise * sigma
        return rgb.clamp(0.0, 1.0), depth


def to_unit_float(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float32 in [0,1]."""
    return rgb_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(rgb01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The same normalisation as Preprocessing.apply, on a batch in [0,1]."""
    m = torch.tensor(mean, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    return (rgb01 - m) / s
