"""Procedural, tileable textures for the synthetic renderer.

A process-wide bank holds every (kind, variant) texture with its mip levels, generated once from a fixed
seed, so scenes only pick indices into it (scene creation stays cheap and output stays deterministic).
Texels are sampled with nearest lookup at a mip level chosen from the pixel footprint, which keeps far
textures from aliasing into noise.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

SIZE = 128  # texels per tile side (power of two)
LEVELS = 6  # mip levels 0..5 (128 .. 4 texels of detail)
VARIANTS = 3


def _noise(rng: np.random.Generator, cells: int, size: int = SIZE) -> np.ndarray:
    """Tileable smooth value noise in [0, 1], shape (size, size)."""
    grid = rng.random((cells, cells)).astype(np.float32)
    x = np.arange(size, dtype=np.float32) * cells / size
    i0 = np.floor(x).astype(np.int64)
    f = x - i0
    f = f * f * (3 - 2 * f)
    i1 = (i0 + 1) % cells
    rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def _fbm(rng: np.random.Generator, base: int = 4, octaves: int = 4) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * _noise(rng, min(SIZE, base * 2**o))
        total += amp
        amp *= 0.5
    return out / total


def _colorize(gray: np.ndarray, c0, c1) -> np.ndarray:
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    return c0 + (c1 - c0) * gray[..., None]


def _grid_cells(
    n_rows: int, n_cols: int, offset_rows: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell ids and position inside the cell (fractions) for a brick/tile layout."""
    v = np.arange(SIZE, dtype=np.float32)[:, None] * n_rows / SIZE * np.ones((1, SIZE), np.float32)
    u = np.arange(SIZE, dtype=np.float32)[None, :] * n_cols / SIZE * np.ones((SIZE, 1), np.float32)
    row = np.floor(v).astype(np.int64)
    if offset_rows:
        u = u + 0.5 * (row % 2)
    col = np.floor(u).astype(np.int64) % n_cols
    return row, col, v - row, u - np.floor(u)


def _palette(rng: np.random.Generator, base, spread: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(base, np.float32) + rng.uniform(-spread, spread, 3).astype(np.float32), 0.02, 1)


# Element counts per tile are fixed per kind so that, with the fixed metres per tile of
# edgedepth.data.scenes.TILE_METRES, every plank, tile, brick and checker square has a real-world size
# (a monocular network can then read metric scale from texture, as in real rooms).
PLANK_ROWS = 8  # 1.6 m tile -> 0.20 m wide planks, ends staggered every ~0.8 m
TILE_ROWS = 4  # 1.2 m tile -> 0.30 m ceramic tiles
CHECKER_ROWS = 4  # 0.4 m tile -> 0.10 m squares


def tex_planks(rng):
    n_rows = PLANK_ROWS
    row, _, fv, fu = _grid_cells(n_rows, 1, False)
    u = np.arange(SIZE, dtype=np.float32)[None, :] / SIZE * np.ones((SIZE, 1), np.float32)
    cut = rng.random(n_rows)[row]  # plank end joints at a random place per row
    joint = np.abs(((u - cut) % 0.5) - 0.25) > 0.245
    shade = rng.uniform(0.75, 1.15, n_rows)[row]
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (u * 3 + 0.15 * _fbm(rng, 4) * 8 + fv * 1.5) * 3)
    gray = np.clip(0.55 * shade + 0.18 * grain - 0.25 * joint - 0.2 * (np.minimum(fv, 1 - fv) < 0.04), 0, 1)
    return _colorize(gray, _palette(rng, (0.22, 0.12, 0.05)), _palette(rng, (0.75, 0.5, 0.3)))


def tex_tiles(rng):
    n = TILE_ROWS
    row, col, fv, fu = _grid_cells(n, n, False)
    grout = (np.minimum(fv, 1 - fv) < 0.05) | (np.minimum(fu, 1 - fu) < 0.05)
    checker = rng.random() < 0.4
    cell = ((row + col) % 2 if checker else np.zeros_like(row)).astype(np.float32)
    jitter = rng.uniform(-0.06, 0.06, (n, n))[row % n, col]
    c_a, c_b = _palette(rng, (0.8, 0.78, 0.72), 0.15), _palette(rng, (0.25, 0.25, 0.28), 0.15)
    col_img = _colorize(cell, c_a, c_b) * (1 + jitter[..., None]) * (0.92 + 0.08 * _fbm(rng, 8)[..., None])
    col_img[grout] = _palette(rng, (0.4, 0.4, 0.38), 0.1)
    return col_img


def tex_carpet(rng):
    g = 0.6 * _fbm(rng, 16, 3) + 0.4 * rng.random((SIZE, SIZE)).astype(np.float32)
    return _colorize(g, _palette(rng, (0.2, 0.2, 0.25), 0.15), _palette(rng, (0.5, 0.45, 0.45), 0.2))


def tex_plaster(rng):
    g = 0.7 * _fbm(rng, 2, 3) + 0.3 * _noise(rng, 32)
    c = _palette(rng, (0.85, 0.83, 0.78), 0.12)
    return _colorize(g, c * 0.82, c)


def tex_brick(rng):
    row, col, fv, fu = _grid_cells(16, 4, True)
    mortar = (np.minimum(fv, 1 - fv) < 0.1) | (np.minimum(fu, 1 - fu) < 0.04)
    shade = rng.uniform(0.75, 1.1, (16, 8))[row % 16, col % 8]
    base = _palette(rng, (0.55, 0.25, 0.17), 0.1)
    img = base[None, None, :] * shade[..., None] * (0.85 + 0.3 * _fbm(rng, 16, 2)[..., None])
    img[mortar] = _palette(rng, (0.7, 0.68, 0.62), 0.05)
    return img


def tex_concrete(rng):
    g = 0.6 * _fbm(rng, 4, 4) + 0.4 * (rng.random((SIZE, SIZE)) > 0.97).astype(np.float32) * 0.5
    c = _palette(rng, (0.55, 0.55, 0.52), 0.1)
    return _colorize(g, c * 0.7, c * 1.15)


def tex_asphalt(rng):
    g = 0.5 * _fbm(rng, 8, 3) + 0.5 * rng.random((SIZE, SIZE)).astype(np.float32)
    c = _palette(rng, (0.28, 0.28, 0.29), 0.05)
    return _colorize(g, c * 0.7, c * 1.3)


def tex_grass(rng):
    streak = _noise(rng, 64)
    streak = 0.5 * streak + 0.5 * np.roll(streak, 2, axis=0)
    g = 0.45 * _fbm(rng, 4, 3) + 0.55 * streak
    return _colorize(g, _palette(rng, (0.12, 0.25, 0.06), 0.05), _palette(rng, (0.35, 0.55, 0.15), 0.08))


def tex_wood(rng):
    v = np.arange(SIZE, dtype=np.float32)[:, None] / SIZE
    warp = _fbm(rng, 4, 3)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v * rng.integers(6, 14) + warp * 1.5))
    g = 0.7 * rings + 0.3 * _noise(rng, 32)
    return _colorize(g, _palette(rng, (0.35, 0.2, 0.1)), _palette(rng, (0.7, 0.5, 0.3)))


def tex_checker(rng):
    n = CHECKER_ROWS
    row, col, _, _ = _grid_cells(n, n, False)
    cell = ((row + col) % 2).astype(np.float32)
    return _colorize(
        cell, _palette(rng, rng.uniform(0.1, 0.9, 3), 0.0), _palette(rng, rng.uniform(0.1, 0.9, 3), 0)
    )


def tex_fabric(rng):
    u = np.arange(SIZE, dtype=np.float32)
    weave = 0.5 + 0.25 * np.sin(u * np.pi / 2)[None, :] + 0.25 * np.sin(u * np.pi / 2)[:, None]
    stripes = (np.floor(u / (SIZE / int(rng.choice([4, 8])))) % 2)[None, :] * np.ones((SIZE, 1))
    g = 0.25 * weave + 0.35 * stripes * (rng.random() < 0.5) + 0.4 * _fbm(rng, 8, 2)
    return _colorize(
        g.astype(np.float32),
        _palette(rng, rng.uniform(0.1, 0.6, 3), 0),
        _palette(rng, rng.uniform(0.4, 0.9, 3), 0),
    )


def tex_plastic(rng):
    g = 0.85 + 0.15 * _fbm(rng, 8, 2)
    return _colorize(g, (0, 0, 0), _palette(rng, rng.uniform(0.15, 0.9, 3), 0))


def tex_dirt(rng):
    g = 0.5 * _fbm(rng, 8, 4) + 0.5 * (rng.random((SIZE, SIZE)).astype(np.float32) ** 3)
    return _colorize(g, _palette(rng, (0.22, 0.16, 0.1)), _palette(rng, (0.55, 0.45, 0.32)))


def tex_leaves(rng):
    g = np.clip(1.6 * _fbm(rng, 16, 3) - 0.3, 0, 1) * (
        0.6 + 0.4 * rng.random((SIZE, SIZE)).astype(np.float32)
    )
    return _colorize(g, _palette(rng, (0.03, 0.08, 0.02), 0.02), _palette(rng, (0.25, 0.45, 0.12), 0.08))


def tex_facade(rng):
    rows, cols = int(rng.choice([2, 4])), int(rng.choice([2, 4]))
    _, _, fv, fu = _grid_cells(rows, cols, False)
    window = (np.abs(fv - 0.5) < 0.28) & (np.abs(fu - 0.5) < 0.3)
    frame = (np.abs(fv - 0.5) < 0.32) & (np.abs(fu - 0.5) < 0.34) & ~window
    wall = _palette(rng, rng.choice([(0.7, 0.65, 0.55), (0.55, 0.35, 0.28), (0.8, 0.8, 0.8)]), 0.08)
    img = wall[None, None, :] * (0.85 + 0.2 * _fbm(rng, 8, 3)[..., None])
    glass = _palette(rng, (0.18, 0.22, 0.28), 0.05)
    img[window] = glass * (0.7 + 0.6 * _fbm(rng, 2, 2)[window][:, None])
    img[frame] = wall * 0.6
    return img


KINDS: Dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "planks": tex_planks,
    "tiles": tex_tiles,
    "carpet": tex_carpet,
    "plaster": tex_plaster,
    "brick": tex_brick,
    "concrete": tex_concrete,
    "asphalt": tex_asphalt,
    "grass": tex_grass,
    "wood": tex_wood,
    "checker": tex_checker,
    "fabric": tex_fabric,
    "plastic": tex_plastic,
    "dirt": tex_dirt,
    "leaves": tex_leaves,
    "facade": tex_facade,
}
KIND_NAMES = tuple(KINDS)

_BANK = None


def texture_id(kind: str, variant: int) -> int:
    """Index of (kind, variant) in the bank."""
    return KIND_NAMES.index(kind) * VARIANTS + int(variant) % VARIANTS


def _mips(img: np.ndarray) -> np.ndarray:
    """(LEVELS, SIZE, SIZE, 3) uint8: level k is the 2^k box average, repeated back to full size."""
    out = np.empty((LEVELS, SIZE, SIZE, 3), np.uint8)
    for k in range(LEVELS):
        f = 2**k
        small = img.reshape(SIZE // f, f, SIZE // f, f, 3).mean(axis=(1, 3))
        out[k] = np.clip(np.repeat(np.repeat(small, f, 0), f, 1) * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def bank() -> np.ndarray:
    """Flattened texel bank: rows indexed by ((tex * LEVELS + level) * SIZE + v) * SIZE + u."""
    global _BANK
    if _BANK is None:
        tiles = []
        for ki, kind in enumerate(KIND_NAMES):
            for v in range(VARIANTS):
                rng = np.random.default_rng([7919, ki, v])
                img = np.clip(KINDS[kind](rng).astype(np.float32), 0, 1)
                tiles.append(_mips(img))
        _BANK = np.ascontiguousarray(np.stack(tiles).reshape(-1, 3))
    return _BANK


def sample(tex: np.ndarray, level: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Albedo in [0, 1] (float32, (N, 3)) for texture ids, mip levels and texture coords in tiles."""
    iu = (np.floor(u * SIZE).astype(np.int64)) & (SIZE - 1)
    iv = (np.floor(v * SIZE).astype(np.int64)) & (SIZE - 1)
    flat = ((tex * LEVELS + level) * SIZE + iv) * SIZE + iu
    return np.take(bank(), flat, axis=0).astype(np.float32) * np.float32(1 / 255)
