"""Vectorised numpy ray casting of a Scene: analytic intersections, z-buffer, surface attributes.

Rays use camera-frame directions (x, y, 1) rotated to the world without normalising, so the ray
parameter t of a hit *is* its z-depth along the optical axis. The room box or ground plane is
intersected for every pixel; each primitive only for the pixels inside its projected bounding
rectangle (cheap screen-space culling), so cost grows with what is visible, not with scene size.
Shading (textures, lights, shadows, fog) is edgedepth.data.shading.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edgedepth.data.outdoor import ground_material
from edgedepth.data.scenes import Scene

EPS = 1e-4
NEAR = 0.05
F32 = np.float32


@lru_cache(maxsize=16)
def camera_rays(height: int, width: int, fx: float, fy: float, cx: float, cy: float):
    """Camera-frame ray slopes (x/z, y/z) per pixel centre, shape (H, W) each, float32."""
    u = (np.arange(width, dtype=np.float64) - cx) / fx
    v = (np.arange(height, dtype=np.float64) - cy) / fy
    xs = np.broadcast_to(u[None, :], (height, width)).astype(F32)
    ys = np.broadcast_to(v[:, None], (height, width)).astype(F32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


class Compiled:
    """Numpy arrays of a scene's primitives and materials, built once per scene."""

    def __init__(self, sc: Scene):
        b = np.array(sc.boxes, np.float64).reshape(-1, 8)
        self.box = b[:, :7].astype(F32)
        self.box_cos, self.box_sin = np.cos(b[:, 6]).astype(F32), np.sin(b[:, 6]).astype(F32)
        self.box_mat = b[:, 7].astype(np.int64)
        s = np.array(sc.spheres, np.float64).reshape(-1, 5)
        self.sph, self.sph_mat = s[:, :4].astype(F32), s[:, 4].astype(np.int64)
        c = np.array(sc.cylinders, np.float64).reshape(-1, 6)
        self.cyl, self.cyl_mat = c[:, :5].astype(F32), c[:, 5].astype(np.int64)
        self.nb, self.ns, self.nc = len(b), len(s), len(c)
        centres = np.concatenate(
            [b[:, :3], s[:, :3], np.stack([c[:, 0], c[:, 1], (c[:, 2] + c[:, 3]) / 2], 1)]
        )
        radii = np.concatenate(
            [np.linalg.norm(b[:, 3:6], axis=1), s[:, 3], np.hypot(c[:, 4], (c[:, 3] - c[:, 2]) / 2)]
        )
        self.centres, self.radii = centres, radii * 1.01 + 1e-3
        self.mat_tex = np.array(sc.mat_tex, np.int64)
        self.mat_tint = np.array(sc.mat_tint, F32).reshape(-1, 3)
        self.mat_inv_scale = (1.0 / np.array(sc.mat_scale, F32)).astype(F32)
        self.mat_emit = np.array(sc.mat_emit, F32)
        self.lights = np.array(sc.lights, F32).reshape(-1, 6)


def compiled(sc: Scene) -> Compiled:
    c = getattr(sc, "_compiled", None)
    if c is None:
        c = Compiled(sc)
        sc._compiled = c
    return c


def _rects(cp: Compiled, o: np.ndarray, R: np.ndarray, K: np.ndarray, H: int, W: int):
    """Conservative pixel rectangles (v0, v1, u0, u1) of every primitive's bounding sphere."""
    if len(cp.radii) == 0:
        return np.zeros((0, 4), np.int64)
    pc = (cp.centres - o) @ R  # camera coordinates
    r = cp.radii
    zlo, zhi = pc[:, 2] - r, pc[:, 2] + r
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    zl = np.maximum(zlo, NEAR)
    with np.errstate(divide="ignore", invalid="ignore"):
        umin = cx + fx * np.minimum((pc[:, 0] - r) / zl, (pc[:, 0] - r) / zhi)
        umax = cx + fx * np.maximum((pc[:, 0] + r) / zl, (pc[:, 0] + r) / zhi)
        vmin = cy + fy * np.minimum((pc[:, 1] - r) / zl, (pc[:, 1] - r) / zhi)
        vmax = cy + fy * np.maximum((pc[:, 1] + r) / zl, (pc[:, 1] + r) / zhi)
    straddle = zlo < NEAR
    umin[straddle], vmin[straddle] = -1, -1
    umax[straddle], vmax[straddle] = W + 1, H + 1
    rect = np.stack([np.floor(vmin) - 1, np.ceil(vmax) + 2, np.floor(umin) - 1, np.ceil(umax) + 2], 1)
    rect = np.nan_to_num(rect, nan=0.0, posinf=1e6, neginf=-1e6)
    rect[:, 0:2] = np.clip(rect[:, 0:2], 0, H)
    rect[:, 2:4] = np.clip(rect[:, 2:4], 0, W)
    rect[zhi < NEAR] = 0
    return rect.astype(np.int64)


def _box_t(o, c, cs, sn, dx, dy, dz, ix, iy, iz):
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    if sn == 0.0 and cs == 1.0:
        lox, loy = ox, oy
    else:
        lox, loy = cs * ox + sn * oy, -sn * ox + cs * oy
        ldx = cs * dx + sn * dy
        ldy = cs * dy - sn * dx
        ix, iy = F32(1) / ldx, F32(1) / ldy
    a, b = (-c[3] - lox) * ix, (c[3] - lox) * ix
    tn, tf = np.minimum(a, b), np.maximum(a, b)
    a, b = (-c[4] - loy) * iy, (c[4] - loy) * iy
    tn = np.maximum(tn, np.minimum(a, b))
    tf = np.minimum(tf, np.maximum(a, b))
    a, b = (-c[5] - oz) * iz, (c[5] - oz) * iz
    tn = np.maximum(tn, np.minimum(a, b))
    tf = np.minimum(tf, np.maximum(a, b))
    return np.where((tn <= tf) & (tn > EPS), tn, np.inf)


def _sphere_t(o, c, dx, dy, dz, dd):
    ox, oy, oz = o[0] - c[0], o[1] - c[1], o[2] - c[2]
    b = ox * dx + oy * dy + oz * dz
    disc = b * b - dd * F32(ox * ox + oy * oy + oz * oz - c[3] * c[3])
    t = (-b - np.sqrt(np.maximum(disc, 0))) / dd
    return np.where((disc > 0) & (t > EPS), t, np.inf)


def _cyl_t(o, c, dx, dy, dz, dxy, iz):
    ox, oy = o[0] - c[0], o[1] - c[1]
    b = ox * dx + oy * dy
    disc = b * b - dxy * F32(ox * ox + oy * oy - c[4] * c[4])
    t = (-b - np.sqrt(np.maximum(disc, 0))) / dxy
    z = o[2] + t * dz
    t = np.where((disc > 0) & (t > EPS) & (z >= c[2]) & (z <= c[3]), t, np.inf)
    if o[2] > c[3]:  # top cap visible from above
        tc = (c[3] - o[2]) * iz
        px, py = ox + tc * dx, oy + tc * dy
        t = np.minimum(t, np.where((tc > EPS) & (px * px + py * py <= c[4] * c[4]), tc, np.inf))
    return t


def trace(sc: Scene, o: np.ndarray, R: np.ndarray, K: np.ndarray, H: int, W: int):
    """Closest hit per pixel: (t (H,W) z-depth, inf = miss), id (H,W), world dirs (dx, dy, dz), face."""
    cp = compiled(sc)
    xs, ys = camera_rays(H, W, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    Rf = R.astype(F32)
    dx = Rf[0, 0] * xs + Rf[0, 1] * ys + Rf[0, 2]
    dy = Rf[1, 0] * xs + Rf[1, 1] * ys + Rf[1, 2]
    dz = Rf[2, 0] * xs + Rf[2, 1] * ys + Rf[2, 2]
    for d in (dx, dy, dz):  # an exactly axis-parallel ray would give 0 * inf = NaN in the slab tests
        d[d == 0] = F32(1e-12)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ix, iy, iz = F32(1) / dx, F32(1) / dy, F32(1) / dz
        face = None
        if sc.room is not None:
            x0, y0, z0, x1, y1, z1 = sc.room
            tx = np.where(dx > 0, F32(x1 - o[0]), F32(x0 - o[0])) * ix
            ty = np.where(dy > 0, F32(y1 - o[1]), F32(y0 - o[1])) * iy
            tz = np.where(dz > 0, F32(z1 - o[2]), F32(z0 - o[2])) * iz
            t = np.minimum(np.minimum(tx, ty), tz)
            face = np.where((tx <= ty) & (tx <= tz), 0, np.where(ty <= tz, 1, 2)).astype(np.int8)
            ids = np.zeros((H, W), np.int32)
        else:
            t = np.where(dz < 0, F32(-o[2]) * iz, np.inf).astype(F32)
            ids = np.where(np.isfinite(t), 0, -1).astype(np.int32)
        dd = dx * dx + dy * dy + dz * dz
        dxy = dx * dx + dy * dy
        rects = _rects(cp, o, R, K, H, W)
        for k in range(len(rects)):
            v0, v1, u0, u1 = rects[k]
            if v1 <= v0 or u1 <= u0:
                continue
            sl = (slice(v0, v1), slice(u0, u1))
            if k < cp.nb:
                tk = _box_t(
                    o, cp.box[k], cp.box_cos[k], cp.box_sin[k], dx[sl], dy[sl], dz[sl], ix[sl], iy[sl], iz[sl]
                )
            elif k < cp.nb + cp.ns:
                tk = _sphere_t(o, cp.sph[k - cp.nb], dx[sl], dy[sl], dz[sl], dd[sl])
            else:
                tk = _cyl_t(o, cp.cyl[k - cp.nb - cp.ns], dx[sl], dy[sl], dz[sl], dxy[sl], iz[sl])
            closer = tk < t[sl]
            np.copyto(t[sl], tk, where=closer)
            np.copyto(ids[sl], k + 1, where=closer)
    return t, ids, (dx, dy, dz), face


def surface(sc: Scene, o: np.ndarray, t: np.ndarray, ids: np.ndarray, dirs, face):
    """Per hit pixel: world position, normal, material and texture coords (metres). Flattened arrays."""
    cp = compiled(sc)
    dx, dy, dz = (d.ravel() for d in dirs)
    t, ids = t.ravel(), ids.ravel()
    tf = np.where(ids >= 0, t, F32(0))
    px, py, pz = F32(o[0]) + tf * dx, F32(o[1]) + tf * dy, F32(o[2]) + tf * dz
    # background (room box or ground) for every pixel first; primitives overwrite their pixels below
    if sc.room is not None:
        f = face.ravel()
        dsel = np.where(f == 0, dx, np.where(f == 1, dy, dz))
        pos = dsel > 0
        sgn = np.where(pos, F32(-1), F32(1))
        zero = F32(0)
        nx, ny, nz = np.where(f == 0, sgn, zero), np.where(f == 1, sgn, zero), np.where(f == 2, sgn, zero)
        tu = np.where(f == 0, py, px)
        tv = np.where(f == 2, py, pz)
        mat = np.asarray(sc.room_mats, np.int64)[f * 2 + pos]
    else:
        n = t.size
        nx, ny, nz = np.zeros(n, F32), np.zeros(n, F32), np.ones(n, F32)
        tu, tv = px.copy(), py.copy()
        mat = ground_material(sc, px, py)
    if cp.nb:
        sel = np.flatnonzero((ids >= 1) & (ids <= cp.nb))
        k = ids[sel] - 1
        bx = cp.box[k]
        cs, sn = cp.box_cos[k], cp.box_sin[k]
        qx, qy, qz = px[sel] - bx[:, 0], py[sel] - bx[:, 1], pz[sel] - bx[:, 2]
        lx, ly = cs * qx + sn * qy, -sn * qx + cs * qy
        ax, ay, az = np.abs(lx) / bx[:, 3], np.abs(ly) / bx[:, 4], np.abs(qz) / bx[:, 5]
        fx_ = (ax >= ay) & (ax >= az)
        fy_ = ~fx_ & (ay >= az)
        fz_ = ~fx_ & ~fy_
        lnx = np.where(fx_, np.sign(lx), 0).astype(F32)
        lny = np.where(fy_, np.sign(ly), 0).astype(F32)
        nx[sel], ny[sel], nz[sel] = cs * lnx - sn * lny, sn * lnx + cs * lny, np.where(fz_, np.sign(qz), 0)
        tu[sel] = np.where(fx_, ly, lx) + bx[:, 0] * 0.37
        tv[sel] = np.where(fz_, ly, qz)
        mat[sel] = cp.box_mat[k]
    if cp.ns:
        sel = np.flatnonzero((ids > cp.nb) & (ids <= cp.nb + cp.ns))
        k = ids[sel] - 1 - cp.nb
        s = cp.sph[k]
        inv = F32(1) / s[:, 3]
        qx, qy, qz = (px[sel] - s[:, 0]) * inv, (py[sel] - s[:, 1]) * inv, (pz[sel] - s[:, 2]) * inv
        nx[sel], ny[sel], nz[sel] = qx, qy, qz
        tu[sel] = np.arctan2(qy, qx) * s[:, 3]
        tv[sel] = qz * s[:, 3] * 1.5
        mat[sel] = cp.sph_mat[k]
    if cp.nc:
        sel = np.flatnonzero(ids > cp.nb + cp.ns)
        k = ids[sel] - 1 - cp.nb - cp.ns
        c = cp.cyl[k]
        qx, qy = px[sel] - c[:, 0], py[sel] - c[:, 1]
        cap = pz[sel] >= c[:, 3] - 1e-3
        inv = F32(1) / c[:, 4]
        nx[sel] = np.where(cap, 0, qx * inv)
        ny[sel] = np.where(cap, 0, qy * inv)
        nz[sel] = np.where(cap, 1, 0)
        tu[sel] = np.where(cap, qx, np.arctan2(qy, qx) * c[:, 4])
        tv[sel] = np.where(cap, qy, pz[sel])
        mat[sel] = cp.cyl_mat[k]
    return (px, py, pz), (nx, ny, nz), mat, tu, tv, (dx, dy, dz)


def look_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation for an OpenCV camera (x right, y down, z forward), world z up."""
    cp_, sp = np.cos(pitch), np.sin(pitch)
    fwd = np.array([np.cos(yaw) * cp_, np.sin(yaw) * cp_, sp])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    cr, sr = np.cos(roll), np.sin(roll)
    r2, d2 = cr * right + sr * down, -sr * right + cr * down
    return np.stack([r2, d2, fwd], 1)
