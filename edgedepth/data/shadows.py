"""Shadow maps for the synthetic renderer.

Each shadowing light gets a depth map rendered once per scene with the same ray caster (the scene is
static), so per frame a shadow costs only a projection and four lookups per pixel (2x2 percentage-closer
filtering, normal-offset to avoid self-shadowing acne). Point lights look straight down with a 150 degree
field of view (ceiling lamps, street lamps); the sun is a distant, nearly orthographic camera over the
region the camera path can see.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from edgedepth.data.raycast import look_rotation, trace
from edgedepth.data.scenes import Scene

F32 = np.float32
POINT_FOV_DEG = 150.0
POINT_SIZE = 96
MAX_SHADOWED_LIGHTS = 2
SUN_TEXEL_M = 0.3
SUN_DIST = 400.0


class ShadowMap:
    def __init__(self, sc: Scene, o: np.ndarray, R: np.ndarray, fx: float, size: int):
        self.o, self.R, self.fx, self.size = o.astype(np.float64), R, float(fx), int(size)
        c = (size - 1) / 2.0
        K = np.array([[fx, 0, c], [0, fx, c], [0, 0, 1]], np.float64)
        t, _, _, _ = trace(sc, self.o, R, K, size, size)
        self.depth = np.where(np.isfinite(t), t, np.float32(1e9)).astype(F32).ravel()
        self.Rf = R.astype(F32)
        self.texel_angle = 1.0 / fx
        self.down = bool(R[2, 2] < -0.999)
        self.sun_offset = 1.5 * float(np.linalg.norm(self.o)) / fx

    def lit(self, p, n) -> np.ndarray:
        """Fraction (0..1) of the light reaching world points p=(px,py,pz) with normals n."""
        S, R, o = self.size, self.Rf, self.o
        texel = F32(self.texel_angle)
        if self.down:  # looking straight down: light-space depth is the height below the light
            off = (F32(o[2]) - p[2]) * (texel * F32(1.5))  # normal offset of ~1.5 texels
        else:  # the distant sun: depth is about the same everywhere
            off = F32(self.sun_offset)
        qx = p[0] + n[0] * off - F32(o[0])
        qy = p[1] + n[1] * off - F32(o[1])
        qz = p[2] + n[2] * off - F32(o[2])
        A, B = R[:, 0] * F32(self.fx), R[:, 1] * F32(self.fx)
        z = qx * R[0, 2] + qy * R[1, 2] + qz * R[2, 2]
        inv = F32(1) / np.maximum(z, F32(1e-3))
        c = F32((S - 1) / 2.0 - 0.5)
        u = (qx * A[0] + qy * A[1] + qz * A[2]) * inv + c
        v = (qx * B[0] + qy * B[1] + qz * B[2]) * inv + c
        inside = (z > 0.05) & (u > -1) & (u < S) & (v > -1) & (v < S)
        u = np.where(inside, u, F32(0))  # also clears NaN from degenerate points
        v = np.where(inside, v, F32(0))
        base = np.clip(v, 0, S - 2).astype(np.int32) * S + np.clip(u, 0, S - 2).astype(np.int32)
        ref = z * (F32(1) - texel * F32(0.5)) - F32(0.02)
        acc = (np.take(self.depth, base) >= ref).view(np.uint8).copy()  # 2x2 percentage-closer filter
        for d in (1, S, S + 1):
            acc += (np.take(self.depth, base + d) >= ref).view(np.uint8)
        return np.where(inside, acc.astype(F32) * F32(0.25), F32(1))


def _point_map(sc: Scene, light, size: int = POINT_SIZE) -> ShadowMap:
    R = look_rotation(0.0, -np.pi / 2 + 1e-4, 0.0)
    fx = (size / 2.0) / np.tan(np.radians(POINT_FOV_DEG) / 2)
    return ShadowMap(sc, np.asarray(light[:3], np.float64), R, fx, size)


def _sun_map(
    sc: Scene, focus: Optional[Tuple[float, float, float]] = None, texel: float = SUN_TEXEL_M
) -> Optional[ShadowMap]:
    sd = np.asarray(sc.sun_dir, np.float64)
    if sd[2] <= 0.05:
        return None
    xy = sc.path.xy
    lo = xy.min(0) - np.array([12.0, 30.0])
    hi = xy.max(0) + np.array([45.0, 30.0])
    if sc.room is not None:
        lo = np.array(sc.room[:2]) - 0.5
        hi = np.array(sc.room[3:5]) + 0.5
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
    radius = float(np.linalg.norm(hi - lo) / 2 + 2.0)
    if focus is not None:  # one view only: cover what that camera can see
        centre, radius = np.array([focus[0], focus[1], 0.0]), float(focus[2])
    size = int(np.clip(2 * radius / texel, 64, 512))
    o = centre + sd * SUN_DIST
    fwd = -sd
    R = look_rotation(float(np.arctan2(fwd[1], fwd[0])), float(np.arcsin(np.clip(fwd[2], -1, 1))), 0.0)
    fx = (size / 2.0) * SUN_DIST / radius
    return ShadowMap(sc, o, R, fx, size)


class SceneShadows:
    """Lazily built, cached shadow maps of one scene: the sun's and one per point light."""

    def __init__(
        self,
        sc: Scene,
        focus: Optional[Tuple[float, float, float]] = None,
        point_size: int = POINT_SIZE,
        sun_texel: float = SUN_TEXEL_M,
    ):
        self.sc = sc
        self.point_size, self.sun_texel = int(point_size), float(sun_texel)
        self.focus = focus  # (x, y, radius) of the ground area to cover, None = the whole camera path
        self._sun: Optional[ShadowMap] = None
        self._sun_done = False
        self._points: Dict[int, ShadowMap] = {}

    @property
    def sun(self) -> Optional[ShadowMap]:
        if not self._sun_done:
            self._sun_done = True
            if self.sc.room is None and any(c > 0 for c in self.sc.sun_col):
                self._sun = _sun_map(self.sc, self.focus, self.sun_texel)
        return self._sun

    def point(self, i: int) -> ShadowMap:
        m = self._points.get(i)
        if m is None:
            m = self._points[i] = _point_map(self.sc, self.sc.lights[i], self.point_size)
        return m


def scene_shadows(sc: Scene) -> SceneShadows:
    cached = getattr(sc, "_shadows", None)
    if cached is None:
        cached = sc._shadows = SceneShadows(sc)
    return cached


def pick_lights(lights: np.ndarray, o: np.ndarray, max_lights: int = 4) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the lights that matter most at camera position o, and which of them cast shadows."""
    if len(lights) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    d2 = np.sum((lights[:, :3] - o[None, :]) ** 2, axis=1)
    weight = lights[:, 3:6].sum(1) / (d2 + 4.0)
    order = np.argsort(-weight, kind="stable")[:max_lights]
    shadowed = np.zeros(len(order), bool)
    shadowed[:MAX_SHADOWED_LIGHTS] = True
    return order, shadowed
