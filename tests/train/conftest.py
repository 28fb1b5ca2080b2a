"""Fixtures for the training/evaluation tests: tiny folder datasets made with numpy + OpenCV."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


def make_scene(rng: np.random.Generator, h: int, w: int):
    """A learnable toy scene: a receding floor/wall plus a near box; brightness falls with depth."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    far = rng.uniform(4.0, 8.0)
    floor = far * (h * 0.45 + 1) / np.maximum(yy - h * 0.45 + 1, 1e-3) * 0.5 + 0.8
    depth = np.where(yy > h * 0.45, floor, far)
    depth = np.minimum(depth, far).astype(np.float32)
    bh, bw = int(rng.integers(h // 5, h // 2)), int(rng.integers(w // 5, w // 2))
    by, bx = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    depth[by:by + bh, bx:bx + bw] = rng.uniform(1.0, 3.0)
    shade = np.clip(1.0 - depth / 9.0, 0.05, 1.0)
    tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    tex = 0.9 + 0.1 * np.sin(xx * 0.7 + yy * 0.3)[..., None]
    rgb = np.clip(255 * shade[..., None] * tint * tex, 0, 255).astype(np.uint8)
    return rgb, depth


def write_folder(root: Path, n: int = 12, h: int = 48, w: int = 64, seed: int = 0, domain: str = "indoor",
                 png_depth: bool = False, invalid_frac: float = 0.02) -> Path:
    """rgb/NAME.png + depth/NAME.npy (or uint16 mm PNG) + meta.json naming the domain."""
    rng = np.random.default_rng(seed)
    (root / "rgb").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rgb, depth = make_scene(rng, h, w)
        depth[rng.random((h, w)) < invalid_frac] = 0.0
        name = f"{domain}_{seed}_{i:04d}"
        names.append(name)
        cv2.imwrite(str(root / "rgb" / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if png_depth:
            cv2.imwrite(str(root / "depth" / f"{name}.png"), np.round(depth * 1000).astype(np.uint16))
        else:
            np.save(root / "depth" / f"{name}.npy", depth)
    meta = {"domain": domain, "frames": {nm: {"domain": domain} for nm in names}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def folder_dataset(tmp_path):
    def make(name: str = "ds", **kw) -> Path:
        return write_folder(tmp_path / name, **kw)

    return make
