"""Training losses on log-depth with the network's uncertainty output (u = log b of a Laplacian).

- `laplacian_nll`: |log d* - log d| * exp(-u) + u, the Laplace negative log-likelihood up to a
  constant (Kendall & Gal 2017), averaged over valid pixels. Its minimum over u is at
  exp(u) = |log d* - log d|, so u learns the expected log error (what frame selection ranks by).
- `frame_uncertainty_nll`: the same Laplace likelihood one level up. A frame's score is the mean of
  b = exp(u) over its pixels (`edgedepth.metrics.frame_uncertainty`, what a device ranks frames by)
  and its target is the frame's mean |log error| (detached). The optimum of m / B + log B is
  B = E[m | image], i.e. the expected per-frame error, which is the quantity frame selection needs;
  it agrees with the pixel term's optimum (a mean of calibrated b is the expected mean error) but
  gives the frame-level mean a direct, low-variance signal. Per-frame error is mostly a global scale
  error that no single pixel can see, which the pixel term alone learns poorly.
- `gradient_matching`: a scale-invariant multi-scale gradient term on R = log d - log d*
  (Li & Snavely, MegaDepth) that sharpens depth edges; it is invariant to a global scale, so it
  adds structure without fighting the metric NLL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask (float or bool, same shape); zero (with a gradient path) when mask is empty."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def laplacian_nll(log_pred: torch.Tensor, log_gt: torch.Tensor, u: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
    """Masked mean of |log_gt - log_pred| * exp(-u) + u (all tensors N,1,H,W)."""
    err = (log_gt - log_pred).abs()
    return masked_mean(err * torch.exp(-u) + u, mask)


def frame_uncertainty_nll(log_pred: torch.Tensor, log_gt: torch.Tensor, u: torch.Tensor, mask: torch.Tensor
                          ) -> torch.Tensor:
    """Mean over frames of m / B + log B (m: masked mean |error|, detached; B: mean of exp(u))."""
    m = mask.to(log_pred.dtype)
    count = m.sum(dim=(1, 2, 3))
    err = ((log_gt - log_pred).detach().abs() * m).sum(dim=(1, 2, 3)) / count.clamp_min(1.0)
    b = torch.exp(u).mean(dim=(1, 2, 3))
    per_frame = err / b + torch.log(b)
    keep = (count > 0).to(per_frame.dtype)
    return (per_frame * keep).sum() / keep.sum().clamp_min(1.0)


def gradient_matching(log_pred: torch.Tensor, log_gt: torch.Tensor, mask: torch.Tensor, scales: int = 4
                      ) -> torch.Tensor:
    """Mean over `scales` (x2 subsampling) of the masked L1 of x/y gradients of R = log_pred - log_gt."""
    total = log_pred.new_zeros(())
    r = (log_pred - log_gt) * mask.to(log_pred.dtype)
    m = mask.to(log_pred.dtype)
    used = 0
    for s in range(scales):
        step = 2 ** s
        rs, ms = r[:, :, ::step, ::step], m[:, :, ::step, ::step]
        if rs.shape[-1] < 2 or rs.shape[-2] < 2:
            break
        gx = (rs[..., :, 1:] - rs[..., :, :-1]).abs()
        mx = ms[..., :, 1:] * ms[..., :, :-1]
        gy = (rs[..., 1:, :] - rs[..., :-1, :]).abs()
        my = ms[..., 1:, :] * ms[..., :-1, :]
        denom = (mx.sum() + my.sum()).clamp_min(1.0)
        total = total + ((gx * mx).sum() + (gy * my).sum()) / denom
        used += 1
    return total / max(used, 1)


@dataclass
class DepthLoss:
    """Laplacian NLL + `grad_weight` x gradient matching, on log-depth over valid pixels."""

    grad_weight: float = 0.5
    grad_scales: int = 4
    # "nll": the NLL alone trains depth and uncertainty. "decoupled": depth is trained by plain L1 on
    # log-depth and the NLL trains only the uncertainty (error detached), so confident-looking hard
    # pixels are not down-weighted while the depth is still being learned.
    mode: str = "nll"
    # weight of `frame_uncertainty_nll` (0 = off): trains the per-frame mean of b to the frame's error
    frame_weight: float = 0.0

    def __call__(self, depth: torch.Tensor, uncertainty: torch.Tensor, gt: torch.Tensor,
                 valid: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """(total loss, parts as floats). depth/uncertainty are network outputs, gt metres (0 = invalid)."""
        if depth.shape != gt.shape:
            depth = F.interpolate(depth, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            uncertainty = F.interpolate(uncertainty, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        log_pred = torch.log(depth)
        log_gt = torch.log(gt.clamp_min(1e-6))
        if self.mode == "decoupled":
            nll = laplacian_nll(log_pred.detach(), log_gt, uncertainty, valid)
            l1 = masked_mean((log_gt - log_pred).abs(), valid)
            total = nll + l1
        elif self.mode == "nll":
            nll = laplacian_nll(log_pred, log_gt, uncertainty, valid)
            total = nll
        else:
            raise ValueError(f"unknown loss mode {self.mode!r}; use 'nll' or 'decoupled'")
        parts = {"nll": float(nll.detach())}
        if self.frame_weight > 0:
            frame = frame_uncertainty_nll(log_pred, log_gt, uncertainty, valid)
            total = total + self.frame_weight * frame
            parts["frame_nll"] = float(frame.detach())
        if self.grad_weight > 0:
            grad = gradient_matching(log_pred, log_gt, valid, self.grad_scales)
            total = total + self.grad_weight * grad
            parts["grad"] = float(grad.detach())
        with torch.no_grad():
            parts["l1_log"] = float(masked_mean((log_gt - log_pred).abs(), valid))
        return total, parts


def align_inverse_depth(depth: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image least-squares scale s and shift t with s / depth + t ~= 1 / target over `mask`:
    the prediction's inverse depth, aligned (N,1,H,W; differentiable in `depth`)."""
    m = mask.to(depth.dtype)
    x = 1.0 / depth
    y = torch.where(mask, 1.0 / target.clamp_min(1e-6), torch.zeros_like(target))
    n = m.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    mx = (x * m).sum(dim=(1, 2, 3), keepdim=True) / n
    my = (y * m).sum(dim=(1, 2, 3), keepdim=True) / n
    vx = (((x - mx) ** 2) * m).sum(dim=(1, 2, 3), keepdim=True)
    s = (((x - mx) * (y - my)) * m).sum(dim=(1, 2, 3), keepdim=True) / vx.clamp_min(1e-12)
    return s * x + (my - s * mx)


@dataclass
class ScaleShiftInvariantLoss:
    """For relative labels (no metric scale): the prediction's inverse depth is aligned to the label's
    per image by least-squares scale and shift (MiDaS, Ranftl et al. 2020), then compared (L1, relative
    to the label's mean inverse depth). The uncertainty learns the aligned log-depth error (Laplacian NLL,
    error detached); the gradient term acts on the aligned log-depth."""

    grad_weight: float = 0.5
    grad_scales: int = 4

    def __call__(self, depth: torch.Tensor, uncertainty: torch.Tensor, gt: torch.Tensor,
                 valid: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        if depth.shape != gt.shape:
            depth = F.interpolate(depth, size=gt.shape[-2:], mode="bilinear", align_corners=False)
            uncertainty = F.interpolate(uncertainty, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        aligned = align_inverse_depth(depth, gt, valid)
        inv_gt = 1.0 / gt.clamp_min(1e-6)
        m = valid.to(depth.dtype)
        count = m.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
        norm = ((inv_gt * m).sum(dim=(1, 2, 3), keepdim=True) / count).clamp_min(1e-6)
        ssi = masked_mean((aligned - inv_gt).abs() / norm, valid)
        log_aligned = -torch.log(aligned.clamp_min(1e-6))
        log_gt = torch.log(gt.clamp_min(1e-6))
        nll = laplacian_nll(log_aligned.detach(), log_gt, uncertainty, valid)
        total = ssi + nll
        parts = {"ssi": float(ssi.detach()), "nll": float(nll.detach())}
        if self.grad_weight > 0:
            grad = gradient_matching(log_aligned, log_gt, valid, self.grad_scales)
            total = total + self.grad_weight * grad
            parts["grad"] = float(grad.detach())
        return total, parts
