#!/usr/bin/env bash
# The README's demo command: set up .venv and run the whole loop on built-in defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/edgedepth demo "$@"
