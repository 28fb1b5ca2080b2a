"""Near-duplicate removal for round building that scales to large stores.

The rule (edgedepth.rounds.build.dedupe): frames in descending score order; a frame is dropped when its
thumbnail (16x16, zero mean, unit variance) is within `distance` (mean absolute difference) of a frame
already kept. Comparing every frame with every kept one costs O(N^2) thumbnail distances: minutes at
10,000 frames, hours at 100,000. This finds the same frames with cheap exact pre-filters:

the means of a thumbnail's 4x4 blocks (16 values) bound the distance from below,
    mean|a - b| >= (1/16) sum_b |mean_b(a) - mean_b(b)|,
and so do the means of its four quadrants (the blocks' means 2x2 at a time),
    mean|a - b| >= (1/4) sum_q |mean_q(a) - mean_q(b)|.
A k-d tree over the quadrant means (scipy) finds the frames that could be duplicates (L1 distance of the
quadrant means below 4 * distance); without scipy, kept frames are bucketed on a grid of that cell size
and a new frame looks at the 3^4 neighbouring cells. The block means then rule out nearly all of those,
and the full thumbnails are compared for the few left only. So the search needs only the block means in
memory (64 bytes a frame): the round builder keeps the thumbnails in a file and reads the few it needs.
The result is identical to the exhaustive search (tested).
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

_OFFSETS = list(itertools.product((-1, 0, 1), repeat=4))


def block_means(thumbs: np.ndarray, blocks: int = 4) -> np.ndarray:
    """(N, side*side) thumbnails -> (N, blocks*blocks) float32 means of their blocks (row-major)."""
    thumbs = np.asarray(thumbs, np.float32)
    side = int(round(np.sqrt(thumbs.shape[1]))) if thumbs.ndim == 2 else 0
    if side * side != thumbs.shape[-1] or side % blocks:
        raise ValueError(f"thumbnails must be square with a side divisible by {blocks}, "
                         f"got {thumbs.shape[-1]} values")
    h = side // blocks
    return thumbs.reshape(len(thumbs), blocks, h, blocks, h).mean(axis=(2, 4)).reshape(len(thumbs), -1)


def quadrant_means(blocks: np.ndarray) -> np.ndarray:
    """(N, 16) block means -> (N, 4) means of the four quadrants."""
    return blocks.reshape(len(blocks), 2, 2, 2, 2).mean(axis=(2, 4)).reshape(len(blocks), 4)


def greedy_order(scores: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Indices in visiting order: descending score, ties by ascending `rank`."""
    return np.lexsort((np.asarray(rank), -np.asarray(scores, np.float64)))


def dedupe_fast(embeddings: Sequence[np.ndarray], scores: Sequence[float], distance: float) -> List[int]:
    """Indices to keep (sorted): greedy in descending score, dropping any frame within `distance` of a kept
    one; the same answer as the exhaustive search."""
    n = len(embeddings)
    if n == 0:
        return []
    thumbs = np.asarray(np.stack(embeddings), dtype=np.float32)
    kept = dedupe_search(block_means(thumbs), lambda idx: thumbs[idx],
                         greedy_order(np.asarray(scores, np.float64), np.arange(n)), distance)
    return [int(i) for i in np.flatnonzero(kept)]


def dedupe_search(blocks: np.ndarray, read_thumbs: Callable[[np.ndarray], np.ndarray], order: np.ndarray,
                  distance: float) -> np.ndarray:
    """Which frames to keep (a bool per frame), visiting them in `order` (greedy_order).

    blocks: (N, 16) block_means of the thumbnails; read_thumbs(indices) returns those frames' full
    thumbnails (N, 256) float32 as an array: called only for the frames both filters leave."""
    n = len(blocks)
    if distance <= 0:
        return np.ones(n, bool)
    quads = quadrant_means(blocks)
    bound = 4.0 * distance * (1 + 1e-4)  # a duplicate's quadrant means lie within 4 * distance (float slack)
    block_bound = 16.0 * distance * (1 + 1e-4)  # ... and its block means within 16 * distance
    kept = np.zeros(n, bool)

    def duplicate(i: int, idx: np.ndarray) -> bool:
        idx = idx[np.abs(blocks[idx] - blocks[i]).sum(axis=1) < block_bound]
        if not len(idx):
            return False
        near = read_thumbs(idx)
        return float(np.min(np.mean(np.abs(near - read_thumbs(np.array([i]))[0]), axis=1))) < distance

    try:
        from scipy.spatial import cKDTree
    except ImportError:  # scipy comes with the train extra; without it, the grid below
        _grid_search(quads, order, bound, kept, duplicate)
    else:
        _tree_search(cKDTree(quads), quads, order, bound, kept, duplicate)
    return kept


def _tree_search(tree, quads: np.ndarray, order: np.ndarray, bound: float, kept: np.ndarray,
                 duplicate: Callable[[int, np.ndarray], bool], chunk: int = 8) -> None:
    """A k-d tree over every frame's quadrant means answers "which frames could be duplicates of this one"
    (L1 ball of radius `bound`); only the kept ones among them are looked at further. Small chunks: a
    chunk's neighbour lists are Python lists (36 bytes a neighbour), and in a dense store a frame has
    thousands of neighbours."""
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        near = tree.query_ball_point(quads[part], r=bound, p=1.0)
        for i, nb in zip(part, near):
            idx = np.asarray(nb, dtype=np.int64)
            idx = idx[kept[idx]]
            if not (len(idx) and duplicate(int(i), idx)):
                kept[i] = True


def _grid_search(quads: np.ndarray, order: np.ndarray, bound: float, kept: np.ndarray,
                 duplicate: Callable[[int, np.ndarray], bool]) -> None:
    """Kept frames bucketed on a grid of cell `bound` over their quadrant means; a frame looks at the 3^4
    neighbouring cells (or scans every kept frame's quadrant means when those cells hold most of them)."""
    n = len(quads)
    cells = np.floor(quads / bound).astype(np.int64)
    grid: Dict[Tuple[int, ...], List[int]] = {}
    kept_ids = np.empty(n, np.int64)  # the kept frames, in keeping order
    kept_quads = np.empty((n, 4), np.float32)  # and their quadrant means
    n_kept = 0
    for i in order:
        i = int(i)
        key = tuple(int(v) for v in cells[i])
        buckets = [grid.get((key[0] + o[0], key[1] + o[1], key[2] + o[2], key[3] + o[3])) for o in _OFFSETS]
        buckets = [b for b in buckets if b]
        if sum(len(b) for b in buckets) * 4 > n_kept:  # the cells hold most frames: scan them all in C
            close = np.abs(kept_quads[:n_kept] - quads[i]).sum(axis=1) < bound
            idx = kept_ids[:n_kept][close]
        elif buckets:
            idx = np.asarray([j for b in buckets for j in b], dtype=np.int64)
            idx = idx[np.abs(quads[idx] - quads[i]).sum(axis=1) < bound]  # the lower bound
        else:
            idx = np.empty(0, np.int64)
        if len(idx) and duplicate(i, idx):
            continue
        grid.setdefault(key, []).append(i)
        kept_quads[n_kept] = quads[i]
        kept_ids[n_kept] = i
        n_kept += 1
        kept[i] = True
