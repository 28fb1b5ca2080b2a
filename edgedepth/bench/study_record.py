"""The studies' result records (docs/results/<name>.json): figure names and values with the command,
commit, date and machine that produced them, in the `edgedepth.result/1` layout the results page reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]


def _commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _machine() -> str:
    from edgedepth.machine import cpu_model, gpus

    gpu = ", ".join(gpus()) or "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu_model()}, {os.cpu_count()} cores (nproc), {gpu}, load average {load:.1f} at the end"


def _command() -> str:
    head = Path(sys.argv[0])
    try:
        head_text = head.resolve().relative_to(REPO).as_posix()
    except ValueError:
        head_text = sys.argv[0]
    return "python " + " ".join([head_text] + [shlex.quote(a) for a in sys.argv[1:]])


def write_study_record(folder: Path, name: str, title: str, figures: Sequence[Dict[str, Any]],
                       tables: Sequence[Dict[str, Any]] = (), notes: Sequence[str] = (),
                       data: Optional[Dict[str, Any]] = None) -> Path:
    """Write folder/<name>.json; `data` (the study's full numbers) is kept under the record's "data" key."""
    from edgedepth.fsutil import write_bytes_atomic

    rec = {"schema": "edgedepth.result/1", "name": name, "title": title, "command": _command(),
           "commit": _commit(), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
           "machine": _machine(), "figures": list(figures), "tables": list(tables), "notes": list(notes)}
    if data is not None:
        rec["data"] = data
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(rec, indent=1, ensure_ascii=False, default=float) + "\n").encode())
    return path
