#!/usr/bin/env bash
# Builds the CPU stand-in libcuda.so.1 (fake_libcuda.cpp) around the kernel source
# Sources/BatchNormCUDA/Kernels/BatchNormKernels.cu and prints its path. Example, end to end
# without a GPU:
#   BNKIT_CUDA_DRIVER_PATH=$(Tools/KernelEmulation/build_fake_driver.sh) \
#   BNKIT_NVRTC_PATH=<dir of libnvrtc.so.12> .build/debug/bnkit selftest --device cuda --small
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/BatchNormCUDA/Kernels"
build="${TMPDIR:-/tmp}/bnkit-kernel-emulation"
mkdir -p "$build"
"${CXX:-g++}" -std=c++20 -O2 -fPIC -shared -pthread -Wno-unknown-pragmas -DBN_HOST_EMULATION=1 \
    -I"$kernels" -I"$here" "$here/fake_libcuda.cpp" -o "$build/libcuda.so.1" >&2
echo "$build/libcuda.so.1"
