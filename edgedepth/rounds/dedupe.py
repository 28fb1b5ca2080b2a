"""Near-duplicate removal for round building that scales to large stores.

The rule (edgedepth.rounds.build.dedupe): frames in descending score order; a frame is dropped when its
thumbnail (16x16, zero mean, unit variance) is within `distance` (mean absolute difference) of a frame
already kept. Comparing every frame with every kept one costs O(N^2) thumbnail distances: minutes at
10,000 frames, hours at 100,000. This finds the same frames with a cheap exact pre-filter:

the means of the four 8x8 quadrants bound the distance from below,
    mean|a - b| >= (1/4) sum_q |mean_q(a) - mean_q(b)|,
so a kept frame can only be a duplicate if the L1 distance of the quadrant means is below 4 * distance. A
k-d tree over the quadrant means (scipy) finds those frames; without scipy, kept frames are bucketed on a
grid of that cell size and a new frame looks at the 3^4 neighbouring cells. The full distance is computed
for the candidates only. The result is identical to the exhaustive search (tested).
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Sequence, Tuple

import numpy as np

_OFFSETS = list(itertools.product((-1, 0, 1), repeat=4))


def quadrant_means(thumbs: np.ndarray, side: int) -> np.ndarray:
    """(N, side*side) thumbnails -> (N, 4) means of their four quadrants."""
    h = side // 2
    t = thumbs.reshape(len(thumbs), 2, h, 2, h)
    return t.mean(axis=(2, 4)).reshape(len(thumbs), 4)


def dedupe_fast(embeddings: Sequence[np.ndarray], scores: Sequence[float], distance: float) -> List[int]:
    """Indices to keep (sorted): greedy in descending score, dropping any frame within `distance` of a kept
    one; the same answer as the exhaustive search."""
    n = len(embeddings)
    if n == 0:
        return []
    if distance <= 0:
        return list(range(n))
    thumbs = np.asarray(np.stack(embeddings), dtype=np.float32)
    side = int(round(np.sqrt(thumbs.shape[1])))
    if side * side != thumbs.shape[1] or side % 2:
        raise ValueError(f"thumbnails must be square with an even side, got {thumbs.shape[1]} values")
    quads = quadrant_means(thumbs, side)
    bound = 4.0 * distance * (1 + 1e-4)  # a duplicate's quadrant means lie within 4 * distance (float slack)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    try:
        from scipy.spatial import cKDTree
    except ImportError:  # scipy comes with the train extra; without it, the grid below
        return _grid_search(thumbs, quads, order, bound, distance)
    return _tree_search(cKDTree(quads), thumbs, quads, order, bound, distance)


def _tree_search(tree, thumbs: np.ndarray, quads: np.ndarray, order: List[int], bound: float,
                 distance: float, chunk: int = 4096) -> List[int]:
    """A k-d tree over every frame's quadrant means answers "which frames could be duplicates of this one"
    (L1 ball of radius `bound`); only the kept ones among them are compared in full."""
    is_kept = np.zeros(len(thumbs), bool)
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        near = tree.query_ball_point(quads[part], r=bound, p=1.0)
        for i, nb in zip(part, near):
            idx = np.asarray(nb, dtype=np.int64)
            idx = idx[is_kept[idx]]
            if len(idx) and float(np.min(np.mean(np.abs(thumbs[idx] - thumbs[i]), axis=1))) < distance:
                continue
            is_kept[i] = True
    return [int(i) for i in np.flatnonzero(is_kept)]


def _grid_search(thumbs: np.ndarray, quads: np.ndarray, order: List[int], bound: float,
                 distance: float) -> List[int]:
    """Kept frames bucketed on a grid of cell `bound` over their quadrant means; a frame looks at the 3^4
    neighbouring cells (or scans every kept frame's quadrant means when those cells hold most of them)."""
    n = len(thumbs)
    cells = np.floor(quads / bound).astype(np.int64)
    grid: Dict[Tuple[int, ...], List[int]] = {}
    kept: List[int] = []
    kept_quads = np.empty((n, 4), np.float32)  # quadrant means of the kept frames, in keeping order
    for i in order:
        key = tuple(int(v) for v in cells[i])
        buckets = [grid.get((key[0] + o[0], key[1] + o[1], key[2] + o[2], key[3] + o[3])) for o in _OFFSETS]
        buckets = [b for b in buckets if b]
        if sum(len(b) for b in buckets) * 4 > len(kept):  # the cells hold most frames: scan them all in C
            close = np.abs(kept_quads[:len(kept)] - quads[i]).sum(axis=1) < bound
            idx = np.asarray(kept, dtype=np.int64)[close]
        elif buckets:
            idx = np.asarray([j for b in buckets for j in b], dtype=np.int64)
            idx = idx[np.abs(quads[idx] - quads[i]).sum(axis=1) < bound]  # the lower bound
        else:
            idx = np.empty(0, np.int64)
        if len(idx) and float(np.min(np.mean(np.abs(thumbs[idx] - thumbs[i]), axis=1))) < distance:
            continue
        grid.setdefault(key, []).append(i)
        kept_quads[len(kept)] = quads[i]
        kept.append(i)
    return sorted(kept)
