// Runtime-dispatched C kernels of the CPU backend (x86-64 only; elsewhere
// bnk_cpu_level() returns BNK_LEVEL_GENERIC and the Swift kernels run).
//
// The functions here are compiled for AVX-512 and for AVX2 through per-function
// `target` attributes, so the package needs no build flags; the caller picks a level
// that the running CPU supports (bnk_cpu_level) and passes it to every call.
//
// Shape legend: N batch, C channels, S spatial size (D·H·W); a *run* is contiguous
// storage: one channel's values (channels-first) or whole rows x[n, s, 0..<C]
// (channels-last), where value j of a run belongs to channel j mod C. P is a pattern
// period (a multiple of C) over which per-channel values are replicated; positions
// 0..<VP (VP = vector period, a multiple of 16, VP <= P) go in vectors of 16 floats.
//
// Every kernel sums in a fixed order that depends only on its arguments (lanes, then a
// fixed horizontal fold), never on threads. No fused multiply-add is used.
#ifndef CBATCHNORMKERNELS_H
#define CBATCHNORMKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Kernel levels: 0 = generic (the Swift kernels; no C kernel is called),
/// 1 = AVX2 + FMA instruction set (x86-64), 2 = AVX-512 F/DQ/VL/BW (x86-64).
enum {
    BNK_LEVEL_GENERIC = 0,
    BNK_LEVEL_AVX2 = 1,
    BNK_LEVEL_AVX512 = 2,
};

/// The highest level the running CPU and operating system support (cpuid and xgetbv).
int bnk_cpu_level(void);

/// Statistics of one channels-first run of n >= 1 values, two passes in double:
/// *mean = Σ x[i] / n, then *m2 = Σ (x[i] − *mean)².
void bnk_contiguous_moments(int level, const float *x, ptrdiff_t n, double *mean, double *m2);

/// Per pattern position j < P of a channels-last run of `length` values (chunks
/// k·P ..< (k+1)·P, the last possibly partial): acc[j] = Σ_k x[k·P + j] when center is
/// NULL, else Σ_k (x[k·P + j] − center[j])², in double. acc holds P doubles (overwritten).
void bnk_position_sums(int level, const float *x, ptrdiff_t length, ptrdiff_t period,
                       ptrdiff_t vector_period, const double *center, double *acc);

/// One channels-first run of n values of g and x: *sum_g = Σ g[i],
/// *sum_gx = Σ g[i]·(x[i] − mean), in double.
void bnk_contiguous_gradient_sums(int level, const float *g, const float *x, ptrdiff_t n, double mean,
                                  double *sum_g, double *sum_gx);

/// Per pattern position j < P of channels-last runs of g and x (`length` values):
/// acc_g[j] = Σ_k g[k·P + j], acc_gx[j] = Σ_k g[k·P + j]·(x[k·P + j] − mean[j]), in double;
/// mean holds μ[j mod C] for j < P. acc_g and acc_gx hold P doubles each (overwritten).
void bnk_position_gradient_sums(int level, const float *g, const float *x, ptrdiff_t length,
                                ptrdiff_t period, ptrdiff_t vector_period, const double *mean,
                                double *acc_g, double *acc_gx);

/// Apply formulas: forward y = b·(x − shift) + offset (g not read); gradient
/// dx = a·g + offset (x not read); gradient and input dx = (a·g + b·(x − shift)) + offset.
enum {
    BNK_APPLY_FORWARD = 0,
    BNK_APPLY_GRADIENT = 1,
    BNK_APPLY_GRADIENT_AND_INPUT = 2,
};

/// out[i] = F(g[i], x[i]) over a channels-first run of n values with scalar coefficients.
/// out may alias g or x (each element is read before it is written).
void bnk_contiguous_apply(int level, int formula, const float *g, const float *x, float *out, ptrdiff_t n,
                          float a, float b, float shift, float offset);

/// The same over a channels-last run of `length` values starting at a row boundary, with
/// coefficients replicated over the pattern: `coefficients` holds P values each of a, b,
/// shift and offset, one array after the other.
void bnk_interleaved_apply(int level, int formula, const float *g, const float *x, float *out,
                           ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period,
                           const float *coefficients);

#ifdef __cplusplus
}
#endif

#endif
