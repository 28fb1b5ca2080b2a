"""Procedural scene layouts for the synthetic renderer: rooms, corridors, streets and open parks.

World frame: metres, x/y horizontal, z up, ground or floor at z = 0. A scene holds analytic primitives
(yaw-rotated boxes, spheres, vertical capped cylinders) inside a room box or above a ground plane, a
material table (texture from the bank, tint, metres per texture tile), lights, and a smooth camera path
with free space around it (objects are placed clear of the path, so every camera on it is in free space).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from edgedepth.data import textures

# Metres per texture tile, fixed per kind (with the element counts fixed in edgedepth.data.textures) so
# surface detail has a real-world size: 0.20 m planks, 0.30 m floor tiles, 0.075 m brick courses
# (0.3 m bricks), 0.10 m checker squares. Only building facades keep a range (storey heights vary).
TILE_METRES = {
    "planks": 1.6,
    "tiles": 1.2,
    "carpet": 1.0,
    "plaster": 2.0,
    "brick": 1.2,
    "concrete": 2.0,
    "asphalt": 2.0,
    "grass": 1.5,
    "wood": 0.8,
    "checker": 0.4,
    "fabric": 0.6,
    "plastic": 1.5,
    "dirt": 2.0,
    "leaves": 1.0,
}
TILE_SCALE = {k: (v, v) for k, v in TILE_METRES.items()}
TILE_SCALE["facade"] = (6.0, 12.0)

# Standard sizes in metres (building codes / furniture norms) that give a single view its metric scale.
DOOR_SIZE = ((0.80, 0.92), (2.0, 2.1))  # width, height
WINDOW_SIZE = ((0.9, 1.6), (1.1, 1.5), (0.8, 1.0))  # width, height, sill height
TABLE_HEIGHT = (0.72, 0.76)
CHAIR_SEAT, CHAIR_BACK = 0.45, 0.9  # seat and backrest heights
ROOM_HEIGHT = (2.5, 2.8)
CAMERA_HEIGHT = (1.3, 1.45)  # a hand-held or body/robot-mounted device at chest height


class Path:
    """A smooth planar curve sampled densely and parameterised by arc length (metres)."""

    def __init__(self, xy: np.ndarray, closed: bool):
        self.xy = np.asarray(xy, np.float64)
        self.closed = closed
        pts = np.vstack([self.xy, self.xy[:1]]) if closed else self.xy
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.length = float(self.cum[-1])
        tangent = np.diff(pts, axis=0)
        self.heading = np.unwrap(np.arctan2(tangent[:, 1], tangent[:, 0]))
        self._pts = pts
        x, y = self.xy[:, 0], self.xy[:, 1]
        area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        self.turn = 1.0 if area >= 0 else -1.0  # +1: counter-clockwise loop, interior on the left

    def at(self, s: float) -> Tuple[float, float, float]:
        """(x, y, heading) at arc length s (wraps on closed paths, clamps on open ones)."""
        s = s % self.length if self.closed else min(max(s, 0.0), self.length - 1e-6)
        i = int(np.searchsorted(self.cum, s, side="right") - 1)
        i = min(max(i, 0), len(self.cum) - 2)
        f = (s - self.cum[i]) / max(self.cum[i + 1] - self.cum[i], 1e-9)
        x, y = self._pts[i] * (1 - f) + self._pts[i + 1] * f
        # heading blended between neighbouring segments for a continuous turn rate
        j = min(i + 1, len(self.heading) - 1)
        h0 = self.heading[i]
        h1 = self.heading[j] if j != i else h0
        if self.closed and j == 0:
            h1 = h0
        return float(x), float(y), float(h0 + (h1 - h0) * f)

    def distance(self, x: float, y: float) -> float:
        """Distance from (x, y) to the path (sampled every ~5 cm or finer)."""
        if not hasattr(self, "_coarse"):
            step = max(1, int(0.05 * (len(self.cum) - 1) / max(self.length, 1e-6)))
            self._coarse = self.xy[::step]
        return float(np.sqrt(np.min((self._coarse[:, 0] - x) ** 2 + (self._coarse[:, 1] - y) ** 2)))


@dataclass
class Scene:
    layout: str  # room | corridor | street | park
    room: Optional[Tuple[float, float, float, float, float, float]] = None  # AABB seen from inside
    room_mats: Tuple[int, ...] = ()  # -x, +x, -y, +y, floor, ceiling
    ground_mats: Dict[str, int] = field(default_factory=dict)  # street/park zones
    road_half: float = 0.0
    walk_width: float = 0.0
    boxes: List[Tuple] = field(default_factory=list)  # (cx, cy, cz, hx, hy, hz, yaw, mat)
    spheres: List[Tuple] = field(default_factory=list)  # (cx, cy, cz, r, mat)
    cylinders: List[Tuple] = field(default_factory=list)  # (cx, cy, z0, z1, r, mat)
    mat_tex: List[int] = field(default_factory=list)
    mat_tint: List[Tuple[float, float, float]] = field(default_factory=list)
    mat_scale: List[float] = field(default_factory=list)
    mat_emit: List[float] = field(default_factory=list)
    lights: List[Tuple] = field(default_factory=list)  # (x, y, z, r, g, b) radiant power, softened 1/d^2
    light_core: float = 0.5  # metres: softening radius of point-light falloff
    sun_dir: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    sun_col: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    amb_sky: Tuple[float, float, float] = (0.3, 0.3, 0.3)
    amb_ground: Tuple[float, float, float] = (0.15, 0.15, 0.15)
    sky_zenith: Tuple[float, float, float] = (0.25, 0.45, 0.85)
    sky_horizon: Tuple[float, float, float] = (0.75, 0.82, 0.9)
    fog_beta: float = 0.0
    fog_col: Tuple[float, float, float] = (0.7, 0.72, 0.75)
    max_range: float = 10.0
    exposure: float = 0.18  # target mean linear luminance
    shot_noise: float = 0.0004
    read_noise: float = 0.002
    path: Optional[Path] = None
    cam_height: float = 1.4
    cam_pitch: float = -0.05
    speed: float = 0.8  # m/s along the path
    look_amp: float = 0.3  # radians of slow look-around on top of the path heading
    inward: float = 0.0  # radians the camera looks towards the inside of a closed path (across the room)
    phases: np.ndarray = field(default_factory=lambda: np.zeros(6))
    footprints: List[Tuple[float, float, float]] = field(default_factory=list)
    window_mats: List[int] = field(default_factory=list)  # emissive daylight windows (dark at night)

    # -- building helpers -------------------------------------------------------------------------
    def material(
        self,
        rng: np.random.Generator,
        kind: str,
        tint: float = 0.12,
        emit: float = 0.0,
        scale: Optional[float] = None,
    ) -> int:
        lo, hi = TILE_SCALE[kind]
        self.mat_tex.append(textures.texture_id(kind, int(rng.integers(textures.VARIANTS))))
        self.mat_tint.append(tuple(np.clip(1 + rng.uniform(-tint, tint, 3), 0.3, 1.6)))
        self.mat_scale.append(float(scale if scale is not None else rng.uniform(lo, hi)))
        self.mat_emit.append(float(emit))
        return len(self.mat_tex) - 1

    def free(self, x: float, y: float, r: float, clearance: float, gap: float = 0.05) -> bool:
        if self.path is not None and self.path.distance(x, y) < r + clearance:
            return False
        n = len(self.footprints)
        if n == 0:
            return True
        fp = getattr(self, "_fp", None)
        if fp is None or len(fp) != n:  # footprints are only ever appended
            fp = (
                np.asarray(self.footprints, np.float64)
                if fp is None or len(fp) > n
                else np.concatenate([fp, np.asarray(self.footprints[len(fp) :], np.float64).reshape(-1, 3)])
            )
            self._fp = fp
        d2 = (fp[:, 0] - x) ** 2 + (fp[:, 1] - y) ** 2
        return bool((d2 >= (r + fp[:, 2] + gap) ** 2).all())

    def camera_at(self, s: float, extra_yaw: float = 0.0, extra_pitch: float = 0.0):
        """Camera position (3,) and (yaw, pitch, roll) at arc length s; smooth in s."""
        x, y, heading = self.path.at(s)
        p = self.phases
        look = self.look_amp * (0.7 * np.sin(0.45 * s + p[0]) + 0.3 * np.sin(1.1 * s + p[1]))
        z = self.cam_height + 0.03 * np.sin(2.0 * s + p[2])
        pitch = self.cam_pitch + 0.04 * np.sin(0.6 * s + p[3]) + extra_pitch
        roll = 0.02 * np.sin(0.8 * s + p[4])
        yaw = heading + look + extra_yaw + (self.inward * self.path.turn if self.path.closed else 0.0)
        return np.array([x, y, z]), (yaw, pitch, roll)


def _loop_path(rng, cx, cy, ax, ay, n=720) -> Path:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    wob = 1 + 0.08 * np.sin(2 * th + rng.uniform(0, 6.3)) + 0.04 * np.sin(3 * th + rng.uniform(0, 6.3))
    xy = np.stack([cx + ax * wob * np.cos(th), cy + ay * wob * np.sin(th)], 1)
    if rng.random() < 0.5:
        xy = xy[::-1].copy()
    return Path(xy, closed=True)


def _camera_defaults(sc: Scene, rng, height=(1.0, 1.6), pitch=(-0.2, 0.05), speed=(0.5, 1.0), look=0.35):
    sc.cam_height = float(rng.uniform(*height))
    sc.cam_pitch = float(rng.uniform(*pitch))
    sc.speed = float(rng.uniform(*speed))
    sc.look_amp = float(rng.uniform(0.3, 1.0) * look)
    sc.phases = rng.uniform(0, 2 * np.pi, 6)


# -- indoor furniture ------------------------------------------------------------------------------
def _add_table(sc: Scene, rng, x, y, yaw_swap: bool, mat: int, leg_mat: int, seat_mat: int) -> None:
    """A table of standard height with 0-4 chairs (seat 0.45 m, backrest 0.9 m) around it."""
    w, d = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
    if yaw_swap:
        w, d = d, w
    h, th = rng.uniform(*TABLE_HEIGHT), 0.04
    sc.boxes.append((x, y, h - th / 2, w / 2, d / 2, th / 2, 0.0, mat))
    lw = 0.03
    for sx in (-1, 1):
        for sy in (-1, 1):
            sc.boxes.append(
                (
                    x + sx * (w / 2 - 0.06),
                    y + sy * (d / 2 - 0.06),
                    (h - th) / 2,
                    lw,
                    lw,
                    (h - th) / 2,
                    0.0,
                    leg_mat,
                )
            )
    reach = 0.0
    for side in rng.permutation(4)[: int(rng.integers(0, 5))]:
        # chair centre just off the table edge, backrest on the far side
        axis, sgn = int(side) // 2, 1 if int(side) % 2 else -1
        off = (w if axis == 0 else d) / 2 + 0.2
        cx, cy = (x + sgn * off, y) if axis == 0 else (x, y + sgn * off)
        s, st = 0.22, 0.03  # half seat size, half seat thickness
        sc.boxes.append((cx, cy, CHAIR_SEAT - st, s, s, st, 0.0, seat_mat))
        bx, by = (cx + sgn * (s - 0.02), cy) if axis == 0 else (cx, cy + sgn * (s - 0.02))
        bhx, bhy = (0.02, s) if axis == 0 else (s, 0.02)
        top = CHAIR_BACK - CHAIR_SEAT
        sc.boxes.append((bx, by, CHAIR_SEAT + top / 2, bhx, bhy, top / 2, 0.0, seat_mat))
        for lx in (-1, 1):
            for ly in (-1, 1):
                sc.boxes.append((cx + lx * (s - 0.02), cy + ly * (s - 0.02), (CHAIR_SEAT - 2 * st) / 2,
                                 0.015, 0.015, (CHAIR_SEAT - 2 * st) / 2, 0.0, leg_mat))
        reach = max(reach, off + s)
    sc.footprints.append((x, y, float(max(np.hypot(w, d) / 2, reach))))


def _wall_openings(sc: Scene, rng, x0, y0, x1, y1, zc, door_mat: int) -> None:
    """Doors (standard 0.8-0.92 x 2.0-2.1 m) and bright daylight windows on the room walls."""
    glass = sc.material(rng, "plaster", tint=0.05, emit=float(rng.uniform(0.4, 0.9)))
    sc.mat_tint[glass] = tuple(float(c) for c in rng.uniform([0.75, 0.85, 0.95], [0.85, 0.92, 1.0]))
    sc.window_mats.append(glass)
    frame = sc.material(rng, "plaster", tint=0.03)
    sc.mat_tint[frame] = (0.9, 0.9, 0.88)
    n_doors, n_windows = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    for k in range(n_doors + n_windows):
        door = k < n_doors
        if door:
            (wlo, whi), (hlo, hhi) = DOOR_SIZE
            w, h = rng.uniform(wlo, whi), rng.uniform(hlo, hhi)
            z0 = 0.0
        else:
            (wlo, whi), (hlo, hhi), (slo, shi) = WINDOW_SIZE
            w, h, z0 = rng.uniform(wlo, whi), rng.uniform(hlo, hhi), rng.uniform(slo, shi)
            h = min(h, zc - 0.25 - z0)
        wall = int(rng.integers(4))
        span = (y1 - y0) if wall < 2 else (x1 - x0)
        if span < w + 0.6:
            continue
        t = rng.uniform(-span / 2 + w / 2 + 0.3, span / 2 - w / 2 - 0.3)
        mat = door_mat if door else glass
        th = 0.02  # proud of the wall, so depth changes at the edge as at a real frame
        if wall < 2:
            x = x0 + th if wall == 0 else x1 - th
            yc = (y0 + y1) / 2 + t
            sc.boxes.append((x, yc, z0 + h / 2, th, w / 2, h / 2, 0.0, mat))
            if not door:
                sc.boxes.append((x, yc, z0 - 0.02, th * 2.5, w / 2 + 0.05, 0.02, 0.0, frame))  # sill
        else:
            y = y0 + th if wall == 2 else y1 - th
            xc = (x0 + x1) / 2 + t
            sc.boxes.append((xc, y, z0 + h / 2, w / 2, th, h / 2, 0.0, mat))
            if not door:
                sc.boxes.append((xc, y, z0 - 0.02, w / 2 + 0.05, th * 2.5, 0.02, 0.0, frame))


def _room_objects(sc: Scene, rng, n: int, x0, y0, x1, y1, zc, clutter: bool) -> None:
    mats = [
        sc.material(rng, k) for k in ("wood", "wood", "fabric", "plastic", "plastic", "checker", "concrete")
    ]
    kinds = ["table", "cabinet", "sofa", "crate", "ball", "bin", "pillar", "lamp"]
    probs = np.array([0.18, 0.2, 0.1, 0.18, 0.1, 0.1, 0.06, 0.08])
    placed, tries = 0, 0
    while placed < n and tries < n * 12:
        tries += 1
        kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
        m = mats[int(rng.integers(len(mats)))]
        if kind == "cabinet":  # against a wall, axis aligned: sideboard/counter height or tall shelf
            w, d = rng.uniform(0.5, 1.6), rng.uniform(0.3, 0.6)
            h = rng.uniform(0.75, 0.92) if rng.random() < 0.6 else rng.uniform(1.8, min(2.1, zc - 0.2))
            wall = int(rng.integers(4))
            if wall < 2:
                x = x0 + d / 2 + 0.01 if wall == 0 else x1 - d / 2 - 0.01
                y = rng.uniform(y0 + w / 2, y1 - w / 2)
                hx, hy = d / 2, w / 2
            else:
                y = y0 + d / 2 + 0.01 if wall == 2 else y1 - d / 2 - 0.01
                x = rng.uniform(x0 + w / 2, x1 - w / 2)
                hx, hy = w / 2, d / 2
            r = float(np.hypot(hx, hy))
            if sc.free(x, y, r, 0.45):
                sc.boxes.append((x, y, h / 2, hx, hy, h / 2, 0.0, m))
                sc.footprints.append((x, y, r))
                placed += 1
            continue
        x, y = rng.uniform(x0 + 0.3, x1 - 0.3), rng.uniform(y0 + 0.3, y1 - 0.3)
        if kind == "table":
            if sc.free(x, y, 1.3, 0.4):
                _add_table(sc, rng, x, y, bool(rng.random() < 0.5), m, mats[0], mats[3])
                placed += 1
        elif kind == "sofa":
            w, d, h = rng.uniform(1.4, 2.2), rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.5)
            swap = rng.random() < 0.5
            hx, hy = (w / 2, d / 2) if not swap else (d / 2, w / 2)
            r = float(np.hypot(hx, hy))
            if sc.free(x, y, r, 0.5):
                sc.boxes.append((x, y, h / 2, hx, hy, h / 2, 0.0, m))
                sc.footprints.append((x, y, r))
                placed += 1
        elif kind == "crate":
            s = rng.uniform(0.25, 0.7)
            r = s * 0.75
            if sc.free(x, y, r, 0.45):
                sc.boxes.append(
                    (
                        x,
                        y,
                        s / 2,
                        s / 2,
                        s / 2 * rng.uniform(0.7, 1.3),
                        s / 2,
                        float(rng.uniform(0, np.pi)),
                        m,
                    )
                )
                sc.footprints.append((x, y, r))
                placed += 1
        elif kind == "ball":
            r = rng.uniform(0.1, 0.35)
            if sc.free(x, y, r, 0.45):
                sc.spheres.append((x, y, r, r, m))
                sc.footprints.append((x, y, r))
                placed += 1
        elif kind == "bin":
            r, h = rng.uniform(0.12, 0.3), rng.uniform(0.3, 0.8)
            if sc.free(x, y, r, 0.45):
                sc.cylinders.append((x, y, 0.0, h, r, m))
                sc.footprints.append((x, y, r))
                placed += 1
        elif kind == "pillar":
            r = rng.uniform(0.12, 0.3)
            if sc.free(x, y, r, 0.6):
                sc.cylinders.append((x, y, 0.0, zc, r, mats[-1]))
                sc.footprints.append((x, y, r))
                placed += 1
        elif kind == "lamp":
            h, r = rng.uniform(1.2, 1.7), rng.uniform(0.15, 0.25)
            if sc.free(x, y, r, 0.5):
                sc.cylinders.append((x, y, 0.0, h, 0.025, mats[3]))
                sc.spheres.append((x, y, h + r * 0.8, r, sc.material(rng, "plaster", emit=0.6)))
                sc.footprints.append((x, y, r))
                placed += 1
    if clutter:
        _small_objects(sc, rng, int(rng.integers(22, 42)), x0, y0, x1, y1, mats)


def _small_objects(sc: Scene, rng, n: int, x0, y0, x1, y1, mats) -> None:
    """Many small things on the floor and on tables (the clutter domain)."""
    tops = [(b[0], b[1], b[2] + b[5], b[3], b[4]) for b in sc.boxes if b[3] > 0.25 and b[4] > 0.25]
    for _ in range(n * 6):
        if n <= 0:
            break
        m = mats[int(rng.integers(len(mats)))]
        if tops and rng.random() < 0.3:
            cx, cy, z, hx, hy = tops[int(rng.integers(len(tops)))]
            x, y = cx + rng.uniform(-hx, hx) * 0.8, cy + rng.uniform(-hy, hy) * 0.8
            on_floor = False
        else:
            x, y, z = rng.uniform(x0 + 0.15, x1 - 0.15), rng.uniform(y0 + 0.15, y1 - 0.15), 0.0
            on_floor = True
        kind = int(rng.integers(3))
        s = rng.uniform(0.06, 0.3)
        if on_floor and not sc.free(x, y, s, 0.35, gap=0.0):
            continue
        if kind == 0:
            sc.boxes.append(
                (
                    x,
                    y,
                    z + s / 2,
                    s / 2,
                    s / 2 * rng.uniform(0.5, 1.5),
                    s / 2 * rng.uniform(0.5, 2),
                    float(rng.uniform(0, np.pi)),
                    m,
                )
            )
        elif kind == 1:
            sc.spheres.append((x, y, z + s / 2, s / 2, m))
        else:
            sc.cylinders.append((x, y, z, z + s * rng.uniform(0.8, 2.5), s / 2 * 0.8, m))
        if on_floor:
            sc.footprints.append((x, y, s * 0.75))
        n -= 1


def _indoor_lights(sc: Scene, rng, x0, y0, x1, y1, zc, count: int, power=(3.0, 6.0)) -> None:
    for _ in range(count):
        warm = rng.uniform(0.0, 0.25)
        p = rng.uniform(*power) * zc * zc / 7.0
        sc.lights.append(
            (
                rng.uniform(x0 + 0.5, x1 - 0.5),
                rng.uniform(y0 + 0.5, y1 - 0.5),
                zc - 0.15,
                p * (1 + warm),
                p,
                p * (1 - warm),
            )
        )
    sc.light_core = 0.6
    a = rng.uniform(0.12, 0.22)
    sc.amb_sky, sc.amb_ground = (a, a, a * 1.02), (a * 0.6, a * 0.58, a * 0.55)
    if rng.random() < 0.5:  # daylight through a window: a weak directional light
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(0.3, 0.8)
        sc.sun_dir = (np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el))
        s = rng.uniform(0.1, 0.35)
        sc.sun_col = (s, s, s * 1.05)


def room_scene(rng: np.random.Generator, clutter: bool = False) -> Scene:
    sc = Scene(layout="room")
    W, L, H = rng.uniform(3.5, 8.0), rng.uniform(4.5, 10.0), rng.uniform(*ROOM_HEIGHT)
    x0, y0, x1, y1 = -W / 2, -L / 2, W / 2, L / 2
    sc.room = (x0, y0, 0.0, x1, y1, H)
    floor = sc.material(rng, str(rng.choice(["planks", "tiles", "carpet", "concrete"])))
    wall_kinds = ["plaster", "plaster", "brick", "fabric", "tiles", "wood"]
    w1 = sc.material(rng, str(rng.choice(wall_kinds)))
    w2 = w1 if rng.random() < 0.6 else sc.material(rng, str(rng.choice(wall_kinds)))
    ceil = sc.material(rng, "plaster", tint=0.05)
    sc.room_mats = (w1, w1, w2, w2, floor, ceil) if rng.random() < 0.5 else (w2, w2, w1, w1, floor, ceil)
    margin = 1.0
    ax, ay = (
        max(0.25, W / 2 - margin) * rng.uniform(0.55, 0.85),
        max(0.25, L / 2 - margin) * rng.uniform(0.55, 0.85),
    )
    cx = (
        rng.uniform(-(W / 2 - margin - ax * 1.12), W / 2 - margin - ax * 1.12)
        if W / 2 - margin > ax * 1.12
        else 0
    )
    cy = (
        rng.uniform(-(L / 2 - margin - ay * 1.12), L / 2 - margin - ay * 1.12)
        if L / 2 - margin > ay * 1.12
        else 0
    )
    sc.path = _loop_path(rng, cx, cy, ax, ay)
    _camera_defaults(sc, rng, height=CAMERA_HEIGHT, pitch=(-0.28, 0.0))
    sc.inward = float(rng.uniform(0.35, 0.75))
    sc.max_range = 12.0
    n = int(rng.integers(3, 6)) if clutter else int(rng.integers(4, 11))
    _wall_openings(sc, rng, x0, y0, x1, y1, H, sc.material(rng, str(rng.choice(["wood", "plastic"]))))
    _room_objects(sc, rng, n, x0, y0, x1, y1, H, clutter)
    _indoor_lights(sc, rng, x0, y0, x1, y1, H, int(rng.integers(1, 4)))
    return sc


def corridor_scene(rng: np.random.Generator) -> Scene:
    sc = Scene(layout="corridor")
    W, L, H = rng.uniform(1.9, 3.2), rng.uniform(8.0, 12.0), rng.uniform(*ROOM_HEIGHT)
    if rng.random() < 0.5:
        sc.room = (-L / 2, -W / 2, 0.0, L / 2, W / 2, H)
        along_x = True
    else:
        sc.room = (-W / 2, -L / 2, 0.0, W / 2, L / 2, H)
        along_x = False
    floor = sc.material(rng, str(rng.choice(["tiles", "concrete", "carpet", "planks"])))
    wall = sc.material(rng, str(rng.choice(["plaster", "plaster", "brick", "tiles"])))
    end = sc.material(rng, str(rng.choice(["plaster", "wood", "brick"])))
    ceil = sc.material(rng, "plaster", tint=0.05)
    sc.room_mats = (end, end, wall, wall, floor, ceil) if along_x else (wall, wall, end, end, floor, ceil)
    a_long, a_short = L / 2 - 1.6, max(0.15, min(0.4, W / 2 - 0.75))
    sc.path = _loop_path(rng, 0.0, 0.0, a_long if along_x else a_short, a_short if along_x else a_long)
    _camera_defaults(sc, rng, height=CAMERA_HEIGHT, pitch=(-0.25, 0.02), look=0.25)
    sc.inward = 0.15
    sc.max_range = 12.0
    # doors (thin dark boxes on the walls), cabinets and bins along the walls
    door = sc.material(rng, "wood")
    x0, y0, _, x1, y1, _ = sc.room
    for _ in range(int(rng.integers(2, 6))):
        t = rng.uniform(-L / 2 + 0.8, L / 2 - 0.8)
        side = 1 if rng.random() < 0.5 else -1
        hw, hh = rng.uniform(*DOOR_SIZE[0]) / 2, rng.uniform(*DOOR_SIZE[1]) / 2
        if along_x:
            sc.boxes.append((t, side * (W / 2 - 0.01), hh, hw, 0.03, hh, 0.0, door))
        else:
            sc.boxes.append((side * (W / 2 - 0.01), t, hh, 0.03, hw, hh, 0.0, door))
    _room_objects(sc, rng, int(rng.integers(2, 5)), x0, y0, x1, y1, H, False)
    n_l = int(rng.integers(2, 5))
    for k in range(n_l):
        t = -L / 2 + (k + 0.5) * L / n_l
        p = rng.uniform(2.0, 3.5)
        x, y = (t, 0.0) if along_x else (0.0, t)
        sc.lights.append((x, y, H - 0.1, p, p, p * rng.uniform(0.85, 1.0)))
    sc.light_core = 0.6
    a = rng.uniform(0.1, 0.2)
    sc.amb_sky, sc.amb_ground = (a, a, a), (a * 0.6, a * 0.6, a * 0.6)
    return sc
