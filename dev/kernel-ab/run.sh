#!/usr/bin/env bash
# Kernel A/B: the C kernels of another revision against the working tree's, in one process,
# alternating per run (so that the host's bandwidth swings hit both alike), 2 threads, each
# thread on its own buffers. Prints per kernel the median ns/value of each side and the
# median of the per-run ratios old/new (above 1: the working tree is faster).
#
# Usage: dev/kernel-ab/run.sh OLD_REV [VALUES_PER_THREAD [TYPE [RUNS [THREADS [C [LEVEL [REPEAT]]]]]]]
#   TYPE 0 float32, 1 float16, 2 bfloat16; C the channels of the channels-last kernels;
#   LEVEL the kernel level (3 AVX512-BF16, 2 AVX-512, 1 AVX2, 0 generic); REPEAT calls per
#   thread and timed run (default 1; in-cache sizes need hundreds, so that starting the
#   threads does not dominate).
# Example (32 MiB of float32 per thread, from DRAM): dev/kernel-ab/run.sh main 8388608 0 15 2
# In L2, one thread, AVX2: dev/kernel-ab/run.sh main 8192 0 31 1 64 1 400
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/old/include"
git show "$old:Sources/CBatchNormKernels/CBatchNormKernels.c" > "$work/old/CBatchNormKernels.c"
git show "$old:Sources/CBatchNormKernels/kernels_template.h" > "$work/old/kernels_template.h"
git show "$old:Sources/CBatchNormKernels/include/CBatchNormKernels.h" > "$work/old/include/CBatchNormKernels.h"
new=Sources/CBatchNormKernels
# The toolchain's own tools when there are no binutils.
nm=$(command -v llvm-nm || command -v nm)
objcopy=$(command -v llvm-objcopy || command -v objcopy)
clang -O2 -c -I"$work/old/include" "$work/old/CBatchNormKernels.c" -o "$work/old.o"
"$nm" "$work/old.o" | awk '$2 == "T" { print $3 " old_" $3 }' > "$work/symbols"
"$objcopy" --redefine-syms="$work/symbols" "$work/old.o" "$work/old-renamed.o"
clang -O2 -c -I$new/include $new/CBatchNormKernels.c -o "$work/new.o"
clang -O2 -pthread -I$new/include dev/kernel-ab/kernel_ab.c "$work/old-renamed.o" "$work/new.o" -lm -o "$work/kernel_ab"
"$work/kernel_ab" "${@:-8388608}"
