"""The pipelined loop: every frame processed, bad frames survive, swap + health-check rollback,
selection into the spool with neighbours, budgets, eviction, postprocessing flags."""

from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np
import pytest

from edgedepth.runtime.backends import Backend, load_backend
from edgedepth.runtime.capture import Source, open_source
from edgedepth.runtime.collect import SpoolCollector
from edgedepth.runtime.loop import DepthLoop
from edgedepth.runtime.postprocess import Postprocessor
from edgedepth.runtime.selection import FrameSelector, SelectionConfig
from edgedepth.runtime.sources import Frame, RawSource
from edgedepth.spool import Spool


def make_images(folder, n=10, size=(60, 80)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return folder


class ListSource(RawSource):
    """Frames from a list (None entries raise, to simulate a bad read of a file)."""

    live, finite = False, True

    def __init__(self, images, gt=None):
        self.uri, self.images, self.gt = "test://list", images, gt
        self.i = 0

    def open(self):
        self.i = 0

    def read(self):
        if self.i >= len(self.images):
            return None
        img = self.images[self.i]
        self.i += 1
        now = time.monotonic()
        return Frame(
            img,
            self.i - 1,
            (self.i - 1) / 30,
            now,
            time.time(),
            depth_gt=None if self.gt is None else self.gt[self.i - 1],
            intrinsics=np.array([[50.0, 0, 40], [0, 50, 30], [0, 0, 1]]),
            pose=_pose_at(self.i - 1),
            domain="test",
        )


def _pose_at(i: int) -> np.ndarray:
    """Camera-to-world pose of frame i: moving 5 cm per frame along x."""
    pose = np.eye(4)
    pose[0, 3] = 0.05 * i
    return pose


def test_loop_processes_every_file_frame_in_order(tmp_path, tiny_onnx):
    be = load_backend(tiny_onnx, backend="ort-cpu")
    seen = []
    with open_source(str(make_images(tmp_path / "imgs", 12))) as src:
        summary = DepthLoop(
            src, be, on_result=lambda r: seen.append((r.seq, r.frame.index, r.depth.shape))
        ).run()
    assert summary.frames == 12 and summary.errors == 0 and summary.reason == "end of stream"
    assert [s for s, _, _ in seen] == list(range(12)) and [i for _, i, _ in seen] == list(range(12))
    assert seen[0][2] == (64, 96)
    snap = summary.stats
    assert snap["latency_ms_p50"] > 0 and snap["infer_ms_p50"] > 0 and snap["depth_units"] == "metres"


def test_bad_frames_are_counted_not_fatal(tiny_onnx):
    rng = np.random.default_rng(1)
    good = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    images = [good, np.zeros((48, 64), np.uint8), good, np.zeros((0, 0, 3), np.uint8), good]
    be = load_backend(tiny_onnx, backend="ort-cpu")
    src = Source(ListSource(images)).start()
    summary = DepthLoop(src, be).run()
    src.close()
    assert summary.frames == 3 and summary.errors == 2


def test_max_frames_stops_a_looping_source(tmp_path, tiny_onnx):
    be = load_backend(tiny_onnx, backend="ort-cpu")
    with open_source(str(make_images(tmp_path / "imgs", 3)), loop=True) as src:
        summary = DepthLoop(src, be, max_frames=7).run()
    assert summary.frames == 7 and summary.reason == "--max-frames reached"


class ConstantBackend(Backend):
    """A fake backend returning a constant depth (or NaN), to test swaps and health checks."""

    def __init__(self, info, value, name):
        self.info, self.value, self.name = info, value, name
        self.closed = False
        self.calls = 0

    def infer(self, batch):
        self.calls += 1
        h, w = batch.shape[2:]
        ramp = np.linspace(0.0, 1.0, h * w, dtype=np.float32).reshape(1, 1, h, w)  # flat[0] == value
        return (self.value + ramp, np.full((1, 1, h, w), -3.0, np.float32))

    def close(self):
        self.closed = True


def _feed(loop_factory, n=60):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    src = Source(ListSource(images)).start()
    loop = loop_factory(src)
    summary = loop.run()
    src.close()
    return loop, summary


def test_swap_backend_between_frames_and_rollback_on_failed_health_check(tiny_onnx):
    from edgedepth.registry.health import HealthCheck

    info = load_backend(tiny_onnx).info
    old = ConstantBackend(info, 2.0, "old")
    bad = ConstantBackend(info, float("nan"), "bad")
    values, verdicts = [], []

    def on_result(r):
        values.append(float(r.depth.flat[0]))
        if r.seq == 10:
            loop.swap_backend(bad, health_check=HealthCheck(frames=5), on_verdict=verdicts.append)

    src = Source(ListSource([np.full((48, 64, 3), 9, np.uint8)] * 60)).start()
    loop = DepthLoop(src, old, on_result=on_result)
    summary = loop.run()
    src.close()
    assert summary.frames == 60
    assert values[:11] == [2.0] * 11
    nan_frames = [i for i, v in enumerate(values) if v != v]
    assert 1 <= len(nan_frames) <= 3 and min(nan_frames) >= 11  # NaN check fails on the first bad frame
    assert values[-1] == 2.0 and len(verdicts) == 1 and verdicts[0].rollback
    assert bad.closed and not old.closed
    assert summary.stats["rollbacks"] == 1 and summary.stats["backend_swaps"] == 2


def test_healthy_swap_closes_the_old_backend_and_updates_labels(tiny_onnx):
    from edgedepth.registry.health import HealthCheck

    info = load_backend(tiny_onnx).info
    old, new = ConstantBackend(info, 2.0, "old"), ConstantBackend(info, 3.0, "new")
    values = []

    def on_result(r):
        values.append(float(r.depth.flat[0]))
        if r.seq == 5:
            loop.swap_backend(new, health_check=HealthCheck(frames=5))

    src = Source(ListSource([np.full((48, 64, 3), 9, np.uint8)] * 40)).start()
    loop = DepthLoop(src, old, on_result=on_result)
    loop.run()
    src.close()
    assert values[:6] == [2.0] * 6 and values[-1] == 3.0
    assert old.closed and not new.closed and loop.stats.labels["backend"] == "new"
    first_new = values.index(3.0)
    assert first_new <= 9  # in effect within the frames already in flight


def test_swap_to_a_model_with_another_input_size(tmp_path, tiny_onnx, onnx_factory):
    other = load_backend(
        onnx_factory(tmp_path / "other.onnx", 32, 32, version="8", seed=1), backend="ort-cpu"
    )
    be = load_backend(tiny_onnx, backend="ort-cpu")
    shapes = []

    def on_result(r):
        shapes.append(r.depth.shape)
        if r.seq == 3:
            loop.swap_backend(other)

    src = Source(ListSource([np.full((48, 64, 3), 9, np.uint8)] * 15)).start()
    loop = DepthLoop(src, be, on_result=on_result)
    summary = loop.run()
    src.close()
    assert summary.errors == 0 and shapes[0] == (64, 96) and shapes[-1] == (32, 32)


def test_postprocessor_confidence_mask_and_reliability():
    post = Postprocessor(max_rel_error=0.2, min_confident_fraction=0.6)
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0, 0.0, time.monotonic(), time.time())
    depth = np.ones((1, 1, 4, 4), np.float32)
    unc = np.full((1, 1, 4, 4), np.log(0.1), np.float32)
    unc[0, 0, :2] = np.log(0.5)  # half the pixels expect a 50% error
    r = post(frame, 0, depth, unc, 1.0)
    assert (
        r.confident_fraction == 0.5 and not r.reliable and r.confidence[3].all() and not r.confidence[0].any()
    )
    r2 = Postprocessor(0.2, 0.5)(frame, 1, depth, unc, 1.0)
    assert r2.reliable
    depth[0, 0, 0, 0] = np.nan
    assert not Postprocessor(0.2, 0.1)(frame, 2, depth, unc, 1.0).reliable


def test_selection_spools_hard_frames_with_neighbors_and_ground_truth(tmp_path, tiny_onnx):
    be = load_backend(tiny_onnx, backend="ort-cpu")
    rng = np.random.default_rng(3)
    n = 60
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
    gts = [np.full((48, 64), 1.5 + i * 0.01, np.float32) for i in range(n)]
    spool = Spool(tmp_path / "spool")
    sel = FrameSelector(SelectionConfig(mode="random", rate=0.2, min_spacing_frames=4, seed=1))
    src = Source(ListSource(images, gts)).start()
    collector = SpoolCollector(spool, "dev-1", "test://list", be.info, be.model_sha256, neighbors=2)
    loop = DepthLoop(src, be, selector=sel, collector=collector)
    summary = loop.run()
    collector.close()
    src.close()
    items = spool.items()
    assert len(items) == sel.kept == summary.stats["selected"] >= 3
    seqs = sorted(it.meta.model_extra["frame_index"] for it in items)
    assert all(b - a >= 4 for a, b in zip(seqs, seqs[1:]))  # minimum spacing held
    for it in items:
        m = it.meta
        kinds = {e.kind for e in m.files.values()}
        assert {"rgb", "depth_gt"} <= kinds and m.labels == ["depth_gt"] and m.device_id == "dev-1"
        assert m.model.version == "7" and m.model.sha256 == be.model_sha256 and m.domain == "test"
        assert m.intrinsics[0][0] == 50.0 and m.width == 64 and m.height == 48
        idx = m.model_extra["frame_index"]
        png = cv2.imread(str(it.paths["depth.png"]), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and int(png[0, 0]) == round((1.5 + idx * 0.01) * 1000)
        rgb = cv2.cvtColor(cv2.imread(str(it.paths["rgb.png"])), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(rgb, images[idx])
        if 2 <= idx:
            prev = cv2.cvtColor(cv2.imread(str(it.paths["prev.png"])), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(prev, images[idx - 2])
            assert m.files["prev.png"].offset == -2
            # neighbour poses travel with the item (self-supervised labels need them)
            np.testing.assert_allclose(m.model_extra["neighbors"]["prev_pose"], _pose_at(idx - 2))
        if idx + 2 < n:
            nxt = cv2.cvtColor(cv2.imread(str(it.paths["next.png"])), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(nxt, images[idx + 2])
            assert m.files["next.png"].offset == 2
            np.testing.assert_allclose(m.model_extra["neighbors"]["next_pose"], _pose_at(idx + 2))


def test_spool_cap_evicts_lowest_score_first(tmp_path, tiny_onnx):
    info = load_backend(tiny_onnx).info
    spool = Spool(tmp_path / "spool", max_bytes=60_000)
    counts = {}
    collector = SpoolCollector(
        spool, "dev", "test://", info, "", count=lambda k, n=1: counts.__setitem__(k, counts.get(k, 0) + n)
    )
    rng = np.random.default_rng(4)
    scores = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.05]
    for i, s in enumerate(scores):
        frame = Frame(
            rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), i, i / 30, time.monotonic(), time.time()
        )
        collector.observe(i, frame, True, s, {"score": s})
        collector.flush()
    collector.close()
    kept = sorted(it.score for it in spool.items())
    assert spool.total_bytes() <= 60_000
    assert counts.get("spool_evicted", 0) == len(scores) - len(kept) > 0
    assert kept == sorted(scores)[-len(kept) :]  # what is left is the highest-scoring items


def test_hard_selection_budget_threshold_and_duplicates():
    cfg = SelectionConfig(mode="hard", rate=0.1, warmup=10, max_per_hour=5, novelty_min=0.05)
    sel = FrameSelector(cfg)
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    depth = np.full((64, 64), 3.0, np.float32)
    keeps = []
    for i in range(400):
        hard = i % 10 == 9
        u = np.full((64, 64), np.log(0.5 if hard else 0.05), np.float32)
        img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) if hard else rgb
        d = sel.score(img, depth, u, seq=i, t=i * 2.0)
        keeps.append((i, d.keep))
    kept = [i for i, k in keeps if k]
    assert kept and all(i % 10 == 9 for i in kept)  # only hard frames pass the adaptive threshold
    # 400 frames at 2 s = 800 s < 1 h: the hourly budget caps the count
    assert len(kept) == 5 and sel.rejected["budget"] > 0
    # identical hard frames: the second is a near-duplicate of the first kept one
    dup = FrameSelector(SelectionConfig(mode="hard", rate=0.5, warmup=4))
    u_easy = np.full((64, 64), np.log(0.05), np.float32)
    u_hard = np.full((64, 64), np.log(0.5), np.float32)
    for i in range(8):
        dup.score(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), depth, u_easy, i, i)
    first = dup.score(rgb, depth, u_hard, 8, 8.0)
    second = dup.score(rgb, depth, u_hard, 9, 9.0)
    assert first.keep and not second.keep and second.scores["novelty"] < 1e-3


def test_random_selection_rate_and_none():
    sel = FrameSelector(SelectionConfig(mode="random", rate=0.2, seed=0))
    rgb = np.zeros((32, 32, 3), np.uint8)
    depth = np.ones((32, 32), np.float32)
    keeps = sum(sel.score(rgb, depth, depth * 0, i, float(i)).keep for i in range(2000))
    assert 330 < keeps < 470
    off = FrameSelector(SelectionConfig(mode="none"))
    assert not any(off.score(rgb, depth, depth * 0, i, float(i)).keep for i in range(50))


def test_flicker_signal_separates_unstable_depth_from_camera_motion():
    sel = FrameSelector(SelectionConfig(mode="none"))
    rng = np.random.default_rng(6)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    u = np.full((64, 64), np.log(0.1), np.float32)
    d1, d2 = np.full((64, 64), 2.0, np.float32), np.full((64, 64), 2.6, np.float32)
    sel.score(img, d1, u, 0, 0.0)
    unstable = sel.score(img, d2, u, 1, 0.03).scores  # same picture, different depth
    moved = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    sel.score(img, d1, u, 2, 0.06)
    motion = sel.score(moved, d2, u, 3, 0.1).scores  # new picture, new depth
    assert unstable["image_change"] == 0.0 and unstable["flicker"] > 4 * motion["flicker"]
    assert abs(unstable["temporal"] - motion["temporal"]) < 1e-6


def test_hard_selection_never_exceeds_its_rate():
    sel = FrameSelector(SelectionConfig(mode="hard", rate=0.05, warmup=50, window=200, novelty_min=0.0))
    rng = np.random.default_rng(7)
    depth = np.full((32, 32), 2.0, np.float32)
    kept = 0
    for i in range(3000):
        u = np.full((32, 32), np.log(rng.uniform(0.02, 0.5)), np.float32)
        kept += sel.score(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), depth, u, i, i / 30).keep
    assert 0.03 * 3000 < kept <= 0.05 * 3000 + 0.05 * 200 / 4


def _bursty_keeps(spend: bool) -> int:
    """Hard frames come in bursts (10 of every 100); the spacing rule admits one per burst."""
    cfg = SelectionConfig(mode="hard", rate=0.05, warmup=50, window=500, novelty_min=0.0,
                          min_spacing_frames=10, spend_budget=spend)
    sel = FrameSelector(cfg)
    rng = np.random.default_rng(8)
    depth = np.full((32, 32), 2.0, np.float32)
    kept = 0
    for i in range(3000):
        b = rng.uniform(0.3, 0.5) if i % 100 < 10 else rng.uniform(0.02, 0.1)
        u = np.full((32, 32), np.log(b), np.float32)
        kept += sel.score(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), depth, u, i, i / 30).keep
    return kept


def test_spend_budget_relaxes_the_threshold_while_budget_goes_unspent():
    budget = 0.05 * 3000
    strict, spending = _bursty_keeps(False), _bursty_keeps(True)
    assert strict < 0.4 * budget  # the top 5 % sit in the bursts, which the spacing rule thins out
    assert 0.7 * budget < spending <= budget + 0.05 * 500 / 4  # never above the rate (token bucket)


class RingBackend(Backend):
    """Writes each result into one of `ring` reused output slots, as the real backends do; the depth
    of the n-th call is n everywhere."""

    def __init__(self, info, ring):
        self.info, self.ring, self.name = info, ring, "ring"
        h, w = info.preprocessing.size
        self.slots = [(np.empty((1, 1, h, w), np.float32), np.full((1, 1, h, w), -3.0, np.float32))
                      for _ in range(ring)]
        self.calls = 0

    def infer(self, batch):
        depth, unc = self.slots[self.calls % self.ring]
        depth.fill(float(self.calls + 1))
        self.calls += 1
        return depth, unc


def test_queued_results_are_not_overwritten_by_later_frames(tiny_onnx):
    """A slow postprocessing stage with results queued behind it must still see each frame's own
    output, whatever the backend's number of output slots (2: copied; 8: enough slots)."""
    info = load_backend(tiny_onnx, backend="ort-cpu").info
    for ring in (2, 8):
        seen = []

        def slow(result, seen=seen):
            time.sleep(0.002)  # inference runs ahead while this result is handled
            seen.append((result.seq, float(result.depth[0, 0])))

        loop, summary = _feed(lambda src, ring=ring: DepthLoop(src, RingBackend(info, ring), on_result=slow))
        assert summary.frames == 60
        assert seen == [(i, float(i + 1)) for i in range(60)], ring


def test_non_live_source_is_read_in_the_loop_thread_without_a_capture_thread(tmp_path):
    import threading

    src = open_source(str(make_images(tmp_path / "imgs", 5)))
    assert src._thread is None
    frames = [src.capture() for _ in range(5)]
    assert [f.index for f in frames] == list(range(5)) and src.capture() is None
    assert not src.is_streaming()
    assert not [t for t in threading.enumerate() if t.name == "edgedepth-capture"]
    src.close()


def test_a_non_finite_frame_is_refused_and_leaves_no_trace_in_later_scores():
    """One NaN or zero depth map (a broken frame or engine) must not poison the running state: the
    flicker average, the threshold window and the map the next frame is compared with."""
    rng = np.random.default_rng(3)
    depth = np.full((48, 64), 2.0, np.float32)

    def stream(sel, broken=()):
        out = []
        for i in range(300):
            hard = i % 20 == 19
            u = np.full((48, 64), np.log(0.6 if hard else 0.05), np.float32)
            d = depth.copy()
            if i in broken:
                d[::2] = np.nan if i % 2 else 0.0
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            out.append(sel.score(img, d, u, i, i / 30))
        return out

    cfg = dict(mode="hard", rate=0.05, warmup=40, window=200, novelty_min=0.0)
    sel = FrameSelector(SelectionConfig(**cfg))
    decisions = stream(sel, broken=(100, 101, 199))
    for i in (100, 101, 199):
        assert not decisions[i].keep and decisions[i].reason == "non-finite depth or uncertainty"
    assert sel.rejected["invalid"] == 3
    later = [d for i, d in enumerate(decisions) if i > 101 and i != 199]
    assert all(np.isfinite(d.score) and np.isfinite(d.scores["flicker_smoothed"]) for d in later)
    kept = [i for i, d in enumerate(decisions) if d.keep]
    assert kept and all(i % 20 == 19 for i in kept) and max(kept) > 200  # hard frames still win after


def test_the_loop_lowers_the_gil_switch_interval_while_it_runs_and_restores_it(tiny_onnx):
    be = load_backend(tiny_onnx, backend="ort-cpu")
    frames = [np.zeros((64, 96, 3), np.uint8)] * 4
    before = sys.getswitchinterval()
    during = []
    src = Source(ListSource(frames))
    DepthLoop(src, be, on_result=lambda r: during.append(sys.getswitchinterval())).run()
    assert len(during) == 4 and max(during) <= 0.0002 < before
    assert sys.getswitchinterval() == before
    during.clear()
    DepthLoop(Source(ListSource(frames)), be, gil_switch_interval=None,
              on_result=lambda r: during.append(sys.getswitchinterval())).run()
    assert during == [before] * 4


def test_the_inference_thread_gets_a_core_of_its_own_and_the_main_thread_its_cores_back(tiny_onnx):
    from edgedepth.runtime.affinity import plan_cores

    plan = plan_cores()
    if plan is None:
        pytest.skip("needs a platform with thread affinity and at least 2 usable cores")
    be = load_backend(tiny_onnx, backend="ort-cpu")
    seen = {"infer": set(), "post": set(), "main": set()}
    infer = be.infer

    def recording_infer(batch):
        seen["infer"].add(frozenset(os.sched_getaffinity(0)))
        return infer(batch)

    be.infer = recording_infer
    before = os.sched_getaffinity(0)
    frames = [np.zeros((64, 96, 3), np.uint8)] * 4

    class Recording(ListSource):
        def read(self):
            seen["main"].add(frozenset(os.sched_getaffinity(0)))  # a file is read in the loop's thread
            return super().read()

    DepthLoop(Source(Recording(frames)), be,
              on_result=lambda r: seen["post"].add(frozenset(os.sched_getaffinity(0)))).run()
    assert seen["infer"] == {frozenset({plan.inference})}
    assert seen["post"] == {plan.others} and seen["main"] == {plan.others}
    assert os.sched_getaffinity(0) == before
    seen = {"infer": set(), "post": set(), "main": set()}
    DepthLoop(Source(Recording(frames)), be, pin_cores=False,
              on_result=lambda r: seen["post"].add(frozenset(os.sched_getaffinity(0)))).run()
    assert seen["infer"] == seen["post"] == {frozenset(before)}
