"""A strict stand-in for `pycuda.driver` that models what makes pycuda hard to use from threads.

What it models, after pycuda's cuda.hpp:
- one context stack per thread; `Context.pop()` pops the calling thread's top, and fails on an empty stack;
- a thread that ends with a non-empty stack aborts the process in real pycuda ("context stack was not
  empty upon module cleanup"); here the abort is recorded and raised as `Abort` on the next call or check;
- memory, pinned memory and streams belong to the context that was current when they were made; freeing
  them (explicitly or by garbage collection) works only where that context is current or from the thread
  that created the context object; elsewhere real pycuda warns "out-of-thread context could not be
  cleaned up" and leaks the memory: recorded here in `leaks`;
- `Device.retain_primary_context()` / `Context.detach()` keep a per-device retain count;
- `mem_get_info()` reports what the live allocations use, so a test can check a hot swap frees it all.

Install with `install(monkeypatch)`; check with `check()` at the end of a test.
"""

from __future__ import annotations

import sys
import threading
import types
import weakref
from typing import Dict, List, Optional

import numpy as np

TOTAL_MEMORY = 8 << 30
STACK_BASE = 1 << 40


class Error(Exception):
    pass


class LogicError(Error):
    pass


class Abort(BaseException):
    """Real pycuda calls abort(): the process dies. BaseException so that no `except Exception` hides it."""


class _State:
    def __init__(self) -> None:
        self.initialised = False
        self.stacks: Dict[threading.Thread, List["Context"]] = {}
        self.lock = threading.RLock()
        self.aborts: List[str] = []
        self.leaks: List[str] = []
        self.live: Dict[int, "DeviceAllocation"] = {}
        self.pinned: Dict[int, "HostAllocation"] = {}
        self.streams: "weakref.WeakValueDictionary[int, Stream]" = weakref.WeakValueDictionary()
        self.primary_retains: Dict[int, int] = {}
        self.next_ptr = STACK_BASE
        self.devices = 1
        self.sm = (8, 7)


S = _State()


def reset(devices: int = 1, sm=(8, 7)) -> None:
    global S
    S = _State()
    S.devices, S.sm = devices, sm


def _stack() -> List["Context"]:
    with S.lock:
        return S.stacks.setdefault(threading.current_thread(), [])


def _dead_threads_check() -> None:
    with S.lock:
        for thread, stack in list(S.stacks.items()):
            if not thread.is_alive() and thread is not threading.main_thread():
                del S.stacks[thread]
                if stack:
                    S.aborts.append(f"thread {thread.name} ended with {len(stack)} context(s) pushed")
        if S.aborts:
            raise Abort("PyCUDA ERROR: The context stack was not empty upon module cleanup: "
                        + "; ".join(S.aborts))


def _current() -> Optional["Context"]:
    st = _stack()
    return st[-1] if st else None


def _require_context(what: str) -> "Context":
    _dead_threads_check()
    if not S.initialised:
        raise LogicError(f"{what} failed: cuInit has not been called")
    ctx = _current()
    if ctx is None or not ctx.valid:
        raise LogicError(f"{what} failed: invalid device context (no current context in this thread)")
    return ctx


def _cleanup_ok(ctx: "Context") -> bool:
    """Whether an object of `ctx` can be released here (pycuda's scoped_context_activation)."""
    if not ctx.valid:
        return False
    return _current() is ctx or threading.current_thread() is ctx.thread


def init(flags: int = 0) -> None:
    S.initialised = True


def get_version():
    return (12, 6, 0)


def get_driver_version() -> int:
    return 12060


def mem_get_info():
    _require_context("cuMemGetInfo")
    used = sum(a.nbytes for a in S.live.values())
    return TOTAL_MEMORY - used, TOTAL_MEMORY


class Device:
    def __init__(self, index: int) -> None:
        _dead_threads_check()
        if not S.initialised:
            raise LogicError("cuDeviceGet failed: cuInit has not been called")
        if index >= S.devices:
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self.index = index

    @staticmethod
    def count() -> int:
        if not S.initialised:
            raise LogicError("cuDeviceGetCount failed: cuInit has not been called")
        return S.devices

    def compute_capability(self):
        return S.sm

    def name(self) -> str:
        return "Fake GPU"

    def total_memory(self) -> int:
        return TOTAL_MEMORY

    def retain_primary_context(self) -> "Context":
        with S.lock:
            S.primary_retains[self.index] = S.primary_retains.get(self.index, 0) + 1
        return Context(self, primary=True)

    def make_context(self, flags: int = 0) -> "Context":
        ctx = Context(self, primary=False)
        ctx.push()
        return ctx


class Context:
    def __init__(self, device: Device, primary: bool) -> None:
        self.device, self.primary = device, primary
        self.thread = threading.current_thread()  # pycuda's context::m_thread
        self.valid = True

    def push(self) -> None:
        _dead_threads_check()
        if not self.valid:
            raise LogicError("cuCtxPushCurrent failed: invalid context")
        _stack().append(self)

    @staticmethod
    def pop() -> None:
        _dead_threads_check()
        st = _stack()
        if not st:
            raise LogicError("context::pop failed: cannot pop non-current context")
        st.pop()

    @staticmethod
    def get_current() -> Optional["Context"]:
        return _current()

    @staticmethod
    def synchronize() -> None:
        _require_context("cuCtxSynchronize")

    def get_device(self) -> Device:
        return self.device

    def detach(self) -> None:
        _dead_threads_check()
        if not self.valid:
            raise LogicError("context::detach failed: cannot detach from invalid context")
        st = _stack()
        if st and st[-1] is self:
            st.pop()
        elif threading.current_thread() is not self.thread:
            S.leaks.append("context detached from another thread than the one that made it: not released")
            self.valid = False
            return
        self.valid = False
        if self.primary:
            with S.lock:
                S.primary_retains[self.device.index] -= 1


class DeviceAllocation:
    def __init__(self, nbytes: int, ctx: Context) -> None:
        with S.lock:
            self.ptr = S.next_ptr
            S.next_ptr += (int(nbytes) + 255) // 256 * 256 + 256
            S.live[self.ptr] = self
        self.nbytes, self.ctx = int(nbytes), ctx
        self.data = np.zeros(self.nbytes, np.uint8)
        self.freed = False

    def __int__(self) -> int:
        return self.ptr

    __index__ = __int__

    def free(self) -> None:
        if self.freed:
            raise LogicError("device_allocation::free failed: invalid resource handle")
        self._release("explicit free()")

    def _release(self, how: str) -> None:
        self.freed = True
        if _cleanup_ok(self.ctx):
            with S.lock:
                S.live.pop(self.ptr, None)
        else:
            S.leaks.append(f"{how} of {self.nbytes} bytes from thread {threading.current_thread().name}: "
                           "out-of-thread context could not be cleaned up")

    def __del__(self) -> None:
        if not getattr(self, "freed", True):
            self._release("garbage collection")


class HostAllocation:
    """The `.base` of a `pagelocked_empty` array (pycuda's pagelocked_host_allocation)."""

    def __init__(self, shape, dtype, ctx: Context) -> None:
        self.array = np.zeros(shape, dtype)
        self.ctx, self.freed = ctx, False
        self.__array_interface__ = self.array.__array_interface__
        with S.lock:
            S.pinned[id(self)] = self

    def free(self) -> None:
        if self.freed:
            raise LogicError("host_allocation::free failed: invalid resource handle")
        self._release("explicit free()")

    def _release(self, how: str) -> None:
        self.freed = True
        if _cleanup_ok(self.ctx):
            self.array.view(np.uint8)[...] = 0xFF  # freed memory: whoever still reads it sees NaN garbage
            with S.lock:
                S.pinned.pop(id(self), None)
        else:
            S.leaks.append(f"pinned host memory {how} from thread {threading.current_thread().name}: "
                           "out-of-thread context could not be cleaned up")

    def __del__(self) -> None:
        if not getattr(self, "freed", True):
            self._release("garbage collection")


class Stream:
    def __init__(self, flags: int = 0) -> None:
        self.ctx = _require_context("cuStreamCreate")
        self.handle = id(self)
        self.synced = True
        with S.lock:
            S.streams[self.handle] = self

    def synchronize(self) -> None:
        _require_context("cuStreamSynchronize")

    def __del__(self) -> None:  # pycuda has no Stream.free(): the destructor releases it
        ctx = getattr(self, "ctx", None)
        if ctx is None:
            return
        if not _cleanup_ok(ctx):
            S.leaks.append(f"stream destroyed from thread {threading.current_thread().name}: "
                           "out-of-thread context could not be cleaned up")


def mem_alloc(nbytes: int) -> DeviceAllocation:
    ctx = _require_context("cuMemAlloc")
    return DeviceAllocation(nbytes, ctx)


def pagelocked_empty(shape, dtype, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    ctx = _require_context("cuMemHostAlloc")
    host = HostAllocation(shape, dtype, ctx)
    arr = np.asarray(host)
    assert arr.base is host
    return arr


def _device(ptr) -> DeviceAllocation:
    alloc = S.live.get(int(ptr))
    if alloc is None or alloc.freed:
        raise LogicError("cuMemcpy failed: invalid device pointer")
    return alloc


def _check_owner(alloc: DeviceAllocation, what: str) -> None:
    ctx = _require_context(what)
    if ctx is not alloc.ctx:
        raise LogicError(f"{what} failed: the memory belongs to another context")


def memcpy_htod(dest, src) -> None:
    alloc = _device(dest)
    _check_owner(alloc, "cuMemcpyHtoD")
    raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
    alloc.data[: raw.size] = raw


def memcpy_htod_async(dest, src, stream: Optional[Stream] = None) -> None:
    if stream is not None and stream.ctx is not _current():
        raise LogicError("cuMemcpyHtoDAsync failed: the stream belongs to another context")
    memcpy_htod(dest, src)


def memcpy_dtoh(dest: np.ndarray, src) -> None:
    alloc = _device(src)
    _check_owner(alloc, "cuMemcpyDtoH")
    out = dest.reshape(-1).view(np.uint8)
    out[:] = alloc.data[: out.size]


def memcpy_dtoh_async(dest: np.ndarray, src, stream: Optional[Stream] = None) -> None:
    if stream is not None and stream.ctx is not _current():
        raise LogicError("cuMemcpyDtoHAsync failed: the stream belongs to another context")
    memcpy_dtoh(dest, src)


def read_device(ptr, nbytes: int) -> np.ndarray:
    """For the fake TensorRT: the bytes at a device pointer (checks the calling thread's context)."""
    alloc = _device(ptr)
    _check_owner(alloc, "kernel launch")
    return alloc.data[:nbytes]


def write_device(ptr, raw: np.ndarray) -> None:
    alloc = _device(ptr)
    _check_owner(alloc, "kernel launch")
    alloc.data[: raw.size] = raw


def check() -> Dict[str, object]:
    """Aborts (raised), leaks, live memory and retains at the end of a test."""
    _dead_threads_check()
    return {
        "leaks": list(S.leaks),
        "live_bytes": sum(a.nbytes for a in S.live.values()),
        "pinned": len(S.pinned),
        "streams": len(S.streams),
        "primary_retains": sum(S.primary_retains.values()),
        "main_stack": len(S.stacks.get(threading.main_thread(), [])),
        "this_stack": len(S.stacks.get(threading.current_thread(), [])),
    }


def module() -> types.ModuleType:
    """This module as `pycuda.driver` (the names real pycuda.driver has; test helpers stay private)."""
    import importlib.machinery

    mod = types.ModuleType("pycuda.driver")
    mod.__spec__ = importlib.machinery.ModuleSpec("pycuda.driver", None)
    for name in ("Error", "LogicError", "init", "get_version", "get_driver_version", "mem_get_info", "Device",
                 "Context", "Stream", "mem_alloc", "pagelocked_empty", "memcpy_htod", "memcpy_htod_async",
                 "memcpy_dtoh", "memcpy_dtoh_async", "DeviceAllocation"):
        setattr(mod, name, getattr(sys.modules[__name__], name))
    return mod


def install(monkeypatch, devices: int = 1, sm=(8, 7)) -> types.ModuleType:
    """Fresh state; `import pycuda.driver` gives the fake; `import pycuda.autoinit` etc. fail loudly."""
    reset(devices, sm)
    import importlib.machinery

    pkg = types.ModuleType("pycuda")
    pkg.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    pkg.__path__ = []  # a package, so `import pycuda.driver` finds the submodule in sys.modules
    drv = module()
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    for auto in ("pycuda.autoinit", "pycuda.autoprimaryctx"):
        monkeypatch.setitem(sys.modules, auto, None)  # pushes in the importing thread: not used here
    return drv
