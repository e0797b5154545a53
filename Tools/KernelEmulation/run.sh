#!/usr/bin/env bash
# Emulates the CUDA kernels on the CPU (one std::thread per CUDA thread) and checks them
# against double references. Needs a C++20 compiler with _Float16 (g++ >= 12, clang >= 15).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$("$here/generate_kernels.sh")"
"${CXX:-g++}" -std=c++20 -O2 -pthread -Wno-unknown-pragmas -I"$build" -I"$here" "$here/emulate.cpp" -o "$build/emulate"
"$build/emulate"
