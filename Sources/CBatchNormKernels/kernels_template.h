// The C kernels, written once with clang vector extensions and instantiated by
// CBatchNormKernels.c for each instruction set: before including this file, define
// BNK_TARGET (a function attribute, e.g. __attribute__((target("avx2,fma"))), or empty)
// and BNK_NAME(name) (the instance's name for `name`). Not a public header.
//
// Shape legend: N batch, C channels, S spatial size (D·H·W). A channels-first run is one
// channel's values x[n, c, s0..<s1]; a channels-last run is whole rows x[n, s, 0..<C], and
// value j of it belongs to channel j mod C. P (period: lcm(C, 16), or C when that is too
// long to replicate) is the length over which per-channel values are replicated; positions
// 0..<VP (vector_period, a multiple of 16: P, or 16·⌊C/16⌋ when P = C) are processed 16 at
// a time, the rest one by one.
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

/// Moments of one channels-first run of n >= 1 values, in double, in one pass shifted by
/// its first value k = x[0] (a value of the channel, so the shifted sums do not cancel
/// badly; the same scheme as interleaved_moments):
///   d = x[i] − k;  s1 = Σ_{i<n} d;  s2 = Σ_{i<n} d²;
///   mean = k + s1 / n;  m2 = max(0, s2 − s1·(s1 / n)).
/// Measured against two passes (mean, then squared deviations) over the same L1-sized
/// blocks: 20 % less time from DRAM with 2 threads (40 % with 1, whose DRAM stream stalled
/// during the second pass), 20 % less from L3 or L2.
BNK_TARGET static void BNK_NAME(contiguous_moments)(const float *x, ptrdiff_t n, double *mean_out,
                                                     double *m2_out) {
    double k = (double)x[0];
    bnk_d8 kv = BNK_NAME(splat8)(k);
    bnk_d8 a0 = BNK_NAME(splat8)(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    ptrdiff_t i = 0;
    // Four vector accumulators per sum (32 values per turn), then 16, then scalars.
    for (; i + 32 <= n; i += 32) {
        bnk_f16 v = BNK_NAME(load16)(x + i), w = BNK_NAME(load16)(x + i + 16);
        bnk_d8 d0 = BNK_NAME(low)(v) - kv, d1 = BNK_NAME(high)(v) - kv;
        bnk_d8 d2 = BNK_NAME(low)(w) - kv, d3 = BNK_NAME(high)(w) - kv;
        a0 += d0;
        a1 += d1;
        a2 += d2;
        a3 += d3;
        b0 += d0 * d0;
        b1 += d1 * d1;
        b2 += d2 * d2;
        b3 += d3 * d3;
    }
    if (i + 16 <= n) {
        bnk_f16 v = BNK_NAME(load16)(x + i);
        bnk_d8 d0 = BNK_NAME(low)(v) - kv, d1 = BNK_NAME(high)(v) - kv;
        a0 += d0;
        a1 += d1;
        b0 += d0 * d0;
        b1 += d1 * d1;
        i += 16;
    }
    double s1 = BNK_NAME(hsum)((a0 + a2) + (a1 + a3)), s2 = BNK_NAME(hsum)((b0 + b2) + (b1 + b3));
    for (; i < n; i++) {
        double d = (double)x[i] - k;
        s1 += d;
        s2 += d * d;
    }
    double count = (double)n, centered = s2 - s1 * (s1 / count);
    *mean_out = k + s1 / count;
    *m2_out = centered > 0 ? centered : 0;
}

/// out[c] = Σ_{j ≡ c (mod C)} acc[j] for c < C, j < P, the P/C channel groups in order.
BNK_FN void BNK_NAME(fold)(const double *acc, ptrdiff_t channels, ptrdiff_t period, double *out) {
    for (ptrdiff_t c = 0; c < channels; c++) {
        double sum = acc[c];
        for (ptrdiff_t j = c + channels; j < period; j += channels) sum += acc[j];
        out[c] = sum;
    }
}

/// out[j] = values[j mod C] for j < P (P a multiple of C).
BNK_FN void BNK_NAME(replicate)(const double *values, ptrdiff_t channels, ptrdiff_t period, double *out) {
    for (ptrdiff_t j = 0, c = 0; j < period; j++) {
        out[j] = values[c];
        c = c + 1 == channels ? 0 : c + 1;
    }
}

/// k[j] = x[j mod C] for j < P (P a multiple of C): the block's first row, replicated.
BNK_FN void BNK_NAME(replicate_first_row)(const float *x, ptrdiff_t channels, ptrdiff_t period, double *k) {
    for (ptrdiff_t j = 0, c = 0; j < period; j++) {
        k[j] = (double)x[c];
        c = c + 1 == channels ? 0 : c + 1;
    }
}

/// Folds the per-position shifted sums s1, s2 (P each) into channels and finishes the
/// block's moments: mean[c] = x[c] + s1[c] / rows; m2[c] = max(0, s2[c] − s1[c]·(s1[c] / rows)).
BNK_FN void BNK_NAME(finish_moments)(const float *x, ptrdiff_t rows, ptrdiff_t channels, ptrdiff_t period,
                                     double *s1, double *s2, double *mean, double *m2) {
    BNK_NAME(fold)(s1, channels, period, mean);
    BNK_NAME(fold)(s2, channels, period, m2);
    double n = (double)rows;
    for (ptrdiff_t c = 0; c < channels; c++) {
        double sum = mean[c], centered = m2[c] - sum * (sum / n);
        mean[c] = (double)x[c] + sum / n;
        m2[c] = centered > 0 ? centered : 0;
    }
}

/// Adds one chunk of B = 16·V values to an accumulator set of short_moments:
/// d = x − k; a1 += d; a2 += d², lane by lane (k, a1, a2: 2·V vectors of doubles).
BNK_FN void BNK_NAME(short_moments_chunk)(const float *x, const int V, const bnk_d8 *k, bnk_d8 *a1, bnk_d8 *a2) {
    for (int v = 0; v < V; v++) {
        bnk_f16 w = BNK_NAME(load16)(x + 16 * v);
        bnk_d8 lo = BNK_NAME(low)(w) - k[2 * v], hi = BNK_NAME(high)(w) - k[2 * v + 1];
        a1[2 * v] += lo;
        a1[2 * v + 1] += hi;
        a2[2 * v] += lo * lo;
        a2[2 * v + 1] += hi * hi;
    }
}

/// out[8·v ..< 8·v + 8] = ((sets[0][v] + sets[1][v]) + ..) + sets[T − 1][v] for v < count.
BNK_FN void BNK_NAME(store_sets)(bnk_d8 (*sets)[8], const int T, const int count, double *out) {
    for (int v = 0; v < count; v++) {
        bnk_d8 sum = sets[0][v];
        for (int t = 1; t < T; t++) sum += sets[t][v];
        BNK_NAME(store8)(out + 8 * v, sum);
    }
}

/// interleaved_moments for a short period P = 16·V (V <= 4): the same shifted
/// sums with the per-position accumulators in registers for the whole block. Chunks of B
/// values go round-robin to T independent accumulator sets (chunk q to set q mod T, for
/// enough independent additions when V is small; the < T whole chunks left over go to
/// set 0), the sets are added in order 0, 1, .., T − 1, and the last partial chunk
/// (length mod B values, whole rows) is added one value at a time. V and T are constants
/// after inlining; k and the position sums live on the stack (P <= BNK_SHORT_PERIOD_MAX).
BNK_FN void BNK_NAME(short_moments)(const float *x, ptrdiff_t rows, ptrdiff_t channels, const int V, const int T,
                                    double *mean, double *m2) {
    ptrdiff_t B = 16 * V, length = rows * channels;
    double k[BNK_SHORT_PERIOD_MAX], s1[BNK_SHORT_PERIOD_MAX], s2[BNK_SHORT_PERIOD_MAX];
    BNK_NAME(replicate_first_row)(x, channels, B, k);
    bnk_d8 kv[8], a1[4][8], a2[4][8];
    for (int v = 0; v < 2 * V; v++) kv[v] = BNK_NAME(load8)(k + 8 * v);
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 2 * V; v++) a1[t][v] = a2[t][v] = BNK_NAME(splat8)(0);
    ptrdiff_t i = 0;
    for (; i + T * B <= length; i += T * B)
        for (int t = 0; t < T; t++) BNK_NAME(short_moments_chunk)(x + i + t * B, V, kv, a1[t], a2[t]);
    for (; i + B <= length; i += B) BNK_NAME(short_moments_chunk)(x + i, V, kv, a1[0], a2[0]);
    BNK_NAME(store_sets)(a1, T, 2 * V, s1);
    BNK_NAME(store_sets)(a2, T, 2 * V, s2);
    for (ptrdiff_t j = 0; i + j < length; j++) {
        double d = (double)x[i + j] - k[j];
        s1[j] += d;
        s2[j] += d * d;
    }
    BNK_NAME(finish_moments)(x, rows, channels, B, s1, s2, mean, m2);
}

/// Moments of each channel over one channels-last block of `rows` >= 1 whole rows
/// (x[r·C + c], length rows·C), in double, in one pass shifted by the block's first row
/// k[c] = x[c] (a value of the channel, so the shifted sums do not cancel badly):
///   d = x[r·C + c] − k[c];  s1[c] = Σ_r d;  s2[c] = Σ_r d²;
///   mean[c] = k[c] + s1[c] / rows;  m2[c] = max(0, s2[c] − s1[c]·(s1[c] / rows)).
/// The sums run per pattern position j < P (j mod C = c; k replicated to P positions).
/// With h = ⌊chunks / 2⌋, whole chunks q and h + q go in pairs, acc[j] = (acc[j] + d_q) +
/// d_{h+q} for q < h: two sequential streams (from DRAM they took 25–40 % less time than
/// tiles of four adjacent chunks, and tied with them from L3). The odd chunk and the
/// partial one follow one at a time; positions are then folded into channels with fold.
/// scratch holds 3·P doubles (unused, and may be NULL, when P <= BNK_SHORT_PERIOD_MAX:
/// short_moments).
BNK_TARGET static void BNK_NAME(interleaved_moments)(const float *x, ptrdiff_t rows, ptrdiff_t channels,
                                                      ptrdiff_t period, ptrdiff_t vector_period,
                                                      double *scratch, double *mean, double *m2) {
    // Short periods keep the per-position sums in registers (see short_moments).
    switch (period) {
    case 16: BNK_NAME(short_moments)(x, rows, channels, 1, 4, mean, m2); return;
    case 32: BNK_NAME(short_moments)(x, rows, channels, 2, 2, mean, m2); return;
    case 48: BNK_NAME(short_moments)(x, rows, channels, 3, 1, mean, m2); return;
    case 64: BNK_NAME(short_moments)(x, rows, channels, 4, 1, mean, m2); return;
    default: break;
    }
    double *k = scratch, *s1 = scratch + period, *s2 = scratch + 2 * period;
    ptrdiff_t length = rows * channels;
    BNK_NAME(replicate_first_row)(x, channels, period, k);
    __builtin_memset(s1, 0, 2 * (size_t)period * sizeof(double));
    // Pairs of whole chunks (q, h + q).
    ptrdiff_t half = length / period / 2;
    const float *second = x + half * period;
    for (ptrdiff_t q = 0; q < half; q++) {
        const float *p = x + q * period, *r = second + q * period;
        ptrdiff_t j = 0;
        for (; j < vector_period; j += 16) {
            bnk_d8 k0 = BNK_NAME(load8)(k + j), k1 = BNK_NAME(load8)(k + j + 8);
            bnk_f16 v = BNK_NAME(load16)(p + j), w = BNK_NAME(load16)(r + j);
            bnk_d8 a0 = BNK_NAME(low)(v) - k0, b0 = BNK_NAME(high)(v) - k1;
            bnk_d8 a1 = BNK_NAME(low)(w) - k0, b1 = BNK_NAME(high)(w) - k1;
            BNK_NAME(store8)(s1 + j, (BNK_NAME(load8)(s1 + j) + a0) + a1);
            BNK_NAME(store8)(s1 + j + 8, (BNK_NAME(load8)(s1 + j + 8) + b0) + b1);
            BNK_NAME(store8)(s2 + j, (BNK_NAME(load8)(s2 + j) + a0 * a0) + a1 * a1);
            BNK_NAME(store8)(s2 + j + 8, (BNK_NAME(load8)(s2 + j + 8) + b0 * b0) + b1 * b1);
        }
        for (; j < period; j++) {
            double d0 = (double)p[j] - k[j], d1 = (double)r[j] - k[j];
            s1[j] = (s1[j] + d0) + d1;
            s2[j] = (s2[j] + d0 * d0) + d1 * d1;
        }
    }
    // The last whole chunk when their number is odd, then the partial one.
    ptrdiff_t start = 2 * half * period;
    while (start < length) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            bnk_f16 v = BNK_NAME(load16)(x + start + j);
            bnk_d8 a = BNK_NAME(low)(v) - BNK_NAME(load8)(k + j), b = BNK_NAME(high)(v) - BNK_NAME(load8)(k + j + 8);
            BNK_NAME(store8)(s1 + j, BNK_NAME(load8)(s1 + j) + a);
            BNK_NAME(store8)(s1 + j + 8, BNK_NAME(load8)(s1 + j + 8) + b);
            BNK_NAME(store8)(s2 + j, BNK_NAME(load8)(s2 + j) + a * a);
            BNK_NAME(store8)(s2 + j + 8, BNK_NAME(load8)(s2 + j + 8) + b * b);
        }
        for (; j < count; j++) {
            double d = (double)x[start + j] - k[j];
            s1[j] += d;
            s2[j] += d * d;
        }
        start += period;
    }
    BNK_NAME(finish_moments)(x, rows, channels, period, s1, s2, mean, m2);
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
BNK_FN void BNK_NAME(position_gradient_sums)(const float *g, const float *x, ptrdiff_t length, ptrdiff_t period,
                                             ptrdiff_t vector_period, const double *mean, double *acc_g,
                                             double *acc_gx) {
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

/// Adds one chunk of B = 16·V values of g and x to an accumulator set of
/// short_gradient_sums: sg += g; sx += g·(x − m), lane by lane (2·V vectors each).
BNK_FN void BNK_NAME(short_gradient_chunk)(const float *g, const float *x, const int V, const bnk_d8 *m,
                                           bnk_d8 *sg, bnk_d8 *sx) {
    for (int v = 0; v < V; v++) {
        bnk_f16 gv = BNK_NAME(load16)(g + 16 * v), xv = BNK_NAME(load16)(x + 16 * v);
        bnk_d8 gl = BNK_NAME(low)(gv), gh = BNK_NAME(high)(gv);
        sg[2 * v] += gl;
        sg[2 * v + 1] += gh;
        sx[2 * v] += gl * (BNK_NAME(low)(xv) - m[2 * v]);
        sx[2 * v + 1] += gh * (BNK_NAME(high)(xv) - m[2 * v + 1]);
    }
}

/// short_gradient_sums: interleaved_gradient_sums for a short period P = 16·V
/// (V <= 4) with the per-position sums in registers for the whole block; chunks of
/// B values go round-robin to T accumulator sets (as in short_moments), the sets are added
/// in order, then the partial chunk one value at a time. acc holds 2·B doubles; mean holds
/// μ[j mod C] for j < B.
BNK_FN void BNK_NAME(short_gradient_sums)(const float *g, const float *x, ptrdiff_t length, const int V,
                                          const int T, const double *mean, double *acc_g, double *acc_gx) {
    ptrdiff_t B = 16 * V;
    bnk_d8 mv[8], sg[4][8], sx[4][8];
    for (int v = 0; v < 2 * V; v++) mv[v] = BNK_NAME(load8)(mean + 8 * v);
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 2 * V; v++) sg[t][v] = sx[t][v] = BNK_NAME(splat8)(0);
    ptrdiff_t i = 0;
    for (; i + T * B <= length; i += T * B)
        for (int t = 0; t < T; t++)
            BNK_NAME(short_gradient_chunk)(g + i + t * B, x + i + t * B, V, mv, sg[t], sx[t]);
    for (; i + B <= length; i += B) BNK_NAME(short_gradient_chunk)(g + i, x + i, V, mv, sg[0], sx[0]);
    BNK_NAME(store_sets)(sg, T, 2 * V, acc_g);
    BNK_NAME(store_sets)(sx, T, 2 * V, acc_gx);
    for (ptrdiff_t j = 0; i + j < length; j++) {
        double gi = (double)g[i + j];
        acc_g[j] += gi;
        acc_gx[j] += gi * ((double)x[i + j] - mean[j]);
    }
}

/// Per channel c < C of one channels-last block of `rows` whole rows of g and x:
/// sum_g[c] = Σ_r g[r·C + c];  sum_gx[c] = Σ_r g[r·C + c]·(x[r·C + c] − mean[c]), in double
/// (mean: C values). The sums run per pattern position j < P (μ replicated), chunks one at
/// a time in order (two sequential streams; P <= BNK_SHORT_PERIOD_MAX: short_gradient_sums,
/// on the stack), then are folded into channels with fold. scratch holds 3·P doubles (may
/// be NULL when P <= BNK_SHORT_PERIOD_MAX).
BNK_TARGET static void BNK_NAME(interleaved_gradient_sums)(const float *g, const float *x, ptrdiff_t rows,
                                                            ptrdiff_t channels, ptrdiff_t period,
                                                            ptrdiff_t vector_period, const double *mean,
                                                            double *scratch, double *sum_g, double *sum_gx) {
    ptrdiff_t length = rows * channels;
    if (period <= BNK_SHORT_PERIOD_MAX) {
        double m[BNK_SHORT_PERIOD_MAX], acc_g[BNK_SHORT_PERIOD_MAX], acc_gx[BNK_SHORT_PERIOD_MAX];
        BNK_NAME(replicate)(mean, channels, period, m);
        switch (period) {
        case 16: BNK_NAME(short_gradient_sums)(g, x, length, 1, 4, m, acc_g, acc_gx); break;
        case 32: BNK_NAME(short_gradient_sums)(g, x, length, 2, 2, m, acc_g, acc_gx); break;
        case 48: BNK_NAME(short_gradient_sums)(g, x, length, 3, 1, m, acc_g, acc_gx); break;
        default: BNK_NAME(short_gradient_sums)(g, x, length, 4, 1, m, acc_g, acc_gx); break;
        }
        BNK_NAME(fold)(acc_g, channels, period, sum_g);
        BNK_NAME(fold)(acc_gx, channels, period, sum_gx);
        return;
    }
    double *m = scratch, *acc_g = scratch + period, *acc_gx = scratch + 2 * period;
    BNK_NAME(replicate)(mean, channels, period, m);
    BNK_NAME(position_gradient_sums)(g, x, length, period, vector_period, m, acc_g, acc_gx);
    BNK_NAME(fold)(acc_g, channels, period, sum_g);
    BNK_NAME(fold)(acc_gx, channels, period, sum_gx);
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

/// interleaved_apply_impl for a short period P = 16·V (V <= 8): the coefficients of
/// positions 0..<B stay in registers for the whole run; whole chunks of B values, then the
/// partial one (length mod B values, whole rows) one value at a time. The same formulas,
/// so the same float results. V is a constant after inlining.
BNK_FN void BNK_NAME(short_apply)(int formula, const float *g, const float *x, float *out, ptrdiff_t length,
                                  const int V, ptrdiff_t period, const float *coefficients) {
    const float *a = coefficients, *b = a + period, *shift = b + period, *offset = shift + period;
    ptrdiff_t B = 16 * V;
    bnk_f16 av[8], bv[8], sv[8], ov[8];
    for (int v = 0; v < V; v++) {
        av[v] = BNK_NAME(load16)(a + 16 * v);
        bv[v] = BNK_NAME(load16)(b + 16 * v);
        sv[v] = BNK_NAME(load16)(shift + 16 * v);
        ov[v] = BNK_NAME(load16)(offset + 16 * v);
    }
    ptrdiff_t i = 0;
    for (; i + B <= length; i += B)
        for (int v = 0; v < V; v++) {
            ptrdiff_t at = i + 16 * v;
            BNK_NAME(store16)(out + at, BNK_NAME(formula16)(formula, g + at, x + at, av[v], bv[v], sv[v], ov[v]));
        }
    for (ptrdiff_t j = 0; i + j < length; j++)
        out[i + j] = BNK_NAME(formula1)(formula, g + i + j, x + i + j, a[j], b[j], shift[j], offset[j]);
}

/// interleaved_apply_impl, or short_apply when the period P is at most 128.
BNK_FN void BNK_NAME(interleaved_apply_formula)(int formula, const float *g, const float *x, float *out,
                                                ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period,
                                                const float *coefficients) {
    switch (period) {
#define BNK_SHORT_APPLY(V) \
    case 16 * V: BNK_NAME(short_apply)(formula, g, x, out, length, V, period, coefficients); break;
    BNK_SHORT_APPLY(1) BNK_SHORT_APPLY(2) BNK_SHORT_APPLY(3) BNK_SHORT_APPLY(4)
    BNK_SHORT_APPLY(5) BNK_SHORT_APPLY(6) BNK_SHORT_APPLY(7) BNK_SHORT_APPLY(8)
#undef BNK_SHORT_APPLY
    default: BNK_NAME(interleaved_apply_impl)(formula, g, x, out, length, period, vector_period, coefficients); break;
    }
}

BNK_TARGET static void BNK_NAME(interleaved_apply)(int formula, const float *g, const float *x, float *out,
                                                    ptrdiff_t length, ptrdiff_t period,
                                                    ptrdiff_t vector_period, const float *coefficients) {
    switch (formula) {
    case BNK_APPLY_FORWARD:
        BNK_NAME(interleaved_apply_formula)(BNK_APPLY_FORWARD, g, x, out, length, period, vector_period,
                                            coefficients);
        break;
    case BNK_APPLY_GRADIENT:
        BNK_NAME(interleaved_apply_formula)(BNK_APPLY_GRADIENT, g, x, out, length, period, vector_period,
                                            coefficients);
        break;
    default:
        BNK_NAME(interleaved_apply_formula)(BNK_APPLY_GRADIENT_AND_INPUT, g, x, out, length, period, vector_period,
                                            coefficients);
        break;
    }
}

#undef BNK_FN
