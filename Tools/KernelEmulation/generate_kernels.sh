#!/usr/bin/env bash
# Writes the kernel body of CUDAKernelSource.swift (between `static let body = #"""` and
# `"""#`, with its block constants as #defines) to $build/kernels_generated.cu for the CPU
# emulation, and prints $build. Used by run.sh and build_fake_driver.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
swift_source="$here/../../Sources/BatchNormCUDA/Kernels/CUDAKernelSource.swift"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
{
    grep -E 'static let (threadsPerBlock|chunkLength|rowsPerThread) = ' "$swift_source" \
        | sed -E 's/.*static let threadsPerBlock = ([0-9]+).*/#define BN_THREADS \1/; s/.*static let chunkLength = ([0-9]+).*/#define BN_CHUNK \1/; s/.*static let rowsPerThread = ([0-9]+).*/#define BN_ROWS_PER_THREAD \1/'
    echo '#define BN_HOST_EMULATION 1'
    awk '/static let body = #"""/{on=1; next} /^"""#/{on=0} on' "$swift_source"
} > "$build/kernels_generated.cu"
echo "$build"
