#!/usr/bin/env bash
# Builds the CPU stand-in libcuda.so.1 (fake_libcuda.cpp) from the kernel source in
# CUDAKernelSource.swift and prints its path. Example, end to end without a GPU:
#   BNKIT_CUDA_DRIVER_PATH=$(Tools/KernelEmulation/build_fake_driver.sh) \
#   BNKIT_NVRTC_PATH=<dir of libnvrtc.so.12> .build/debug/bnkit selftest --device cuda --small
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
swift_source="$here/../../Sources/BatchNormCUDA/CUDAKernelSource.swift"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
{
    grep -E 'static let (threadsPerBlock|chunkLength|rowsPerThread) = ' "$swift_source" \
        | sed -E 's/.*static let threadsPerBlock = ([0-9]+).*/#define BN_THREADS \1/; s/.*static let chunkLength = ([0-9]+).*/#define BN_CHUNK \1/; s/.*static let rowsPerThread = ([0-9]+).*/#define BN_ROWS_PER_THREAD \1/'
    echo '#define BN_HOST_EMULATION 1'
    awk '/static let body = #"""/{on=1; next} /^"""#/{on=0} on' "$swift_source"
} > "$build/kernels_generated.cu"
"${CXX:-g++}" -std=c++20 -O2 -fPIC -shared -pthread -Wno-unknown-pragmas -I"$build" -I"$here" \
    "$here/fake_libcuda.cpp" -o "$build/libcuda.so.1" >&2
echo "$build/libcuda.so.1"
