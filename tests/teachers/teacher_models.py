"""Tiny teachers and toy datasets made by the tests (nothing is downloaded)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import numpy as np


def make_onnx_teacher(path: Path, output: Optional[str] = "disparity", multiple: Optional[int] = 14,
                      fixed_hw=None) -> Path:
    """A conv net N x 3 x H x W -> N x 1 x H x W (positive), with `edgedepth.teacher` metadata when
    `output` is given. Its output is a smooth function of brightness, so it is a consistent teacher."""
    import onnx
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.fill_(1.0 / 27)
                self.conv.bias.fill_(0.0)

        def forward(self, x):
            return 0.5 + torch.sigmoid(self.conv(x))

    h, w = fixed_hw or (28, 42)
    buf = io.BytesIO()
    axes = None if fixed_hw else {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(Tiny().eval(), (torch.zeros(1, 3, h, w),), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes=axes)
    model = onnx.load_from_string(buf.getvalue())
    if output is not None:
        meta = {"output": output}
        if multiple is not None:
            meta["multiple"] = multiple
        prop = model.metadata_props.add()
        prop.key, prop.value = "edgedepth.teacher", json.dumps(meta)
    onnx.save(model, str(path))
    return path


def make_hf_depth_anything(path: Path, kind: str = "relative") -> Path:
    """A tiny, randomly initialised Depth Anything (Dinov2 backbone) saved with save_pretrained."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14, reshape_hidden_states=False,
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                              neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                              head_hidden_size=8, depth_estimation_type=kind,
                              max_depth=10 if kind == "metric" else 1)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(path)
    return path


def write_scenes(root: Path, n: int = 6, h: int = 32, w: int = 64, seed: int = 0, depth: str = "dense",
                 point_fraction: float = 0.02) -> Path:
    """rgb/ (+ depth/ dense metres, sparse points, or none) of toy scenes; brightness falls with depth."""
    from edgedepth.data.formats import write_meta, write_sample

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        d = (1.0 + 4.0 * (1 - yy / h) + rng.uniform(0, 1)).astype(np.float32)
        d[rng.integers(0, h // 2):, rng.integers(0, w // 2):rng.integers(w // 2, w)] *= 0.6
        shade = np.clip(1.2 - d / 7.0, 0.05, 1.0)
        rgb = np.clip(255 * shade[..., None] * np.array([0.9, 0.8, 0.7]), 0, 255).astype(np.uint8)
        if depth == "dense":
            label = d
        elif depth == "sparse":
            label = np.where(rng.random((h, w)) < point_fraction, d, 0).astype(np.float32)
        else:
            label = None
        write_sample(root, f"f{i:03d}", rgb, label, depth_format="npy")
    K = [[w * 0.8, 0, w / 2], [0, w * 0.8, h / 2], [0, 0, 1]]
    write_meta(root, {"source": "test", "domain": "indoor", "intrinsics": K})
    return root
