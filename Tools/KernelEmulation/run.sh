#!/usr/bin/env bash
# Emulates the CUDA kernels on the CPU (one std::thread per CUDA thread) and checks them
# against double references, and their bfloat16 conversions against the CPU backend's C
# kernels (linked in). Needs a C++20 compiler with _Float16 (g++ >= 12, clang >= 15) and
# clang for the C kernels (the Swift toolchain's). The kernels are
# Sources/BatchNormCUDA/Kernels/BatchNormKernels.cu, included as is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/BatchNormCUDA/Kernels"
cpu="$here/../../Sources/CBatchNormKernels"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
"${CC:-clang}" -std=c11 -O2 -I"$cpu/include" -c "$cpu/CBatchNormKernels.c" -o "$build/CBatchNormKernels.o"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wno-unknown-pragmas -DBN_HOST_EMULATION=1 -I"$kernels" -I"$here" \
    -I"$cpu/include" "$here/emulate.cpp" "$build/CBatchNormKernels.o" -lm -o "$build/emulate"
"$build/emulate"
