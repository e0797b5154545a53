// The C kernels, written once with clang vector extensions and instantiated by
// CBatchNormKernels.c for each instruction set: before including this file, define
// BNK_TARGET (a function attribute, e.g. __attribute__((target("avx2,fma"))), or empty)
// and BNK_NAME(name) (the instance's name for `name`). Not a public header.
//
// Shape legend: N batch, C channels, S spatial size (D·H·W). A channels-first run is one
// channel's values x[n, c, s0..<s1]; a channels-last run is whole rows x[n, s, 0..<C], and
// value j of it belongs to channel j mod C. P (period, a multiple of C) is the length over
// which per-channel values are replicated; positions 0..<VP (vector_period, a multiple of
// 16) are processed 16 at a time, the rest one by one.
//
// Vectors: bnk_f16 = 16 floats (one AVX-512 register, two AVX2 ones), bnk_d8 = 8 doubles.
// Sums run in double, in a fixed order per call: vector lanes, then the fixed horizontal
// fold bnk_hsum, then the scalar tail. Contraction to fused multiply-add is off for the
// whole translation unit, so every value goes through the same IEEE operations in vector
// lanes and in scalar tails.

#define BNK_FN static inline __attribute__((always_inline)) BNK_TARGET

BNK_FN bnk_f16 BNK_NAME(load16)(const float *p) {
    bnk_f16 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

BNK_FN void BNK_NAME(store16)(float *p, bnk_f16 v) { __builtin_memcpy(p, &v, sizeof v); }

BNK_FN bnk_d8 BNK_NAME(load8)(const double *p) {
    bnk_d8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

BNK_FN void BNK_NAME(store8)(double *p, bnk_d8 v) { __builtin_memcpy(p, &v, sizeof v); }

/// Lanes 0..<8 of v widened to double.
BNK_FN bnk_d8 BNK_NAME(low)(bnk_f16 v) { return __builtin_convertvector(v.lo, bnk_d8); }

/// Lanes 8..<16 of v widened to double.
BNK_FN bnk_d8 BNK_NAME(high)(bnk_f16 v) { return __builtin_convertvector(v.hi, bnk_d8); }

/// Σ s[i] in the fixed order ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)).
BNK_FN double BNK_NAME(hsum)(bnk_d8 s) {
    bnk_d4 t = s.lo + s.hi;
    bnk_d2 u = t.lo + t.hi;
    return u.x + u.y;
}

BNK_FN bnk_d8 BNK_NAME(splat8)(double v) { return (bnk_d8)(v); }
BNK_FN bnk_f16 BNK_NAME(splat16)(float v) { return (bnk_f16)(v); }

// MARK: Statistics

/// mean = Σ_{i<n} x[i] / n;  m2 = Σ_{i<n} (x[i] − mean)²  (two passes, double).
BNK_TARGET static void BNK_NAME(contiguous_moments)(const float *x, ptrdiff_t n, double *mean_out,
                                                     double *m2_out) {
    // Pass 1: Σx, four vector accumulators (32 values per turn), then 16, then scalars.
    bnk_d8 s0 = BNK_NAME(splat8)(0), s1 = s0, s2 = s0, s3 = s0;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        bnk_f16 v = BNK_NAME(load16)(x + i), w = BNK_NAME(load16)(x + i + 16);
        s0 += BNK_NAME(low)(v);
        s1 += BNK_NAME(high)(v);
        s2 += BNK_NAME(low)(w);
        s3 += BNK_NAME(high)(w);
    }
    if (i + 16 <= n) {
        bnk_f16 v = BNK_NAME(load16)(x + i);
        s0 += BNK_NAME(low)(v);
        s1 += BNK_NAME(high)(v);
        i += 16;
    }
    double sum = BNK_NAME(hsum)((s0 + s2) + (s1 + s3));
    for (; i < n; i++) sum += (double)x[i];
    double mean = sum / (double)n;

    // Pass 2: Σ(x − mean)², the same structure.
    bnk_d8 mu = BNK_NAME(splat8)(mean);
    bnk_d8 q0 = BNK_NAME(splat8)(0), q1 = q0, q2 = q0, q3 = q0;
    i = 0;
    for (; i + 32 <= n; i += 32) {
        bnk_f16 v = BNK_NAME(load16)(x + i), w = BNK_NAME(load16)(x + i + 16);
        bnk_d8 d0 = BNK_NAME(low)(v) - mu, d1 = BNK_NAME(high)(v) - mu;
        bnk_d8 d2 = BNK_NAME(low)(w) - mu, d3 = BNK_NAME(high)(w) - mu;
        q0 += d0 * d0;
        q1 += d1 * d1;
        q2 += d2 * d2;
        q3 += d3 * d3;
    }
    if (i + 16 <= n) {
        bnk_f16 v = BNK_NAME(load16)(x + i);
        bnk_d8 d0 = BNK_NAME(low)(v) - mu, d1 = BNK_NAME(high)(v) - mu;
        q0 += d0 * d0;
        q1 += d1 * d1;
        i += 16;
    }
    double m2 = BNK_NAME(hsum)((q0 + q2) + (q1 + q3));
    for (; i < n; i++) {
        double d = (double)x[i] - mean;
        m2 += d * d;
    }
    *mean_out = mean;
    *m2_out = m2;
}

/// term(v) = v (centered == 0) or (v − m)² (centered != 0).
BNK_FN bnk_d8 BNK_NAME(term8)(bnk_d8 v, bnk_d8 m, int centered) {
    if (!centered) return v;
    bnk_d8 d = v - m;
    return d * d;
}

BNK_FN double BNK_NAME(term1)(float v, const double *center, ptrdiff_t j, int centered) {
    if (!centered) return (double)v;
    double d = (double)v - center[j];
    return d * d;
}

/// acc[j] = Σ_k term(x[k·P + j]) for j < P, term(v) = v or (v − center[j])²; whole chunks
/// in tiles of 4 (acc[j] += ((t0 + t1) + t2) + t3), then the remaining chunks one by one.
BNK_FN void BNK_NAME(position_sums_impl)(const float *x, ptrdiff_t length, ptrdiff_t period,
                                         ptrdiff_t vector_period, const double *center, double *acc,
                                         int centered) {
    for (ptrdiff_t j = 0; j < period; j++) acc[j] = 0;
    ptrdiff_t start = 0;
    bnk_d8 zero = BNK_NAME(splat8)(0);
    while (start + 4 * period <= length) {
        ptrdiff_t j = 0;
        for (; j < vector_period; j += 16) {
            bnk_d8 m0 = centered ? BNK_NAME(load8)(center + j) : zero;
            bnk_d8 m1 = centered ? BNK_NAME(load8)(center + j + 8) : zero;
            const float *p = x + start + j;
            bnk_f16 v0 = BNK_NAME(load16)(p), v1 = BNK_NAME(load16)(p + period);
            bnk_f16 v2 = BNK_NAME(load16)(p + 2 * period), v3 = BNK_NAME(load16)(p + 3 * period);
            bnk_d8 lo = BNK_NAME(term8)(BNK_NAME(low)(v0), m0, centered);
            lo += BNK_NAME(term8)(BNK_NAME(low)(v1), m0, centered);
            lo += BNK_NAME(term8)(BNK_NAME(low)(v2), m0, centered);
            lo += BNK_NAME(term8)(BNK_NAME(low)(v3), m0, centered);
            bnk_d8 hi = BNK_NAME(term8)(BNK_NAME(high)(v0), m1, centered);
            hi += BNK_NAME(term8)(BNK_NAME(high)(v1), m1, centered);
            hi += BNK_NAME(term8)(BNK_NAME(high)(v2), m1, centered);
            hi += BNK_NAME(term8)(BNK_NAME(high)(v3), m1, centered);
            BNK_NAME(store8)(acc + j, BNK_NAME(load8)(acc + j) + lo);
            BNK_NAME(store8)(acc + j + 8, BNK_NAME(load8)(acc + j + 8) + hi);
        }
        for (; j < period; j++) {
            const float *p = x + start + j;
            double sum = BNK_NAME(term1)(p[0], center, j, centered);
            sum += BNK_NAME(term1)(p[period], center, j, centered);
            sum += BNK_NAME(term1)(p[2 * period], center, j, centered);
            sum += BNK_NAME(term1)(p[3 * period], center, j, centered);
            acc[j] += sum;
        }
        start += 4 * period;
    }
    while (start < length) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            bnk_d8 m0 = centered ? BNK_NAME(load8)(center + j) : zero;
            bnk_d8 m1 = centered ? BNK_NAME(load8)(center + j + 8) : zero;
            bnk_f16 v = BNK_NAME(load16)(x + start + j);
            BNK_NAME(store8)(acc + j, BNK_NAME(load8)(acc + j) + BNK_NAME(term8)(BNK_NAME(low)(v), m0, centered));
            BNK_NAME(store8)(acc + j + 8,
                             BNK_NAME(load8)(acc + j + 8) + BNK_NAME(term8)(BNK_NAME(high)(v), m1, centered));
        }
        for (; j < count; j++) acc[j] += BNK_NAME(term1)(x[start + j], center, j, centered);
        start += period;
    }
}

BNK_TARGET static void BNK_NAME(position_sums)(const float *x, ptrdiff_t length, ptrdiff_t period,
                                                ptrdiff_t vector_period, const double *center, double *acc) {
    if (center)
        BNK_NAME(position_sums_impl)(x, length, period, vector_period, center, acc, 1);
    else
        BNK_NAME(position_sums_impl)(x, length, period, vector_period, center, acc, 0);
}

// MARK: Gradient reduction

/// sum_g = Σ_{i<n} g[i];  sum_gx = Σ_{i<n} g[i]·(x[i] − mean)  (one pass, double).
BNK_TARGET static void BNK_NAME(contiguous_gradient_sums)(const float *g, const float *x, ptrdiff_t n,
                                                           double mean, double *sum_g, double *sum_gx) {
    bnk_d8 mu = BNK_NAME(splat8)(mean);
    bnk_d8 s0 = BNK_NAME(splat8)(0), s1 = s0, s2 = s0, s3 = s0, p0 = s0, p1 = s0, p2 = s0, p3 = s0;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        bnk_f16 gv = BNK_NAME(load16)(g + i), xv = BNK_NAME(load16)(x + i);
        bnk_f16 gw = BNK_NAME(load16)(g + i + 16), xw = BNK_NAME(load16)(x + i + 16);
        bnk_d8 g0 = BNK_NAME(low)(gv), g1 = BNK_NAME(high)(gv), g2 = BNK_NAME(low)(gw), g3 = BNK_NAME(high)(gw);
        s0 += g0;
        s1 += g1;
        s2 += g2;
        s3 += g3;
        p0 += g0 * (BNK_NAME(low)(xv) - mu);
        p1 += g1 * (BNK_NAME(high)(xv) - mu);
        p2 += g2 * (BNK_NAME(low)(xw) - mu);
        p3 += g3 * (BNK_NAME(high)(xw) - mu);
    }
    if (i + 16 <= n) {
        bnk_f16 gv = BNK_NAME(load16)(g + i), xv = BNK_NAME(load16)(x + i);
        bnk_d8 g0 = BNK_NAME(low)(gv), g1 = BNK_NAME(high)(gv);
        s0 += g0;
        s1 += g1;
        p0 += g0 * (BNK_NAME(low)(xv) - mu);
        p1 += g1 * (BNK_NAME(high)(xv) - mu);
        i += 16;
    }
    double sg = BNK_NAME(hsum)((s0 + s2) + (s1 + s3)), sgx = BNK_NAME(hsum)((p0 + p2) + (p1 + p3));
    for (; i < n; i++) {
        double gi = (double)g[i];
        sg += gi;
        sgx += gi * ((double)x[i] - mean);
    }
    *sum_g = sg;
    *sum_gx = sgx;
}

/// acc_g[j] = Σ_k g[k·P + j];  acc_gx[j] = Σ_k g[k·P + j]·(x[k·P + j] − mean[j])  for j < P,
/// chunks one at a time in order (two sequential streams).
BNK_TARGET static void BNK_NAME(position_gradient_sums)(const float *g, const float *x, ptrdiff_t length,
                                                         ptrdiff_t period, ptrdiff_t vector_period,
                                                         const double *mean, double *acc_g, double *acc_gx) {
    for (ptrdiff_t j = 0; j < period; j++) acc_g[j] = acc_gx[j] = 0;
    for (ptrdiff_t start = 0; start < length; start += period) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            bnk_f16 gv = BNK_NAME(load16)(g + start + j), xv = BNK_NAME(load16)(x + start + j);
            bnk_d8 gl = BNK_NAME(low)(gv), gh = BNK_NAME(high)(gv);
            bnk_d8 m0 = BNK_NAME(load8)(mean + j), m1 = BNK_NAME(load8)(mean + j + 8);
            BNK_NAME(store8)(acc_g + j, BNK_NAME(load8)(acc_g + j) + gl);
            BNK_NAME(store8)(acc_g + j + 8, BNK_NAME(load8)(acc_g + j + 8) + gh);
            BNK_NAME(store8)(acc_gx + j, BNK_NAME(load8)(acc_gx + j) + gl * (BNK_NAME(low)(xv) - m0));
            BNK_NAME(store8)(acc_gx + j + 8, BNK_NAME(load8)(acc_gx + j + 8) + gh * (BNK_NAME(high)(xv) - m1));
        }
        for (; j < count; j++) {
            double gi = (double)g[start + j];
            acc_g[j] += gi;
            acc_gx[j] += gi * ((double)x[start + j] - mean[j]);
        }
    }
}

// MARK: Apply

/// F(g, x) per formula: forward b·(x − shift) + offset; gradient a·g + offset;
/// gradient and input (a·g + b·(x − shift)) + offset. All in float.
BNK_FN bnk_f16 BNK_NAME(formula16)(int formula, const float *g, const float *x, bnk_f16 a, bnk_f16 b,
                                   bnk_f16 shift, bnk_f16 offset) {
    switch (formula) {
    case BNK_APPLY_FORWARD: return b * (BNK_NAME(load16)(x) - shift) + offset;
    case BNK_APPLY_GRADIENT: return a * BNK_NAME(load16)(g) + offset;
    default: return (a * BNK_NAME(load16)(g) + b * (BNK_NAME(load16)(x) - shift)) + offset;
    }
}

BNK_FN float BNK_NAME(formula1)(int formula, const float *g, const float *x, float a, float b, float shift,
                                float offset) {
    switch (formula) {
    case BNK_APPLY_FORWARD: return b * (*x - shift) + offset;
    case BNK_APPLY_GRADIENT: return a * *g + offset;
    default: return (a * *g + b * (*x - shift)) + offset;
    }
}

/// out[i] = F(g[i], x[i]) for i < n with scalar coefficients (broadcast to every lane).
BNK_FN void BNK_NAME(contiguous_apply_impl)(int formula, const float *g, const float *x, float *out, ptrdiff_t n,
                                            float a, float b, float shift, float offset) {
    bnk_f16 av = BNK_NAME(splat16)(a), bv = BNK_NAME(splat16)(b);
    bnk_f16 sv = BNK_NAME(splat16)(shift), ov = BNK_NAME(splat16)(offset);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        BNK_NAME(store16)(out + i, BNK_NAME(formula16)(formula, g + i, x + i, av, bv, sv, ov));
    for (; i < n; i++) out[i] = BNK_NAME(formula1)(formula, g + i, x + i, a, b, shift, offset);
}

BNK_TARGET static void BNK_NAME(contiguous_apply)(int formula, const float *g, const float *x, float *out,
                                                   ptrdiff_t n, float a, float b, float shift, float offset) {
    switch (formula) {
    case BNK_APPLY_FORWARD:
        BNK_NAME(contiguous_apply_impl)(BNK_APPLY_FORWARD, g, x, out, n, a, b, shift, offset);
        break;
    case BNK_APPLY_GRADIENT:
        BNK_NAME(contiguous_apply_impl)(BNK_APPLY_GRADIENT, g, x, out, n, a, b, shift, offset);
        break;
    default:
        BNK_NAME(contiguous_apply_impl)(BNK_APPLY_GRADIENT_AND_INPUT, g, x, out, n, a, b, shift, offset);
        break;
    }
}

/// out[i] = F(g[i], x[i]) for i < length with coefficients a[j], b[j], shift[j], offset[j]
/// of position j = i mod P (replicated: coefficients = a[0..<P] b[0..<P] shift[0..<P]
/// offset[0..<P]); chunks strictly in order.
BNK_FN void BNK_NAME(interleaved_apply_impl)(int formula, const float *g, const float *x, float *out,
                                             ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period,
                                             const float *coefficients) {
    const float *a = coefficients, *b = a + period, *shift = b + period, *offset = shift + period;
    for (ptrdiff_t start = 0; start < length; start += period) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            ptrdiff_t i = start + j;
            BNK_NAME(store16)(out + i, BNK_NAME(formula16)(formula, g + i, x + i, BNK_NAME(load16)(a + j),
                                                           BNK_NAME(load16)(b + j), BNK_NAME(load16)(shift + j),
                                                           BNK_NAME(load16)(offset + j)));
        }
        for (; j < count; j++) {
            ptrdiff_t i = start + j;
            out[i] = BNK_NAME(formula1)(formula, g + i, x + i, a[j], b[j], shift[j], offset[j]);
        }
    }
}

BNK_TARGET static void BNK_NAME(interleaved_apply)(int formula, const float *g, const float *x, float *out,
                                                    ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period,
                                                    const float *coefficients) {
    switch (formula) {
    case BNK_APPLY_FORWARD:
        BNK_NAME(interleaved_apply_impl)(BNK_APPLY_FORWARD, g, x, out, length, period, vector_period, coefficients);
        break;
    case BNK_APPLY_GRADIENT:
        BNK_NAME(interleaved_apply_impl)(BNK_APPLY_GRADIENT, g, x, out, length, period, vector_period, coefficients);
        break;
    default:
        BNK_NAME(interleaved_apply_impl)(BNK_APPLY_GRADIENT_AND_INPUT, g, x, out, length, period, vector_period,
                                         coefficients);
        break;
    }
}

#undef BNK_FN
