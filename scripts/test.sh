#!/usr/bin/env bash
# The test command of the README and of .ci/run: set up .venv, lint, run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python scripts/lint_imports.py
.venv/bin/python -m pytest -q -ra "$@"
