"""The thread that owns a backend's CUDA context: every pycuda and TensorRT call of that backend runs on it.

Why one owner thread: pycuda keeps a context stack per thread and abort()s the process when a thread
ends with a context still pushed; memory, pinned memory and streams can only be released where their
context is current or from the thread that created the context object, otherwise pycuda leaks them
("out-of-thread context could not be cleaned up"). The live loop infers from its own thread and a hot
swap closes the old model from the update thread. With one owner thread per backend, whatever thread
calls `infer` or `close`, the work runs where the context is current: the thread pushes the device's
primary context once when it starts, and when the backend closes it releases every buffer, stream and
TensorRT object, pops the context and detaches it, then ends with an empty stack.

    owner = CudaOwner(device_index=0)
    ptr = owner.call(lambda: cuda.mem_alloc(1024))   # runs on the owner thread
    owner.close(release=free_everything)               # release on the owner, pop, detach, join

The owner is not keyed on thread ids: it is an object held by the backend.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from edgedepth.errors import ModelError, require

log = logging.getLogger(__name__)
_LIVE: "weakref.WeakSet[CudaOwner]" = weakref.WeakSet()


class _Call:
    """A call handed to the owner; `done` stays locked until the owner ran it (cheaper than an Event)."""

    __slots__ = ("fn", "args", "done", "result", "error")

    def __init__(self, fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: Optional[BaseException] = None


class CudaOwner:
    """A thread holding the primary CUDA context of one device; `call(fn, *args)` runs fn there."""

    def __init__(self, device_index: int = 0, name: str = "edgedepth-cuda", driver=None) -> None:
        """driver: the pycuda.driver module (imported when None; a benchmark or test may pass another)."""
        self.device_index = int(device_index)
        self._driver = driver
        self._queue: "queue.SimpleQueue[Optional[_Call]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self.device_facts: Dict[str, Any] = {}
        self._thread = threading.Thread(target=self._main, name=f"{name}-{self.device_index}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        _LIVE.add(self)

    # -- the owner thread ----------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            cuda = self._driver if self._driver is not None else require("pycuda.driver", "trt")
            cuda.init()
            count = cuda.Device.count()
            if count <= self.device_index:
                raise ModelError(f"no CUDA GPU {self.device_index} here (found {count})")
            dev = cuda.Device(self.device_index)
            major, minor = dev.compute_capability()
            self.device_facts = {"gpu_name": dev.name(), "gpu_sm": f"{major}.{minor}"}
            ctx = dev.retain_primary_context()
            ctx.push()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread
            self._start_error = exc if isinstance(exc, Exception) else ModelError(str(exc))
            self._ready.set()
            return
        self.cuda = cuda
        self._ready.set()
        try:
            self._serve()
        finally:
            try:
                cuda.Context.pop()
            finally:
                ctx.detach()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                item.result = item.fn(*item.args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                item.error = exc
            finally:
                item.done.release()

    # -- any thread ----------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return not self._closed and self._thread.is_alive()

    def on_owner(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the owner thread and return its result (or raise its exception here)."""
        if self.on_owner():
            return fn(*args)
        item = _Call(fn, args)
        with self._lock:
            if self._closed:
                raise ModelError("this model was closed (its CUDA context is released); load it again")
            self._queue.put(item)
        item.done.acquire()
        if item.error is not None:
            raise item.error
        return item.result

    def mem_info(self) -> Tuple[int, int]:
        """(free, total) bytes of GPU memory as the driver reports them (cuMemGetInfo)."""
        return self.call(lambda: tuple(int(v) for v in self.cuda.mem_get_info()))

    def close(self, release: Optional[Callable[[], None]] = None, timeout: float = 30.0) -> None:
        """Run `release` on the owner (free what it made), then pop and detach the context and end it."""
        if self._closed:
            return
        error: Optional[BaseException] = None
        if release is not None and self._thread.is_alive():
            try:
                self.call(release)
            except BaseException as exc:  # noqa: BLE001 - the context is released anyway, then re-raised
                error = exc
        with self._lock:
            self._closed = True
            self._queue.put(None)
        if not self.on_owner():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("CUDA owner thread %s did not finish within %.0f s", self._thread.name, timeout)
        _LIVE.discard(self)
        if error is not None:
            raise error


@atexit.register
def _close_all() -> None:
    """A backend nobody closed: release its context before the interpreter tears pycuda down."""
    for owner in list(_LIVE):
        try:
            owner.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            log.debug("closing a CUDA owner at exit failed", exc_info=True)
