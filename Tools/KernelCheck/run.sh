#!/usr/bin/env bash
# The kernel check (kernel_check.c): every kernel level against the generic one bit for bit,
# and the generic one against a double reference, built from the kernel library's sources.
#
# Usage: Tools/KernelCheck/run.sh [native|aarch64]...   (default: both)
#   native   built with the host's clang and run here: every level this CPU supports.
#   aarch64  cross-compiled with clang --target=aarch64-linux-gnu (static, against Debian's
#            libc6-dev-arm64-cross and the arm64 libgcc) and run under qemu-aarch64 twice:
#            -cpu max (FEAT_BF16: the generic, neon and neon-bf16 levels) and -cpu cortex-a72
#            (no FEAT_BF16: generic and neon; neon-bf16 must be reported absent).
# Needs clang (the Swift toolchain's, /opt/swift/usr/bin first in PATH), and for aarch64
# qemu-user and libc6-dev-arm64-cross (.ci/run installs them when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/opt/swift/usr/bin:$PATH"
kernels=Sources/CBatchNormKernels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-O2 -Wall -Wextra -Werror -I"$kernels/include")
sources=(Tools/KernelCheck/kernel_check.c "$kernels/CBatchNormKernels.c")

native() {
    echo "--- native ($(uname -m))"
    clang "${flags[@]}" "${sources[@]}" -lm -o "$work/kernel_check"
    "$work/kernel_check"
}

aarch64() {
    local missing=()
    command -v qemu-aarch64 > /dev/null || missing+=(qemu-user)
    [ -f /usr/aarch64-linux-gnu/lib/libc.a ] || missing+=(libc6-dev-arm64-cross)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "kernel check: aarch64 needs ${missing[*]} (apt-get install -y --no-install-recommends ${missing[*]})" >&2
        return 1
    fi
    echo "--- aarch64 (clang --target=aarch64-linux-gnu, qemu-aarch64)"
    clang --target=aarch64-linux-gnu -static -fuse-ld=lld "${flags[@]}" "${sources[@]}" -lm -o "$work/kernel_check-aarch64"
    echo "--- qemu-aarch64 -cpu max (FEAT_BF16)"
    qemu-aarch64 -cpu max "$work/kernel_check-aarch64" --require 4 --require 5
    echo "--- qemu-aarch64 -cpu cortex-a72 (no FEAT_BF16)"
    qemu-aarch64 -cpu cortex-a72 "$work/kernel_check-aarch64" --require 4 --absent 5
}

for target in "${@:-native aarch64}"; do
    for name in $target; do
        case "$name" in
        native) native ;;
        aarch64) aarch64 ;;
        *) echo "usage: $0 [native|aarch64]..." >&2; exit 2 ;;
        esac
    done
done
