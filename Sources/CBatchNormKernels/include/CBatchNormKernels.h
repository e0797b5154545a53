// The CPU backend's kernels, with run-time dispatch: the only kernel set of the backend.
//
// One source (kernels_template.h) is compiled for the build's baseline (SSE2 on x86-64,
// Armv8-A with NEON on aarch64, the target's default elsewhere: BNK_LEVEL_GENERIC) and,
// through per-function `target` attributes (so the package needs no build flags), for
// AVX2 + F16C, AVX-512 and AVX-512 with AVX512-BF16 on x86-64, and for NEON with the
// hardware float16 conversions, without and with FEAT_BF16, on aarch64; the caller picks a
// level that the running CPU supports (bnk_cpu_supports_level) and passes it to every call.
//
// Shape legend: N batch, C channels, S spatial size (D·H·W); a *run* is contiguous
// storage: one channel's values (channels-first) or whole rows x[n, s, 0..<C]
// (channels-last), where value j of a run belongs to channel j mod C. P, the pattern
// period, is lcm(C, 16), or C when lcm(C, 16) > 2048: per-channel values are replicated
// over P positions; positions 0..<VP (VP = vector period: P when P is a multiple of 16,
// else 16·⌊C/16⌋) go in vectors of 16 floats, the rest one by one.
//
// Data (x, g, out) is stored as float32, float16 or bfloat16 (`type`, BNK_TYPE_*; all of
// one call share it): kernels widen it to float exactly as they load it, compute in float
// (apply) or double (sums), and round results to the storage type once, to nearest even.
// Coefficients and sums are float and double whatever the type.
//
// Every kernel sums in a fixed order that depends only on its arguments (lanes, then a
// fixed horizontal fold), never on threads or on the level. The sums' squares and products
// are fused multiply-adds (rounded once) on every level, nothing else is fused, and every
// level converts with the same rounding, so every level gives the same bits.
#ifndef CBATCHNORMKERNELS_H
#define CBATCHNORMKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Kernel levels. 0 = generic, the baseline instance on every architecture (float16 and
/// bfloat16 converted by integer code). On x86-64, in increasing order: 1 = AVX2 + FMA +
/// F16C (float16 by vcvtph2ps / vcvtps2ph), 2 = AVX-512 F/DQ/VL/BW (the same on 16 lanes),
/// 3 = level 2 plus AVX512-BF16 (bfloat16 rounded by vcvtneps2bf16). On aarch64: 4 = NEON
/// with float16 by FCVTL / FCVTN (every aarch64 CPU), 5 = level 4 plus FEAT_BF16 (bfloat16
/// rounded by BFCVTN). A level of another architecture runs the generic instance.
enum {
    BNK_LEVEL_GENERIC = 0,
    BNK_LEVEL_AVX2 = 1,
    BNK_LEVEL_AVX512 = 2,
    BNK_LEVEL_AVX512_BF16 = 3,
    BNK_LEVEL_NEON = 4,
    BNK_LEVEL_NEON_BF16 = 5,
};

/// Storage types: IEEE binary32; IEEE binary16; bfloat16 (the upper 16 bits of a binary32).
/// Rounding to float16 is to nearest even with subnormals and overflow to ±inf (as
/// vcvtps2ph); rounding to bfloat16 is to nearest even with float32 subnormals flushed to
/// a zero of the same sign (as vcvtneps2bf16, on every level).
enum {
    BNK_TYPE_FLOAT32 = 0,
    BNK_TYPE_FLOAT16 = 1,
    BNK_TYPE_BFLOAT16 = 2,
};

/// The highest level the running CPU and operating system support: cpuid and xgetbv on
/// x86-64; on aarch64 getauxval (HWCAP2_BF16) on Linux, sysctlbyname
/// (hw.optional.arm.FEAT_BF16) on Darwin; BNK_LEVEL_GENERIC elsewhere.
int bnk_cpu_level(void);

/// 1 when `level` can run on this CPU: the generic level, or a level of this architecture
/// at most bnk_cpu_level() (levels of one architecture are ordered by their numbers); else 0.
int bnk_cpu_supports_level(int level);

/// CPU vendors, as far as the memory tuning tells them apart (cpuid leaf 0).
enum {
    BNK_VENDOR_OTHER = 0,
    BNK_VENDOR_INTEL = 1,
    BNK_VENDOR_AMD = 2,
};

/// The running CPU's vendor: GenuineIntel, AuthenticAMD, or other (every non-x86 target).
int bnk_cpu_vendor(void);

/// Statistics of one channels-first run of n >= 1 values, in double, one pass shifted by
/// the run's first value: *mean = x[0] + Σ d / n and *m2 = max(0, Σ d² − (Σ d)² / n) with
/// d = x[i] − x[0].
void bnk_contiguous_moments(int level, int type, const void *x, ptrdiff_t n, double *mean, double *m2);

/// The longest period P whose per-position sums the channels-last reductions keep on the
/// stack (they need no scratch then).
#define BNK_SHORT_PERIOD_MAX 64

/// Moments of each channel c < C over one channels-last block of rows >= 1 whole rows
/// (x[r·C + c]), in double, one pass shifted by the block's first row:
/// mean[c] = x[c] + Σ_r d / rows and m2[c] = max(0, Σ_r d² − (Σ_r d)² / rows) with
/// d = x[r·C + c] − x[c]. scratch holds 3·P doubles, or is NULL when P <= BNK_SHORT_PERIOD_MAX.
void bnk_interleaved_moments(int level, int type, const void *x, ptrdiff_t rows, ptrdiff_t channels,
                             ptrdiff_t period, ptrdiff_t vector_period, double *scratch, double *mean, double *m2);

/// One channels-first run of n values of g and x: *sum_g = Σ g[i],
/// *sum_gx = Σ g[i]·(x[i] − mean), in double.
void bnk_contiguous_gradient_sums(int level, int type, const void *g, const void *x, ptrdiff_t n, double mean,
                                  double *sum_g, double *sum_gx);

/// Per channel c < C of one channels-last block of rows whole rows of g and x, in double:
/// sum_g[c] = Σ_r g[r·C + c], sum_gx[c] = Σ_r g[r·C + c]·(x[r·C + c] − mean[c]) (mean: C
/// values). scratch holds 3·P doubles, or is NULL when P <= BNK_SHORT_PERIOD_MAX.
void bnk_interleaved_gradient_sums(int level, int type, const void *g, const void *x, ptrdiff_t rows,
                                   ptrdiff_t channels, ptrdiff_t period, ptrdiff_t vector_period, const double *mean,
                                   double *scratch, double *sum_g, double *sum_gx);

/// Apply formulas: forward y = b·(x − shift) + offset (g not read); gradient
/// dx = a·g + offset (x not read); gradient and input dx = (a·g + b·(x − shift)) + offset.
/// Computed in float, rounded once to the storage type.
enum {
    BNK_APPLY_FORWARD = 0,
    BNK_APPLY_GRADIENT = 1,
    BNK_APPLY_GRADIENT_AND_INPUT = 2,
};

/// Stores of the apply kernels: `streaming` 0 uses ordinary stores; 1 makes every 16-value
/// vector store whose address is a multiple of its size (64 bytes in float32, 32 in the half
/// types) non-temporal, which writes to memory without first reading the line (no read for
/// ownership) and without evicting cached data: faster once the output is larger than the
/// caches, slower when the next step would have found it in them. Results are the same
/// bits either way. Non-temporal stores are weakly ordered: a thread that streamed calls
/// bnk_store_fence() once before another thread may read what it wrote.

/// out[i] = F(g[i], x[i]) over a channels-first run of n values with scalar coefficients.
/// out may alias g or x (each element is read before it is written). Streaming, the values
/// before the first aligned address are computed one by one so that every vector store streams.
void bnk_contiguous_apply(int level, int type, int formula, int streaming, const void *g, const void *x, void *out,
                          ptrdiff_t n, float a, float b, float shift, float offset);

/// One channels-first apply run for the channel-fused reductions below:
/// out[i] = F(g[i], x[i]) for i < n, with the formula, stores and scalar coefficients of
/// bnk_contiguous_apply (g, x and out in the storage type of the reduction it joins).
typedef struct {
    int formula;
    int streaming;
    const void *g;
    const void *x;
    void *out;
    ptrdiff_t n;
    float a, b, shift, offset;
} bnk_apply_run;

/// bnk_contiguous_moments of x[0..<n] (the same operations in the same order, so the same
/// bits) and, interleaved with it 32 values at a time, the apply `run` (as
/// bnk_contiguous_apply would run it): one loop that reads one channel's run from memory
/// while it writes another's output, so that the reads and writes of a channel-fused pass
/// overlap as in a one-pass kernel. The run's buffers must not overlap x.
void bnk_contiguous_moments_and_apply(int level, int type, const void *x, ptrdiff_t n, double *mean, double *m2,
                                      const bnk_apply_run *run);

/// bnk_contiguous_gradient_sums of g and x[0..<n] and the apply `run`, interleaved the same
/// way. The run's output must not overlap g or x.
void bnk_contiguous_gradient_sums_and_apply(int level, int type, const void *g, const void *x, ptrdiff_t n,
                                            double mean, double *sum_g, double *sum_gx, const bnk_apply_run *run);

/// The same over a channels-last run of `length` values starting at a row boundary, with
/// coefficients replicated over the pattern: `coefficients` holds P values each of a, b,
/// shift and offset, one array after the other. Vector stores stream where aligned (every
/// one when the run starts at a multiple of 16 values and P is a multiple of 16).
void bnk_interleaved_apply(int level, int type, int formula, int streaming, const void *g, const void *x, void *out,
                           ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period, const float *coefficients);

/// Orders this thread's earlier non-temporal stores before its later stores (sfence on x86;
/// nothing elsewhere): called by every thread of a job after its last apply, before the
/// hand-over that lets another thread read the output.
void bnk_store_fence(void);

/// destination[i] = source[i] for i < n, converted from storage type `from` to `to`
/// (widening exact, narrowing rounded as described at BNK_TYPE_*). The buffers must not
/// overlap unless they are the same and the types have the same size.
void bnk_convert(int level, int from, const void *source, int to, void *destination, ptrdiff_t n);

#ifdef __cplusplus
}
#endif

#endif
