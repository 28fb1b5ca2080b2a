"""Check the import contracts of pyproject.toml ([tool.importlinter]) with `lint-imports`.

export/ and calibrate/ live at the top of the repository but install as edgedepth.export and
edgedepth.calibrate (pyproject's package-dir). grimp, which import-linter builds its graph with, walks
one folder per top-level package, so the check runs on a staged copy of the package laid out as it
installs: STAGE/edgedepth/{...,export,calibrate}. Exit status is lint-imports'.

    python scripts/lint_imports.py            # all contracts
    python scripts/lint_imports.py --verbose  # extra arguments go to lint-imports
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (source folder in the repository, where it lands inside the staged `edgedepth` package)
LAYOUT = [("edgedepth", ""), ("export", "export"), ("calibrate", "calibrate")]


def stage_package(dest: Path) -> Path:
    """Copy the package's Python sources into dest/edgedepth as installed; return dest."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src, sub in LAYOUT:
        shutil.copytree(ROOT / src, dest / "edgedepth" / sub, ignore=ignore, dirs_exist_ok=True)
    return dest


def main(argv: list) -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint) if lint.exists() else "lint-imports", str(ROOT / "pyproject.toml"), *argv]
    with tempfile.TemporaryDirectory(prefix="edgedepth-imports-") as tmp:
        stage = stage_package(Path(tmp))
        # lint-imports puts its working directory first on sys.path, ahead of the editable install.
        env = dict(os.environ, PYTHONPATH=str(stage))
        return subprocess.call(cmd, cwd=stage, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
