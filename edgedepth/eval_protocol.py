"""The evaluation protocols papers report with (numpy only): crops, depth caps, median scaling.

* crops (a mask of the pixels scored):
  - ``eigen`` on NYU Depth v2 (and indoor folder datasets): rows 45..470, columns 41..600 of the
    480x640 frame (Eigen et al. 2014's crop of the Kinect's valid area), scaled to the frame's size;
  - ``eigen`` on KITTI: rows 0.3324324 H .. 0.91351351 H, columns 0.0359477 W .. 0.96405229 W;
  - ``garg`` (KITTI, Garg et al. 2016): rows 0.40810811 H .. 0.99189189 H, columns 0.03594771 W ..
    0.96405229 W;
* ground truth is scored where it lies in [min_depth, max_depth] (min 1e-3 m; max 10 m for NYU, 80 m
  for KITTI unless given) and predictions are clipped to the same range;
* median scaling (for relative or scale-ambiguous models): the prediction is multiplied by
  median(gt) / median(pred) over the scored pixels before clipping, per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from edgedepth.errors import ConfigError

CROPS = ("none", "eigen", "garg")
MIN_DEPTH = 1e-3
DEFAULT_MAX_DEPTH = {"nyu": 10.0, "kitti": 80.0}
NYU_EIGEN = (45, 471, 41, 601)  # top, bottom (exclusive), left, right (exclusive) at 480x640
KITTI_EIGEN = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
KITTI_GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def crop_mask(height: int, width: int, crop: str, dataset_kind: str = "nyu") -> np.ndarray:
    """Boolean HxW mask of the pixels a crop keeps (all True for 'none')."""
    if crop not in CROPS:
        raise ConfigError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
    mask = np.zeros((height, width), bool)
    if crop == "none":
        mask[:] = True
        return mask
    if crop == "eigen" and dataset_kind != "kitti":
        t, b, left, r = NYU_EIGEN
        ys, xs = height / 480.0, width / 640.0
        mask[_half_up(t * ys):_half_up(b * ys), _half_up(left * xs):_half_up(r * xs)] = True
        return mask
    t, b, left, r = KITTI_EIGEN if crop == "eigen" else KITTI_GARG
    mask[int(t * height):int(b * height), int(left * width):int(r * width)] = True
    return mask


def _half_up(v: float) -> int:
    return int(np.floor(v + 0.5))


def median_scale(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """median(gt) / median(pred) over the mask (1.0 when the mask is empty or the prediction is 0)."""
    if not mask.any():
        return 1.0
    mp = float(np.median(pred[mask]))
    return float(np.median(gt[mask])) / mp if mp > 0 and np.isfinite(mp) else 1.0


@dataclass
class Protocol:
    """How frames are scored. None fields fall back to the model's range (the pre-protocol behaviour)."""

    crop: str = "none"
    median_scaling: bool = False
    max_depth: Optional[float] = None
    min_depth: Optional[float] = None

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ConfigError(f"unknown crop {self.crop!r}; use one of {', '.join(CROPS)}")
        if self.max_depth is not None and not self.max_depth > 0:
            raise ConfigError(f"--max-depth must be > 0, got {self.max_depth}")

    def for_dataset(self, kind: str) -> "Protocol":
        """This protocol with the dataset's standard depth range filled in (NYU 10 m, KITTI 80 m)."""
        max_depth = self.max_depth if self.max_depth is not None else DEFAULT_MAX_DEPTH.get(kind)
        min_depth = self.min_depth
        if min_depth is None and (max_depth is not None or self.median_scaling):
            min_depth = MIN_DEPTH
        return Protocol(self.crop, self.median_scaling, max_depth, min_depth)

    def describe(self) -> str:
        rng = f"{self.min_depth:g}..{self.max_depth:g} m" if self.max_depth is not None else "model range"
        return f"crop {self.crop}, median scaling {'on' if self.median_scaling else 'off'}, depth {rng}"


def apply_protocol(pred: np.ndarray, gt: np.ndarray, protocol: Protocol, dataset_kind: str,
                   model_min: float, model_max: float):
    """(prediction, valid mask, min_depth, max_depth) to pass to metrics.frame_metrics."""
    lo = protocol.min_depth if protocol.min_depth is not None else model_min
    hi = protocol.max_depth if protocol.max_depth is not None else model_max
    gt = np.asarray(gt, np.float64)
    mask = crop_mask(gt.shape[0], gt.shape[1], protocol.crop, dataset_kind)
    mask &= np.isfinite(gt) & (gt >= lo) & (gt <= hi)
    pred = np.asarray(pred, np.float64)
    if protocol.median_scaling:
        pred = pred * median_scale(pred, gt, mask)
    return pred, mask, lo, hi


def protocol_summary(protocol: Protocol, kinds: Dict[str, str]) -> str:
    """One line per dataset: what protocol it was scored with."""
    return "; ".join(f"{name}: {protocol.for_dataset(kind).describe()}" for name, kind in kinds.items())
