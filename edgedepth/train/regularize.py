"""Fine-tuning a deployed model on a few new-domain frames without forgetting the old domain.

Four tools, each cheap and each optional:

- `frame_weights` (TrainConfig.data_shares): draw a fixed share of every batch from each data directory,
  e.g. 75% from the whole original training set and 25% from the new round. Replaying *all* the old
  frames (not a small sample) at a high share is what keeps the old domain; a fixed new-frame share
  keeps the few new frames from being drowned. In the fleet simulation this alone turned a fine-tune
  that regressed the original domain into one that improves both (scripts/finetune_study.py).

- `L2SP`: a penalty (weight/2) * sum ||theta - theta0||^2 pulling every trainable weight towards the
  weights fine-tuning started from (Li et al. 2018, "Explicit inductive bias for transfer learning").
  Unlike weight decay (towards 0) it keeps what the initial model knew unless the new data pays for it.
- `freeze_parameters`: train only part of the network (e.g. the decoder), so the encoder's features,
  which every domain shares, cannot drift.
- `interpolate_state`: weight-space interpolation between the initial and the fine-tuned weights,
  theta(a) = (1 - a) theta0 + a theta_ft (WiSE-FT, Wortsman et al. 2022). Models fine-tuned from one
  initialisation stay linearly connected, so a in (0, 1) trades new-domain gain against old-domain
  regression smoothly and usually better than stopping early; `edgedepth.train.merge` picks a.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from edgedepth.errors import ConfigError
from edgedepth.train.config import FREEZE_CHOICES


class L2SP:
    """(weight / 2) * sum over trainable parameters of ||theta - theta0||^2, theta0 taken at construction."""

    def __init__(self, model: torch.nn.Module, weight: float) -> None:
        if weight < 0:
            raise ConfigError(f"L2-SP weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.params: List[torch.nn.Parameter] = [p for p in model.parameters() if p.requires_grad]
        self.anchor = [p.detach().clone() for p in self.params]

    def __call__(self) -> torch.Tensor:
        total = self.params[0].new_zeros(()) if self.params else torch.zeros(())
        for p, p0 in zip(self.params, self.anchor):
            total = total + (p - p0).pow(2).sum()
        return 0.5 * self.weight * total


def freeze_parameters(model: torch.nn.Module, part: str) -> int:
    """Set requires_grad=False on `part` of a FastDepth model ("none", "encoder", "stem"); returns the
    number of parameters frozen. "stem" freezes the encoder's first third (low-level filters only)."""
    if part not in FREEZE_CHOICES:
        raise ConfigError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {part!r}")
    if part == "none":
        return 0
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ConfigError(f"freeze={part!r} needs a model with an .encoder (a FastDepth network)")
    layers = list(encoder)
    if part == "stem":
        layers = layers[: max(1, len(layers) // 3)]
    frozen = 0
    for layer in layers:
        for p in layer.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen


def interpolate_state(initial: Mapping[str, torch.Tensor], final: Mapping[str, torch.Tensor], alpha: float
                      ) -> Dict[str, torch.Tensor]:
    """(1 - alpha) * initial + alpha * final for floating-point tensors; others (BatchNorm batch counts)
    are taken from `final`. Both state dicts must come from the same architecture."""
    if set(initial) != set(final):
        missing = sorted(set(initial) ^ set(final))[:5]
        raise ConfigError(f"cannot interpolate weights of different networks (keys differ: {missing})")
    out: Dict[str, torch.Tensor] = {}
    for k, v1 in final.items():
        v0 = initial[k]
        if v0.shape != v1.shape:
            raise ConfigError(f"cannot interpolate weights of different networks ({k}: {tuple(v0.shape)} "
                              f"vs {tuple(v1.shape)})")
        if torch.is_floating_point(v1):
            out[k] = torch.lerp(v0.to(v1.dtype), v1, float(alpha))
        else:
            out[k] = v1.clone()
    return out


def frame_weights(sources: Sequence[str], data: Sequence[str], shares: Sequence[float]
                  ) -> Optional[np.ndarray]:
    """Sampling probability of every frame (per-frame `sources` = its --data directory) so that directory
    i supplies shares[i] / sum(shares) of the draws; None without shares. A directory with no frame left
    (all held out) gives its share to the others."""
    if not shares:
        return None
    if len(shares) != len(data):
        raise ConfigError(f"{len(shares)} data shares for {len(data)} data directories")
    src = np.asarray(list(sources))
    w = np.zeros(len(src), dtype=np.float64)
    for d, share in zip(data, shares):
        mask = src == str(d)
        if mask.any():
            w[mask] = float(share) / mask.sum()
    if not w.sum() > 0:
        raise ConfigError("data shares give every training frame weight 0")
    return w / w.sum()
