"""Outdoor layouts: a street with buildings, trees, poles and parked cars, and an open park."""

from __future__ import annotations

import numpy as np

from edgedepth.data.scenes import Path, Scene, _camera_defaults


def _sun_and_sky(sc: Scene, rng: np.random.Generator) -> None:
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 1.1)
    sc.sun_dir = (np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el))
    overcast = rng.uniform(0.0, 1.0)
    s = 2.2 * (1 - 0.75 * overcast)
    sc.sun_col = (s, s * 0.95, s * 0.88)
    a = 0.35 + 0.5 * overcast
    sc.amb_sky = (a * 0.85, a * 0.92, a * 1.1)
    sc.amb_ground = (a * 0.45, a * 0.45, a * 0.4)
    grey = overcast * 0.6
    sc.sky_zenith = tuple(np.array([0.2, 0.4, 0.85]) * (1 - grey) + grey * 0.75)
    sc.sky_horizon = tuple(np.array([0.72, 0.8, 0.9]) * (1 - grey) + grey * 0.85)
    sc.fog_beta = float(rng.uniform(0.002, 0.008))  # mild aerial perspective
    sc.fog_col = sc.sky_horizon
    sc.max_range = 40.0


def _tree(sc: Scene, rng, x, y, bark: int, leaves: int) -> None:
    trunk_h, r = rng.uniform(2.6, 4.0), rng.uniform(0.1, 0.22)
    canopy = rng.uniform(1.0, 2.0)
    sc.cylinders.append((x, y, 0.0, trunk_h + 0.3, r, bark))
    sc.spheres.append((x, y, trunk_h + 0.6 * canopy, canopy, leaves))
    sc.footprints.append((x, y, r + 0.2))


def _car(sc: Scene, rng, x, y, paint: int, glass: int) -> None:
    L, W = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9)
    sc.boxes.append((x, y, 0.72, L / 2, W / 2, 0.4, 0.0, paint))
    sc.boxes.append((x - rng.uniform(0, 0.4), y, 1.3, L * 0.27, W / 2 - 0.08, 0.25, 0.0, glass))
    for sx in (-1, 1):
        for sy in (-1, 1):
            sc.cylinders.append((x + sx * L * 0.32, y + sy * (W / 2 - 0.1), 0.0, 0.3, 0.32, glass))
    sc.footprints.append((x, y, L / 2))


def street_scene(rng: np.random.Generator, path_length: float = 30.0) -> Scene:
    sc = Scene(layout="street")
    rw, sw = rng.uniform(3.0, 5.5), rng.uniform(1.5, 3.5)
    sc.road_half, sc.walk_width = rw, sw
    sc.ground_mats = {
        "road": sc.material(rng, "asphalt", tint=0.08),
        "walk": sc.material(rng, "concrete"),
        "verge": sc.material(rng, str(rng.choice(["grass", "dirt"]))),
        "paint": sc.material(rng, "plastic", tint=0.0),
    }
    sc.mat_tint[sc.ground_mats["paint"]] = (1.4, 1.4, 1.35)
    lane = rng.uniform(-max(0.2, rw - 2.6), max(0.2, rw - 2.6))
    length = float(min(max(path_length, 10.0), 600.0))
    xs = np.linspace(0.0, length, max(64, int(length * 8)))
    wig = 0.3 * np.sin(xs / rng.uniform(6, 14) + rng.uniform(0, 6.3))
    ys = np.clip(lane + wig, -rw + 1.0, rw - 1.0)
    sc.path = Path(np.stack([xs, ys], 1), closed=False)
    _camera_defaults(sc, rng, height=(1.2, 1.8), pitch=(-0.12, 0.05), speed=(1.5, 6.0), look=0.15)
    _sun_and_sky(sc, rng)
    x_lo, x_hi = -10.0, length + 50.0
    facade = [sc.material(rng, "facade") for _ in range(3)] + [sc.material(rng, "brick")]
    for side in (-1, 1):
        x = x_lo
        while x < x_hi:
            w = rng.uniform(6, 20)
            if rng.random() < 0.85:
                back = rw + sw + rng.uniform(0.3, 6)
                d, h = rng.uniform(6, 14), rng.uniform(4, 18)
                sc.boxes.append(
                    (
                        x + w / 2,
                        side * (back + d / 2),
                        h / 2,
                        w / 2,
                        d / 2,
                        h / 2,
                        0.0,
                        facade[int(rng.integers(len(facade)))],
                    )
                )
            x += w + rng.uniform(0, 6)
    bark, leaves = sc.material(rng, "wood"), sc.material(rng, "leaves")
    pole = sc.material(rng, "plastic", tint=0.0)
    sc.mat_tint[pole] = (0.5, 0.5, 0.5)
    glass = sc.material(rng, "plastic", tint=0.0)
    sc.mat_tint[glass] = (0.2, 0.22, 0.25)
    paints = [sc.material(rng, "plastic") for _ in range(3)]
    n_budget = 160
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 8)
        while x < x_hi and n_budget > 0:
            kind = rng.random()
            if kind < 0.45:
                _tree(sc, rng, x, side * (rw + sw * rng.uniform(0.5, 0.85)), bark, leaves)
                n_budget -= 2
            elif kind < 0.65:
                sc.cylinders.append((x, side * (rw + 0.4), 0.0, rng.uniform(3.5, 6.0), 0.07, pole))
                sc.footprints.append((x, side * (rw + 0.4), 0.1))
                n_budget -= 1
            elif kind < 0.9 and rw > 3.6:
                y = side * (rw - 1.0)
                if sc.free(x, y, 2.4, 0.6):
                    _car(sc, rng, x, y, paints[int(rng.integers(3))], glass)
                    n_budget -= 6
            else:
                s = rng.uniform(0.4, 1.0)
                sc.boxes.append(
                    (
                        x,
                        side * (rw + sw * 0.5),
                        s / 2,
                        s / 2,
                        s / 2,
                        s / 2,
                        float(rng.uniform(0, 3)),
                        paints[int(rng.integers(3))],
                    )
                )
                n_budget -= 1
            x += rng.uniform(4, 12)
    return sc


def park_scene(rng: np.random.Generator, path_length: float = 30.0) -> Scene:
    sc = Scene(layout="park")
    sc.ground_mats = {
        "verge": sc.material(rng, str(rng.choice(["grass", "grass", "dirt"]))),
        "road": sc.material(rng, "dirt"),
        "walk": sc.material(rng, "concrete"),
        "paint": sc.material(rng, "concrete"),
    }
    sc.road_half = float(rng.uniform(0.8, 1.5))  # a footpath following the camera path
    length = float(min(max(path_length, 10.0), 600.0))
    xs = np.linspace(0.0, length, max(64, int(length * 8)))
    ys = 2.0 * np.sin(xs / rng.uniform(8, 20) + rng.uniform(0, 6.3))
    sc.path = Path(np.stack([xs, ys], 1), closed=False)
    sc.walk_width = 0.0
    _camera_defaults(sc, rng, height=(1.3, 1.8), pitch=(-0.15, 0.05), speed=(1.0, 2.5), look=0.4)
    _sun_and_sky(sc, rng)
    bark, leaves = sc.material(rng, "wood"), sc.material(rng, "leaves")
    rock = sc.material(rng, "concrete")
    bench = sc.material(rng, "wood")
    facade = sc.material(rng, "facade")
    x_lo, x_hi = -10.0, length + 45.0
    area = (x_hi - x_lo) * 60
    n = int(min(140, area / rng.uniform(40, 90)))
    for _ in range(n):
        x, y = rng.uniform(x_lo, x_hi), rng.uniform(-30, 30)
        kind = rng.random()
        if kind < 0.55:
            if sc.free(x, y, 0.4, 1.8):
                _tree(sc, rng, x, y, bark, leaves)
        elif kind < 0.8:
            r = rng.uniform(0.2, 0.9)
            if sc.free(x, y, r, 0.8):
                sc.spheres.append((x, y, r * 0.4, r, rock))
                sc.footprints.append((x, y, r))
        else:
            if sc.free(x, y, 1.0, 0.8):
                sc.boxes.append((x, y, 0.25, 0.9, 0.25, 0.25, float(rng.uniform(0, 3.2)), bench))
                sc.footprints.append((x, y, 1.0))
    for _ in range(int(rng.integers(2, 7))):  # distant buildings
        x, side = rng.uniform(x_lo, x_hi), 1 if rng.random() < 0.5 else -1
        w, d, h = rng.uniform(8, 25), rng.uniform(8, 15), rng.uniform(6, 20)
        sc.boxes.append((x, side * rng.uniform(25, 38), h / 2, w / 2, d / 2, h / 2, 0.0, facade))
    return sc


def ground_material(sc: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Material id per ground point: road, lane paint, sidewalk, verge (street) or path/grass (park)."""
    g = sc.ground_mats
    if sc.layout == "park":
        ys = np.interp(x, sc.path.xy[:, 0], sc.path.xy[:, 1])
        return np.where(np.abs(y - ys) < sc.road_half, g["road"], g["verge"]).astype(np.int64)
    ay = np.abs(y)
    mat = np.where(
        ay < sc.road_half, g["road"], np.where(ay < sc.road_half + sc.walk_width, g["walk"], g["verge"])
    )
    paint = (ay < 0.07) & ((x % 6.0) < 3.0)
    return np.where(paint, g["paint"], mat).astype(np.int64)
