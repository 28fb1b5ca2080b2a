#!/usr/bin/env bash
# Set up a workstation environment in .venv (idempotent): CPU torch first, then edgedepth with the
# workstation, server, dev and teachers extras. A device needs only `pip install .` (plus JetPack's TensorRT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch==2.13.0 resolves to the CPU build on this kind of machine; pinning it first keeps the
# `train` extra's range from pulling a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[train,server,dev,teachers]"
