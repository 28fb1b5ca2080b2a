"""Batch augmentations that keep metric depth consistent, run on the training device.

Allowed: horizontal flip (image and depth together), photometric changes (brightness, contrast,
saturation, per-channel gain, Gaussian noise) and, optionally, a zoom that divides the depth by the
magnification (`Augment._zoom`). Never a plain rescale or crop-and-resize: it changes the apparent
size of objects without changing their depth, which under fixed intrinsics teaches wrong metric depth.
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
    # metric-consistent zoom: with probability zoom_prob, a crop of 1/s of the frame (s uniform in
    # [1, 1 + zoom]) is resized back to full size and its depth divided by s (see _zoom); 0 = off
    zoom: float = 0.0
    zoom_prob: float = 0.5

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
        if self.zoom > 0:
            rgb, depth = self._zoom(rgb, depth, gen)
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

    def _zoom(self, rgb: torch.Tensor, depth: torch.Tensor, gen: torch.Generator
              ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Magnify each chosen frame by s about a random point and divide its depth by s.

        Under a pinhole camera a point (X, Y, Z) lands at f X / Z; magnifying the picture by s puts it at
        f X / (Z / s), so the zoomed picture is exactly the view of the scene with every depth divided by
        s and every lateral size (object heights, the camera's height above the floor) unchanged: the
        labels stay metric and true to the picture. (A plain crop-and-resize without the depth change
        would teach wrong metric depth.) RGB is resampled bilinearly, depth by nearest neighbour so
        invalid (0) pixels never blend into valid ones.
        """
        import torch.nn.functional as F

        b = rgb.shape[0]
        on = torch.rand(b, generator=gen) < self.zoom_prob
        s = torch.where(on, 1.0 + self.zoom * torch.rand(b, generator=gen), torch.ones(b))
        inv = 1.0 / s
        # the crop's centre, in normalised coordinates, anywhere that keeps the crop inside the frame
        shift = (2.0 * torch.rand(b, 2, generator=gen) - 1.0) * (1.0 - inv).unsqueeze(1)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = inv, inv
        theta[:, :, 2] = shift
        theta = theta.to(rgb.device, rgb.dtype)
        grid = F.affine_grid(theta, list(rgb.shape), align_corners=False)
        rgb = F.grid_sample(rgb, grid, mode="bilinear", padding_mode="border", align_corners=False)
        depth = F.grid_sample(depth, grid, mode="nearest", padding_mode="border", align_corners=False)
        return rgb, depth * inv.view(b, 1, 1, 1).to(depth.device, depth.dtype)


def to_unit_float(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) float32 in [0,1]."""
    return rgb_uint8.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(rgb01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The same normalisation as Preprocessing.apply, on a batch in [0,1]."""
    m = torch.tensor(mean, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    return (rgb01 - m) / s
