// Runs every BatchNormKit kernel on the CPU through cuda_emulation.h and checks it against
// double-precision references: statistics (moments, bitwise reproducibility, counter reset),
// forward apply, backward reduce (sums, counter reset) + apply, and evaluation backward, for
// both layouts and the three storage types over awkward shapes. The kernels do no finalize
// (the host does, in BatchNormND); the apply coefficients here come from the double
// references. First, the kernels' bfloat16 conversions against the CPU backend's (the C
// kernels, linked in) over every float32 bit pattern.
// Build and run with ./run.sh (includes Sources/BatchNormCUDA/Kernels/BatchNormKernels.cu).
#include "cuda_emulation.h"
#include "BatchNormKernels.cu"
#include "CBatchNormKernels.h"

#include <cstdio>
#include <random>
#include <string>

static const int THREADS = BN_THREADS;

// Mirror of KernelGeometry in CUDAKernels.swift.
struct Geometry {
    long long N, C, S;
    bool channels_first;
    Geometry(long long n, long long c, long long s, bool cf) : N(n), C(c), S(s) {
        channels_first = c == 1 ? true : (s == 1 ? false : cf);
    }
    long long K() const { return (S + BN_CHUNK - 1) / BN_CHUNK; }
    long long R() const { return N * S; }
    int TX() const { int w = 1; while (w < std::min<long long>(C, 32)) w *= 2; return w; }
    long long B() const { long long rows = THREADS / TX() * BN_ROWS_PER_THREAD; return (R() + rows - 1) / rows; }
    long long reduction_blocks() const { return channels_first ? N * C * K() : B() * ((C + TX() - 1) / TX()); }
    long long partial_count() const { return channels_first ? N * C * K() : B() * C; }
};

static int failures = 0;
static void expect(bool ok, const std::string& what, double error, double tolerance) {
    if (!ok) { ++failures; std::printf("    FAIL %s: %.3g > %.3g\n", what.c_str(), error, tolerance); }
}
static double rel(double actual, double expected, double floor) {
    return std::fabs(actual - expected) / (std::fabs(expected) + floor);
}

template <typename T> struct Storage;
template <> struct Storage<float> {
    static float store(float v) { return v; }
    static float load(float v) { return v; }
    static const char* name() { return "f32"; }
    static constexpr double tolerance = 2e-5;
};
template <> struct Storage<bn_half> {
    static bn_half store(float v) { return (bn_half)bn_emulated_float_to_half(v); }
    static float load(bn_half v) { return bn_emulated_half_to_float(v); }
    static const char* name() { return "f16"; }
    // Output rounding (half an ulp: 2^-11) with room for the float32 apply.
    static constexpr double tolerance = 4e-3;
};
template <> struct Storage<bn_bfloat16> {
    static bn_bfloat16 store(float v) { return bn_bfloat16{(unsigned short)bn_float_to_bfloat16(v)}; }
    static float load(bn_bfloat16 v) { return bn_bfloat16_to_float(v.bits); }
    static const char* name() { return "bf16"; }
    // Output rounding (half an ulp of an 8-bit significand: 2^-8) plus the float32 apply's error:
    // tight enough that truncating instead of rounding (up to 2^-7) fails.
    static constexpr double tolerance = 1.0 / 256 + 1e-4;
};

template <typename T>
static void run_case(long long N, long long C, long long S, bool channels_first, unsigned seed) {
    const Geometry geo(N, C, S, channels_first);
    const long long E = N * C * S, M = N * S;
    const bool narrow = sizeof(T) == 2;  // float16 or bfloat16
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<T> x(E), g(E);
    std::vector<double> xd(E), gd(E);
    // Element (n, c, s) at storage index idx(n, c, s) in the declared layout.
    auto idx = [&](long long n, long long c, long long s) {
        return channels_first ? (n * C + c) * S + s : (n * S + s) * C + c;
    };
    for (long long i = 0; i < E; ++i) {
        x[i] = Storage<T>::store((float)((narrow ? 10.0 : 1000.0) + (narrow ? 2.0 : 3.0) * normal(rng)));
        g[i] = Storage<T>::store((float)normal(rng));
        xd[i] = Storage<T>::load(x[i]);
        gd[i] = Storage<T>::load(g[i]);
    }
    std::vector<float> params(4 * C);
    for (long long c = 0; c < C; ++c) {
        params[c] = (float)(1 + 0.2 * normal(rng));
        params[C + c] = (float)(0.5 * normal(rng));
        params[2 * C + c] = (float)normal(rng);
        params[3 * C + c] = (float)(1.2 + 0.3 * std::fabs(normal(rng)));
    }
    const double epsilon = 1e-5;

    // Double references, two passes per channel.
    std::vector<double> mu(C, 0), var(C, 0), sum_g(C, 0), sum_gx(C, 0);
    for (long long c = 0; c < C; ++c) {
        for (long long n = 0; n < N; ++n) for (long long s = 0; s < S; ++s) mu[c] += xd[idx(n, c, s)];
        mu[c] /= (double)M;
        for (long long n = 0; n < N; ++n) for (long long s = 0; s < S; ++s) {
            const double d = xd[idx(n, c, s)] - mu[c];
            var[c] += d * d;
            sum_g[c] += gd[idx(n, c, s)];
            sum_gx[c] += gd[idx(n, c, s)] * d;
        }
        var[c] /= (double)M;
    }

    std::vector<double> partials(3 * geo.partial_count() + 3), moments(3 * C), sums(2 * C);
    unsigned counter = 0;
    const int K = (int)geo.K(), TX = geo.TX(), B = (int)geo.B();
    const int Ci = (int)C, Ni = (int)N;
    const char* suffix = Storage<T>::name();
    std::printf("  %s %s N=%lld C=%lld S=%lld -> %s, %lld blocks\n", suffix, channels_first ? "ncdhw" : "ndhwc", N, C,
                S, geo.channels_first ? "cf" : "cl", geo.reduction_blocks());

    auto stats = [&] {
        bn_emulated_launch((unsigned)geo.reduction_blocks(), THREADS, [&] {
            if (geo.channels_first)
                bn_stats_channels_first<T>(x.data(), Ni, Ci, S, K, partials.data(), &counter, moments.data());
            else
                bn_stats_channels_last<T>(x.data(), Ci, geo.R(), TX, B, partials.data(), &counter, moments.data());
        });
    };
    stats();
    expect(counter == 0, "counter reset after stats", counter, 0);
    for (long long c = 0; c < C; ++c) {
        expect(moments[c] == (double)M, "count", moments[c], (double)M);
        const double e1 = rel(moments[C + c], mu[c], 1e-300), e2 = rel(moments[2 * C + c] / M, var[c], 1e-300);
        expect(e1 <= 1e-12, "mean", e1, 1e-12);
        expect(e2 <= 1e-9, "M2", e2, 1e-9);
    }
    const std::vector<double> first = moments;
    stats();
    expect(first == moments, "bitwise reproducible statistics", 1, 0);

    // Forward apply with coefficients [a | b | shift | offset] (a unused) from the references.
    std::vector<float> coeff(4 * C, 0.0f);
    for (long long c = 0; c < C; ++c) {
        const double b = params[c] / std::sqrt(var[c] + epsilon);
        const float shift = (float)mu[c];
        coeff[C + c] = (float)b;
        coeff[2 * C + c] = shift;
        coeff[3 * C + c] = (float)(params[C + c] - b * (mu[c] - (double)shift));
    }
    std::vector<T> y(E);
    const long long width = narrow ? 8 : 4;
    auto apply_blocks = [&](bool) -> unsigned {
        if (geo.channels_first) return (unsigned)(N * C * K);
        const long long units = C % width == 0 ? E / width : E;
        // A small grid (3 blocks) so the grid-stride loop wraps channels many times.
        return (unsigned)std::max<long long>(1, std::min<long long>((units + THREADS - 1) / THREADS, 3));
    };
    auto apply = [&](bool has_g, bool has_x, const T* gp, const T* xp, T* out, const float* table) {
        bn_emulated_launch(apply_blocks(true), THREADS, [&] {
            if (geo.channels_first) {
                if (has_g && has_x) bn_apply_channels_first<T, true, true>(gp, xp, out, Ci, S, K, table);
                else if (has_g) bn_apply_channels_first<T, true, false>(gp, xp, out, Ci, S, K, table);
                else bn_apply_channels_first<T, false, true>(gp, xp, out, Ci, S, K, table);
            } else {
                if (has_g && has_x) bn_apply_channels_last<T, true, true>(gp, xp, out, Ci, E, table);
                else if (has_g) bn_apply_channels_last<T, true, false>(gp, xp, out, Ci, E, table);
                else bn_apply_channels_last<T, false, true>(gp, xp, out, Ci, E, table);
            }
        });
    };
    const double tolerance = Storage<T>::tolerance;
    apply(false, true, nullptr, x.data(), y.data(), coeff.data());
    // Relative error with a floor of 1% of the largest expected magnitude (values near 0).
    std::vector<double> expected_y(E);
    double largest = 0, worst = 0;
    for (long long n = 0; n < N; ++n) for (long long c = 0; c < C; ++c) for (long long s = 0; s < S; ++s) {
        const long long i = idx(n, c, s);
        expected_y[i] = params[c] * (xd[i] - mu[c]) / std::sqrt(var[c] + epsilon) + params[C + c];
        largest = std::max(largest, std::fabs(expected_y[i]));
    }
    for (long long i = 0; i < E; ++i) worst = std::max(worst, rel(Storage<T>::load(y[i]), expected_y[i], 1e-2 * largest));
    expect(worst <= tolerance, "forward y", worst, tolerance);

    // In-place apply (out == x) gives the same values.
    std::vector<T> inplace = x;
    apply(false, true, nullptr, inplace.data(), inplace.data(), coeff.data());
    expect(std::memcmp(inplace.data(), y.data(), E * sizeof(T)) == 0, "in-place apply == copying apply", 1, 0);

    // Backward: reduce around the merged means (as the host passes them), then apply.
    const std::vector<double> mean(moments.begin() + C, moments.begin() + 2 * C);
    bn_emulated_launch((unsigned)geo.reduction_blocks(), THREADS, [&] {
        if (geo.channels_first)
            bn_reduce_channels_first<T>(g.data(), x.data(), Ni, Ci, S, K, mean.data(), partials.data(), &counter,
                                        sums.data());
        else
            bn_reduce_channels_last<T>(g.data(), x.data(), Ci, geo.R(), TX, B, mean.data(), partials.data(), &counter,
                                       sums.data());
    });
    expect(counter == 0, "counter reset after reduce", counter, 0);
    for (long long c = 0; c < C; ++c) {
        const double floor = std::sqrt((double)M) * 1e-3;
        expect(rel(sums[c], sum_g[c], floor) <= 1e-9, "sum g", rel(sums[c], sum_g[c], floor), 1e-9);
        expect(rel(sums[C + c], sum_gx[c], floor) <= 1e-9, "sum g(x-mu)", rel(sums[C + c], sum_gx[c], floor), 1e-9);
    }
    // Backward coefficients from the references: a = γ·invstd, b = −γ·invstd³·Σg(x−μ)/M,
    // shift = float(μ), offset = −a·Σg/M − b·(μ − shift).
    std::vector<float> bcoeff(4 * C, 0.0f);
    for (long long c = 0; c < C; ++c) {
        const double invstd = 1.0 / std::sqrt(var[c] + epsilon);
        const double a = params[c] * invstd, b = -params[c] * invstd * invstd * invstd * sum_gx[c] / M;
        const float shift = (float)mu[c];
        bcoeff[c] = (float)a;
        bcoeff[C + c] = (float)b;
        bcoeff[2 * C + c] = shift;
        bcoeff[3 * C + c] = (float)(-a * sum_g[c] / M - b * (mu[c] - (double)shift));
    }
    std::vector<T> dx(E);
    apply(true, true, g.data(), x.data(), dx.data(), bcoeff.data());
    // Floor: 1% of the largest term a·g = scale·invstd·g (dx cancels to ~0 when M = 2).
    worst = 0;
    largest = 0;
    std::vector<double> expected_dx(E);
    for (long long n = 0; n < N; ++n) for (long long c = 0; c < C; ++c) for (long long s = 0; s < S; ++s) {
        const long long i = idx(n, c, s);
        const double invstd = 1.0 / std::sqrt(var[c] + epsilon), xhat = (xd[i] - mu[c]) * invstd;
        expected_dx[i] = params[c] * invstd / M * (M * gd[i] - sum_g[c] - xhat * sum_gx[c] * invstd);
        largest = std::max(largest, std::fabs(params[c] * invstd * gd[i]));
    }
    for (long long i = 0; i < E; ++i) worst = std::max(worst, rel(Storage<T>::load(dx[i]), expected_dx[i], 1e-2 * largest));
    expect(worst <= tolerance, "backward dx", worst, tolerance);

    // Evaluation backward: dx = a·g only (x not read).
    std::vector<float> eval(4 * C, 0.0f);
    for (long long c = 0; c < C; ++c) eval[c] = (float)(params[c] / std::sqrt(params[3 * C + c] + epsilon));
    apply(true, false, g.data(), nullptr, dx.data(), eval.data());
    worst = 0;
    for (long long n = 0; n < N; ++n) for (long long c = 0; c < C; ++c) for (long long s = 0; s < S; ++s) {
        const long long i = idx(n, c, s);
        worst = std::max(worst, rel(Storage<T>::load(dx[i]), gd[i] * params[c] / std::sqrt(params[3 * C + c] + epsilon), 1e-3));
    }
    expect(worst <= tolerance, "eval dx", worst, tolerance);
}

// The kernels' bfloat16 conversions against the CPU backend's bnk_convert at every level this
// CPU runs (generic integer code, AVX2, AVX-512, vcvtneps2bf16), over all 2^32 float32 bit
// patterns: rounding gives the same bits for every non-NaN input (float32 subnormals become
// signed zeros on both sides); every NaN stays a NaN (the kernels give 0x7fff, what
// cvt.rn.bf16.f32 gives; the CPU keeps sign and payload). Widening: the same float bits for
// all 2^16 bfloat16 patterns.
static void check_bfloat16_conversions() {
    const int top = bnk_cpu_level();
    const long long chunk = 1 << 22;
    std::vector<unsigned> input(chunk);
    std::vector<unsigned short> cpu(chunk), kernel(chunk);
    long long mismatches[4] = {0, 0, 0, 0}, nan_inputs = 0, non_nan_results = 0, flushed = 0;
    for (long long first = 0; first < (1ll << 32); first += chunk) {
        for (long long i = 0; i < chunk; ++i) input[i] = (unsigned)(first + i);
        for (long long i = 0; i < chunk; ++i) {
            kernel[i] = (unsigned short)bn_float_to_bfloat16(__uint_as_float(input[i]));
            const unsigned magnitude = input[i] & 0x7fffffffu;
            if (magnitude > 0x7f800000u) {
                ++nan_inputs;
                if ((kernel[i] & 0x7fffu) <= 0x7f80u) ++non_nan_results;
            } else if (magnitude != 0 && magnitude < 0x00800000u) {
                ++flushed;
            }
        }
        for (int level = 0; level <= top; ++level) {
            bnk_convert(level, BNK_TYPE_FLOAT32, input.data(), BNK_TYPE_BFLOAT16, cpu.data(), chunk);
            for (long long i = 0; i < chunk; ++i)
                if ((input[i] & 0x7fffffffu) <= 0x7f800000u && kernel[i] != cpu[i]) ++mismatches[level];
        }
    }
    for (int level = 0; level <= top; ++level) {
        std::printf("  bf16 rounding vs CPU level %d: %lld mismatches over 2^32 - %lld NaN inputs\n", level,
                    mismatches[level], nan_inputs);
        expect(mismatches[level] == 0, "bf16 rounding == CPU rounding", (double)mismatches[level], 0);
    }
    std::printf("  bf16 rounding: %lld NaN inputs, %lld non-NaN results; %lld float32 subnormal inputs\n",
                nan_inputs, non_nan_results, flushed);
    expect(non_nan_results == 0, "bf16 rounding keeps NaN", (double)non_nan_results, 0);

    std::vector<unsigned short> bits(1 << 16);
    std::vector<float> widened(1 << 16);
    for (unsigned b = 0; b < (1u << 16); ++b) bits[b] = (unsigned short)b;
    long long widen_mismatches = 0;
    for (int level = 0; level <= top; ++level) {
        bnk_convert(level, BNK_TYPE_BFLOAT16, bits.data(), BNK_TYPE_FLOAT32, widened.data(), 1 << 16);
        for (unsigned b = 0; b < (1u << 16); ++b)
            if (__float_as_uint(bn_bfloat16_to_float(b)) != __float_as_uint(widened[b])) ++widen_mismatches;
    }
    std::printf("  bf16 widening vs CPU levels 0...%d: %lld mismatches over 2^16\n", top, widen_mismatches);
    expect(widen_mismatches == 0, "bf16 widening == CPU widening", (double)widen_mismatches, 0);
}

int main() {
    check_bfloat16_conversions();
    struct Shape { long long N, C, S; };
    const Shape shapes[] = {
        {5, 3, 1000},          // the seed example's geometry
        {3, 5, 7 * 9 * 11},    // odd sizes, scalar loads
        {2, 1, 17 * 33 * 65},  // C = 1 (channels-first kernels for both layouts), 3 chunks per plane
        {2, 4, 16384 + 3},     // chunk boundary + odd remainder
        {2, 3, 16384 + 8},     // chunk boundary, 16-byte packs for both types
        {4, 70, 3 * 5 * 7},    // many channels, C % 4 != 0
        {2, 64, 24},           // C % 8 == 0: packed channels-last apply
        {64, 33, 1},           // S = 1 (channels-last kernels for both layouts)
        {1, 3, 2},             // M = 2
        {3, 40, 4096},         // several channels-last row blocks (TX = 32, 2 groups)
    };
    unsigned seed = 1;
    for (const Shape& shape : shapes) {
        for (bool cf : {true, false}) {
            run_case<float>(shape.N, shape.C, shape.S, cf, seed);
            run_case<bn_half>(shape.N, shape.C, shape.S, cf, seed);
            run_case<bn_bfloat16>(shape.N, shape.C, shape.S, cf, seed);
            ++seed;
        }
    }
    std::printf("%s: %d failure(s)\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
