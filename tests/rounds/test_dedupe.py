"""The grid-filtered near-duplicate search keeps exactly the frames the exhaustive search keeps."""

from __future__ import annotations

import numpy as np
import pytest

from edgedepth.rounds import build
from edgedepth.rounds.dedupe import dedupe_fast


def _exhaustive(embeddings, scores, distance):
    saved = build.DEDUPE_EXHAUSTIVE_MAX
    build.DEDUPE_EXHAUSTIVE_MAX = 10 ** 9
    try:
        return build.dedupe(embeddings, scores, distance)
    finally:
        build.DEDUPE_EXHAUSTIVE_MAX = saved


@pytest.mark.parametrize("with_scipy", [True, False])
@pytest.mark.parametrize("distance", [0.05, 0.1, 0.3])
def test_same_frames_as_the_exhaustive_search(distance, with_scipy, monkeypatch):
    if not with_scipy:  # the grid search
        import sys

        monkeypatch.setitem(sys.modules, "scipy.spatial", None)
    rng = np.random.default_rng(3)
    centres = [build.thumbnail(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(40)]
    embs = []
    for k in range(600):  # clusters of near-identical frames (video) plus unrelated ones
        c = centres[k % 40]
        noise = rng.normal(0, rng.choice([0.02, 0.08, 0.3]), c.shape).astype(np.float32)
        e = c + noise
        embs.append(((e - e.mean()) / (e.std() + 1e-6)).astype(np.float32))
    scores = list(rng.random(len(embs)))
    expect = _exhaustive(embs, scores, distance)
    assert 40 <= len(expect) < len(embs)  # the data has duplicates and survivors
    assert dedupe_fast(embs, scores, distance) == expect


def test_build_switches_to_the_grid_search_above_the_limit(monkeypatch):
    calls = []
    monkeypatch.setattr(build, "DEDUPE_EXHAUSTIVE_MAX", 3)
    import edgedepth.rounds.dedupe as mod

    real = mod.dedupe_fast
    monkeypatch.setattr(mod, "dedupe_fast", lambda *a: calls.append(1) or real(*a))
    embs = [np.full(256, v, np.float32) for v in (0.0, 0.01, 1.0, 2.0)]
    assert build.dedupe(embs, [1, 0.5, 0.2, 0.1], 0.1) == [0, 2, 3] and calls
