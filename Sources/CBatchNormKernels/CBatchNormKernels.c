// Runtime CPU dispatch for the CPU backend's kernels (see include/CBatchNormKernels.h).
//
// kernels_template.h is instantiated once per instruction set with a per-function target
// attribute, so no build flag is needed: a package depending on BatchNormKit is compiled
// for the baseline and still runs AVX-512 (or AVX2) code on x86-64, and BFCVTN on
// aarch64, where the CPU has it. bnk_cpu_level() checks cpuid and xgetbv on x86-64 (the
// OS must save the vector state), the kernel's hardware capabilities (Linux) or sysctl
// (Darwin) on aarch64.

#include "CBatchNormKernels.h"

#include <stdint.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

// The same IEEE operations in vector lanes and scalar tails: never fuse a·b + c.
#pragma clang fp contract(off)

// Helpers pass 512-bit vectors by value; they are always inlined, so no call ABI is involved.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float bnk_v16f __attribute__((ext_vector_type(16)));
typedef float bnk_v8f __attribute__((ext_vector_type(8)));
typedef float bnk_v4f __attribute__((ext_vector_type(4)));
typedef double bnk_v8d __attribute__((ext_vector_type(8)));
typedef double bnk_v4d __attribute__((ext_vector_type(4)));
typedef double bnk_v2d __attribute__((ext_vector_type(2)));
typedef uint32_t bnk_v16u __attribute__((ext_vector_type(16)));
typedef uint16_t bnk_v16h __attribute__((ext_vector_type(16)));
typedef uint16_t bnk_v8h __attribute__((ext_vector_type(8)));

// Baseline instance (SSE2 on x86-64, NEON on aarch64; the target's default elsewhere):
// BNK_LEVEL_GENERIC.
// float16 and bfloat16 are converted by integer code.
#define BNK_TARGET
#define BNK_NAME(name) bnk_base_##name
#define BNK_HALF_ISA 0
#define BNK_BFLOAT_ISA 0
#define BNK_SUMS_ON_FMA 0
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

#if defined(__x86_64__)

// AVX2 with F16C: float16 through vcvtph2ps / vcvtps2ph, bfloat16 by integer code.
#define BNK_TARGET __attribute__((target("avx2,fma,f16c")))
#define BNK_NAME(name) bnk_avx2_##name
#define BNK_HALF_ISA 1
#define BNK_BFLOAT_ISA 0
#define BNK_SUMS_ON_FMA 0
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

// AVX-512 F/DQ/VL/BW: float16 through the 512-bit vcvtph2ps / vcvtps2ph.
#define BNK_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,f16c")))
#define BNK_NAME(name) bnk_avx512_##name
#define BNK_HALF_ISA 2
#define BNK_BFLOAT_ISA 0
#define BNK_SUMS_ON_FMA 1
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

// AVX-512 with AVX512-BF16: the AVX-512 instance with bfloat16 rounded by vcvtneps2bf16.
#define BNK_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,f16c,avx512bf16")))
#define BNK_NAME(name) bnk_avx512bf16_##name
#define BNK_HALF_ISA 2
#define BNK_BFLOAT_ISA 1
#define BNK_SUMS_ON_FMA 1
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

static void bnk_cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(subleaf));
}

int bnk_cpu_level(void) {
    unsigned r[4];
    bnk_cpuid(0, 0, r);
    unsigned maximum = r[0];
    if (maximum < 7) return BNK_LEVEL_GENERIC;
    bnk_cpuid(1, 0, r);
    unsigned ecx1 = r[2];
    int osxsave = (ecx1 >> 27) & 1, avx = (ecx1 >> 28) & 1, fma = (ecx1 >> 12) & 1, f16c = (ecx1 >> 29) & 1;
    if (!osxsave || !avx) return BNK_LEVEL_GENERIC;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 0x6) != 0x6) return BNK_LEVEL_GENERIC;   // XMM and YMM state
    bnk_cpuid(7, 0, r);
    unsigned ebx7 = r[1], max_subleaf = r[0];
    int avx2 = (ebx7 >> 5) & 1;
    int avx512 = ((ebx7 >> 16) & 1) && ((ebx7 >> 17) & 1) && ((ebx7 >> 30) & 1) && ((ebx7 >> 31) & 1);
    if (avx512 && f16c && (xcr0_lo & 0xE0) == 0xE0) {   // opmask, ZMM state
        int bf16 = 0;
        if (max_subleaf >= 1) {
            bnk_cpuid(7, 1, r);
            bf16 = (r[0] >> 5) & 1;   // CPUID.(EAX=7, ECX=1):EAX[5] AVX512_BF16
        }
        return bf16 ? BNK_LEVEL_AVX512_BF16 : BNK_LEVEL_AVX512;
    }
    if (avx2 && fma && f16c) return BNK_LEVEL_AVX2;
    return BNK_LEVEL_GENERIC;
}

int bnk_cpu_vendor(void) {
    unsigned r[4];
    bnk_cpuid(0, 0, r);
    char name[13];
    __builtin_memcpy(name, &r[1], 4);   // ebx, edx, ecx: the vendor string
    __builtin_memcpy(name + 4, &r[3], 4);
    __builtin_memcpy(name + 8, &r[2], 4);
    name[12] = 0;
    if (__builtin_memcmp(name, "GenuineIntel", 12) == 0) return BNK_VENDOR_INTEL;
    if (__builtin_memcmp(name, "AuthenticAMD", 12) == 0) return BNK_VENDOR_AMD;
    return BNK_VENDOR_OTHER;
}

#define BNK_DISPATCH(name, ...)                                             \
    switch (level) {                                                        \
    case BNK_LEVEL_AVX512_BF16: bnk_avx512bf16_##name(__VA_ARGS__); break;   \
    case BNK_LEVEL_AVX512: bnk_avx512_##name(__VA_ARGS__); break;            \
    case BNK_LEVEL_AVX2: bnk_avx2_##name(__VA_ARGS__); break;                \
    default: bnk_base_##name(__VA_ARGS__); break;                           \
    }

int bnk_cpu_supports_level(int level) { return level >= BNK_LEVEL_GENERIC && level <= bnk_cpu_level(); }

#elif defined(__aarch64__)

// NEON with the float16 conversions FCVTL / FCVTN (part of every aarch64 CPU's Advanced
// SIMD), bfloat16 by integer code.
#define BNK_TARGET
#define BNK_NAME(name) bnk_neon_##name
#define BNK_HALF_ISA 3
#define BNK_BFLOAT_ISA 0
#define BNK_SUMS_ON_FMA 0
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

// NEON with FEAT_BF16: the NEON instance with bfloat16 rounded by BFCVTN / BFCVTN2.
#define BNK_TARGET __attribute__((target("bf16")))
#define BNK_NAME(name) bnk_neonbf16_##name
#define BNK_HALF_ISA 3
#define BNK_BFLOAT_ISA 2
#define BNK_SUMS_ON_FMA 0
#include "kernels_template.h"
#undef BNK_TARGET
#undef BNK_NAME
#undef BNK_HALF_ISA
#undef BNK_BFLOAT_ISA
#undef BNK_SUMS_ON_FMA

/// Whether the CPU has FEAT_BF16 (BFCVT, BFCVTN and the bfloat16 dot products).
static int bnk_cpu_has_bfloat16(void) {
#if defined(__linux__)
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1UL << 14)
#endif
    return (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
#elif defined(__APPLE__)
    int value = 0;
    size_t size = sizeof value;
    return sysctlbyname("hw.optional.arm.FEAT_BF16", &value, &size, NULL, 0) == 0 && value != 0;
#else
    return 0;
#endif
}

int bnk_cpu_level(void) { return bnk_cpu_has_bfloat16() ? BNK_LEVEL_NEON_BF16 : BNK_LEVEL_NEON; }

int bnk_cpu_vendor(void) { return BNK_VENDOR_OTHER; }

int bnk_cpu_supports_level(int level) {
    return level == BNK_LEVEL_GENERIC || (level >= BNK_LEVEL_NEON && level <= bnk_cpu_level());
}

#define BNK_DISPATCH(name, ...)                                          \
    switch (level) {                                                     \
    case BNK_LEVEL_NEON_BF16: bnk_neonbf16_##name(__VA_ARGS__); break;   \
    case BNK_LEVEL_NEON: bnk_neon_##name(__VA_ARGS__); break;            \
    default: bnk_base_##name(__VA_ARGS__); break;                        \
    }

#else

int bnk_cpu_level(void) { return BNK_LEVEL_GENERIC; }

int bnk_cpu_vendor(void) { return BNK_VENDOR_OTHER; }

int bnk_cpu_supports_level(int level) { return level == BNK_LEVEL_GENERIC; }

#define BNK_DISPATCH(name, ...) \
    (void)level;                \
    bnk_base_##name(__VA_ARGS__);

#endif

void bnk_contiguous_moments(int level, int type, const void *x, ptrdiff_t n, double *mean, double *m2) {
    BNK_DISPATCH(contiguous_moments, type, x, n, mean, m2)
}

void bnk_interleaved_moments(int level, int type, const void *x, ptrdiff_t rows, ptrdiff_t channels,
                             ptrdiff_t period, ptrdiff_t vector_period, double *scratch, double *mean, double *m2) {
    BNK_DISPATCH(interleaved_moments, type, x, rows, channels, period, vector_period, scratch, mean, m2)
}

void bnk_contiguous_gradient_sums(int level, int type, const void *g, const void *x, ptrdiff_t n, double mean,
                                  double *sum_g, double *sum_gx) {
    BNK_DISPATCH(contiguous_gradient_sums, type, g, x, n, mean, sum_g, sum_gx)
}

void bnk_interleaved_gradient_sums(int level, int type, const void *g, const void *x, ptrdiff_t rows,
                                   ptrdiff_t channels, ptrdiff_t period, ptrdiff_t vector_period, const double *mean,
                                   double *scratch, double *sum_g, double *sum_gx) {
    BNK_DISPATCH(interleaved_gradient_sums, type, g, x, rows, channels, period, vector_period, mean, scratch, sum_g,
                 sum_gx)
}

void bnk_contiguous_apply(int level, int type, int formula, int streaming, const void *g, const void *x, void *out,
                          ptrdiff_t n, float a, float b, float shift, float offset) {
    BNK_DISPATCH(contiguous_apply, formula, type, streaming, g, x, out, n, a, b, shift, offset)
}

void bnk_interleaved_apply(int level, int type, int formula, int streaming, const void *g, const void *x, void *out,
                           ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period, const float *coefficients) {
    BNK_DISPATCH(interleaved_apply, formula, type, streaming, g, x, out, length, period, vector_period, coefficients)
}

void bnk_contiguous_moments_and_apply(int level, int type, const void *x, ptrdiff_t n, double *mean, double *m2,
                                      const bnk_apply_run *run) {
    BNK_DISPATCH(contiguous_moments_and_apply, type, x, n, mean, m2, run)
}

void bnk_contiguous_gradient_sums_and_apply(int level, int type, const void *g, const void *x, ptrdiff_t n,
                                            double mean, double *sum_g, double *sum_gx, const bnk_apply_run *run) {
    BNK_DISPATCH(contiguous_gradient_sums_and_apply, type, g, x, n, mean, sum_g, sum_gx, run)
}

void bnk_store_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_sfence();
#endif
}

void bnk_convert(int level, int from, const void *source, int to, void *destination, ptrdiff_t n) {
    BNK_DISPATCH(convert, from, source, to, destination, n)
}
