#!/usr/bin/env bash
# The GPU check, in one command for a machine with an NVIDIA GPU but no Swift: the CUDA
# selftest, bnkit's GPU benchmarks (float32 and float16) and PyTorch's nn.BatchNorm3d
# (cuDNN) on the same GPU in the same run, every result written to OUT.
#
# On a machine with Swift, build the static binary and put it in a git-ignored folder:
#   swift build -c release --static-swift-stdlib --product bnkit
#   mkdir -p .device && cp .build/release/bnkit .device/
# then, on the GPU machine, from the repository root:
#   scripts/gpu-check.sh [BNKIT] [OUT]        (defaults: .device/bnkit and gpu-results)
# and compare the results with scripts/compare.py.
set -uo pipefail
cd "$(dirname "$0")/.."
bnkit=${1:-.device/bnkit}
out=${2:-gpu-results}
mkdir -p "$out"
# NVRTC lives beside the CUDA toolkit on most GPU machines.
if [ -z "${BNKIT_NVRTC_PATH:-}" ] && [ -d /usr/local/cuda/lib64 ]; then export BNKIT_NVRTC_PATH=/usr/local/cuda/lib64; fi

step() {   # step NAME FILE COMMAND...: runs COMMAND with its output in OUT/FILE and its time
    local name=$1 file=$2 begin=$SECONDS status
    shift 2
    "$@" > "$out/$file" 2>&1
    status=$?
    echo "$name: exit $status, $((SECONDS - begin)) s, $out/$file"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'; } > "$out/machine.txt" 2>&1
step "selftest" selftest.txt "$bnkit" selftest --device cuda --verbose
step "bench float32" bench-float32.json "$bnkit" bench --device cuda --json
step "bench float16" bench-float16.json "$bnkit" bench --device cuda --dtype float16 --json
step "pytorch float32" torch-float32.json python3 scripts/torch_bn3d.py cuda - float32
step "pytorch float16" torch-float16.json python3 scripts/torch_bn3d.py cuda - float16
