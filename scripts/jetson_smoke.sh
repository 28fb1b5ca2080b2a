#!/usr/bin/env bash
# Smoke test on a Jetson board: build the TensorRT engine on the board, run 300 frames headless from the
# CSI camera, print fps and latency percentiles.
#
#   scripts/jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE]      e.g. scripts/jetson_smoke.sh bundle orin-nano-8gb
#
# BOARD is a name from `edgedepth devices`; SOURCE defaults to csi://0 (use 0 or v4l2:///dev/video0 for USB).
# PRECISION=int8 builds from model.int8.trt.onnx (explicit Q/DQ); default: the board's default precision.
set -euo pipefail

BUNDLE=${1:?usage: jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE]}
BOARD=${2:?usage: jetson_smoke.sh BUNDLE_DIR BOARD [SOURCE]}
SOURCE=${3:-csi://0}
FRAMES=${FRAMES:-300}
OUT=${OUT:-$(mktemp -d /tmp/edgedepth-smoke.XXXXXX)}

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

echo "== build the engine on this board (into $BUNDLE/engines)"
ONNX="$BUNDLE/model.onnx"
if [ -f "$BUNDLE/model.int8.trt.onnx" ] && [ "${PRECISION:-}" = "int8" ]; then ONNX="$BUNDLE/model.int8.trt.onnx"; fi
edgedepth build "$ONNX" --device "$BOARD" ${PRECISION:+--precision "$PRECISION"}

echo "== run $FRAMES frames headless from $SOURCE"
edgedepth run "$BUNDLE" --device "$BOARD" --backend trt --input "$SOURCE" --headless \
    --max-frames "$FRAMES" --select none --stats-interval 5 --stats-jsonl "$OUT/stats.jsonl"

echo "== result"
python3 - "$OUT/stats.jsonl" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]
print(f"frames {last['frames']}  fps {last['fps']:.1f}  latency p50/p95/p99 "
      f"{last['latency_ms_p50']:.1f}/{last['latency_ms_p95']:.1f}/{last['latency_ms_p99']:.1f} ms  "
      f"inference p50 {last['infer_ms_p50']:.2f} ms  dropped {last.get('source_dropped', 0)}  "
      f"errors {last['frame_errors']}  (depth in metres)")
PY
echo "stats: $OUT/stats.jsonl"
