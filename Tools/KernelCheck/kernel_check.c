// Kernel check: every kernel level the running CPU supports against the generic (baseline)
// level, bit for bit, and the generic level against a plain double reference. Built with
// the kernel library's own sources (run.sh), natively on x86-64 and for aarch64 under
// qemu-aarch64; needs nothing but a C compiler and libm.
//
// Usage: kernel_check [--require LEVEL]... [--absent LEVEL]...
//   --require: fail unless the CPU supports LEVEL (so that an emulated CPU without the
//   feature cannot pass silently); --absent: fail if it does. Exit status 0 when every
//   comparison held, 1 otherwise.
//
// Shape legend: N batch, C channels, S spatial size; channels-first data is x[n][c][s]
// (one run of S values per n and c), channels-last data is x[n][s][c] (rows of C values);
// P = lcm(C, 16) (or C when that exceeds 2048) and VP, as the Swift backend computes them.
//
// What is checked, per storage type (float32, float16, bfloat16):
// - bnk_convert between every pair of types: every float16 and bfloat16 bit pattern widened,
//   and float32 inputs of every exponent (ties, subnormals, overflow, NaN payloads) narrowed,
//   against an exact reference rounding (nearbyint in double);
// - in both layouts and over odd shapes (S = 1, C not a multiple of 16, tails, periods too
//   long to replicate): moments, gradient sums, the three apply formulas with ordinary and
//   streaming stores (aligned and unaligned outputs, small and float32-subnormal results),
//   and the fused reduce-and-apply kernels (which must equal the separate calls).
#include "CBatchNormKernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *level_names[] = {"generic", "avx2", "avx512", "avx512-bf16", "neon", "neon-bf16"};
enum { LEVEL_COUNT = 6 };
static const char *type_names[] = {"float32", "float16", "bfloat16"};

// MARK: Results: each level's outputs, appended in order, compared with the generic level's.

typedef struct {
    unsigned char *bytes;
    size_t count, capacity;
    // Segment starts and labels, to name the first difference.
    size_t *starts;
    char (*labels)[96];
    size_t segments, segment_capacity;
} Results;

static void append(Results *r, const char *label, const void *data, size_t bytes) {
    if (r->count + bytes > r->capacity) {
        r->capacity = (r->count + bytes) * 2;
        r->bytes = realloc(r->bytes, r->capacity);
    }
    if (r->segments == r->segment_capacity) {
        r->segment_capacity = r->segment_capacity ? 2 * r->segment_capacity : 256;
        r->starts = realloc(r->starts, r->segment_capacity * sizeof *r->starts);
        r->labels = realloc(r->labels, r->segment_capacity * sizeof *r->labels);
    }
    if (!r->bytes || !r->starts || !r->labels) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    r->starts[r->segments] = r->count;
    snprintf(r->labels[r->segments], sizeof r->labels[0], "%s", label);
    r->segments++;
    memcpy(r->bytes + r->count, data, bytes);
    r->count += bytes;
}

static int failures;
static double worst_error;   // the largest error of the generic level, in units of its tolerance
static char worst_label[160];
static long reference_checks;

#define FAIL(...)                                   \
    do {                                            \
        if (failures++ < 20) fprintf(stderr, __VA_ARGS__); \
    } while (0)

// MARK: Reference conversions (double arithmetic, independent of the kernels)

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/// The float32 bits that a storage value widens to: exact; NaN quiet (float16) or kept (bfloat16).
static uint32_t reference_widen(int type, uint16_t h) {
    if (type == BNK_TYPE_BFLOAT16) return (uint32_t)h << 16;
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0x1f) return sign | 0x7f800000u | (mantissa ? 0x00400000u | mantissa << 13 : 0);
    double value = exponent ? ldexp(1024.0 + mantissa, (int)exponent - 25) : ldexp((double)mantissa, -24);
    return sign | float_bits((float)value);
}

/// float → float16 or bfloat16 bits, rounded to nearest even with nearbyint in double:
/// float16 keeps subnormals and overflows from 65520; bfloat16 flushes float32 subnormals to
/// a zero of the same sign; NaN keeps its top payload bits and is made quiet.
static uint16_t reference_narrow(int type, float f) {
    uint32_t u = float_bits(f), sign16 = (u >> 16) & 0x8000u;
    double v = fabs((double)f);
    if (isnan(f)) return type == BNK_TYPE_FLOAT16 ? (uint16_t)(sign16 | 0x7e00u | ((u >> 13) & 0x3ffu))
                                                  : (uint16_t)((u >> 16) | 0x40u);
    if (type == BNK_TYPE_BFLOAT16) {
        if (v < ldexp(1, -126)) return (uint16_t)sign16;
        if (isinf(v)) return (uint16_t)(sign16 | 0x7f80u);
        double scale = ldexp(1, ilogb(v) - 7), r = nearbyint(v / scale) * scale;
        if (r >= ldexp(1, 128)) return (uint16_t)(sign16 | 0x7f80u);
        return (uint16_t)(sign16 | (float_bits((float)r) >> 16));
    }
    if (v >= 65520.0) return (uint16_t)(sign16 | 0x7c00u);
    int e = v == 0 ? -14 : ilogb(v);
    if (e < -14) e = -14;
    double r = nearbyint(v / ldexp(1, e - 10)) * ldexp(1, e - 10);
    if (r < ldexp(1, -14)) return (uint16_t)(sign16 | (uint16_t)(r / ldexp(1, -24)));
    int exponent = ilogb(r);
    return (uint16_t)(sign16 | (uint16_t)((exponent + 15) << 10) | (uint16_t)(r / ldexp(1, exponent - 10) - 1024));
}

static size_t type_size(int type) { return type == BNK_TYPE_FLOAT32 ? 4 : 2; }

/// Element i of storage `p` as a double (the reference's reading of the data).
static double value_at(int type, const void *p, ptrdiff_t i) {
    if (type == BNK_TYPE_FLOAT32) return ((const float *)p)[i];
    return bits_float(reference_widen(type, ((const uint16_t *)p)[i]));
}

/// Stores f (rounded by the reference) as element i of p.
static void store_value(int type, void *p, ptrdiff_t i, float f) {
    if (type == BNK_TYPE_FLOAT32) ((float *)p)[i] = f;
    else ((uint16_t *)p)[i] = reference_narrow(type, f);
}

/// |actual − expected| <= tolerance, else a failure naming `what`.
static void expect_close(const char *what, double actual, double expected, double tolerance) {
    reference_checks++;
    double error = fabs(actual - expected);
    if (!(error <= tolerance)) {
        FAIL("generic level against the double reference: %s: %.17g, expected %.17g (tolerance %.3g)\n", what,
             actual, expected, tolerance);
        return;
    }
    if (tolerance > 0 && error / tolerance > worst_error) {
        worst_error = error / tolerance;
        snprintf(worst_label, sizeof worst_label, "%s", what);
    }
}

// MARK: Random data

static uint64_t random_state = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void) {
    random_state ^= random_state >> 12;
    random_state ^= random_state << 25;
    random_state ^= random_state >> 27;
    return random_state * 0x2545f4914f6cdd1du;
}

/// Uniform in [-1, 1).
static double uniform(void) { return (double)(next_random() >> 11) * 0x1p-52 - 1.0; }

static void *allocate(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 127) / 64 * 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(p, 0, (bytes + 127) / 64 * 64);
    return p;
}

// MARK: Conversions

/// bnk_convert from every type to every type (every float16 and bfloat16 pattern; float32
/// inputs of every exponent), in one call and in calls of 15 values (the scalar tails), with
/// the reference checked on the generic level.
static void check_conversions(int level, Results *results) {
    enum { PATTERNS = 65536 };
    static float narrow_inputs[PATTERNS];
    static uint16_t half_inputs[PATTERNS];
    static int prepared;
    if (!prepared) {
        prepared = 1;
        for (uint32_t i = 0; i < PATTERNS; i++) half_inputs[i] = (uint16_t)i;
        // Float32 inputs: for every exponent, random mantissas, the float16 and bfloat16
        // halfway points below and above even and odd kept bits, and NaN payloads.
        size_t k = 0;
        for (uint32_t exponent = 0; exponent < 256; exponent++)
            for (uint32_t j = 0; j < 128; j++) {
                uint32_t mantissa = (uint32_t)next_random() & 0x7fffffu;
                switch (j % 8) {
                case 1: mantissa = (mantissa & ~0x1fffu) | 0x1000u; break;   // float16 tie
                case 2: mantissa = (mantissa & ~0xffffu) | 0x8000u; break;   // bfloat16 tie
                case 3: mantissa = (mantissa & ~0x1fffu) | 0x0fffu; break;
                case 4: mantissa = (mantissa & ~0xffffu) | 0x7fffu; break;
                case 5: mantissa = 0x7fffffu; break;
                default: break;
                }
                uint32_t sign = (j & 16) ? 0x80000000u : 0;
                narrow_inputs[k++] = bits_float(sign | exponent << 23 | mantissa);
            }
        // Around float16's overflow and subnormal limits.
        const float edges[] = {65504.0f, 65519.99f, 65520.0f, 65535.0f, 0x1p-14f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f,
                               0x1p-26f, 0x1p-126f, 0x1p-149f, 0x1.fffffep127f, 0.0f, 1.0f};
        for (size_t e = 0; e < sizeof edges / sizeof edges[0] && k + 1 < PATTERNS; e++) {
            narrow_inputs[k++] = edges[e];
            narrow_inputs[k++] = -edges[e];
        }
        while (k < PATTERNS) narrow_inputs[k++] = (float)(uniform() * 70000.0);
    }
    void *out = allocate(PATTERNS * 4 + 64);
    for (int from = 0; from < 3; from++)
        for (int to = 0; to < 3; to++)
            for (int chunked = 0; chunked <= 1; chunked++) {
                // One call (16-value vectors) or calls of 15 values (the scalar tails).
                ptrdiff_t n = PATTERNS, step = chunked ? 15 : PATTERNS;
                for (ptrdiff_t at = 0; at < n; at += step) {
                    ptrdiff_t count = n - at < step ? n - at : step;
                    const void *source = from == BNK_TYPE_FLOAT32 ? (const void *)(narrow_inputs + at)
                                                                  : (const void *)(half_inputs + at);
                    bnk_convert(level, from, source, to, (unsigned char *)out + at * (ptrdiff_t)type_size(to), count);
                }
                char label[96];
                snprintf(label, sizeof label, "convert %s -> %s%s", type_names[from], type_names[to],
                         chunked ? ", 15 values per call" : "");
                append(results, label, out, (size_t)n * type_size(to));
                if (level != BNK_LEVEL_GENERIC) continue;
                for (ptrdiff_t i = 0; i < n; i++) {
                    float value = bits_float(from == BNK_TYPE_FLOAT32 ? float_bits(narrow_inputs[i])
                                                                      : reference_widen(from, half_inputs[i]));
                    uint32_t expected = to == BNK_TYPE_FLOAT32 ? float_bits(value) : reference_narrow(to, value);
                    uint32_t actual = to == BNK_TYPE_FLOAT32 ? ((uint32_t *)out)[i] : ((uint16_t *)out)[i];
                    reference_checks++;
                    if (actual != expected)
                        FAIL("generic level against the reference: %s, element %td (input %a): 0x%x, expected 0x%x\n",
                             label, i, (double)value, actual, expected);
                }
            }
    free(out);
}

// MARK: Kernels over tensors

typedef struct {
    int n, c, s;
} Shape;

/// The channels-last pattern period and vector period of C channels.
static void pattern(ptrdiff_t channels, ptrdiff_t *period, ptrdiff_t *vector_period) {
    ptrdiff_t a = channels, b = 16;
    while (b) {
        ptrdiff_t t = a % b;
        a = b;
        b = t;
    }
    ptrdiff_t lcm = channels / a * 16;
    *period = lcm <= 2048 ? lcm : channels;
    *vector_period = lcm <= 2048 ? lcm : channels / 16 * 16;
}

/// Reference moments of values[0..<count] at `stride`: two passes in double.
static void reference_moments(int type, const void *x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t stride,
                              double *mean, double *m2) {
    double sum = 0, squares = 0;
    for (ptrdiff_t i = 0; i < count; i++) sum += value_at(type, x, first + i * stride);
    double mu = sum / count;
    for (ptrdiff_t i = 0; i < count; i++) {
        double d = value_at(type, x, first + i * stride) - mu;
        squares += d * d;
    }
    *mean = mu;
    *m2 = squares;
}

/// Reference gradient sums (Σg, Σg·(x − mean), Σ|g|, Σ|g·(x − mean)|) at `stride`.
static void reference_gradient_sums(int type, const void *g, const void *x, ptrdiff_t first, ptrdiff_t count,
                                    ptrdiff_t stride, double mean, double sums[4]) {
    double sg = 0, sgx = 0, ag = 0, agx = 0;
    for (ptrdiff_t i = 0; i < count; i++) {
        double gi = value_at(type, g, first + i * stride), xi = value_at(type, x, first + i * stride);
        sg += gi;
        sgx += gi * (xi - mean);
        ag += fabs(gi);
        agx += fabs(gi * (xi - mean));
    }
    sums[0] = sg;
    sums[1] = sgx;
    sums[2] = ag;
    sums[3] = agx;
}

static void check_moments(const char *label, double mean, double m2, double ref_mean, double ref_m2,
                          ptrdiff_t count) {
    char what[160];
    double spread = sqrt(ref_m2 / (double)count);
    snprintf(what, sizeof what, "%s mean", label);
    expect_close(what, mean, ref_mean, 1e-12 * (fabs(ref_mean) + spread) + 1e-300);
    snprintf(what, sizeof what, "%s M2", label);
    expect_close(what, m2, ref_m2, 1e-10 * ref_m2 + 1e-300);
}

static void check_gradient_sums(const char *label, double sum_g, double sum_gx, const double reference[4]) {
    char what[160];
    snprintf(what, sizeof what, "%s sum g", label);
    expect_close(what, sum_g, reference[0], 1e-12 * reference[2] + 1e-300);
    snprintf(what, sizeof what, "%s sum g(x - mean)", label);
    expect_close(what, sum_gx, reference[1], 1e-11 * reference[3] + 1e-300);
}

/// Reference of one applied element (double), with the scale of its terms for the tolerance.
static double reference_apply(int formula, double g, double x, double a, double b, double shift, double offset,
                              double *terms) {
    double ag = a * g, bx = b * (x - shift);
    switch (formula) {
    case BNK_APPLY_FORWARD: *terms = fabs(bx) + fabs(offset) + fabs(b * x) + fabs(b * shift); return bx + offset;
    case BNK_APPLY_GRADIENT: *terms = fabs(ag) + fabs(offset); return ag + offset;
    default:
        *terms = fabs(ag) + fabs(bx) + fabs(offset) + fabs(b * x) + fabs(b * shift);
        return ag + bx + offset;
    }
}

/// Checks out[0..<count] against the reference of F(g, x) with per-element coefficients of
/// position (i mod period) in `coefficients` (a, b, shift, offset; `period` values each).
static void check_apply(const char *label, int type, int formula, const void *g, const void *x, const void *out,
                        ptrdiff_t count, const float *coefficients, ptrdiff_t period) {
    // Half an ulp of the storage type, relative, and two of its smallest steps, absolute (the
    // float operations round subnormal results too).
    double relative = type == BNK_TYPE_FLOAT32 ? 0x1p-24 : type == BNK_TYPE_FLOAT16 ? 0x1p-11 : 0x1p-8;
    double absolute = type == BNK_TYPE_FLOAT32 ? 0x1p-148 : type == BNK_TYPE_FLOAT16 ? 0x1p-23 : 0x1p-125;
    for (ptrdiff_t i = 0; i < count; i++) {
        ptrdiff_t j = i % period;
        double terms;
        double expected = reference_apply(formula, g ? value_at(type, g, i) : 0, x ? value_at(type, x, i) : 0,
                                          coefficients[j], coefficients[period + j], coefficients[2 * period + j],
                                          coefficients[3 * period + j], &terms);
        char what[160];
        snprintf(what, sizeof what, "%s element %td", label, i);
        expect_close(what, value_at(type, out, i), expected, relative * fabs(expected) + 0x1p-21 * terms + absolute);
    }
}

/// Per-channel coefficients (a, b, shift, offset) of set `kind`: 0 ordinary, 1 small results
/// (float16 subnormals), 2 float32-subnormal results (flushed to zero in bfloat16).
static void make_coefficients(int kind, int channels, float *a, float *b, float *shift, float *offset) {
    for (int c = 0; c < channels; c++) {
        double scale = kind == 0 ? 1 : kind == 1 ? 1e-7 : 1e-40;
        a[c] = (float)((0.5 + (c % 3)) * scale);
        b[c] = (float)((1.0 + (c % 5) / 8.0) * scale);
        shift[c] = (float)(3.0 + (c % 4) / 16.0);
        offset[c] = kind == 0 ? (float)((c % 7) - 3) : 0.0f;
    }
}

static const int formulas[] = {BNK_APPLY_FORWARD, BNK_APPLY_GRADIENT, BNK_APPLY_GRADIENT_AND_INPUT};

/// Channels-first (x[n][c][s]): moments and gradient sums per run, every apply formula per
/// run with ordinary and streaming stores into an aligned and an unaligned output, and the
/// fused kernels (channel c's reduction with channel c − 1's apply) equal to the separate calls.
static void check_channels_first(int level, int type, Shape shape, Results *results) {
    ptrdiff_t runs = (ptrdiff_t)shape.n * shape.c, length = runs * shape.s, size = (ptrdiff_t)type_size(type);
    unsigned char *x = allocate((size_t)(length * size)), *g = allocate((size_t)(length * size));
    unsigned char *out = allocate((size_t)(length * size) + 64), *fused_out = allocate((size_t)(length * size) + 64);
    float a[512], b[512], shift[512], offset[512];
    for (ptrdiff_t r = 0; r < runs; r++) {
        int c = (int)(r % shape.c);
        for (ptrdiff_t i = 0; i < shape.s; i++) {
            store_value(type, x, r * shape.s + i, (float)(3.0 + c % 4 + 2.0 * uniform()));
            store_value(type, g, r * shape.s + i, (float)(0.25 + uniform()));
        }
    }
    char label[96];
    double *means = malloc((size_t)runs * sizeof(double));
    for (ptrdiff_t r = 0; r < runs; r++) {
        double moments[2], sums[2], reference[4], ref_mean, ref_m2;
        const void *xr = x + r * shape.s * size, *gr = g + r * shape.s * size;
        bnk_contiguous_moments(level, type, xr, shape.s, &moments[0], &moments[1]);
        snprintf(label, sizeof label, "channels-first %s %dx%dx%d moments, run %td", type_names[type], shape.n,
                 shape.c, shape.s, r);
        append(results, label, moments, sizeof moments);
        reference_moments(type, xr, 0, shape.s, 1, &ref_mean, &ref_m2);
        means[r] = ref_mean;
        if (level == BNK_LEVEL_GENERIC) check_moments(label, moments[0], moments[1], ref_mean, ref_m2, shape.s);
        bnk_contiguous_gradient_sums(level, type, gr, xr, shape.s, ref_mean, &sums[0], &sums[1]);
        snprintf(label, sizeof label, "channels-first %s %dx%dx%d gradient sums, run %td", type_names[type], shape.n,
                 shape.c, shape.s, r);
        append(results, label, sums, sizeof sums);
        reference_gradient_sums(type, gr, xr, 0, shape.s, 1, ref_mean, reference);
        if (level == BNK_LEVEL_GENERIC) check_gradient_sums(label, sums[0], sums[1], reference);
    }
    for (int kind = 0; kind < 3; kind++) {
        make_coefficients(kind, shape.c, a, b, shift, offset);
        for (int f = 0; f < 3; f++)
            for (int streaming = 0; streaming <= 1; streaming++)
                for (int misaligned = 0; misaligned <= streaming; misaligned++) {   // the head loop streams only
                    unsigned char *o = out + misaligned * size, *fo = fused_out + misaligned * size;
                    for (ptrdiff_t r = 0; r < runs; r++) {
                        int c = (int)(r % shape.c);
                        ptrdiff_t at = r * shape.s * size;
                        bnk_contiguous_apply(level, type, formulas[f], streaming, g + at, x + at, o + at, shape.s,
                                             a[c], b[c], shift[c], offset[c]);
                    }
                    bnk_store_fence();
                    snprintf(label, sizeof label, "channels-first %s %dx%dx%d apply %d, coefficients %d, streaming %d%s",
                             type_names[type], shape.n, shape.c, shape.s, formulas[f], kind, streaming,
                             misaligned ? ", unaligned" : "");
                    append(results, label, o, (size_t)(length * size));
                    if (level == BNK_LEVEL_GENERIC)
                        for (ptrdiff_t r = 0; r < runs; r++) {
                            int c = (int)(r % shape.c);
                            float k[4] = {a[c], b[c], shift[c], offset[c]};
                            ptrdiff_t at = r * shape.s * size;
                            check_apply(label, type, formulas[f], g + at, x + at, o + at, shape.s, k, 1);
                        }
                    // Fused: run r's reduction with the apply of run r − 1 (of the last run for r = 0).
                    for (ptrdiff_t r = 0; r < runs; r++) {
                        ptrdiff_t p = (r + runs - 1) % runs, at = p * shape.s * size;
                        int c = (int)(p % shape.c);
                        bnk_apply_run run = {formulas[f], streaming, g + at, x + at, fo + at, shape.s,
                                             a[c], b[c], shift[c], offset[c]};
                        double fused[2], separate[2];
                        const void *xr = x + r * shape.s * size, *gr = g + r * shape.s * size;
                        if (f == 0) {
                            bnk_contiguous_moments_and_apply(level, type, xr, shape.s, &fused[0], &fused[1], &run);
                            bnk_contiguous_moments(level, type, xr, shape.s, &separate[0], &separate[1]);
                        } else {
                            bnk_contiguous_gradient_sums_and_apply(level, type, gr, xr, shape.s, means[r], &fused[0],
                                                                   &fused[1], &run);
                            bnk_contiguous_gradient_sums(level, type, gr, xr, shape.s, means[r], &separate[0],
                                                         &separate[1]);
                        }
                        if (memcmp(fused, separate, sizeof fused) != 0)
                            FAIL("level %s: %s: the fused reduction of run %td differs from the separate one\n",
                                 level_names[level], label, r);
                    }
                    bnk_store_fence();
                    if (memcmp(fo, o, (size_t)(length * size)) != 0)
                        FAIL("level %s: %s: the fused kernels' apply differs from bnk_contiguous_apply\n",
                             level_names[level], label);
                }
    }
    free(means);
    free(x);
    free(g);
    free(out);
    free(fused_out);
}

/// Channels-last (x[n][s][c], rows of C values): moments and gradient sums over blocks of
/// rows (one block of every row, and blocks of 7 rows), every apply formula over the whole
/// tensor and from row 1 (an unaligned start), with ordinary and streaming stores.
static void check_channels_last(int level, int type, Shape shape, Results *results) {
    ptrdiff_t rows = (ptrdiff_t)shape.n * shape.s, channels = shape.c, length = rows * channels;
    ptrdiff_t size = (ptrdiff_t)type_size(type), period, vector_period;
    pattern(channels, &period, &vector_period);
    unsigned char *x = allocate((size_t)(length * size)), *g = allocate((size_t)(length * size));
    unsigned char *out = allocate((size_t)(length * size));
    double *scratch = malloc(3 * (size_t)period * sizeof(double));
    double *first = malloc((size_t)channels * sizeof(double)), *second = malloc((size_t)channels * sizeof(double));
    double *ref_mean = malloc((size_t)channels * sizeof(double));
    float *coefficients = malloc(4 * (size_t)period * sizeof(float));
    for (ptrdiff_t i = 0; i < length; i++) {
        store_value(type, x, i, (float)(3.0 + (i % channels) % 4 + 2.0 * uniform()));
        store_value(type, g, i, (float)(0.25 + uniform()));
    }
    char label[96];
    ptrdiff_t block_sizes[2] = {rows, 7};
    for (int k = 0; k < 2; k++) {
        ptrdiff_t block = block_sizes[k];
        for (ptrdiff_t start = 0; start < rows; start += block) {
            ptrdiff_t count = rows - start < block ? rows - start : block;
            const unsigned char *xb = x + start * channels * size, *gb = g + start * channels * size;
            double *scratch_or_null = period <= BNK_SHORT_PERIOD_MAX ? NULL : scratch;
            bnk_interleaved_moments(level, type, xb, count, channels, period, vector_period, scratch_or_null, first, second);
            snprintf(label, sizeof label, "channels-last %s %dx%dx%d moments, rows %td..<%td", type_names[type],
                     shape.n, shape.c, shape.s, start, start + count);
            append(results, label, first, (size_t)channels * sizeof(double));
            append(results, label, second, (size_t)channels * sizeof(double));
            for (ptrdiff_t c = 0; c < channels; c++) {
                double rm2;
                reference_moments(type, xb, c, count, channels, &ref_mean[c], &rm2);
                if (level == BNK_LEVEL_GENERIC) check_moments(label, first[c], second[c], ref_mean[c], rm2, count);
            }
            bnk_interleaved_gradient_sums(level, type, gb, xb, count, channels, period, vector_period, ref_mean,
                                          scratch_or_null, first, second);
            snprintf(label, sizeof label, "channels-last %s %dx%dx%d gradient sums, rows %td..<%td", type_names[type],
                     shape.n, shape.c, shape.s, start, start + count);
            append(results, label, first, (size_t)channels * sizeof(double));
            append(results, label, second, (size_t)channels * sizeof(double));
            if (level == BNK_LEVEL_GENERIC)
                for (ptrdiff_t c = 0; c < channels; c++) {
                    double reference[4];
                    reference_gradient_sums(type, gb, xb, c, count, channels, ref_mean[c], reference);
                    check_gradient_sums(label, first[c], second[c], reference);
                }
        }
    }
    for (int kind = 0; kind < 3; kind++) {
        float a[512], b[512], shift[512], offset[512];
        make_coefficients(kind, shape.c, a, b, shift, offset);
        for (ptrdiff_t j = 0; j < period; j++) {
            coefficients[j] = a[j % channels];
            coefficients[period + j] = b[j % channels];
            coefficients[2 * period + j] = shift[j % channels];
            coefficients[3 * period + j] = offset[j % channels];
        }
        for (int f = 0; f < 3; f++)
            for (int streaming = 0; streaming <= 1; streaming++)
                for (ptrdiff_t first_row = 0; first_row <= (rows > 1 ? 1 : 0); first_row++) {
                    ptrdiff_t at = first_row * channels * size, count = (rows - first_row) * channels;
                    bnk_interleaved_apply(level, type, formulas[f], streaming, g + at, x + at, out + at, count, period,
                                          vector_period, coefficients);
                    bnk_store_fence();
                    snprintf(label, sizeof label, "channels-last %s %dx%dx%d apply %d, coefficients %d, streaming %d, "
                             "from row %td", type_names[type], shape.n, shape.c, shape.s, formulas[f], kind, streaming,
                             first_row);
                    append(results, label, out + at, (size_t)(count * size));
                    if (level == BNK_LEVEL_GENERIC)
                        check_apply(label, type, formulas[f], g + at, x + at, out + at, count, coefficients, period);
                }
    }
    free(x);
    free(g);
    free(out);
    free(scratch);
    free(first);
    free(second);
    free(ref_mean);
    free(coefficients);
}

/// Every check at `level`, with the same random data for every level.
static void run_checks(int level, Results *results) {
    static const Shape shapes[] = {
        {1, 1, 1},   {2, 3, 1},    {3, 5, 7},    {2, 16, 33},  {2, 17, 100}, {1, 33, 65},
        {2, 48, 20}, {2, 64, 40},  {1, 80, 37},  {2, 100, 19}, {1, 129, 50}, {1, 2, 5003},
        {1, 1, 4096}, {3, 7, 129}, {2, 256, 9},  {1, 300, 12},
    };
    random_state = 0x9e3779b97f4a7c15u;
    check_conversions(level, results);
    random_state = 0x2545f4914f6cdd1du;   // the same tensors for every level
    for (int type = 0; type < 3; type++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
            check_channels_first(level, type, shapes[k], results);
            check_channels_last(level, type, shapes[k], results);
        }
}

/// The first difference between a level's results and the generic level's, or none.
static void compare(int level, const Results *base, const Results *other) {
    if (base->count != other->count || base->segments != other->segments) {
        FAIL("level %s: %zu result bytes, the generic level %zu\n", level_names[level], other->count, base->count);
        return;
    }
    if (memcmp(base->bytes, other->bytes, base->count) == 0) return;
    for (size_t k = 0; k < base->segments; k++) {
        size_t start = base->starts[k], end = k + 1 < base->segments ? base->starts[k + 1] : base->count;
        for (size_t i = start; i < end; i++)
            if (base->bytes[i] != other->bytes[i]) {
                FAIL("level %s differs from the generic level: %s, byte %zu of %zu: 0x%02x, generic 0x%02x\n",
                     level_names[level], base->labels[k], i - start, end - start, other->bytes[i], base->bytes[i]);
                break;
            }
    }
}

int main(int argc, char **argv) {
    int required[LEVEL_COUNT] = {0}, absent[LEVEL_COUNT] = {0};
    for (int i = 1; i < argc; i += 2) {
        int level = i + 1 < argc ? atoi(argv[i + 1]) : -1;
        if (level < 0 || level >= LEVEL_COUNT || (strcmp(argv[i], "--require") && strcmp(argv[i], "--absent"))) {
            fprintf(stderr, "usage: %s [--require LEVEL]... [--absent LEVEL]... (LEVEL 0 to %d)\n", argv[0],
                    LEVEL_COUNT - 1);
            return 2;
        }
        (strcmp(argv[i], "--require") == 0 ? required : absent)[level] = 1;
    }
    int highest = bnk_cpu_level();
    printf("kernel check: bnk_cpu_level() = %d (%s)\n", highest, level_names[highest]);
    for (int level = 0; level < LEVEL_COUNT; level++) {
        int supported = bnk_cpu_supports_level(level);
        if (required[level] && !supported) FAIL("level %s is required but not supported\n", level_names[level]);
        if (absent[level] && supported) FAIL("level %s is supported but must be absent\n", level_names[level]);
    }
    Results base = {0};
    run_checks(BNK_LEVEL_GENERIC, &base);
    printf("generic: %zu result bytes; %ld values against the reference, worst error %.3f of its tolerance (%s)\n",
           base.count, reference_checks, worst_error, worst_label);
    int compared = 0;
    for (int level = 1; level < LEVEL_COUNT; level++) {
        if (!bnk_cpu_supports_level(level)) continue;
        Results other = {0};
        run_checks(level, &other);
        int before = failures;
        compare(level, &base, &other);
        printf("%s: %zu result bytes, %s\n", level_names[level], other.count,
               failures == before ? "bit-identical to the generic level" : "DIFFERENT from the generic level");
        compared++;
        free(other.bytes);
        free(other.starts);
        free(other.labels);
    }
    if (compared == 0) printf("no level beside the generic one on this CPU\n");
    if (failures) {
        printf("kernel check FAILED: %d failure(s)\n", failures);
        return 1;
    }
    printf("kernel check passed\n");
    return 0;
}
