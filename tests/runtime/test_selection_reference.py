"""Epistemic novelty against a training-frame reference set, and the selector that uses it."""

import numpy as np
import pytest

from edgedepth.errors import ConfigError, DataError
from edgedepth.runtime.reference import (
    EMBED_DIM,
    REFERENCE_FILE,
    Reference,
    appearance_embedding,
    load_reference,
    save_reference,
)
from edgedepth.runtime.selection import FrameSelector, SelectionConfig


def _day(rng, h=48, w=64):
    """A bright, colourful, textured frame (the 'training domain')."""
    base = rng.uniform(90, 170, size=3)
    img = base + rng.normal(0, 35, size=(h, w, 3)) * rng.uniform(0.5, 1.0)
    img[: h // 3] += rng.uniform(10, 40)  # a brighter top third
    return np.clip(img, 0, 255).astype(np.uint8)


def _night(rng, h=48, w=64):
    img = rng.uniform(5, 20) + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _reference(rng, n=200):
    return Reference(np.stack([appearance_embedding(_day(rng)) for _ in range(n)]))


def test_novelty_is_about_one_on_familiar_frames_and_large_on_unfamiliar_ones():
    rng = np.random.default_rng(0)
    ref = _reference(rng)
    familiar = [ref.novelty(appearance_embedding(_day(rng))) for _ in range(40)]
    night = [ref.novelty(appearance_embedding(_night(rng))) for _ in range(40)]
    assert 0.6 < np.median(familiar) < 1.6
    assert min(night) > 3 * max(familiar)
    # the embedding keeps brightness: the same picture darker is further from the reference
    img = _day(rng)
    dark = appearance_embedding((img * 0.3).astype(np.uint8))
    assert ref.novelty(dark) > ref.novelty(appearance_embedding(img))


def test_hue_finds_a_street_among_rooms():
    """Outdoor frames (as lit as the rooms, but sky and grass) stand out from an indoor reference: the
    model itself is confidently wrong there, so only appearance can flag them."""
    from edgedepth.data.synth import render_frame

    ref = Reference(np.stack([appearance_embedding(render_frame("indoor", 900 + i, 48, 64).rgb)
                              for i in range(150)]))
    rooms = np.array([ref.novelty(appearance_embedding(render_frame("indoor", 2000 + i, 48, 64).rgb))
                      for i in range(40)])
    streets = np.array([ref.novelty(appearance_embedding(render_frame("outdoor", 2000 + i, 48, 64).rgb))
                        for i in range(40)])
    auc = float((streets[:, None] > rooms[None, :]).mean())
    assert auc > 0.85, auc  # 0.91 here; 0.69 with the hue histogram weighted out
    assert np.median(streets) > 1.5 * np.median(rooms)


def test_reference_of_an_older_embedding_is_ignored_with_a_warning(tmp_path, caplog):
    old = tmp_path / REFERENCE_FILE
    np.savez_compressed(old, embeddings=np.zeros((10, 60), np.float32), dim=np.array(60), version=np.array(1))
    with caplog.at_level("WARNING"):
        assert load_reference(tmp_path) is None
    assert "re-exported" in caplog.text


def test_embedding_shape_and_bad_input():
    e = appearance_embedding(np.zeros((480, 640, 3), np.uint8))
    assert e.shape == (EMBED_DIM,) and e.dtype == np.float32
    with pytest.raises(DataError):
        appearance_embedding(np.zeros((48, 64), np.uint8))
    with pytest.raises(DataError):
        Reference(np.zeros((1, EMBED_DIM)))


def test_save_and_load_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    emb = np.stack([appearance_embedding(_day(rng)) for _ in range(30)])
    assert load_reference(tmp_path) is None  # a bundle without a reference
    path = save_reference(tmp_path, emb)
    assert path.name == REFERENCE_FILE
    ref = load_reference(tmp_path)
    x = appearance_embedding(_night(rng))
    assert ref.novelty(x) == pytest.approx(Reference(emb).novelty(x))
    (tmp_path / REFERENCE_FILE).write_bytes(b"not an npz")
    with pytest.raises(DataError):
        load_reference(tmp_path)


def _run(selector, frames, seq0=0):
    """Every frame gets the same depth and, up to a little noise, the same predicted uncertainty."""
    depth = np.full((48, 64), 2.0, np.float32)
    noise = np.random.default_rng(0).normal(0.0, 0.05, len(frames))
    kept = []
    for i, (kind, rgb) in enumerate(frames):
        unc = np.full((48, 64), -1.6 + noise[i], np.float32)
        if selector.score(rgb, depth, unc, seq0 + i, (seq0 + i) / 30.0).keep:
            kept.append(kind)
    return kept


def test_selector_with_a_reference_keeps_the_unfamiliar_frames():
    rng = np.random.default_rng(2)
    ref = _reference(rng)
    frames = [("night", _night(rng)) if i % 10 == 3 else ("day", _day(rng)) for i in range(400)]
    # identical depth and uncertainty: only the reference's novelty factor lifts the night frames over
    # the adaptive threshold (the top 12 % of scores after a 20-frame warm-up; night is 10 % of the stream)
    cfg = SelectionConfig(mode="hard", rate=0.12, max_per_hour=20, min_spacing_frames=2, warmup=20)
    kept = _run(FrameSelector(cfg, reference=ref), frames)
    assert len(kept) == 20 and kept.count("night") >= 16
    # without a reference the aleatoric score cannot tell them apart here (same depth/uncertainty)
    plain = FrameSelector(SelectionConfig(mode="hard", rate=0.12, max_per_hour=20, warmup=20))
    kept_plain = _run(plain, frames)
    assert len(kept_plain) == 20 and kept_plain.count("night") <= 10


def _run_scored(selector, frames, night_uncertainty):
    """Like _run, but night frames carry a much higher predicted uncertainty than day frames."""
    depth = np.full((48, 64), 2.0, np.float32)
    kept, reasons = [], set()
    for i, (kind, rgb) in enumerate(frames):
        level = night_uncertainty if kind == "night" else -1.6 - 0.3 * (i % 7) / 7
        unc = np.full((48, 64), level, np.float32)
        decision = selector.score(rgb, depth, unc, i, i / 30.0)
        if decision.keep:
            kept.append(kind)
        elif kind == "night":
            reasons.add(decision.reason)
    return kept, reasons


def test_frames_beyond_trust_novelty_are_sampled_at_the_random_rate_not_ranked_by_their_uncertainty():
    rng = np.random.default_rng(5)
    ref = _reference(rng)
    frames = [("night", _night(rng)) if i % 10 == 3 else ("day", _day(rng)) for i in range(600)]
    base = dict(mode="hard", rate=0.1, max_per_hour=60, warmup=20, seed=1)
    # trusted, a high uncertainty on the unfamiliar frames makes them nearly all of the keeps
    trusted, _ = _run_scored(FrameSelector(SelectionConfig(**base), reference=ref), frames, -0.5)
    assert len(trusted) >= 40 and trusted.count("night") >= 0.8 * len(trusted)
    # beyond trust_novelty their uncertainty is ignored: each is kept with probability `rate`, as the
    # random strategy would (60 night frames here: about 6), and the day frames get the rest
    cfg = SelectionConfig(trust_novelty=6.0, **base)
    kept, reasons = _run_scored(FrameSelector(cfg, reference=ref), frames, -0.5)
    assert 1 <= kept.count("night") <= 15 and kept.count("day") >= 20
    assert "too far from the training data to judge; not sampled" in reasons
    with pytest.raises(ConfigError, match="trust_novelty"):
        SelectionConfig(trust_novelty=0.5)


def test_selector_with_a_reference_and_an_absolute_rule_needs_no_warm_up():
    rng = np.random.default_rng(4)
    ref = _reference(rng)
    frames = [("night", _night(rng)) if i % 10 == 3 else ("day", _day(rng)) for i in range(60)]
    cfg = SelectionConfig(mode="hard", rate=0.2, novelty_threshold=2.5)  # default warm-up: 200 frames
    kept = _run(FrameSelector(cfg, reference=ref), frames)
    assert kept and set(kept) == {"night"}


def test_selector_reused_across_runs_keeps_after_the_sequence_restarts():
    rng = np.random.default_rng(3)
    ref = _reference(rng)
    cfg = SelectionConfig(mode="hard", rate=0.5, min_spacing_frames=5, min_spacing_seconds=0.1, warmup=10)
    sel = FrameSelector(cfg, reference=ref)
    first = _run(sel, [("night", _night(rng)) for _ in range(30)], seq0=1000)
    second = _run(sel, [("night", _night(rng)) for _ in range(30)], seq0=0)  # a new loop run: seq restarts
    assert first and second


class _CountingReference:
    """A stand-in Reference that counts how often novelty is computed."""

    def __init__(self):
        self.calls = 0

    def novelty(self, emb):
        self.calls += 1
        return 1.0 + float(emb[0])  # brightness-driven: a dark frame reads as familiar, a bright one as new


def test_reference_novelty_is_reused_within_a_scene_and_recomputed_after_a_cut():
    rng = np.random.default_rng(5)
    scene = _day(rng)
    video = [np.clip(scene.astype(np.int16) + rng.integers(-2, 3, scene.shape), 0, 255).astype(np.uint8)
             for _ in range(12)]  # one scene: the picture hardly changes
    depth, unc = np.full((48, 64), 2.0, np.float32), np.full((48, 64), -1.6, np.float32)
    ref = _CountingReference()
    sel = FrameSelector(SelectionConfig(mode="hard", novelty_every=4), reference=ref)
    for i, rgb in enumerate(video):
        sel.score(rgb, depth, unc, i, i / 30.0)
    assert ref.calls == 3  # frames 0, 4, 8: the picture hardly changed
    cut = _night(rng)  # a new scene: recomputed at once, and its (low) novelty is what scores the frame
    d = sel.score(cut, depth, unc, 12, 12 / 30.0)
    assert ref.calls == 4
    assert d.scores["novelty_ref"] == pytest.approx(1.0 + float(appearance_embedding(cut)[0]))
    # a slow pan: small changes that add up trigger a recomputation before `novelty_every` frames
    pan = [np.roll(scene, i, axis=1) for i in range(12)]
    panning = _CountingReference()
    sel = FrameSelector(SelectionConfig(mode="hard", novelty_every=1000, novelty_recompute_change=0.1),
                        reference=panning)
    changes = [sel.score(rgb, depth, unc, i, i / 30.0).scores["image_change"] for i, rgb in enumerate(pan)]
    assert 0 < max(changes) < 0.1 and 1 < panning.calls < len(pan)
    every = _CountingReference()
    sel = FrameSelector(SelectionConfig(mode="hard", novelty_every=1), reference=every)
    for i, rgb in enumerate(video):
        sel.score(rgb, depth, unc, i, i / 30.0)
    assert every.calls == len(video)
    with pytest.raises(Exception, match="novelty_every"):
        SelectionConfig(novelty_every=0)
