#!/usr/bin/env bash
# Builds the CPU stand-in libcuda.so.1 (fake_libcuda.cpp) from the kernel source in
# CUDAKernelSource.swift and prints its path. Example, end to end without a GPU:
#   BNKIT_CUDA_DRIVER_PATH=$(Tools/KernelEmulation/build_fake_driver.sh) \
#   BNKIT_NVRTC_PATH=<dir of libnvrtc.so.12> .build/debug/bnkit selftest --device cuda --small
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$("$here/generate_kernels.sh")"
"${CXX:-g++}" -std=c++20 -O2 -fPIC -shared -pthread -Wno-unknown-pragmas -I"$build" -I"$here" \
    "$here/fake_libcuda.cpp" -o "$build/libcuda.so.1" >&2
echo "$build/libcuda.so.1"
