"""Self-supervised depth labels from neighbour frames (experimental): photometric refinement.

For a frame uploaded with its neighbour frames t-k and t+k, camera poses (odometry or VIO on a robot,
ground truth from synthetic sources) and intrinsics, but without depth: start from the current model's
prediction and adjust the depth until each neighbour, warped into the frame through that depth and the
known relative pose, reproduces the frame. The error is Monodepth2's photometric loss (Godard et al.
2019): 0.85 (1 - SSIM) / 2 + 0.15 L1, the per-pixel minimum over the neighbours (a pixel occluded in one
neighbour is usually visible in the other), auto-masking of pixels that the unwarped neighbour explains
as well (no parallax, a static camera), and an edge-aware smoothness term. Two stages: a global log-scale
by grid search (with metric poses the label is metric, so this corrects the model's scale error, the
error a single view cannot see), then a per-pixel log-depth residual by Adam.

Pixels the photometric evidence does not pin down (outside both neighbours, auto-masked, a high final
error, too little texture) are 0 (invalid) in the label, so training ignores them. Monodepth2 learns a
pose network where no poses are known; that is not implemented, so frames without poses get no label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from edgedepth.errors import DataError


@dataclass
class PhotometricConfig:
    scale_range: float = 0.6  # grid search of the global log-scale over [-r, r]
    scale_steps: int = 49
    iters: int = 120  # Adam steps of the per-pixel residual
    lr: float = 0.03
    smoothness: float = 0.05  # edge-aware smoothness of the log-depth residual
    prior: float = 0.01  # |residual| (stay near the scaled prediction where the images do not say)
    max_error: float = 0.12  # final photometric error above which a pixel is left unlabelled
    min_texture: float = 0.005  # mean |image gradient| (0..1 intensity) a pixel needs to be labelled
    min_depth: float = 0.1
    max_depth: float = 40.0


@dataclass
class PhotometricLabel:
    depth: np.ndarray  # HxW float32 metres, 0 where unlabelled
    valid_fraction: float
    log_scale: float  # the global correction applied to the initial depth
    error_before: float  # mean photometric error over labelled pixels, initial depth
    error_after: float


def relative_pose(pose_target: np.ndarray, pose_neighbor: np.ndarray) -> np.ndarray:
    """4x4 transform from the target camera's frame to the neighbour's (both poses camera-to-world)."""
    return np.linalg.inv(np.asarray(pose_neighbor, np.float64)) @ np.asarray(pose_target, np.float64)


def _ssim_error(x, y):
    """(1 - SSIM) / 2 per pixel over 3x3 windows (N,C,H,W tensors in 0..1), as in Monodepth2."""
    import torch.nn.functional as F

    pad = (1, 1, 1, 1)
    x, y = F.pad(x, pad, mode="reflect"), F.pad(y, pad, mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sx = F.avg_pool2d(x * x, 3, 1) - mu_x ** 2
    sy = F.avg_pool2d(y * y, 3, 1) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sx + sy + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def _photometric_error(pred, target):
    """0.85 SSIM error + 0.15 L1, averaged over channels: (N,1,H,W)."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return 0.85 * _ssim_error(pred, target).mean(1, keepdim=True) + 0.15 * l1


class _Warper:
    """Warps neighbour images into the target view through a depth map (pixel-index coordinates)."""

    def __init__(self, K: np.ndarray, height: int, width: int, transforms: Sequence[np.ndarray]):
        import torch

        self.h, self.w = height, width
        v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                              torch.arange(width, dtype=torch.float32), indexing="ij")
        Kt = torch.tensor(np.asarray(K, np.float64), dtype=torch.float32)
        pix = torch.stack([u, v, torch.ones_like(u)], 0).reshape(3, -1)
        self.rays = torch.linalg.inv(Kt) @ pix  # (3, HW): z = 1
        self.K = Kt
        self.T = [torch.tensor(np.asarray(T, np.float64), dtype=torch.float32) for T in transforms]

    def __call__(self, depth, images):
        """depth (H,W) tensor -> [(warped (1,3,H,W), in-view mask (1,1,H,W))] per neighbour."""
        import torch
        import torch.nn.functional as F

        pts = self.rays * depth.reshape(1, -1)
        out = []
        for T, img in zip(self.T, images):
            cam = T[:3, :3] @ pts + T[:3, 3:4]
            z = cam[2].clamp_min(1e-3)
            proj = self.K @ (cam / z)
            gx = proj[0] / (self.w - 1) * 2 - 1
            gy = proj[1] / (self.h - 1) * 2 - 1
            grid = torch.stack([gx, gy], -1).reshape(1, self.h, self.w, 2)
            warped = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
            inside = (gx.abs() <= 1) & (gy.abs() <= 1) & (cam[2] > 1e-3)
            out.append((warped, inside.reshape(1, 1, self.h, self.w).float()))
        return out


def _to_tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, np.float32) / 255.0).permute(2, 0, 1)[None]


def photometric_label(rgb: np.ndarray, neighbors: Sequence[Tuple[np.ndarray, np.ndarray]], K: np.ndarray,
                      init_depth: np.ndarray, config: PhotometricConfig = PhotometricConfig()
                      ) -> PhotometricLabel:
    """Label `rgb` (HxWx3 uint8) from `neighbors` [(rgb_n, 4x4 target->neighbour transform)], `K` (3x3,
    pixel-index convention, for this image size) and `init_depth` (metres, any size: resized)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # maps this small are all per-op overhead; more threads only spin-wait
    try:
        return _photometric_label(rgb, neighbors, K, init_depth, config)
    finally:
        torch.set_num_threads(threads)


def _photometric_label(rgb, neighbors, K, init_depth, config: PhotometricConfig) -> PhotometricLabel:
    import torch

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"expected an RGB image HxWx3, got {rgb.shape}")
    if not neighbors:
        raise DataError("self-supervised labels need at least one neighbour frame with a pose")
    h, w = rgb.shape[:2]
    for n_rgb, T in neighbors:
        if n_rgb.shape != rgb.shape or np.asarray(T).shape != (4, 4):
            raise DataError(f"neighbour frame {n_rgb.shape} / transform {np.asarray(T).shape} does not match "
                            f"the frame {rgb.shape} / a 4x4 matrix")
    cfg = config
    init = np.asarray(init_depth, np.float32)
    if init.shape != (h, w):
        init = cv2.resize(init, (w, h), interpolation=cv2.INTER_LINEAR)
    init = np.clip(np.nan_to_num(init, nan=cfg.min_depth), cfg.min_depth, cfg.max_depth)
    target = _to_tensor(rgb)
    images = [_to_tensor(n) for n, _ in neighbors]
    warp = _Warper(K, h, w, [T for _, T in neighbors])
    log_init = torch.from_numpy(np.log(init))
    # auto-mask: pixels the unwarped neighbours explain as well carry no depth information
    identity = torch.stack([_photometric_error(img, target) for img in images]).min(0).values

    def error_map(log_depth):
        errs = []
        for warped, inside in warp(torch.exp(log_depth), images):
            errs.append(_photometric_error(warped, target) + (1 - inside) * 10.0)  # outside: never the min
        return torch.stack(errs).min(0).values

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    texture = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(
        cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    textured = torch.from_numpy(cv2.blur(texture / 8.0, (5, 5)) >= cfg.min_texture)[None, None]

    with torch.no_grad():  # stage 1: the global scale
        scales = np.linspace(-cfg.scale_range, cfg.scale_range, cfg.scale_steps)
        losses = []
        for s in scales:
            err = error_map(log_init + float(s))
            use = textured & (err < identity) & (err < 10)
            losses.append(float(err[use].mean()) if bool(use.any()) else np.inf)
        best = int(np.argmin(losses))
        log_scale = float(scales[best]) if np.isfinite(losses[best]) else 0.0
        err0 = error_map(log_init)

    # stage 2: a per-pixel residual, smooth except at image edges
    residual = torch.zeros(h, w, requires_grad=True)
    opt = torch.optim.Adam([residual], lr=cfg.lr)
    img_dx = (target[..., :, 1:] - target[..., :, :-1]).abs().mean(1)[0]
    img_dy = (target[..., 1:, :] - target[..., :-1, :]).abs().mean(1)[0]
    wx, wy = torch.exp(-img_dx * 10), torch.exp(-img_dy * 10)
    for _ in range(cfg.iters):
        log_depth = log_init + log_scale + residual
        err = error_map(log_depth)
        keep = (err < identity).float() * (err < 10).float()
        photo = (err * keep).sum() / keep.sum().clamp_min(1.0)
        smooth = (wx * (residual[:, 1:] - residual[:, :-1]).abs()).mean() + \
                 (wy * (residual[1:, :] - residual[:-1, :]).abs()).mean()
        loss = photo + cfg.smoothness * smooth + cfg.prior * residual.abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    with torch.no_grad():
        log_depth = log_init + log_scale + residual
        err = error_map(log_depth)
        valid = textured & (err < identity) & (err < cfg.max_error)
        depth = torch.exp(log_depth).clamp(cfg.min_depth, cfg.max_depth)[None, None]
        label = torch.where(valid, depth, torch.zeros_like(depth))[0, 0].numpy().astype(np.float32)
        before = float(err0[valid].mean()) if bool(valid.any()) else float("nan")
        after = float(err[valid].mean()) if bool(valid.any()) else float("nan")
    return PhotometricLabel(label, float(valid.float().mean()), log_scale, before, after)


def neighbor_transforms(meta: dict) -> List[Tuple[str, np.ndarray]]:
    """[(neighbour key 'prev'|'next', 4x4 target->neighbour)] from a spool item's metadata, or []."""
    pose = meta.get("pose")
    nb = meta.get("neighbors") or {}
    if pose is None:
        return []
    out = []
    for key in ("prev", "next"):
        npose = nb.get(f"{key}_pose")
        if nb.get(key) and npose is not None:
            out.append((key, relative_pose(np.asarray(pose), np.asarray(npose))))
    return out


class SelfSupervisedLabeler:
    """Labels store items that carry neighbour frames and poses, starting from `model`'s prediction."""

    def __init__(self, model: str, config: PhotometricConfig = PhotometricConfig()) -> None:
        from edgedepth.teachers.models import EdgeDepthTeacher

        self.initial = EdgeDepthTeacher(model)  # the prediction the photometric refinement starts from
        self.path, self.sha256 = self.initial.path, self.initial.file_sha256
        self.config = config
        self.valid_fractions: List[float] = []

    @staticmethod
    def available(meta: dict) -> bool:
        """True when the item has intrinsics, its pose and at least one neighbour frame with a pose."""
        return meta.get("intrinsics") is not None and bool(neighbor_transforms(meta))

    def __call__(self, store, meta: dict, rgb: np.ndarray) -> np.ndarray:
        """The label (HxW metres, 0 = unlabelled) for the item whose frame is `rgb`."""
        from edgedepth.rounds.labels import read_item_image

        files = {(e.get("kind"), int(e.get("offset", 0))): name for name, e in meta.get("files", {}).items()}
        neighbors = []
        for key, transform in neighbor_transforms(meta):
            offsets = [off for kind, off in files if kind == "rgb_neighbor" and (off < 0) == (key == "prev")]
            if not offsets:
                continue
            nb = read_item_image(store, meta, files[("rgb_neighbor", offsets[0])])
            if nb.shape != rgb.shape:
                raise DataError(f"item {meta['id'][:12]}: its {key} neighbour frame is {nb.shape[:2]}, "
                                f"the frame {rgb.shape[:2]}")
            neighbors.append((nb, transform))
        init = self.initial(rgb)
        K = np.asarray(meta["intrinsics"], np.float64)
        label = photometric_label(rgb, neighbors, K, init, self.config)
        self.valid_fractions.append(label.valid_fraction)
        return label.depth
