"""Named points where a test stops a process on purpose, so that a kill -9 lands exactly there.

With EDGEDEPTH_PAUSE_AT="NAME:N:FLAG" in the environment, the N-th pass through the point NAME (counted
from 1 in this process) creates the file FLAG, holding `detail`, and then waits forever; the test waits
for FLAG and kills the process. Without the variable (always, outside tests) a point does nothing.

Points: "spool-write" (a spool file half written, edgedepth.spool), "store-write" (an ingested item's
file half written, edgedepth.fleet.store.local); both go through `write_pausable`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple

ENV = "EDGEDEPTH_PAUSE_AT"


def _parse(spec: Optional[str]) -> Optional[Tuple[str, int, str]]:
    if not spec:
        return None
    name, n, flag = spec.split(":", 2)
    return name, int(n), flag


_PAUSE = _parse(os.environ.get(ENV))
_counts: Dict[str, int] = {}
_lock = threading.Lock()


def pause_point(name: str, detail: str = "") -> None:
    """Stop here forever if EDGEDEPTH_PAUSE_AT names this point and this pass (see the module doc)."""
    if _PAUSE is None or _PAUSE[0] != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        hit = _counts[name] == _PAUSE[1]
    if not hit:
        return
    flag = Path(_PAUSE[2])
    tmp = flag.with_name(flag.name + ".tmp")
    tmp.write_text(detail)
    os.replace(tmp, flag)  # the test sees the flag only with its detail written
    while True:
        time.sleep(3600)


def write_pausable(f: BinaryIO, data: bytes, point: str, detail: str = "") -> None:
    """`f.write(data)`, with the pause point `point` between its two halves when one is armed for it.

    Without EDGEDEPTH_PAUSE_AT naming `point` this is one plain write. With it, the first half is
    written and flushed, `pause_point(point, detail)` runs (a kill -9 there leaves the file half
    written), then the rest is written. The caller flushes and fsyncs as before.
    """
    if _PAUSE is None or _PAUSE[0] != point:
        f.write(data)
        return
    view = memoryview(data)
    half = len(view) // 2
    f.write(view[:half])
    if half:
        f.flush()
        pause_point(point, detail)
    f.write(view[half:])
