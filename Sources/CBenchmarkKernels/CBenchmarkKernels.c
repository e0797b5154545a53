// Run-time dispatch of the benchmark loops (see include/CBenchmarkKernels.h): the same
// instances, target attributes and BNK_LEVEL_* values as the kernel library, so that the
// roofline's loops are compiled as the kernels of each level are.

#include "CBenchmarkKernels.h"

#include "CBatchNormKernels.h"

#include <stdint.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// The same IEEE operations in vector lanes and scalar tails: never fuse 2·x + 1.
#pragma clang fp contract(off)

// Helpers pass 512-bit vectors by value; they are always inlined, so no call ABI is involved.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float bnk_v16f __attribute__((ext_vector_type(16)));

#define BNK_TARGET
#define BNK_NAME(name) bnk_base_##name
#include "bandwidth_template.h"
#undef BNK_TARGET
#undef BNK_NAME

#if defined(__x86_64__)

#define BNK_TARGET __attribute__((target("avx2,fma,f16c")))
#define BNK_NAME(name) bnk_avx2_##name
#include "bandwidth_template.h"
#undef BNK_TARGET
#undef BNK_NAME

#define BNK_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,f16c")))
#define BNK_NAME(name) bnk_avx512_##name
#include "bandwidth_template.h"
#undef BNK_TARGET
#undef BNK_NAME

#define BNK_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,f16c,avx512bf16")))
#define BNK_NAME(name) bnk_avx512bf16_##name
#include "bandwidth_template.h"
#undef BNK_TARGET
#undef BNK_NAME

#define BNK_DISPATCH(name, ...)                                             \
    switch (level) {                                                        \
    case BNK_LEVEL_AVX512_BF16: bnk_avx512bf16_##name(__VA_ARGS__); break;   \
    case BNK_LEVEL_AVX512: bnk_avx512_##name(__VA_ARGS__); break;            \
    case BNK_LEVEL_AVX2: bnk_avx2_##name(__VA_ARGS__); break;                \
    default: bnk_base_##name(__VA_ARGS__); break;                           \
    }

#else

// Elsewhere (aarch64 included) the baseline instance: its float loops need no extension.
#define BNK_DISPATCH(name, ...) \
    (void)level;                \
    bnk_base_##name(__VA_ARGS__);

#endif

double bnk_bandwidth_read(int level, const void *x, ptrdiff_t bytes) {
    double sum = 0;
    ptrdiff_t n = bytes > 0 ? bytes / 4 : 0;
    BNK_DISPATCH(bandwidth_read, x, n, &sum)
    return sum;
}

void bnk_bandwidth_read_write(int level, const void *x, void *y, ptrdiff_t bytes, int streaming) {
    ptrdiff_t n = bytes > 0 ? bytes / 4 : 0;
    BNK_DISPATCH(bandwidth_read_write, x, y, n, streaming != 0)
}
