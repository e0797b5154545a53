// The bandwidth loops of the bench roofline (see include/CBatchNormBandwidth.h), with the
// run-time dispatch of CBatchNormKernels.c: each loop body is written once as an
// always-inline function and instantiated in a baseline function and in functions with
// `target("avx2")` and `target("avx512f")` attributes, which compile the inlined body for
// that instruction set (no build flags). The caller passes the level (bnk_cpu_level()).
//
// Shape legend: n floats x[0..<n] (and y[0..<n]); a *block* is 64 floats, 4 vectors of 16
// (64 bytes each), handled by 4 independent accumulators or stores per step.

#include "CBatchNormBandwidth.h"
#include "CBatchNormKernels.h"

#include <stdint.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// y = 2·x + 1 is rounded once (2·x is exact), whether fused or not; keep it unfused anyway,
// as the rest of the kernels.
#pragma clang fp contract(off)

// Helpers return 512-bit vectors by value; they are always inlined, so no call ABI is involved.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float bnk_bw_v16f __attribute__((ext_vector_type(16)));

#define BNK_BW_INLINE static inline __attribute__((always_inline))

/// Floats from `p` up to the next 64-byte boundary (0 when `p` is aligned), at most `n`;
/// `n` when `p` is not 4-byte aligned (no float step reaches a boundary then).
BNK_BW_INLINE ptrdiff_t bnk_bw_head(const void *p, ptrdiff_t n) {
    uintptr_t address = (uintptr_t)p;
    if (address & 3) return n;
    ptrdiff_t head = (ptrdiff_t)((-address & 63) >> 2);
    return head < n ? head : n;
}

BNK_BW_INLINE bnk_bw_v16f bnk_bw_load(const float *p) {
    bnk_bw_v16f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

BNK_BW_INLINE float bnk_bw_load1(const float *p) {
    float v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/// Σ x[i], i < n: the head (up to x's first 64-byte boundary) and the tail (fewer than 64
/// floats) one by one in double; the aligned blocks in 4 float accumulators of 16 lanes
/// (a_k += x[i + 16k .. i + 16k + 15]), then a0 + a1 + a2 + a3 and its 16 lanes in order,
/// in double.
BNK_BW_INLINE double bnk_bw_read_body(const float *x, ptrdiff_t n) {
    ptrdiff_t head = bnk_bw_head(x, n), i = 0;
    double sum = 0;
    for (; i < head; i++) sum += bnk_bw_load1(x + i);
    bnk_bw_v16f a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (; i + 64 <= n; i += 64) {
        a0 += bnk_bw_load(x + i);
        a1 += bnk_bw_load(x + i + 16);
        a2 += bnk_bw_load(x + i + 32);
        a3 += bnk_bw_load(x + i + 48);
    }
    bnk_bw_v16f lanes = (a0 + a1) + (a2 + a3);
    for (int lane = 0; lane < 16; lane++) sum += lanes[lane];
    for (; i < n; i++) sum += bnk_bw_load1(x + i);
    return sum;
}

/// y[i] = 2·x[i] + 1, i < n. With `streaming` (a constant in each instance): the head up to
/// y's first 64-byte boundary one by one, the blocks with 4 non-temporal 64-byte stores,
/// the tail one by one, then a store fence (non-temporal stores are weakly ordered). Without:
/// the blocks with ordinary unaligned stores.
BNK_BW_INLINE void bnk_bw_read_write_body(const float *x, float *y, ptrdiff_t n, int streaming) {
    ptrdiff_t head = streaming ? bnk_bw_head(y, n) : 0, i = 0;
    for (; i < head; i++) {
        float v = bnk_bw_load1(x + i) * 2.0f + 1.0f;
        __builtin_memcpy(y + i, &v, sizeof v);
    }
    for (; i + 64 <= n; i += 64) {
        bnk_bw_v16f v0 = bnk_bw_load(x + i) * 2.0f + 1.0f;
        bnk_bw_v16f v1 = bnk_bw_load(x + i + 16) * 2.0f + 1.0f;
        bnk_bw_v16f v2 = bnk_bw_load(x + i + 32) * 2.0f + 1.0f;
        bnk_bw_v16f v3 = bnk_bw_load(x + i + 48) * 2.0f + 1.0f;
        if (streaming) {   // y + i is 64-byte aligned here
            __builtin_nontemporal_store(v0, (bnk_bw_v16f *)(y + i));
            __builtin_nontemporal_store(v1, (bnk_bw_v16f *)(y + i + 16));
            __builtin_nontemporal_store(v2, (bnk_bw_v16f *)(y + i + 32));
            __builtin_nontemporal_store(v3, (bnk_bw_v16f *)(y + i + 48));
        } else {
            __builtin_memcpy(y + i, &v0, sizeof v0);
            __builtin_memcpy(y + i + 16, &v1, sizeof v1);
            __builtin_memcpy(y + i + 32, &v2, sizeof v2);
            __builtin_memcpy(y + i + 48, &v3, sizeof v3);
        }
    }
    for (; i < n; i++) {
        float v = bnk_bw_load1(x + i) * 2.0f + 1.0f;
        __builtin_memcpy(y + i, &v, sizeof v);
    }
#if defined(__x86_64__) || defined(__i386__)
    if (streaming) _mm_sfence();
#endif
}

/// One instance of both loops for one target attribute (empty: the baseline). The streaming
/// branch is taken once per call, so each body is specialized for a constant `streaming`.
#define BNK_BW_INSTANCE(TARGET, NAME)                                                          \
    TARGET static double bnk_bw_read_##NAME(const void *x, ptrdiff_t n) {                     \
        return bnk_bw_read_body((const float *)x, n);                                          \
    }                                                                                          \
    TARGET static void bnk_bw_read_write_##NAME(const void *x, void *y, ptrdiff_t n, int nt) { \
        if (nt) bnk_bw_read_write_body((const float *)x, (float *)y, n, 1);                    \
        else bnk_bw_read_write_body((const float *)x, (float *)y, n, 0);                       \
    }

BNK_BW_INSTANCE(, base)

#if defined(__x86_64__)
BNK_BW_INSTANCE(__attribute__((target("avx2"))), avx2)
BNK_BW_INSTANCE(__attribute__((target("avx512f"))), avx512)

// AVX-512 with AVX512-BF16 runs the AVX-512 instance (no bfloat16 here).
#define BNK_BW_DISPATCH(name, ...)                                                    \
    switch (level) {                                                                  \
    case BNK_LEVEL_AVX512_BF16:                                                       \
    case BNK_LEVEL_AVX512: return bnk_bw_##name##_avx512(__VA_ARGS__);               \
    case BNK_LEVEL_AVX2: return bnk_bw_##name##_avx2(__VA_ARGS__);                   \
    default: return bnk_bw_##name##_base(__VA_ARGS__);                               \
    }
#else
#define BNK_BW_DISPATCH(name, ...) \
    (void)level;                   \
    return bnk_bw_##name##_base(__VA_ARGS__);
#endif

double bnk_bandwidth_read(int level, const void *x, ptrdiff_t bytes) {
    ptrdiff_t n = bytes > 0 ? bytes / 4 : 0;
    BNK_BW_DISPATCH(read, x, n)
}

void bnk_bandwidth_read_write(int level, const void *x, void *y, ptrdiff_t bytes, int streaming) {
    ptrdiff_t n = bytes > 0 ? bytes / 4 : 0;
    BNK_BW_DISPATCH(read_write, x, y, n, streaming != 0)
}
