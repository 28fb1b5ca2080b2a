#!/usr/bin/env bash
# Checkpoint -> bundle (export, INT8 for cpu and trt) -> `edgedepth bench` against the peer runtimes.
#
#   scripts/bench_all.sh CKPT [BUNDLE_DIR] [CALIB_DATA] [HELDOUT_DATA] [-- extra `edgedepth bench` options]
#
# CALIB_DATA: frames the INT8 models are calibrated on (default: 96 synthetic frames rendered at the model's
# size into BUNDLE_DIR.calib). HELDOUT_DATA: frames accuracy is scored on (default: synthetic frames
# rendered in-process by the bench with a fixed seed). Writes BUNDLE_DIR.bench.{json,png}.
# An INT8 model the calibration gate refuses is left out of the bundle; the bench then lists it as skipped.
set -euo pipefail

CKPT=${1:?usage: scripts/bench_all.sh CKPT [BUNDLE_DIR] [CALIB_DATA] [HELDOUT_DATA] [-- bench options]}
shift
BUNDLE=runs/bench_bundle
CALIB=""
HELDOUT=""
[[ $# -gt 0 && $1 != "--" ]] && { BUNDLE=$1; shift; }
[[ $# -gt 0 && $1 != "--" ]] && { CALIB=$1; shift; }
[[ $# -gt 0 && $1 != "--" ]] && { HELDOUT=$1; shift; }
[[ $# -gt 0 && $1 == "--" ]] && shift

rm -rf "$BUNDLE"
edgedepth export "$CKPT" --out "$BUNDLE"
if [[ -z $CALIB ]]; then
    SIZE=$(python -c "import json,sys; p=json.load(open('$BUNDLE/manifest.json'))['model']['preprocessing']; print(f\"{p['height']}x{p['width']}\")")
    CALIB="$BUNDLE.calib"
    [[ -d $CALIB ]] || edgedepth data synth --frames 96 --size "$SIZE" --seed 4242 --out "$CALIB" --no-progress
fi
for target in cpu trt; do
    edgedepth calibrate "$BUNDLE/model.onnx" --data "$CALIB" --target "$target" --method auto || \
        echo "INT8 for $target refused by its gate (see $BUNDLE/calibration.json); benchmarking without it"
done
DATA_OPT=()
[[ -n $HELDOUT ]] && DATA_OPT=(--data "$HELDOUT")
edgedepth bench "$BUNDLE" --checkpoint "$CKPT" "${DATA_OPT[@]}" --json "$BUNDLE.bench.json" \
    --png "$BUNDLE.bench.png" "$@"
