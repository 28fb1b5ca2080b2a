"""The live loop: capture -> preprocess -> infer -> postprocess/select/sinks, as a small pipeline.

It reads like jetson-inference's depthnet.py::

    while source.is_streaming():
        frame = source.capture()
        if frame is None:
            continue
        submit(frame)            # preprocess into a preallocated buffer, hand it to the inference thread

Capture runs in its own thread (latest-frame semantics, see capture.py); inference runs in a second
thread (onnxruntime and TensorRT release the GIL) and postprocessing, selection and sinks in a third, so
the three stages of neighbouring frames overlap. While it runs, the inference thread has a core to itself
(runtime/affinity.py) and the GIL switch interval is short (GIL_SWITCH_INTERVAL_S), so neither the
scheduler nor the other stages' Python code hold a fast model back. Queues between stages hold one item
for a live source, so nothing piles up; a file (non-live) may have a few preprocessed frames waiting, so
inference never waits for a briefly descheduled stage. Input buffers come from a fixed pool
(Preprocessing.apply(out=...)); a model with preprocessing inside its graph (uint8 input) gets the
frame's own bytes instead. Backends write outputs into their own preallocated rings. One bad frame is
logged and counted, never fatal.

Model updates: `swap_backend(new, health_check=...)` takes effect before the next inference. With a
health check (an object with `observe(depth, latency_ms) -> verdict or None`, e.g.
edgedepth.registry.health.HealthCheck) the first frames of the new model are judged and an unhealthy
verdict rolls back to the previous backend automatically.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence

import cv2
import numpy as np

from edgedepth.machine import allowed_cores
from edgedepth.preprocess import InputSpec, Preprocessing
from edgedepth.runtime.affinity import CorePlan, pin_thread, plan_cores
from edgedepth.runtime.backends import Backend
from edgedepth.runtime.capture import Source
from edgedepth.runtime.loop_parts import BufferPool, LoopSummary, Probation, Swap, Verdict
from edgedepth.runtime.postprocess import DepthResult, Postprocessor
from edgedepth.runtime.sinks import WARMING_UP, Sink, Visualizer, stats_overlay_line
from edgedepth.runtime.sources import Frame
from edgedepth.runtime.stats import LoopStats, StatsReporter

log = logging.getLogger(__name__)

_STOP = object()
# Python's GIL switch interval while the loop runs. The inference thread holds the GIL only for a few
# microseconds between two inferences, but when it returns from the engine while another stage runs
# Python code, it waits until that stage blocks or until the interval forces a switch: with the default
# 5 ms, one wait can last longer than several inferences of a sub-millisecond model.
GIL_SWITCH_INTERVAL_S = 0.0002
PREFETCH_FILE = 8  # preprocessed frames that may wait for inference from a non-live source
POST_QUEUE = 1  # inference results that may wait for postprocessing (more would delay a rollback)


class DepthLoop:
    """Runs a source through a backend into sinks, a selector and a spool collector."""

    def __init__(
        self,
        source: Source,
        backend: Backend,
        sinks: Sequence[Sink] = (),
        visualizer: Optional[Visualizer] = None,
        selector=None,
        collector=None,
        stats: Optional[LoopStats] = None,
        reporter: Optional[StatsReporter] = None,
        postprocessor: Optional[Postprocessor] = None,
        max_frames: Optional[int] = None,
        buffers: int = 3,
        on_result: Optional[Callable[[DepthResult], None]] = None,
        evaluate: bool = False,
        gil_switch_interval: Optional[float] = GIL_SWITCH_INTERVAL_S,
        pin_cores: bool = True,
    ):
        self.source = source
        self.backend = backend
        self.sinks: List[Sink] = list(sinks)
        self.visualizer = visualizer or (Visualizer() if any(s.wants_view for s in self.sinks) else None)
        self.selector = selector
        self.collector = collector
        self.stats = stats or LoopStats(source_stats=source.stats)
        self.reporter = reporter
        self.post = postprocessor or Postprocessor()
        self.max_frames = max_frames
        self.on_result = on_result
        self.evaluate = evaluate
        self.gil_switch_interval = gil_switch_interval
        self.pin_cores = pin_cores
        self._cores: Optional[CorePlan] = None
        self._pre: Preprocessing = backend.info.preprocessing
        self._input: InputSpec = backend.info.input
        # Frames waiting for inference: one from a live source (a camera's newest frame is the one that
        # matters), a few from a file or replayed clip, whose frames never go stale: the inference thread
        # then always finds its next input ready, even when the other stages are briefly descheduled.
        self.prefetch = 1 if source.live else PREFETCH_FILE
        pre = backend.info.preprocessing
        self._pool = BufferPool((1, 3, pre.height, pre.width), buffers + self.prefetch - 1)
        self._infer_q: "queue.Queue" = queue.Queue(maxsize=self.prefetch)
        # a live source is captured only once inference took the previous frame (its newest frame is the
        # one to process); a non-live one just blocks on the full queue
        self._ready = threading.Semaphore(1) if source.live else None
        self._room = threading.Event()  # non-live: set when the queue has drained to `_low_water`
        self._low_water = self.prefetch // 2
        # Results waiting for postprocessing: one, so a failed health check rolls back within a few
        # frames. Backends return views into a ring of `ring` output slots; the result in
        # postprocessing, the one waiting and the one being written must fit in it (a backend with
        # fewer slots gets its outputs copied, see _infer_worker).
        self._post_depth = POST_QUEUE
        self._post_q: "queue.Queue" = queue.Queue(maxsize=self._post_depth)
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._pending_swap: Optional[Swap] = None
        self._generation = 0
        self._probation: Optional[Probation] = None
        self._swap_buf: Optional[np.ndarray] = None
        self._overlay: List[str] = []
        self._overlay_at = 0.0
        self.submitted = 0
        self.stop_reason = ""
        self._error_logs = 0
        self._set_labels(backend)

    # -- control (any thread, signal handlers included) ---------------------------------------------
    def stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def swap_backend(
        self, new_backend: Backend, health_check=None, on_verdict: Optional[Callable] = None
    ) -> None:
        """Use `new_backend` from the next inference on. The loop does not close the backend it replaces
        (the caller owns it) unless a health check decides: healthy -> the old one is closed; unhealthy
        -> the loop swaps back to the old one and closes the new one. `on_verdict(verdict)` is called then."""
        with self._swap_lock:
            self._pending_swap = Swap(new_backend, health_check, on_verdict)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> LoopSummary:
        """Run until the source ends, `max_frames` or stop(). Meanwhile the GIL switch interval is lowered
        to `gil_switch_interval` (process-wide), and with `pin_cores` the inference thread runs on a core
        of its own and this thread and the postprocessing thread on the others (runtime/affinity.py);
        both are restored at the end."""
        switch_interval = sys.getswitchinterval()
        if self.gil_switch_interval is not None and self.gil_switch_interval < switch_interval:
            sys.setswitchinterval(self.gil_switch_interval)
        main_cores = allowed_cores()
        self._cores = plan_cores() if self.pin_cores else None
        if self._cores is not None:
            pin_thread(self._cores.others)
            log.debug("inference thread on core %d, the other stages on %s", self._cores.inference,
                      sorted(self._cores.others))
        try:
            return self._run()
        finally:
            sys.setswitchinterval(switch_interval)
            if self._cores is not None and main_cores is not None:
                pin_thread(main_cores)

    def _run(self) -> LoopSummary:
        threads = [
            threading.Thread(target=self._infer_worker, name="edgedepth-infer", daemon=True),
            threading.Thread(target=self._post_worker, name="edgedepth-post", daemon=True),
        ]
        for t in threads:
            t.start()
        source = self.source
        try:
            while source.is_streaming() and not self._stop.is_set():
                if self.max_frames is not None and self.submitted >= self.max_frames:
                    self.stop("--max-frames reached")
                    break
                # Capture a live source only once the inference stage has taken the previous frame: it
                # then hands us its newest frame, and at most one preprocessed frame ever waits.
                ready = self._ready
                if ready is not None and not ready.acquire(timeout=0.1):
                    continue
                frame = source.capture(timeout=0.1)
                if (frame is None or not self._submit(frame)) and ready is not None:
                    ready.release()
        finally:
            if not self.stop_reason:
                self.stop_reason = "end of stream" if not source.is_streaming() else "stopped"
            self._put(self._infer_q, _STOP)
            for t in threads:
                t.join(timeout=30.0)
            if self.collector is not None:
                self.collector.flush()
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:  # closing one output must not lose the others
                    log.error("closing output %s failed: %s", type(sink).__name__, exc)
            if self.reporter is not None:
                self.reporter.report(final=True)
        snap = self.stats.snapshot()
        return LoopSummary(
            frames=int(snap["frames"]),
            submitted=self.submitted,
            errors=int(snap["frame_errors"]),
            reason=self.stop_reason,
            stats=snap,
        )

    def _submit(self, frame: Frame) -> bool:
        """Preprocess into a pooled buffer and hand it to the inference thread; False if skipped.
        A model with preprocessing in its graph gets the frame's own bytes (a view, no copy)."""
        pre, spec = self._pre, self._input
        if spec.is_uint8:
            try:
                batch = spec.pack(frame.rgb, bgr=frame.bgr)
            except Exception as exc:  # a malformed frame (wrong channels, zero size) is skipped
                self._frame_error(frame, "preprocessing", exc)
                return False
            buf = None
        else:
            buf = self._pool.acquire((1, 3, pre.height, pre.width))
            try:
                batch = pre.apply(frame.rgb, out=buf)
            except Exception as exc:  # a malformed frame (wrong channels, zero size) is skipped
                self._pool.release(buf)
                self._frame_error(frame, "preprocessing", exc)
                return False
        seq = self.submitted
        self.submitted += 1
        self._put(self._infer_q, (seq, frame, batch, buf, (pre, spec)))
        if self._ready is None:
            self._wait_for_room()
        return True

    def _wait_for_room(self) -> None:
        """Non-live sources: once the queue is full, wait until inference has drained it to half, so the
        two threads wake each other once per few frames instead of on every frame."""
        q = self._infer_q
        if q.qsize() < self.prefetch:
            return
        self._room.clear()
        while q.qsize() > self._low_water and not self._stop.is_set():
            self._room.wait(0.1)

    @staticmethod
    def _put(q: "queue.Queue", item) -> None:
        """Blocking put in short waits (signal handlers run in between); the stage behind always drains."""
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _frame_error(self, frame: Optional[Frame], stage: str, exc: BaseException) -> None:
        self.stats.count("frame_errors")
        self._error_logs += 1
        n = self._error_logs
        if n <= 10 or n % 100 == 0:
            where = f"frame {frame.index}" if frame is not None else "a frame"
            log.error(
                "%s failed in %s (%s: %s) - skipped (%d errors so far)",
                where,
                stage,
                type(exc).__name__,
                exc,
                n,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )

    # -- inference thread ---------------------------------------------------------------------------
    def _apply_swap(self) -> None:
        if self._pending_swap is None:  # the common case, without taking the lock
            return
        with self._swap_lock:
            swap, self._pending_swap = self._pending_swap, None
        if swap is None:
            return
        old = self.backend
        self.backend = swap.backend
        self._generation += 1
        self._pre = swap.backend.info.preprocessing
        self._input = swap.backend.info.input
        self._set_labels(swap.backend)
        self.stats.count("backend_swaps")
        if self.collector is not None:
            self.collector.set_model(swap.backend.info, swap.backend.model_sha256)
        log.info("backend swapped: %s -> %s", old.describe(), swap.backend.describe())
        if swap.close_replaced:
            old.close()
        if swap.health_check is not None:
            self._probation = Probation(
                self._generation, old, swap.backend, swap.health_check, swap.on_verdict
            )

    def _infer_worker(self) -> None:
        if self._cores is not None:
            pin_thread(frozenset((self._cores.inference,)))
        while True:
            item = self._infer_q.get()
            if self._ready is not None:
                self._ready.release()
            elif self._infer_q.qsize() <= self._low_water and not self._room.is_set():
                self._room.set()
            if item is _STOP:
                self._put(self._post_q, _STOP)
                return
            seq, frame, batch, buf, made_for = item
            try:
                self._apply_swap()
                backend = self.backend
                info = backend.info
                if (made_for[0] is not info.preprocessing or made_for[1] is not info.input) and (
                        made_for != (info.preprocessing, info.input) or batch.shape != backend.input_shape):
                    batch = self._repreprocess(frame, backend)  # frame in flight across a model swap
                t0 = time.perf_counter()
                out = backend.infer(batch)
                infer_ms = (time.perf_counter() - t0) * 1000.0
                depth, unc = out
                features = getattr(out, "selection", None)  # the graph's selection features, if any
                if backend.ring < self._post_depth + 2:  # its output slots would be reused while queued
                    depth, unc = depth.copy(), unc.copy()
                    features = None if features is None else features.copy()
            except Exception as exc:  # a failing inference skips the frame; probation may roll back
                if buf is not None:
                    self._pool.release(buf)
                self._put(self._post_q, ("error", seq, frame, exc, self._generation))
                continue
            if buf is not None:
                self._pool.release(buf)
            self._put(self._post_q, ("ok", seq, frame, depth, unc, infer_ms, backend, self._generation,
                                     features))

    def _repreprocess(self, frame: Frame, backend: Backend) -> np.ndarray:
        info = backend.info
        if info.input.is_uint8:
            return info.input.pack(frame.rgb, bgr=frame.bgr)
        if self._swap_buf is None or self._swap_buf.shape != backend.input_shape:
            self._swap_buf = np.empty(backend.input_shape, dtype=np.float32)
        return info.preprocessing.apply(frame.rgb, out=self._swap_buf)

    # -- postprocessing thread ----------------------------------------------------------------------
    def _post_worker(self) -> None:
        if self._cores is not None:
            pin_thread(self._cores.others)
        while True:
            item = self._post_q.get()
            if item is _STOP:
                return
            if item[0] == "error":
                _, seq, frame, exc, generation = item
                self._frame_error(frame, "inference", exc)
                self._probation_failed(generation, exc)
                continue
            try:
                self._finish(*item[1:])
            except Exception as exc:  # never let one frame end the loop
                self._frame_error(item[2], "postprocessing", exc)

    def _finish(
        self, seq: int, frame: Frame, depth, unc, infer_ms: float, backend: Backend, generation: int,
        features: Optional[np.ndarray] = None,
    ) -> None:
        result = self.post(
            frame, seq, depth, unc, infer_ms, backend=backend.name, model_version=backend.info.version
        )
        if not result.reliable:
            self.stats.count("unreliable_frames")
        if self.evaluate and frame.depth_gt is not None:
            result.metrics = self._metrics(result)
        t0, c0 = time.perf_counter(), time.thread_time()
        if self.selector is not None:
            decision = self.selector.score(frame.rgb, result.depth, result.uncertainty, seq, frame.t,
                                           features=features)
            result.selected, result.scores = decision.keep, decision.scores
            if decision.keep:
                self.stats.count("selected")
        if self.collector is not None:
            self.collector.observe(
                seq, frame, result.selected, result.scores.get("score", 0.0), result.scores
            )
        select_ms = (time.perf_counter() - t0) * 1000.0  # wall time, GIL waits included
        select_cpu_ms = (time.thread_time() - c0) * 1000.0  # CPU time this thread spent on it
        self._probation_observe(generation, result)
        self._write_sinks(result)
        done = time.monotonic()
        result.latency_ms = (done - frame.captured) * 1000.0
        if self.on_result is not None:
            self.on_result(result)
        self.stats.record(result.latency_ms, infer_ms, select_ms, done, select_cpu_ms)
        if self.reporter is not None:
            self.reporter.maybe_report(done)

    def _metrics(self, result: DepthResult) -> Optional[dict]:
        from edgedepth.metrics import frame_metrics

        gt = result.frame.depth_gt
        h, w = result.depth.shape
        if gt.shape != (h, w):
            gt = cv2.resize(gt, (w, h), interpolation=cv2.INTER_NEAREST)
        pre = self._pre
        return frame_metrics(result.depth, gt, min_depth=pre.min_depth, max_depth=pre.max_depth)

    def _write_sinks(self, result: DepthResult) -> None:
        if not self.sinks:
            return
        view = None
        if self.visualizer is not None and any(s.wants_view for s in self.sinks):
            now = time.monotonic()
            if now - self._overlay_at > 0.5 or (self._overlay and self._overlay[-1].startswith(WARMING_UP)):
                snap = self.stats.snapshot()
                self._overlay = [
                    f"{self.backend.info.name} v{self.backend.info.version} [{self.backend.name}]",
                    stats_overlay_line(snap, result),  # "warming up" until there are figures
                ]
                self._overlay_at = now
            view = self.visualizer.compose(result, self._overlay)
        for sink in list(self.sinks):
            try:
                sink.write(result, view)
            except Exception as exc:  # a broken output is dropped, the loop goes on
                log.error(
                    "output %s failed (%s: %s); it is disabled for the rest of the run",
                    type(sink).__name__,
                    type(exc).__name__,
                    exc,
                )
                self.sinks.remove(sink)
                try:
                    sink.close()
                except Exception:  # best effort on an already broken sink
                    log.debug("closing the failed output raised too", exc_info=True)

    # -- health check after a swap ------------------------------------------------------------------
    def _probation_observe(self, generation: int, result: DepthResult) -> None:
        p = self._probation
        if p is None or generation != p.generation:
            return
        verdict = p.check.observe(result.depth, result.infer_ms)
        if verdict is not None:
            self._decide(p, verdict)

    def _probation_failed(self, generation: int, exc: BaseException) -> None:
        p = self._probation
        if p is None or generation != p.generation:
            return
        load_failed = getattr(p.check, "load_failed", None)
        verdict = load_failed(exc) if load_failed is not None else Verdict(False, str(exc))
        self._decide(p, verdict)

    def _decide(self, p: Probation, verdict) -> None:
        self._probation = None
        healthy = bool(getattr(verdict, "healthy", verdict))
        if healthy:
            log.warning("new model %s passed its health check; closing the previous one", p.new.describe())
            p.old.close()
        else:
            log.warning(
                "new model %s failed its health check (%s): rolling back to %s",
                p.new.describe(),
                getattr(verdict, "reason", verdict),
                p.old.describe(),
            )
            self.stats.count("rollbacks")
            with self._swap_lock:
                self._pending_swap = Swap(p.old, close_replaced=True)
        if p.on_verdict is not None:
            try:
                p.on_verdict(verdict)
            except Exception:  # the updater's callback must not break the loop
                log.exception("on_verdict callback failed")

    def _set_labels(self, backend: Backend) -> None:
        self.stats.labels = {
            "model": backend.info.name,
            "version": backend.info.version,
            "backend": backend.name,
            "depth_units": "metres",
        }
