"""Peak memory of one runtime, measured in a fresh subprocess so runtimes' peaks never mix.

Native libraries (onnxruntime's arena, oneDNN/MKL buffers, OpenCV's blobs) allocate outside Python, so
tracemalloc sees none of it. The probe reads the kernel's resident-set high-water mark (VmHWM in
/proc/self/status; ru_maxrss where /proc is missing) twice: after importing the runtime's library
(interpreter + numpy + library) and after loading the model and running `runs` inferences. It reports
both the process peak and the delta (what the model and its inference add on top of the library).

    python -m edgedepth.bench.memory < spec.json      # prints one line: MEMORY {...json...}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

MARK = "MEMORY "


def _status_kb(field: str) -> Optional[int]:
    path = Path("/proc/self/status")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_mb() -> float:
    """Resident-set high-water mark of this process, MiB."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS


def method() -> str:
    return "VmHWM (/proc/self/status)" if Path("/proc/self/status").is_file() else "getrusage ru_maxrss"


def probe(spec_dict: Dict[str, Any], runs: int) -> Dict[str, Any]:
    """Run inside the fresh process: import the library, measure, load + run, measure again."""
    import importlib

    import numpy as np

    from edgedepth.bench.runtimes import RuntimeSpec, library_module, open_runner

    spec = RuntimeSpec.from_dict(spec_dict)
    importlib.import_module(library_module(spec))
    base = peak_rss_mb()
    t0 = time.perf_counter()
    runner = open_runner(spec)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((1, 3, spec.height, spec.width)).astype(np.float32)
    for _ in range(max(1, runs)):
        runner.infer(batch)
    peak = peak_rss_mb()
    runner.close()
    return {"peak_rss_mb": round(peak, 1), "library_rss_mb": round(base, 1),
            "delta_rss_mb": round(peak - base, 1), "load_s": round(load_s, 3), "runs": max(1, runs),
            "method": method()}


def measure_in_subprocess(spec_dict: Dict[str, Any], runs: int = 5, timeout: float = 180.0
                          ) -> Dict[str, Any]:
    """Peak memory of a runtime in a new interpreter; {'error': why} when the probe fails."""
    payload = json.dumps({"spec": spec_dict, "runs": runs})
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    try:
        proc = subprocess.run([sys.executable, "-m", "edgedepth.bench.memory"], input=payload,
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"memory probe exited {proc.returncode}: {tail[:300]}"}


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        result = probe(request["spec"], int(request.get("runs", 5)))
    except Exception as exc:  # reported to the parent as data, never a traceback in its table
        result = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    sys.stdout.write(MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
