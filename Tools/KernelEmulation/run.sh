#!/usr/bin/env bash
# Emulates the CUDA kernels on the CPU (one std::thread per CUDA thread) and checks them
# against double references. Needs a C++20 compiler with _Float16 (g++ >= 12, clang >= 15).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
swift_source="$here/../../Sources/BatchNormCUDA/CUDAKernelSource.swift"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
# The kernel body between `static let body = #"""` and `"""#`, with the block constants.
{
    grep -E 'static let (threadsPerBlock|chunkLength|rowsPerThread) = ' "$swift_source" \
        | sed -E 's/.*static let threadsPerBlock = ([0-9]+).*/#define BN_THREADS \1/; s/.*static let chunkLength = ([0-9]+).*/#define BN_CHUNK \1/; s/.*static let rowsPerThread = ([0-9]+).*/#define BN_ROWS_PER_THREAD \1/'
    echo '#define BN_HOST_EMULATION 1'
    awk '/static let body = #"""/{on=1; next} /^"""#/{on=0} on' "$swift_source"
} > "$build/kernels_generated.cu"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wno-unknown-pragmas -I"$build" -I"$here" "$here/emulate.cpp" -o "$build/emulate"
"$build/emulate"
