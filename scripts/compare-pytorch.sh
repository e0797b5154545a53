#!/usr/bin/env bash
# Side-by-side benchmark: bnkit against PyTorch's nn.BatchNorm3d (ATen on the CPU, cuDNN
# on the GPU), same shapes, same thread count, same effective-byte definitions
# (definitions: Sources/BatchNormCore/BatchNormCore.docc/Benchmarks.md).
#
# Usage: scripts/compare-pytorch.sh [THREADS]          (default: 2)
# Environment:
#   DTYPE=float32|float16|bfloat16   the data type of both sides (default float32;
#                            parameters and statistics stay float32 on both)
#   DEVICE=cpu|cuda          what to compare (default cpu); cuda runs the GPU suite
#   BNKIT=/path/to/bnkit     a prebuilt bnkit (e.g. the static build carried to a GPU
#                            machine without Swift); skips `swift build`
#   PYTHON=/path/to/python   a Python with torch installed (skips creating .venv)
#   ROUNDS=n                 run bnkit and PyTorch alternately n times and compare the
#                            per-row medians (default 1; use 3+ on a noisy machine)
#   SWIFT_BUILD_FLAGS="..."  extra flags for `swift build -c release`
#                            (e.g. "-Xswiftc -target-cpu -Xswiftc native")
#   OUT=dir                  where the JSON results go (default .build/compare)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-${THREADS:-2}}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-.build/compare}
mkdir -p "$OUT"

if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import torch, numpy" 2>/dev/null; then
        echo "creating .venv with torch and numpy from PyPI..." >&2
        python3 -m venv .venv
        .venv/bin/pip install --quiet torch numpy
    fi
    PYTHON=.venv/bin/python
fi

# PyTorch's side: scripts/torch_bn3d.py.
TORCH_SCRIPT="$(dirname "$0")/torch_bn3d.py"
[ -f "$TORCH_SCRIPT" ] || TORCH_SCRIPT=scripts/torch_bn3d.py

DEVICE=${DEVICE:-cpu}
DTYPE=${DTYPE:-float32}
if [ -z "${BNKIT:-}" ]; then
    echo "building bnkit (release${SWIFT_BUILD_FLAGS:+, $SWIFT_BUILD_FLAGS})..." >&2
    # shellcheck disable=SC2086
    swift build -c release --product bnkit ${SWIFT_BUILD_FLAGS:-} >&2
    BNKIT=$(swift build -c release --show-bin-path ${SWIFT_BUILD_FLAGS:-})/bnkit
fi

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round/$ROUNDS: bnkit bench --device $DEVICE --threads $THREADS --dtype $DTYPE --json" >&2
    "$BNKIT" bench --device "$DEVICE" --threads "$THREADS" --dtype "$DTYPE" --json > "$OUT/bnkit-$DTYPE-$round.json"
    echo "round $round/$ROUNDS: $PYTHON $TORCH_SCRIPT $DEVICE $THREADS $DTYPE" >&2
    "$PYTHON" "$TORCH_SCRIPT" "$DEVICE" "$THREADS" "$DTYPE" > "$OUT/torch-$DTYPE-$round.json"
done

"$PYTHON" scripts/compare.py --dtype "$DTYPE" --bnkit "$OUT"/bnkit-"$DTYPE"-*.json --torch "$OUT"/torch-"$DTYPE"-*.json
