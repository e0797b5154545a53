#!/usr/bin/env bash
# Checks that every kernel level emits its non-temporal stores. The C kernels are compiled
# from one source per instruction set; the AVX-512 instance and the AVX-512 + AVX512-BF16
# instance differ only in how float is rounded to bfloat16, so they must contain as many
# non-temporal store instructions (movnt*) as each other. A compiler that turns a
# non-temporal store into an ordinary one (as clang did for vcvtneps2bf16's bfloat16-typed
# result, until the kernels handed it on as integers) changes no result, only the speed,
# so no unit test can see it: this check does. x86-64 only; needs clang and llvm-objdump
# (both ship with the Swift toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ]; then echo "skipped: not x86-64"; exit 0; fi
objdump=$(command -v llvm-objdump || command -v objdump)
object=$(mktemp --suffix=.o)
trap 'rm -f "$object"' EXIT
clang -O2 -c -ISources/CBatchNormKernels/include Sources/CBatchNormKernels/CBatchNormKernels.c -o "$object"
counts=$("$objdump" -d --no-show-raw-insn "$object" | awk '
    /^[0-9a-f]+ <bnk_avx512bf16_/ { level = "avx512bf16"; next }
    /^[0-9a-f]+ <bnk_avx512_/ { level = "avx512"; next }
    /^[0-9a-f]+ </ { level = "" }
    level != "" && /[ \t]v?movnt/ { count[level]++ }
    END { printf "%d %d\n", count["avx512"], count["avx512bf16"] }')
read -r avx512 bf16 <<< "$counts"
echo "non-temporal stores: AVX-512 instance $avx512, AVX512-BF16 instance $bf16"
if [ "$avx512" -eq 0 ] || [ "$avx512" -ne "$bf16" ]; then
    echo "error: expected the same non-zero number of non-temporal stores in both instances" >&2
    exit 1
fi
