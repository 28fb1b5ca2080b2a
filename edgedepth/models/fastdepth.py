"""FastDepth-class network: MobileNet-style depthwise-separable encoder, NNConv5 decoder, additive skips.

Only ops that TensorRT 8.2+ and DLA handle well: Conv (incl. depthwise), BatchNorm (folded at export),
ReLU, Add, Resize (nearest, fixed x2 scale), Sigmoid, Mul/Add by constants, Exp. No data-dependent
control flow. Two outputs: metric depth (metres) and uncertainty (log Laplacian scale on log-depth).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

# MobileNet v1 body: (output channels at width 1.0, stride) after the 3x3 stem (32 channels, stride 2).
MOBILENET_BODY: Tuple[Tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
# Encoder layers whose outputs feed the decoder's additive skips (FastDepth uses layers 1, 3, 5).
SKIP_LAYERS = (1, 3, 5)
LOG_B_MIN, LOG_B_MAX = -6.0, 2.0


def _ch(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def depthwise_separable(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    """Depthwise kxk conv then pointwise 1x1, each with BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, kernel, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class FastDepth(nn.Module):
    """Encoder-decoder that maps a normalised RGB image to (depth [m], uncertainty [log b])."""

    def __init__(self, width: float = 1.0, decoder: Sequence[int] = (512, 256, 128, 64, 32),
                 min_depth: float = 0.1, max_depth: float = 40.0) -> None:
        super().__init__()
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        stem = _ch(32, width)
        layers = [conv_bn_relu(3, stem, 3, stride=2)]
        cin = stem
        self.encoder_channels = [stem]
        for cout, stride in MOBILENET_BODY:
            cout = _ch(cout, width)
            layers.append(depthwise_separable(cin, cout, 3, stride))
            self.encoder_channels.append(cout)
            cin = cout
        self.encoder = nn.ModuleList(layers)

        dec = [_ch(c, width) for c in decoder]
        skip_ch = [self.encoder_channels[i] for i in SKIP_LAYERS]  # at /2, /4, /8
        # Decoder stage k upsamples x2; stages 2,3,4 (outputs at /8, /4, /2) receive skips 5, 3, 1.
        self.decoder = nn.ModuleList()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        d_in = cin
        for d_out in dec:
            self.decoder.append(depthwise_separable(d_in, d_out, 5, 1))
            d_in = d_out
        self.skip_adapters = nn.ModuleList()
        for stage, skip_c in zip((1, 2, 3), reversed(skip_ch)):
            # Additive skips need matching channels; FastDepth's widths match by design, ours may not.
            need = dec[stage]
            self.skip_adapters.append(nn.Identity() if skip_c == need else conv_bn_relu(skip_c, need, 1))
        self.depth_head = nn.Conv2d(dec[-1], 1, 1)
        self.uncertainty_head = nn.Conv2d(dec[-1], 1, 1)
        self.log_min = math.log(self.min_depth)
        self.log_span = math.log(self.max_depth) - self.log_min

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = image
        skips = {}
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in SKIP_LAYERS:
                skips[i] = x
        skip_order = {1: SKIP_LAYERS[2], 2: SKIP_LAYERS[1], 3: SKIP_LAYERS[0]}
        for stage, block in enumerate(self.decoder):
            x = self.up(block(x))
            if stage in skip_order:
                x = x + self.skip_adapters[stage - 1](skips[skip_order[stage]])
        log_depth = self.log_min + self.log_span * torch.sigmoid(self.depth_head(x))
        depth = torch.exp(log_depth)
        uncertainty = LOG_B_MIN + (LOG_B_MAX - LOG_B_MIN) * torch.sigmoid(self.uncertainty_head(x))
        return depth, uncertainty
