"""Benchmark records: the figures a benchmark script printed, with the command, commit, date and machine.

The results page of the docs (`scripts/results_page.py` -> `docs/results.md`) is generated from these
records, so a figure there always names the command that produced it. A script records its figures by
calling `record_results` at its end; nothing is written unless `EDGEDEPTH_RESULTS` names a folder
(or `out_dir` is given), so test runs and ad hoc runs leave the repository alone:

    EDGEDEPTH_RESULTS=docs/results python scripts/bench_train.py
    python scripts/results_page.py            # regenerate docs/results.md

A record is one JSON file per benchmark, `<name>.json`, replaced by the next run (git keeps history):

    {"schema": "edgedepth.result/1", "name": ..., "title": ..., "command": ..., "commit": ...,
     "date": "YYYY-MM-DD", "machine": ..., "figures": [{"figure", "value", "unit"?, "target"?}],
     "tables": [{"title"?, "columns": [...], "rows": [[...]]}], "notes": [...]}
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from edgedepth.errors import ConfigError

SCHEMA = "edgedepth.result/1"
ENV = "EDGEDEPTH_RESULTS"
REPO = Path(__file__).resolve().parents[2]

Figure = Dict[str, Any]
Table = Dict[str, Any]


def current_command(argv: Optional[Sequence[str]] = None) -> str:
    """The command line as a user would type it: `python scripts/X.py ARGS` for a script in the repository."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    head = Path(argv[0])
    try:
        head_text = head.resolve().relative_to(REPO).as_posix()
    except ValueError:
        head_text = argv[0]
    prefix = "python " if head_text.endswith(".py") else ""
    return prefix + " ".join([head_text] + [shlex.quote(a) for a in argv[1:]])


def current_commit(repo: Path = REPO) -> Optional[str]:
    """Short hash of HEAD, with `+dirty` when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe_machine() -> str:
    """One line: CPU model and usable cores, GPUs (or none), OS."""
    from edgedepth.machine import cpu_model, gpus, usable_cores

    gpu = ", ".join(gpus()) or "no GPU"
    return f"{cpu_model()}, {usable_cores()} cores, {gpu}, {sys.platform}"


def figure(name: str, value: Union[float, int, str], unit: str = "", target: str = "") -> Figure:
    """One figure of a record; `target` is the goal as text, e.g. '>= 0.9'."""
    out: Figure = {"figure": name, "value": value}
    if unit:
        out["unit"] = unit
    if target:
        out["target"] = target
    return out


def figures_from_dict(data: Dict[str, Any], prefix: str = "", digits: int = 4) -> List[Figure]:
    """Flatten a script's nested summary dict into figures named by their key path ("a / b / c");
    floats are rounded to `digits` significant digits, lists of scalars joined."""
    out: List[Figure] = []
    for key, value in data.items():
        name = f"{prefix} / {key}" if prefix else str(key)
        if isinstance(value, dict):
            out.extend(figures_from_dict(value, name, digits))
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
            out.append(figure(name, ", ".join(str(_short(v, digits)) for v in value)))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out.append(figure(name, _short(value, digits) if isinstance(value, float) else value))
    return out


def _short(v: Any, digits: int) -> Any:
    return float(f"{v:.{digits}g}") if isinstance(v, float) else v


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> Table:
    out: Table = {"columns": list(columns), "rows": [list(r) for r in rows]}
    if title:
        out["title"] = title
    return out


def record_results(name: str, title: str, figures: Sequence[Figure] = (), tables: Sequence[Table] = (),
                   notes: Sequence[str] = (), *, command: Optional[str] = None,
                   out_dir: Union[str, Path, None] = None,
                   data: Optional[Dict[str, Any]] = None) -> Optional[Path]:
    """Write `<out_dir>/<name>.json` (out_dir defaults to $EDGEDEPTH_RESULTS); returns its path, or None
    when no folder is set. Never raises for the benchmark's sake: a failed write is reported on stderr.
    `data` (a study's full numbers, for re-plotting) is kept under the record's "data" key."""
    folder = out_dir if out_dir is not None else os.environ.get(ENV)
    if not folder:
        return None
    if not name.replace("-", "_").isidentifier():
        raise ConfigError(f"result name {name!r} must be letters, digits, '-' or '_'")
    rec = {
        "schema": SCHEMA, "name": name, "title": title,
        "command": command if command is not None else current_command(),
        "commit": current_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "machine": describe_machine(),
        "figures": list(figures), "tables": list(tables), "notes": list(notes),
    }
    if data is not None:
        rec["data"] = data
    import json

    from edgedepth.fsutil import write_bytes_atomic

    path = Path(folder) / f"{name}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(rec, indent=1, ensure_ascii=False, default=float) + "\n"
        write_bytes_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        print(f"could not record results to {path}: {exc}", file=sys.stderr)
        return None
    print(f"recorded results: {path}", file=sys.stderr)
    return path


def load_records(folder: Union[str, Path]) -> List[dict]:
    """Every record in folder, validated enough to render; a bad file is an error that names it."""
    import json

    out = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable JSON record ({exc})") from exc
        missing = [k for k in ("name", "title", "command", "commit", "date", "machine") if k not in rec]
        if rec.get("schema") != SCHEMA or missing:
            raise ConfigError(f"{path}: not an {SCHEMA} record (missing {', '.join(missing) or 'schema'})")
        rec.setdefault("figures", [])
        rec.setdefault("tables", [])
        rec.setdefault("notes", [])
        out.append(rec)
    return out
