"""Depth previews that can be read: colour-mapped depth with a colour bar in metres (OpenCV only).

Every depth preview (`edgedepth predict`'s .color.png, the live loop's video/display/image outputs)
goes through `depth_to_colour` and carries the bar from `attach_colorbar`: near at the top (bright),
far at the bottom, tick values in metres, or "relative" for a model without a metric scale. Plots made
with matplotlib use `plt.colorbar(..., label="depth [m]")` instead.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional, Tuple

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def depth_units(info=None) -> str:
    """'m', or 'relative' for a model trained on relative labels (ModelInfo.depth_units == "relative"):
    its depth has no metric scale, so nothing may label it in metres."""
    return "relative" if getattr(info, "depth_units", "metres") == "relative" else "m"


def display_range(depth: np.ndarray, percentiles: Tuple[float, float] = (2, 98),
                  fixed: Optional[Tuple[float, float]] = None) -> Tuple[float, float]:
    """(near, far) in metres for colouring: `fixed`, else the frame's own percentiles of valid depth."""
    if fixed is not None:
        lo, hi = float(fixed[0]), float(fixed[1])
    else:
        step = max(1, min(depth.shape[:2]) // 32)
        sample = depth[::step, ::step]
        valid = sample[np.isfinite(sample) & (sample > 0)]
        lo, hi = (np.percentile(valid, percentiles) if valid.size else (0.0, 1.0))
    lo = float(lo)
    return lo, float(max(hi, lo + 1e-3))


def _nearness(d: np.ndarray, lo: float, hi: float, scale: str) -> np.ndarray:
    """1 at `lo` (near) .. 0 at `hi` (far), clipped; linear in depth or in log-depth."""
    if scale == "log":
        lo_l, hi_l = math.log(max(lo, 1e-6)), math.log(max(hi, lo + 1e-6, 1e-6 * 1.001))
        with np.errstate(divide="ignore", invalid="ignore"):
            v = (hi_l - np.log(np.clip(d, max(lo, 1e-6), hi))) / (hi_l - lo_l)
        return np.nan_to_num(v, nan=0.0)
    v = (hi - np.clip(d, lo, hi)) / (hi - lo)
    return np.nan_to_num(v, nan=0.0)


def depth_to_colour(depth: np.ndarray, lo: float, hi: float, colormap: int = cv2.COLORMAP_INFERNO,
                    inverted: bool = False, scale: str = "linear") -> np.ndarray:
    """Depth (m) -> BGR uint8: near (lo) bright, far (hi) dark (reversed with `inverted`)."""
    v = _nearness(depth, lo, hi, scale)
    if inverted:
        v = 1.0 - v
    return cv2.applyColorMap((v * 255.0).astype(np.uint8), colormap)


def _bar_width(height: int) -> Tuple[int, float, int]:
    """(total width, font scale, gradient width) of a bar beside an image `height` pixels high."""
    font = 0.32 if height < 160 else 0.42 if height < 400 else 0.6 if height < 800 else 0.9
    (tw, _), _ = cv2.getTextSize("near 88.888 m", _FONT, font, 1)
    grad = max(8, height // 24)
    width = grad + tw + 12
    return width + width % 2, font, grad  # even: video codecs want even frame sizes


@lru_cache(maxsize=16)
def _gradient(height: int, width: int, colormap: int, inverted: bool) -> np.ndarray:
    v = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]  # top = near
    if inverted:
        v = 1.0 - v
    col = cv2.applyColorMap((np.repeat(v, width, axis=1) * 255.0).astype(np.uint8), colormap)
    col.setflags(write=False)
    return col


def _fmt(value: float, units: str, step: float) -> str:
    """Enough decimals that neighbouring ticks `step` apart read differently (up to 4)."""
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    if step > 0:
        digits = min(4, max(digits, math.ceil(-math.log10(step))))
    return f"{value:.{digits}f}" + (" m" if units == "m" else "")


def colorbar(height: int, lo: float, hi: float, colormap: int = cv2.COLORMAP_INFERNO,
             inverted: bool = False, scale: str = "linear", units: str = "m") -> np.ndarray:
    """A vertical BGR bar, `height` pixels high: the colour ramp with near/far and tick values.

    `units`: 'm' (tick values in metres) or 'relative' (a model without a metric scale: the values are
    its relative depth, the title says so)."""
    width, font, grad = _bar_width(height)
    bar = np.full((height, width, 3), 24, np.uint8)
    top, bottom = 2, height - 2
    ramp = _gradient(max(2, bottom - top), grad, colormap, inverted)
    bar[top:top + ramp.shape[0], 2:2 + grad] = ramp
    step = int(round(font * 30))
    ticks = max(2, min(5, (bottom - top) // (2 * step) + 1))
    for i in range(ticks):
        f = i / (ticks - 1)  # 0 = top (near) .. 1 = bottom (far)
        if scale == "log":
            lo_l, hi_l = math.log(max(lo, 1e-6)), math.log(max(hi, 1e-6))
            value = math.exp(lo_l + f * (hi_l - lo_l))
        else:
            value = lo + f * (hi - lo)
        y = int(round(top + f * (bottom - top - 1)))
        label = _fmt(value, units, (hi - lo) / (ticks - 1) if scale != "log" else (hi - lo) / ticks / 4)
        if i == 0:
            label = "near " + label
        elif i == ticks - 1:
            label = "far " + label
        cv2.line(bar, (2 + grad, y), (5 + grad, y), (255, 255, 255), 1)
        ty = min(max(y + step // 3, step - 2), height - 3)
        cv2.putText(bar, label, (7 + grad, ty), _FONT, font, (255, 255, 255), 1, cv2.LINE_AA)
    if units != "m":
        (tw, th), _ = cv2.getTextSize(units, _FONT, font, 1)
        cv2.putText(bar, units, (7 + grad, (height + th) // 2), _FONT, font, (200, 200, 255), 1, cv2.LINE_AA)
    return bar


def attach_colorbar(image: np.ndarray, lo: float, hi: float, colormap: int = cv2.COLORMAP_INFERNO,
                    inverted: bool = False, scale: str = "linear", units: str = "m") -> np.ndarray:
    """`image` (BGR) with the colour bar for (lo, hi) appended on its right."""
    bar = colorbar(image.shape[0], lo, hi, colormap, inverted, scale, units)
    return np.concatenate([image, bar], axis=1)


def preview(depth: np.ndarray, colormap: int = cv2.COLORMAP_INFERNO, inverted: bool = False,
            scale: str = "linear", fixed: Optional[Tuple[float, float]] = None,
            percentiles: Tuple[float, float] = (2, 98), units: str = "m") -> np.ndarray:
    """Colour-mapped depth with its colour bar, in one call (saved previews)."""
    lo, hi = display_range(depth, percentiles, fixed)
    return attach_colorbar(depth_to_colour(depth, lo, hi, colormap, inverted, scale), lo, hi, colormap,
                           inverted, scale, units)
