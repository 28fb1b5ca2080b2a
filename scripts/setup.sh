#!/usr/bin/env bash
# Set up a workstation environment in .venv (idempotent): CPU torch first, then edgedepth with the
# workstation, server, recordings, viewers, teachers, scale (Ray), dev and docs extras. A device needs only `pip install .` (plus JetPack's
# TensorRT).
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
.venv/bin/python -m pip install -q -e ".[train,server,recordings,viewers,teachers,scale,dev,docs]"
# Headless Chromium for the data browser tests (tests/fleet/test_browser_chromium.py): Debian's chromium and
# chromium-driver, installed when running as root and missing; elsewhere those tests skip and say why.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
      >/dev/null 2>&1 || echo "setup: chromium/chromium-driver not installed; browser tests will skip" >&2
  fi
fi
