#!/usr/bin/env python3
"""Run the README's tour: every ```bash block that follows a `<!-- tour -->` line, in order, as one script.

    python scripts/tour.py --workdir /tmp/edgedepth-tour                # the README's scale
    python scripts/tour.py --workdir /tmp/t FRAMES=200 EPOCHS=2 ...     # smaller, as the test runs it
    python scripts/tour.py --print                                      # show the script, run nothing

The blocks run in one bash process with `set -euo pipefail`, in the work directory, with `edgedepth` on
PATH (this interpreter's). The tour's scale variables (`${NAME:-default}` in the README) can be given as
NAME=VALUE arguments; background processes the tour starts are stopped when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- tour -->"
FENCE = re.compile(r"^```bash\s*$")

PRELUDE = """set -euo pipefail
# stop whatever the tour left running in the background (the ingest server), however it ends
trap 'for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
"""


def tour_blocks(readme: Path = REPO / "README.md") -> List[str]:
    """The text of every ```bash block that directly follows a `<!-- tour -->` line."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    blocks: List[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARKER:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j >= len(lines) or not FENCE.match(lines[j].strip()):
                raise SystemExit(f"README.md line {i + 1}: {MARKER} must be followed by a ```bash block")
            k = j + 1
            body = []
            while k < len(lines) and lines[k].strip() != "```":
                body.append(lines[k])
                k += 1
            if k >= len(lines):
                raise SystemExit(f"README.md line {j + 1}: the tour block is not closed")
            blocks.append("\n".join(body))
            i = k
        i += 1
    if not blocks:
        raise SystemExit(f"README.md has no {MARKER} blocks")
    return blocks


def tour_script(readme: Path = REPO / "README.md") -> str:
    return PRELUDE + "\n".join(f"\n# -- tour block {n + 1}\n{b}" for n, b in enumerate(tour_blocks(readme)))


def run_tour(workdir: Path, variables: Optional[Dict[str, str]] = None, readme: Path = REPO / "README.md",
             timeout: Optional[float] = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run the tour in `workdir` (created); returns the finished process (output captured unless not
    `capture`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(variables or {})
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    script = workdir / "tour.sh"
    script.write_text(tour_script(readme), encoding="utf-8")
    # its own process group, so a timeout also stops what the tour started in the background
    pipe = subprocess.PIPE if capture else None
    proc = subprocess.Popen(["bash", str(script.resolve())], cwd=workdir, env=env, stdout=pipe, stderr=pipe,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err = (err or "") + f"\ntour stopped after {timeout} s"
    except BaseException:  # interrupted (Ctrl-C, a test's timeout): leave nothing running
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("edgedepth-tour"))
    ap.add_argument("--print", action="store_true", help="print the script and exit")
    ap.add_argument("variables", nargs="*", metavar="NAME=VALUE", help="scale variables, e.g. FRAMES=200")
    args = ap.parse_args(argv)
    if args.print:
        print(tour_script())
        return 0
    variables = {}
    for item in args.variables:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"expected NAME=VALUE, got {item!r}")
        variables[name] = value
    res = run_tour(args.workdir, variables, capture=False)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
