#!/usr/bin/env bash
# Smoke test on a Jetson board: what a user needs to trust before leaving the board alone.
#   1. the engine is built on the board and cached: a second start finds it and does not build again;
#   2. 300 frames run headless from the camera and `edgedepth run` exits with code 0;
#   3. a hot swap to a second bundle gives the old model's GPU memory back (CUDA driver's cuMemGetInfo,
#      plus tegrastats' RAM line where tegrastats exists: the GPU shares system memory on a Jetson).
# Prints each figure and exits non-zero on the first check that fails.
#
#   scripts/jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE] [SECOND_BUNDLE]
#
# BOARD is a name from `edgedepth devices`; SOURCE defaults to csi://0 (0 or v4l2:///dev/video0 for USB).
# SECOND_BUNDLE is the bundle to swap to (default: a copy of BUNDLE_DIR, which exercises the same
# release path). PRECISION=int8 builds from model.int8.trt.onnx (explicit Q/DQ); default: the board's
# default precision. FRAMES (300) and TOLERANCE_MIB (8) can be set in the environment.
set -euo pipefail

BUNDLE=${1:?usage: jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE] [SECOND_BUNDLE]}
BOARD=${2:?usage: jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE] [SECOND_BUNDLE]}
SOURCE=${3:-csi://0}
SECOND=${4:-}
FRAMES=${FRAMES:-300}
TOLERANCE_MIB=${TOLERANCE_MIB:-8}
OUT=${OUT:-$(mktemp -d /tmp/edgedepth-smoke.XXXXXX)}
HERE="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "SMOKE FAILED: $*" >&2; exit 1; }

echo "== board"
if [ -r /etc/nv_tegra_release ]; then head -n1 /etc/nv_tegra_release; else echo "(not a Jetson: /etc/nv_tegra_release missing)"; fi
python3 - <<'PY'
import sys
try:
    import tensorrt, pycuda.driver  # noqa: F401
    print("tensorrt", tensorrt.__version__, "+ pycuda: ok")
except ImportError as exc:
    sys.exit(f"TensorRT/pycuda not importable ({exc}); see scripts/JETSON.md")
import cv2
gst = [l.split(":", 1)[1].strip() for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GStreamer:")]
print("opencv", cv2.__version__, "GStreamer:", gst[0] if gst else "unknown")
PY

ONNX="$BUNDLE/model.onnx"
if [ -f "$BUNDLE/model.int8.trt.onnx" ] && [ "${PRECISION:-}" = "int8" ]; then ONNX="$BUNDLE/model.int8.trt.onnx"; fi
BUILD=(edgedepth build "$ONNX" --board "$BOARD" ${PRECISION:+--precision "$PRECISION"})

echo "== 1. build the engine on this board (into $BUNDLE/engines), then start again"
t0=$(date +%s.%N)
"${BUILD[@]}" | tee "$OUT/build1.txt"
t1=$(date +%s.%N)
ENGINE=$(ls -t "$BUNDLE"/engines/*.engine | head -n1)
SUM1=$(sha256sum "$ENGINE" | cut -d' ' -f1)
"${BUILD[@]}" | tee "$OUT/build2.txt"
t2=$(date +%s.%N)
SUM2=$(sha256sum "$ENGINE" | cut -d' ' -f1)
grep -q "engine up to date" "$OUT/build2.txt" || fail "the second start built the engine again"
[ "$SUM1" = "$SUM2" ] || fail "the engine file changed on the second start"
awk -v e="$(basename "$ENGINE")" -v a="$t0" -v b="$t1" -v c="$t2" \
    'BEGIN { printf "engine %s: first start %.1f s, second start %.1f s (cached, not rebuilt)\n", e, b - a, c - b }' 

echo "== 2. run $FRAMES frames headless from $SOURCE"
set +e
edgedepth run "$BUNDLE" --board "$BOARD" --backend trt --input "$SOURCE" --headless \
    --max-frames "$FRAMES" --select none --stats-interval 5 --stats-jsonl "$OUT/stats.jsonl"
RC=$?
set -e
echo "edgedepth run exit code: $RC"
[ "$RC" -eq 0 ] || fail "edgedepth run exited with $RC"
python3 - "$OUT/stats.jsonl" "$FRAMES" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]
print(f"frames {last['frames']}  fps {last['fps']:.1f}  latency p50/p95/p99 "
      f"{last['latency_ms_p50']:.1f}/{last['latency_ms_p95']:.1f}/{last['latency_ms_p99']:.1f} ms  "
      f"inference p50 {last['infer_ms_p50']:.2f} ms  dropped {last.get('source_dropped', 0)}  "
      f"errors {last['frame_errors']}  (depth in metres)")
if last["frames"] < int(sys.argv[2]):
    sys.exit(f"SMOKE FAILED: only {last['frames']} of {sys.argv[2]} frames")
PY

echo "== 3. hot swap to a second bundle; GPU memory before and after"
if [ -z "$SECOND" ]; then
    SECOND="$OUT/second-bundle"
    cp -r "$BUNDLE" "$SECOND"
fi
edgedepth build "$SECOND/$(basename "$ONNX")" --board "$BOARD" ${PRECISION:+--precision "$PRECISION"}
tegra_ram() { if command -v tegrastats >/dev/null; then timeout 2 tegrastats --interval 500 | head -n1 | grep -o 'RAM [0-9]*/[0-9]*MB'; fi; }
echo "tegrastats before: $(tegra_ram || true)"
python3 "$HERE/trt_swap_check.py" "$BUNDLE" "$SECOND" --board "$BOARD" --frames "$FRAMES" \
    --tolerance-mib "$TOLERANCE_MIB" || fail "GPU memory after the swap is not what it was with one model"
echo "tegrastats after:  $(tegra_ram || true)"
echo "SMOKE OK (stats: $OUT/stats.jsonl)"
