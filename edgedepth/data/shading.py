"""Shading of ray-cast hits: textured albedo under ambient, sun and point lights with shadow maps, sky, fog.

Geometry (rays, intersections, surface attributes) is edgedepth.data.raycast; shadow maps, which are
rendered with the same ray caster, are edgedepth.data.shadows.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from edgedepth.data import textures
from edgedepth.data.raycast import F32, compiled, surface, trace
from edgedepth.data.scenes import Scene
from edgedepth.data.shadows import pick_lights, scene_shadows


def shade(sc: Scene, o: np.ndarray, t: np.ndarray, ids: np.ndarray, dirs, face, fx: float) -> np.ndarray:
    """Linear radiance (H, W, 3) float32: textured albedo under ambient, sun and point lights."""
    H, W = t.shape
    cp = compiled(sc)
    (px, py, pz), (nx, ny, nz), mat, tu, tv, (dx, dy, dz) = surface(sc, o, t, ids, dirs, face)
    tf = np.where(np.isfinite(t.ravel()), t.ravel(), 0).astype(F32)
    inv_scale = cp.mat_inv_scale[mat]
    dd = dx * dx + dy * dy + dz * dz
    cos_in = np.abs(nx * dx + ny * dy + nz * dz) / np.sqrt(dd)
    footprint = tf * np.sqrt(dd) / (F32(fx) * np.maximum(cos_in, F32(0.15))) * inv_scale * textures.SIZE
    level = np.clip(np.log2(np.maximum(footprint, F32(1e-6))) + F32(0.5), 0, textures.LEVELS - 1).astype(
        np.int64
    )
    albedo = textures.sample(cp.mat_tex[mat], level, tu * inv_scale, tv * inv_scale) * cp.mat_tint[mat]
    up = F32(0.5) + F32(0.5) * nz
    amb_g, amb_s = np.asarray(sc.amb_ground, F32), np.asarray(sc.amb_sky, F32)
    light = amb_g + up[:, None] * (amb_s - amb_g)
    sh = scene_shadows(sc)
    sun = np.asarray(sc.sun_col, F32)
    if sun.any():
        sd = np.asarray(sc.sun_dir, F32)
        lam = np.maximum(nx * sd[0] + ny * sd[1] + nz * sd[2], 0)
        if sh.sun is not None:
            lam = lam * sh.sun.lit((px, py, pz), (nx, ny, nz))
        light += lam[:, None] * sun
    core2 = F32(sc.light_core**2)
    order, shadowed = pick_lights(cp.lights, o)
    for i, cast in zip(order, shadowed):
        L = cp.lights[i]
        lx, ly, lz = L[0] - px, L[1] - py, L[2] - pz
        d2 = lx * lx + ly * ly + lz * lz
        ndl = np.maximum(nx * lx + ny * ly + nz * lz, 0) / np.sqrt(d2 + F32(1e-6))
        if cast:
            ndl = ndl * sh.point(int(i)).lit((px, py, pz), (nx, ny, nz))
        light += (ndl / (d2 + core2))[:, None] * L[3:6]
    rad = albedo * (light + cp.mat_emit[mat][:, None] * F32(4))
    sky = ids.ravel() < 0
    if sky.any():
        elev = np.clip(dz[sky] / np.sqrt(dd[sky]), 0, 1) ** F32(0.5)
        zen, hor = np.asarray(sc.sky_zenith, F32), np.asarray(sc.sky_horizon, F32)
        rad[sky] = hor + elev[:, None] * (zen - hor)
    if sc.fog_beta > 0:
        keep = np.exp(-F32(sc.fog_beta) * tf * np.sqrt(dd))
        keep[sky] = 0
        rad = rad * keep[:, None] + (1 - keep)[:, None] * np.asarray(sc.fog_col, F32)
    return rad.reshape(H, W, 3)


def render_linear(
    sc: Scene, o: np.ndarray, R: np.ndarray, K: np.ndarray, H: int, W: int
) -> Tuple[np.ndarray, np.ndarray]:
    """(linear radiance HxWx3 float32, z-depth HxW float32 with 0 = no hit / beyond max_range)."""
    t, ids, dirs, face = trace(sc, o, R, K, H, W)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rad = shade(sc, o, t, ids, dirs, face, float(K[0, 0]))
    depth = np.where(np.isfinite(t) & (t > 0) & (t <= sc.max_range), t, 0).astype(F32)
    return rad, depth
