// Benchmark-only C loops of `bnkit bench` (not part of the BatchNormKit product): the
// memory-bandwidth loops of the same-run roofline, instantiated per kernel level as the
// kernels are (bandwidth_template.h) and dispatched by the same BNK_LEVEL_* values.
#ifndef CBENCHMARKKERNELS_H
#define CBENCHMARKKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Memory-bandwidth loops for the roofline that `bnkit bench` prints beside each operation:
/// the fastest a kernel with a given traffic (so many pure reads, one read-and-write pass)
/// can run on this machine, at the operation's own size and thread count. n = bytes / 4
/// float32 values (x[0..<n], y[0..<n]); the last bytes % 4 bytes are neither read nor
/// written. x and y may have any alignment and must not overlap. Each loop moves 64 bytes
/// per vector step through 4 independent accumulators or stores, so it is bound by memory.

/// A streaming read of x: returns Σ x[i] over the n floats, summed in float in 64 lanes
/// (4 vectors of 16, then a fixed fold, then the scalar tail) and widened to
/// double. The sum is exact for data whose partial sums are exactly representable in float;
/// it is returned so that the loads cannot be optimized away. Measures read bandwidth.
double bnk_bandwidth_read(int level, const void *x, ptrdiff_t bytes);

/// y[i] = 2·x[i] + 1 over the n floats: read x, write y. With streaming = 1 the stores to
/// the 64-byte aligned part of y are non-temporal (they bypass the caches and need no
/// read-for-ownership of y), followed by a store fence on x86; with streaming = 0 they are
/// ordinary stores. Streaming, the values before y's first 64-byte boundary (all of them when
/// y is not 4-byte aligned: no float step reaches a boundary) are stored one by one, as is
/// the tail. Measures read-and-write bandwidth.
void bnk_bandwidth_read_write(int level, const void *x, void *y, ptrdiff_t bytes, int streaming);

#ifdef __cplusplus
}
#endif

#endif
