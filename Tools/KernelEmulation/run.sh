#!/usr/bin/env bash
# Emulates the CUDA kernels on the CPU (one std::thread per CUDA thread) and checks them
# against double references. Needs a C++20 compiler with _Float16 (g++ >= 12, clang >= 15).
# The kernels are Sources/BatchNormCUDA/Kernels/BatchNormKernels.cu, included as is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/BatchNormCUDA/Kernels"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wno-unknown-pragmas -DBN_HOST_EMULATION=1 -I"$kernels" -I"$here" \
    "$here/emulate.cpp" -o "$build/emulate"
"$build/emulate"
