// Memory-bandwidth loops for the roofline that `bnkit bench` prints beside each operation:
// the fastest a kernel with a given traffic (so many pure reads, one read-and-write pass)
// can run on this machine, at the operation's own size and thread count.
//
// Shape legend: n = bytes / 4 float32 values (x[0..<n], y[0..<n]); the last bytes % 4
// bytes are neither read nor written. x and y may have any alignment (loads and ordinary
// stores are unaligned) and must not overlap. Each loop loads 64 bytes (16 floats) per vector step into 4
// independent accumulators or stores, so it is bound by memory, not by the latency of
// one add chain. `level` is a BNK_LEVEL_* value (CBatchNormKernels.h) that the running
// CPU supports (bnk_cpu_level()): AVX2 and AVX-512 instances, the baseline otherwise.
#ifndef CBATCHNORMBANDWIDTH_H
#define CBATCHNORMBANDWIDTH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A streaming read of x: returns Σ x[i] over the n floats, summed in float in 64 lanes
/// (4 vectors of 16, then a fixed fold, then the scalar head and tail) and widened to
/// double. The sum is exact for data whose partial sums are exactly representable in float;
/// it is returned so that the loads cannot be optimized away. Measures read bandwidth.
double bnk_bandwidth_read(int level, const void *x, ptrdiff_t bytes);

/// y[i] = 2·x[i] + 1 over the n floats: read x, write y. With streaming = 1 the stores to
/// the 64-byte aligned part of y are non-temporal (they bypass the caches and need no
/// read-for-ownership of y), followed by a store fence on x86; with streaming = 0 they are
/// ordinary stores. The unaligned head of y (fewer than 16 floats) and the tail are stored
/// one by one. When y is not 4-byte aligned the stores are ordinary whatever streaming
/// says (non-temporal vector stores need alignment). Measures read-and-write bandwidth.
void bnk_bandwidth_read_write(int level, const void *x, void *y, ptrdiff_t bytes, int streaming);

#ifdef __cplusplus
}
#endif

#endif
