"""Synthetic RGB-D frames and videos: procedural scenes, domains, camera trajectories, sensor model.

Domains (each a real appearance and/or geometry shift, all deterministic per seed):
  indoor   rooms (75 %) and corridors: textured floors/walls/ceiling, furniture on the floor, lamps.
  outdoor  streets (buildings, trees, poles, parked cars) and parks under sun and sky, depth <= 40 m.
  night    rooms, corridors and streets lit by a few lamps only: low light and strong sensor noise.
  fog      outdoor layouts in depth-dependent haze (visibility ~20-75 m), overcast light.
  clutter  rooms holding many small objects on the floor and on tables.
Depth is metric z-depth (along the optical axis) in metres; sky / beyond range is 0 (invalid).
Poses are camera-to-world 4x4 (OpenCV camera axes: x right, y down, z forward; world z up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from edgedepth.data import raycast, shading
from edgedepth.data.outdoor import park_scene, street_scene
from edgedepth.data.scenes import Scene, corridor_scene, room_scene
from edgedepth.data.shadows import SceneShadows
from edgedepth.errors import ConfigError

DOMAINS = ("indoor", "outdoor", "night", "fog", "clutter")
FPS = 30.0  # trajectory time base: frames per second of a SceneStream
HFOV_DEG = 60.0
# Bumped whenever scenes or rendering change what a seed produces; written to meta.json so scripts that
# cache rendered folders (scripts/bench_train.py) re-render instead of reusing stale frames.
RENDERER_VERSION = 2
MAX_SPEED = 6.0  # m/s, bounds the path length a scene must provide


@dataclass
class SynthFrame:
    rgb: np.ndarray  # uint8 HxWx3 RGB
    depth: np.ndarray  # float32 HxW metres, 0 = invalid
    pose: np.ndarray  # float64 4x4 camera-to-world
    intrinsics: np.ndarray  # float64 3x3
    domain: str
    index: int
    scene_seed: int


def check_domain(domain: str) -> int:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r}; choose one of: {', '.join(DOMAINS)}")
    return DOMAINS.index(domain)


def check_size(height: int, width: int) -> None:
    if int(height) < 8 or int(width) < 8 or int(height) > 4096 or int(width) > 4096:
        raise ConfigError(
            f"image size {height}x{width} is out of range: use 8..4096 pixels per side, e.g. 96x128"
        )


def intrinsics_for(height: int, width: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[fx, 0, (width - 1) / 2.0], [0, fx, (height - 1) / 2.0], [0, 0, 1]], np.float64)


# -- domains ---------------------------------------------------------------------------------------
def _night(sc: Scene, rng: np.random.Generator) -> None:
    sc.sun_col = (0.0, 0.0, 0.0)
    for m in sc.window_mats:  # dark glass: no daylight at night
        sc.mat_emit[m] = 0.0
        sc.mat_tint[m] = (0.15, 0.17, 0.22)
    lamp = sc.material(rng, "plastic", tint=0.0, emit=1.0)
    sc.mat_tint[lamp] = (1.0, 0.9, 0.7)
    sodium = rng.random() < 0.5
    col = np.array([1.0, 0.62, 0.3]) if sodium else np.array([1.0, 0.95, 0.85])
    if sc.room is not None:
        x0, y0, _, x1, y1, zc = sc.room
        sc.lights = []
        for _ in range(int(rng.integers(1, 3))):
            p = rng.uniform(0.5, 1.5)
            x, y, z = (
                rng.uniform(x0 + 0.4, x1 - 0.4),
                rng.uniform(y0 + 0.4, y1 - 0.4),
                rng.uniform(0.6, zc - 0.3),
            )
            if sc.path.distance(x, y) < 0.5:
                z = zc - 0.15
            sc.lights.append((x, y, z, *(p * col)))
            sc.spheres.append((x, y, z, 0.06, lamp))
        a = rng.uniform(0.002, 0.01)
        sc.light_core = 0.3
    else:
        sc.lights = []
        xs = sc.path.xy[:, 0]
        x = float(xs.min()) - 10 + rng.uniform(0, 10)
        spacing = rng.uniform(12, 25)
        while x < xs.max() + 45:
            side = 1 if rng.random() < 0.5 else -1
            y = side * (max(sc.road_half, 1.0) + 0.4)
            p = rng.uniform(15, 40)
            sc.lights.append((x, y - side * 0.9, 5.0, *(p * col)))  # lamp on an arm over the road
            sc.cylinders.append((x, y, 0.0, 5.1, 0.07, lamp))
            sc.boxes.append((x, y - side * 0.45, 5.15, 0.04, 0.5, 0.04, 0.0, lamp))
            sc.spheres.append((x, y - side * 0.9, 5.0, 0.15, lamp))
            x += spacing
        a = rng.uniform(0.004, 0.02)
        sc.sky_zenith, sc.sky_horizon = (0.002, 0.003, 0.01), (0.01, 0.012, 0.025)
        sc.fog_beta, sc.light_core = 0.0, 1.0
    sc.amb_sky, sc.amb_ground = (a * 0.7, a * 0.8, a * 1.2), (a * 0.3, a * 0.3, a * 0.35)
    sc.exposure = float(rng.uniform(0.012, 0.035))
    sc.shot_noise = float(rng.uniform(0.0015, 0.004))
    sc.read_noise = float(rng.uniform(0.002, 0.006))


def _fog(sc: Scene, rng: np.random.Generator) -> None:
    sc.fog_beta = float(rng.uniform(0.04, 0.15))
    g = rng.uniform(0.55, 0.85)
    sc.fog_col = (g, g * 1.01, g * 1.04)
    sc.sun_col = tuple(np.asarray(sc.sun_col) * 0.3)
    sc.amb_sky = tuple(np.asarray(sc.amb_sky) * 0.5 + 0.4)
    sc.exposure = float(rng.uniform(0.2, 0.3))


def make_scene(domain: str, scene_seed: int, path_length: float = 30.0) -> Scene:
    """The scene of one domain for one seed (deterministic)."""
    dom = check_domain(domain)
    rng = np.random.default_rng([int(scene_seed) & 0xFFFFFFFF, dom, 17])
    if domain == "indoor":
        sc = room_scene(rng) if rng.random() < 0.75 else corridor_scene(rng)
    elif domain == "clutter":
        sc = room_scene(rng, clutter=True)
    elif domain == "outdoor":
        sc = street_scene(rng, path_length) if rng.random() < 0.6 else park_scene(rng, path_length)
    elif domain == "fog":
        sc = street_scene(rng, path_length) if rng.random() < 0.6 else park_scene(rng, path_length)
        _fog(sc, rng)
    else:  # night
        u = rng.random()
        sc = (
            room_scene(rng) if u < 0.4 else corridor_scene(rng) if u < 0.6 else street_scene(rng, path_length)
        )
        _night(sc, rng)
    if sc.room is None:
        sc.max_range = 40.0
    return sc


# -- sensor ----------------------------------------------------------------------------------------
_GAMMA_LUT = np.clip(np.round(255 * (np.arange(4096) / 4095.0) ** (1 / 2.2)), 0, 255).astype(np.uint8)


def expose(rad: np.ndarray, sc: Scene, rng: np.random.Generator) -> np.ndarray:
    """Auto-exposure to the scene's target level, shot + read noise, vignetting, sRGB gamma -> uint8."""
    H, W, _ = rad.shape
    mean = float(rad.mean())
    gain = np.float32(np.clip(sc.exposure / max(mean, 1e-6), 0.02, 200.0))
    x = rad * (gain * _vignette(H, W))[..., None]
    if sc.shot_noise > 0 or sc.read_noise > 0:
        sigma = np.sqrt(np.maximum(x, 0) * np.float32(sc.shot_noise) + np.float32(sc.read_noise**2))
        x = x + sigma * _noise_field(H, W, rng)
    q = (np.clip(x, 0, 1) * 4095 + 0.5).astype(np.int32)
    return _GAMMA_LUT[q]


_VIGNETTE: Dict = {}
_NOISE: Dict = {}
NOISE_PAD = 61


def _noise_field(H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian sensor noise (H, W, 3): a window at a random offset into a fixed larger field.

    Drawing fresh normals costs more than the rest of the sensor model at 240x320; a random window of a
    per-size field generated once (fixed seed) is as white per frame and deterministic per stream seed.
    """
    field = _NOISE.get((H, W))
    if field is None:
        gen = np.random.default_rng(12345)
        field = _NOISE[(H, W)] = gen.standard_normal((H + NOISE_PAD, W + NOISE_PAD, 3), dtype=np.float32)
    dy, dx = rng.integers(0, NOISE_PAD + 1, 2)
    return field[dy : dy + H, dx : dx + W]


def _vignette(H: int, W: int) -> np.ndarray:
    v = _VIGNETTE.get((H, W))
    if v is None:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - (W - 1) / 2) / (W / 2)) ** 2 + ((yy - (H - 1) / 2) / (W / 2)) ** 2
        v = _VIGNETTE[(H, W)] = (1 - 0.18 * r2).astype(np.float32)
    return v


def _pose(o: np.ndarray, R: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, o
    return T


def render_view(
    sc: Scene,
    s: float,
    height: int,
    width: int,
    rng: np.random.Generator,
    extra_yaw: float = 0.0,
    extra_pitch: float = 0.0,
):
    """(rgb, depth, pose, K) of the camera at arc length s on the scene's path."""
    o, (yaw, pitch, roll) = sc.camera_at(s, extra_yaw, extra_pitch)
    R = raycast.look_rotation(yaw, pitch, roll)
    K = intrinsics_for(height, width)
    rad, depth = shading.render_linear(sc, o, R, K, height, width)
    return expose(rad, sc, rng), depth, _pose(o, R), K


def render_frame(domain: str, seed: int, height: int, width: int) -> SynthFrame:
    """One random scene and camera from `seed` (deterministic)."""
    check_domain(domain)
    check_size(height, width)
    sc = make_scene(domain, seed, path_length=4.0)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, DOMAINS.index(domain), 29])
    best = None
    for _ in range(8):  # prefer views that look into the room rather than at a nearby wall
        s = rng.uniform(0, sc.path.length)
        yaw = rng.uniform(-0.5, 0.5) if sc.room is not None else rng.uniform(-0.35, 0.35)
        free = _room_free_distance(sc, s, yaw) if sc.room is not None else np.inf
        if best is None or free > best[0]:
            best = (free, s, yaw)
        if free >= 3.0:
            break
    _, s, yaw = best
    # one view only: coarser shadow maps, and sun shadows only where this camera can see (<= 45 m ahead)
    o, (cam_yaw, _, _) = sc.camera_at(s, yaw)
    focus = (o[0] + 22 * np.cos(cam_yaw), o[1] + 22 * np.sin(cam_yaw), 26.0)
    sc._shadows = SceneShadows(sc, focus=focus, point_size=64, sun_texel=0.45)
    rgb, depth, pose, K = render_view(sc, s, height, width, rng, yaw, rng.uniform(-0.08, 0.08))
    return SynthFrame(rgb, depth, pose, K, domain, 0, int(seed))


def _room_free_distance(sc: Scene, s: float, extra_yaw: float) -> float:
    """Horizontal distance from the camera at s to the room wall it faces."""
    o, (yaw, _, _) = sc.camera_at(s, extra_yaw)
    x0, y0, _, x1, y1, _ = sc.room
    c, sn = np.cos(yaw), np.sin(yaw)
    tx = ((x1 if c > 0 else x0) - o[0]) / c if abs(c) > 1e-9 else np.inf
    ty = ((y1 if sn > 0 else y0) - o[1]) / sn if abs(sn) > 1e-9 else np.inf
    return float(min(tx, ty))


def _derive(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class SceneStream:
    """A video: a smooth camera trajectory through a scene; a new scene every `scene_length` frames."""

    def __init__(self, domain: str, seed: int, height: int, width: int, scene_length: int = 150):
        self.dom = check_domain(domain)
        check_size(height, width)
        if int(scene_length) < 1:
            raise ConfigError(f"scene_length must be >= 1, got {scene_length}")
        self.domain, self.seed, self.height, self.width = domain, int(seed), int(height), int(width)
        self.scene_length = int(scene_length)
        self.index = 0
        self.scene_index = -1
        self.rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.dom, 41])
        self.scene: Optional[Scene] = None

    def _next_scene(self) -> None:
        self.scene_index += 1
        self.scene_seed = _derive(self.seed, self.dom, self.scene_index, 53)
        self.scene = make_scene(
            self.domain, self.scene_seed, path_length=MAX_SPEED * self.scene_length / FPS + 5.0
        )
        start = np.random.default_rng(self.scene_seed).uniform(0, self.scene.path.length)
        self.s0 = start if self.scene.path.closed else 0.0
        self.frame_in_scene = 0

    def next(self) -> SynthFrame:
        if self.scene is None or self.frame_in_scene >= self.scene_length:
            self._next_scene()
        s = self.s0 + self.frame_in_scene * self.scene.speed / FPS
        rgb, depth, pose, K = render_view(self.scene, s, self.height, self.width, self.rng)
        frame = SynthFrame(rgb, depth, pose, K, self.domain, self.index, self.scene_seed)
        self.index += 1
        self.frame_in_scene += 1
        return frame

    def __iter__(self):
        while True:
            yield self.next()


class MixedStream:
    """Segments of `segment_length` frames, each from a domain drawn with the given probabilities."""

    def __init__(self, mix: Dict[str, float], seed: int, height: int, width: int, segment_length: int = 30):
        if not mix:
            raise ConfigError(
                f"the domain mix is empty; give probabilities for some of: {', '.join(DOMAINS)}"
            )
        for d, p in mix.items():
            check_domain(d)
            if not np.isfinite(p) or p < 0:
                raise ConfigError(f"domain {d!r} has an invalid probability {p}; use a number >= 0")
        total = float(sum(mix.values()))
        if total <= 0:
            raise ConfigError("the domain probabilities sum to 0; give at least one positive weight")
        if int(segment_length) < 1:
            raise ConfigError(f"segment_length must be >= 1, got {segment_length}")
        self.names = sorted(mix)
        self.probs = np.array([mix[d] / total for d in self.names])
        self.seed, self.height, self.width = int(seed), int(height), int(width)
        self.segment_length = int(segment_length)
        self.rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 61])
        self.streams = {
            d: SceneStream(d, _derive(self.seed, DOMAINS.index(d), 67), height, width) for d in self.names
        }
        self.index = 0
        self.left = 0
        self.current = self.names[0]

    def next(self) -> SynthFrame:
        if self.left <= 0:
            self.current = self.names[int(self.rng.choice(len(self.names), p=self.probs))]
            self.left = self.segment_length
        f = self.streams[self.current].next()
        f.index = self.index
        self.index += 1
        self.left -= 1
        return f

    def __iter__(self):
        while True:
            yield self.next()


def write_synth_dataset(
    out_dir: Union[str, Path],
    domain: str,
    frames: int,
    height: int,
    width: int,
    seed: int,
    sequence: bool = False,
    progress: bool = True,
) -> Path:
    """Render `frames` frames into the folder format (rgb/*.png, depth/*.png in mm, meta.json)."""
    from edgedepth.data.formats import write_meta, write_sample

    check_domain(domain)
    check_size(height, width)
    if int(frames) < 1:
        raise ConfigError(f"--frames must be >= 1, got {frames}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = SceneStream(domain, seed, height, width) if sequence else None
    per_frame = {}
    it = range(int(frames))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"synth {domain}", unit="frame")
    for i in it:
        f = stream.next() if stream is not None else render_frame(domain, _derive(seed, i, 71), height, width)
        name = f"{i:06d}"
        write_sample(out, name, f.rgb, f.depth)
        per_frame[name] = {
            "domain": f.domain,
            "pose": f.pose.tolist(),
            "scene_seed": f.scene_seed,
            "index": i,
        }
    write_meta(
        out,
        {
            "source": "synthetic",
            "renderer_version": RENDERER_VERSION,
            "domain": domain,
            "intrinsics": intrinsics_for(height, width).tolist(),
            "height": int(height),
            "width": int(width),
            "seed": int(seed),
            "sequence": bool(sequence),
            "fps": FPS if sequence else None,
            "frames": per_frame,
        },
    )
    return out
