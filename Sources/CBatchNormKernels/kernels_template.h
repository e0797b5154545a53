// The C kernels, written once with clang vector extensions and instantiated by
// CBatchNormKernels.c for each instruction set: before including this file, define
// BNK_TARGET (a function attribute, e.g. __attribute__((target("avx2,fma,f16c"))), or
// empty), BNK_NAME(name) (the instance's name for `name`), BNK_HALF_ISA (how float16 is
// converted: 0 integer code, 1 F16C vcvtph2ps / vcvtps2ph on 8 lanes, 2 their AVX-512
// forms on 16, 3 aarch64 FCVTL / FCVTN on 4), BNK_BFLOAT_ISA (how float is rounded to
// bfloat16: 0 integer code, 1 AVX512-BF16 vcvtneps2bf16, 2 aarch64 FEAT_BF16 BFCVTN) and
// BNK_SUMS_ON_FMA (1 where the reductions' plain sums are
// issued as fma(a, 1, b), which gives the bits of a + b on another execution pipe; see add).
// Not a public header.
//
// Shape legend: N batch, C channels, S spatial size (D·H·W). A channels-first run is one
// channel's values x[n, c, s0..<s1]; a channels-last run is whole rows x[n, s, 0..<C], and
// value j of it belongs to channel j mod C. P (period: lcm(C, 16), or C when that is too
// long to replicate) is the length over which per-channel values are replicated; positions
// 0..<VP (vector_period, a multiple of 16: P, or 16·⌊C/16⌋ when P = C) are processed 16 at
// a time, the rest one by one.
//
// Storage types (BNK_TYPE_*): every kernel takes its data as `const void *` plus the type
// and converts inside its loops: load16/load1 widen float16 and bfloat16 to float exactly,
// store16/store1 round float to them once, to nearest even. Each kernel's entry point
// switches on the type once and calls an always-inlined body with the type as a constant,
// so the inner loops carry no branch on it.
//
// Vectors: bnk_v16f = 16 floats (one AVX-512 register, two AVX2 ones), bnk_v8d = 8 doubles.
// Sums run in double, in a fixed order per call: vector lanes, then the fixed horizontal
// fold bnk_hsum, then the scalar tail. The squares and products of the sums are explicit
// fused multiply-adds (multiply_add: s + a·b rounded once, on every level); contraction is
// otherwise off for the whole translation unit, so every value goes through the same IEEE
// operations in vector lanes and in scalar tails, on every level.

#define BNK_FN static inline __attribute__((always_inline)) BNK_TARGET

// MARK: Storage types

BNK_FN float BNK_NAME(as_float)(uint32_t bits) {
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

BNK_FN uint32_t BNK_NAME(bits)(float f) {
    uint32_t bits;
    __builtin_memcpy(&bits, &f, sizeof bits);
    return bits;
}

/// float16 bits → float, exact: the exponent is rebiased (15 → 127); ±inf and NaN get
/// exponent 255 (NaN keeps its payload and is made quiet, as vcvtph2ps does); subnormals
/// are renormalized by one float subtraction.
BNK_FN float BNK_NAME(half_to_float)(uint16_t h) {
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13, exponent = o & (0x1fu << 23);
    o += 112u << 23;
    if (exponent == 0x1fu << 23) o = (o + (112u << 23)) | ((h & 0x3ffu) != 0 ? 0x00400000u : 0);
    else if (exponent == 0) o = BNK_NAME(bits)(BNK_NAME(as_float)(o + (1u << 23)) - BNK_NAME(as_float)(113u << 23));
    return BNK_NAME(as_float)(o | (uint32_t)(h & 0x8000u) << 16);
}

/// float → float16 bits, rounded to nearest even (as vcvtps2ph with imm8 0): |x| >= 65520
/// overflows to ±inf, NaN stays NaN (quiet, the top 10 payload bits kept), results below
/// 2⁻¹⁴ are subnormal (rounded by adding 0.5 in float, whose rounding is to nearest even),
/// others round with the bias 0xfff + (odd last kept bit).
BNK_FN uint16_t BNK_NAME(float_to_half)(float f) {
    uint32_t x = BNK_NAME(bits)(f), sign = x & 0x80000000u, o;
    x ^= sign;
    if (x >= 143u << 23) o = x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u;
    else if (x < 113u << 23) o = BNK_NAME(bits)(BNK_NAME(as_float)(x) + 0.5f) - (126u << 23);
    else o = (x - (112u << 23) + 0xfffu + ((x >> 13) & 1u)) >> 13;
    return (uint16_t)(o | sign >> 16);
}

/// bfloat16 bits → float, exact: the upper half of a binary32.
BNK_FN float BNK_NAME(bfloat_to_float)(uint16_t h) { return BNK_NAME(as_float)((uint32_t)h << 16); }

/// float → bfloat16 bits, rounded to nearest even, as vcvtneps2bf16 does (so that every
/// level gives the same bits): NaN stays NaN (quiet), zero and float subnormals (|x| < 2⁻¹²⁶)
/// become a zero of the same sign, others round with the bias 0x7fff + (odd last kept bit)
/// (overflowing to ±inf).
BNK_FN uint16_t BNK_NAME(float_to_bfloat)(float f) {
    uint32_t x = BNK_NAME(bits)(f), magnitude = x & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    if (magnitude < 0x00800000u) return (uint16_t)((x >> 16) & 0x8000u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/// The same four conversions on 16 lanes, branch-free (lane masks select the cases).
BNK_FN bnk_v16f BNK_NAME(halves_to_floats)(bnk_v16h h) {
    bnk_v16u u = __builtin_convertvector(h, bnk_v16u);
    bnk_v16u o = (u & 0x7fffu) << 13, exponent = o & (0x1fu << 23);
    o += 112u << 23;
    bnk_v16u special = (bnk_v16u)(exponent == (0x1fu << 23)), tiny = (bnk_v16u)(exponent == 0u);
    bnk_v16u nan = special & (bnk_v16u)((u & 0x3ffu) != 0u);
    o = (o + (special & (112u << 23))) | (nan & 0x00400000u);
    bnk_v16u renormalized = (bnk_v16u)((bnk_v16f)(o + (1u << 23)) - BNK_NAME(as_float)(113u << 23));
    o = (tiny & renormalized) | (~tiny & o);
    return (bnk_v16f)(o | (u & 0x8000u) << 16);
}

BNK_FN bnk_v16h BNK_NAME(floats_to_halves)(bnk_v16f f) {
    bnk_v16u x = (bnk_v16u)f, sign = x & 0x80000000u;
    x ^= sign;
    bnk_v16u nan = (bnk_v16u)(x > 0x7f800000u);
    bnk_v16u special = (nan & (0x7e00u | ((x >> 13) & 0x3ffu))) | (~nan & 0x7c00u);
    bnk_v16u subnormal = (bnk_v16u)((bnk_v16f)x + 0.5f) - (126u << 23);
    bnk_v16u normal = (x - (112u << 23) + 0xfffu + ((x >> 13) & 1u)) >> 13;
    bnk_v16u large = (bnk_v16u)(x >= (143u << 23)), small = (bnk_v16u)(x < (113u << 23));
    bnk_v16u o = (large & special) | (~large & ((small & subnormal) | (~small & normal)));
    return __builtin_convertvector(o | sign >> 16, bnk_v16h);
}

BNK_FN bnk_v16f BNK_NAME(bfloats_to_floats)(bnk_v16h h) {
    return (bnk_v16f)(__builtin_convertvector(h, bnk_v16u) << 16);
}

BNK_FN bnk_v16h BNK_NAME(floats_to_bfloats)(bnk_v16f f) {
    bnk_v16u x = (bnk_v16u)f, magnitude = x & 0x7fffffffu;
    bnk_v16u nan = (bnk_v16u)(magnitude > 0x7f800000u), tiny = (bnk_v16u)(magnitude < 0x00800000u);
    bnk_v16u rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
    bnk_v16u o = (nan & ((x >> 16) | 0x40u)) | (~nan & ((tiny & ((x >> 16) & 0x8000u)) | (~tiny & rounded)));
    return __builtin_convertvector(o, bnk_v16h);
}

/// Sixteen float16 values at p, widened to float.
BNK_FN bnk_v16f BNK_NAME(load_halves)(const uint16_t *p) {
#if BNK_HALF_ISA == 2
    return (bnk_v16f)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif BNK_HALF_ISA == 1
    bnk_v16f v;
    v.lo = (bnk_v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    v.hi = (bnk_v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    return v;
#elif BNK_HALF_ISA == 3
    float16x8_t h0 = vreinterpretq_f16_u16(vld1q_u16(p)), h1 = vreinterpretq_f16_u16(vld1q_u16(p + 8));
    bnk_v16f v;
    v.s0123 = (bnk_v4f)vcvt_f32_f16(vget_low_f16(h0));   // FCVTL
    v.s4567 = (bnk_v4f)vcvt_high_f32_f16(h0);           // FCVTL2
    v.s89ab = (bnk_v4f)vcvt_f32_f16(vget_low_f16(h1));
    v.scdef = (bnk_v4f)vcvt_high_f32_f16(h1);
    return v;
#else
    bnk_v16h h;
    __builtin_memcpy(&h, p, sizeof h);
    return BNK_NAME(halves_to_floats)(h);
#endif
}

/// v rounded to sixteen float16 values, to nearest even.
BNK_FN bnk_v16h BNK_NAME(to_halves)(bnk_v16f v) {
#if BNK_HALF_ISA == 2
    return (bnk_v16h)_mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif BNK_HALF_ISA == 1
    bnk_v16h h;
    h.lo = (bnk_v8h)_mm256_cvtps_ph((__m256)v.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    h.hi = (bnk_v8h)_mm256_cvtps_ph((__m256)v.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return h;
#elif BNK_HALF_ISA == 3
    // FCVTN / FCVTN2, rounding as FPCR says: to nearest even, subnormals kept (the default
    // of Linux and Darwin processes).
    bnk_v16h h;
    h.lo = (bnk_v8h)vcvt_high_f16_f32(vcvt_f16_f32((float32x4_t)v.s0123), (float32x4_t)v.s4567);
    h.hi = (bnk_v8h)vcvt_high_f16_f32(vcvt_f16_f32((float32x4_t)v.s89ab), (float32x4_t)v.scdef);
    return h;
#else
    return BNK_NAME(floats_to_halves)(v);
#endif
}

/// v rounded to sixteen bfloat16 values, to nearest even.
BNK_FN bnk_v16h BNK_NAME(to_bfloats)(bnk_v16f v) {
#if BNK_BFLOAT_ISA == 1
    bnk_v16h h = (bnk_v16h)_mm512_cvtneps_pbh((__m512)v);
    // An empty asm hands the bits on as 16-bit integers: otherwise the compiler stores the
    // instruction's bfloat16-typed result directly, and a non-temporal store of that type
    // was emitted as an ordinary one (vmovaps: the streaming stores of bfloat16 outputs
    // silently read every line into the cache first).
    __asm__("" : "+x"(h));
    return h;
#elif BNK_BFLOAT_ISA == 2
    // BFCVTN / BFCVTN2 round to nearest even but keep float32 subnormals (as bfloat16
    // subnormals), where vcvtneps2bf16 and the integer code flush them to a zero of the same
    // sign: those lanes are replaced by that zero, so that every level gives the same bits.
    bnk_v16h h;
    h.lo = (bnk_v8h)vcvtq_high_bf16_f32(vcvtq_low_bf16_f32((float32x4_t)v.s0123), (float32x4_t)v.s4567);
    h.hi = (bnk_v8h)vcvtq_high_bf16_f32(vcvtq_low_bf16_f32((float32x4_t)v.s89ab), (float32x4_t)v.scdef);
    bnk_v16u x = (bnk_v16u)v;
    bnk_v16h tiny = __builtin_convertvector((bnk_v16u)((x & 0x7fffffffu) < 0x00800000u), bnk_v16h);
    bnk_v16h signed_zero = __builtin_convertvector((x >> 16) & 0x8000u, bnk_v16h);
    return (tiny & signed_zero) | (~tiny & h);
#else
    return BNK_NAME(floats_to_bfloats)(v);
#endif
}

/// Elements i ..< i + 16 of p (storage type `type`) as floats.
BNK_FN bnk_v16f BNK_NAME(load16)(int type, const void *p, ptrdiff_t i) {
    switch (type) {
    case BNK_TYPE_FLOAT16: return BNK_NAME(load_halves)((const uint16_t *)p + i);
    case BNK_TYPE_BFLOAT16: {
        bnk_v16h h;
        __builtin_memcpy(&h, (const uint16_t *)p + i, sizeof h);
        return BNK_NAME(bfloats_to_floats)(h);
    }
    default: {
        bnk_v16f v;
        __builtin_memcpy(&v, (const float *)p + i, sizeof v);
        return v;
    }
    }
}

/// Element i of p (storage type `type`) as a float.
BNK_FN float BNK_NAME(load1)(int type, const void *p, ptrdiff_t i) {
    switch (type) {
    case BNK_TYPE_FLOAT16: return BNK_NAME(half_to_float)(((const uint16_t *)p)[i]);
    case BNK_TYPE_BFLOAT16: return BNK_NAME(bfloat_to_float)(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/// Stores v as elements i ..< i + 16 of p (storage type `type`, rounded to nearest even).
/// With `streaming` (a constant after inlining), a store whose 16 elements start at a
/// multiple of their own size (64 bytes in float32, 32 in the half types) is non-temporal:
/// it goes to memory without reading the line into the cache first (no read for ownership)
/// and without evicting cached data; a store at any other address is an ordinary one. The
/// caller issues bnk_store_fence() before its results are read by another thread, once per
/// thread and job: a fence per run is costly on short runs (figures in the Benchmarks article).
BNK_FN void BNK_NAME(store16)(int type, int streaming, void *p, ptrdiff_t i, bnk_v16f v) {
    if (type == BNK_TYPE_FLOAT32) {
        float *at = (float *)p + i;
        if (streaming && ((uintptr_t)at & 63) == 0) __builtin_nontemporal_store(v, (bnk_v16f *)at);
        else __builtin_memcpy(at, &v, sizeof v);
        return;
    }
    bnk_v16h h = type == BNK_TYPE_FLOAT16 ? BNK_NAME(to_halves)(v) : BNK_NAME(to_bfloats)(v);
    uint16_t *at = (uint16_t *)p + i;
    if (streaming && ((uintptr_t)at & 31) == 0) __builtin_nontemporal_store(h, (bnk_v16h *)at);
    else __builtin_memcpy(at, &h, sizeof h);
}

/// Stores v as element i of p (storage type `type`, rounded to nearest even).
BNK_FN void BNK_NAME(store1)(int type, void *p, ptrdiff_t i, float v) {
    switch (type) {
    case BNK_TYPE_FLOAT16: ((uint16_t *)p)[i] = BNK_NAME(float_to_half)(v); break;
    case BNK_TYPE_BFLOAT16: ((uint16_t *)p)[i] = BNK_NAME(float_to_bfloat)(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/// Calls BODY(T) with the storage type `type` as the constant T (one inlined copy per type).
#define BNK_FOR_TYPE(type, BODY)                          \
    switch (type) {                                       \
    case BNK_TYPE_FLOAT16: BODY(BNK_TYPE_FLOAT16); break;   \
    case BNK_TYPE_BFLOAT16: BODY(BNK_TYPE_BFLOAT16); break; \
    default: BODY(BNK_TYPE_FLOAT32); break;                 \
    }

// MARK: Vector helpers

BNK_FN bnk_v8d BNK_NAME(load8)(const double *p) {
    bnk_v8d v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

BNK_FN void BNK_NAME(store8)(double *p, bnk_v8d v) { __builtin_memcpy(p, &v, sizeof v); }

BNK_FN bnk_v16f BNK_NAME(loadf)(const float *p) {
    bnk_v16f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/// Lanes 0..<8 of v widened to double.
BNK_FN bnk_v8d BNK_NAME(low)(bnk_v16f v) { return __builtin_convertvector(v.lo, bnk_v8d); }

/// Lanes 8..<16 of v widened to double.
BNK_FN bnk_v8d BNK_NAME(high)(bnk_v16f v) { return __builtin_convertvector(v.hi, bnk_v8d); }

/// Σ s[i] in the fixed order ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)).
BNK_FN double BNK_NAME(hsum)(bnk_v8d s) {
    bnk_v4d t = s.lo + s.hi;
    bnk_v2d u = t.lo + t.hi;
    return u.x + u.y;
}

BNK_FN bnk_v8d BNK_NAME(splat8)(double v) { return (bnk_v8d)(v); }

/// 1.0 on 8 lanes, hidden from the optimizer (which would fold fma(a, 1, b) back to a + b).
BNK_FN bnk_v8d BNK_NAME(opaque_one)(void) {
    double one = 1.0;
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(one));
#endif
    return BNK_NAME(splat8)(one);
}

/// a + b, the same bits (a·1 is exact and fma rounds once), computed as fma(a, one, b)
/// where BNK_SUMS_ON_FMA (the AVX-512 levels): on CPUs whose adders and multipliers are
/// separate pipes (AMD Zen) the sums of the reductions then share the multiply pipes. On
/// AVX2 (and NEON) plain adds: there the extra register for `one` makes the 16-register
/// loops spill (figures for both in the Benchmarks article). `one` is opaque_one().
BNK_FN bnk_v8d BNK_NAME(add)(bnk_v8d a, bnk_v8d b, bnk_v8d one) {
#if BNK_SUMS_ON_FMA
    return __builtin_elementwise_fma(a, one, b);
#else
    (void)one;
    return a + b;
#endif
}
BNK_FN bnk_v16f BNK_NAME(splat16)(float v) { return (bnk_v16f)(v); }

/// s + a·b rounded once (fused multiply-add, on 8 lanes): the squares and products of the
/// reductions, one instruction and one rounding instead of two. Every level computes the
/// same bits: where the instance has no FMA instructions (the generic level) the compiler
/// calls the C library's fma, which is correctly rounded too.
BNK_FN bnk_v8d BNK_NAME(multiply_add)(bnk_v8d a, bnk_v8d b, bnk_v8d s) {
    return __builtin_elementwise_fma(a, b, s);
}

/// The same on one value.
BNK_FN double BNK_NAME(multiply_add1)(double a, double b, double s) { return __builtin_fma(a, b, s); }

/// Bytes ahead of the element being read from which the reductions ask for data
/// (see prefetch).
#define BNK_PREFETCH_BYTES 8192

/// Asks for the cache line BNK_PREFETCH_BYTES past element i of p (storage type `type`)
/// into every cache level (prefetcht0; a hint: it never faults, so it may point past the
/// end of the data). The reductions issue one for each 16 values they read: their loops
/// do enough arithmetic per line that the hardware prefetchers alone kept too few lines in
/// flight from DRAM (figures, and the distance's choice, in the Benchmarks article). A plain
/// apply, whose loop is light, gained nothing and has none.
BNK_FN void BNK_NAME(prefetch)(int type, const void *p, ptrdiff_t i) {
    ptrdiff_t size = type == BNK_TYPE_FLOAT32 ? 4 : 2;
    __builtin_prefetch((const void *)((uintptr_t)p + (uintptr_t)(i * size) + BNK_PREFETCH_BYTES), 0, 3);
}

// MARK: Conversion

/// dst[i] = src[i] for i < n, from storage type `from` to `to` (widening exact, narrowing
/// rounded to nearest even).
BNK_FN void BNK_NAME(convert_impl)(int from, const void *src, int to, void *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) BNK_NAME(store16)(to, 0, dst, i, BNK_NAME(load16)(from, src, i));
    for (; i < n; i++) BNK_NAME(store1)(to, dst, i, BNK_NAME(load1)(from, src, i));
}

BNK_TARGET static void BNK_NAME(convert)(int from, const void *src, int to, void *dst, ptrdiff_t n) {
    switch (to) {
#define BNK_BODY(T) BNK_NAME(convert_impl)(T, src, BNK_TYPE_FLOAT16, dst, n)
    case BNK_TYPE_FLOAT16: BNK_FOR_TYPE(from, BNK_BODY) break;
#undef BNK_BODY
#define BNK_BODY(T) BNK_NAME(convert_impl)(T, src, BNK_TYPE_BFLOAT16, dst, n)
    case BNK_TYPE_BFLOAT16: BNK_FOR_TYPE(from, BNK_BODY) break;
#undef BNK_BODY
#define BNK_BODY(T) BNK_NAME(convert_impl)(T, src, BNK_TYPE_FLOAT32, dst, n)
    default: BNK_FOR_TYPE(from, BNK_BODY) break;
#undef BNK_BODY
    }
}

// MARK: Apply

/// F(g, x) per formula on 16 lanes read at element i: forward b·(x − shift) + offset;
/// gradient a·g + offset; gradient and input (a·g + b·(x − shift)) + offset. All in float.
BNK_FN bnk_v16f BNK_NAME(formula16)(int formula, int type, const void *g, const void *x, ptrdiff_t i,
                                    bnk_v16f a, bnk_v16f b, bnk_v16f shift, bnk_v16f offset) {
    switch (formula) {
    case BNK_APPLY_FORWARD: return b * (BNK_NAME(load16)(type, x, i) - shift) + offset;
    case BNK_APPLY_GRADIENT: return a * BNK_NAME(load16)(type, g, i) + offset;
    default: return (a * BNK_NAME(load16)(type, g, i) + b * (BNK_NAME(load16)(type, x, i) - shift)) + offset;
    }
}

/// The same on element i alone.
BNK_FN float BNK_NAME(formula1)(int formula, int type, const void *g, const void *x, ptrdiff_t i, float a,
                                float b, float shift, float offset) {
    switch (formula) {
    case BNK_APPLY_FORWARD: return b * (BNK_NAME(load1)(type, x, i) - shift) + offset;
    case BNK_APPLY_GRADIENT: return a * BNK_NAME(load1)(type, g, i) + offset;
    default: return (a * BNK_NAME(load1)(type, g, i) + b * (BNK_NAME(load1)(type, x, i) - shift)) + offset;
    }
}

/// run->out[i] = F(run->g[i], run->x[i]) for the one element i (storage type T).
BNK_FN void BNK_NAME(apply1)(const int F, const int T, const bnk_apply_run *run, ptrdiff_t i) {
    BNK_NAME(store1)(T, run->out, i,
                     BNK_NAME(formula1)(F, T, run->g, run->x, i, run->a, run->b, run->shift, run->offset));
}

/// The same for the 16 elements i ..< i + 16 (a vector store: non-temporal when ST and
/// aligned, see store16).
BNK_FN void BNK_NAME(apply16)(const int F, const int T, const int ST, const bnk_apply_run *run, ptrdiff_t i) {
    BNK_NAME(store16)(T, ST, run->out, i,
                      BNK_NAME(formula16)(F, T, run->g, run->x, i, BNK_NAME(splat16)(run->a),
                                          BNK_NAME(splat16)(run->b), BNK_NAME(splat16)(run->shift),
                                          BNK_NAME(splat16)(run->offset)));
}

/// The first elements of a run one by one: none with ordinary stores; streaming, those
/// before the first address of run->out aligned for non-temporal stores (16 elements'
/// size, see store16), so that every later vector store streams. Returns how many.
BNK_FN ptrdiff_t BNK_NAME(apply_head)(const int F, const int T, const int ST, const bnk_apply_run *run) {
    if (!ST) return 0;
    uintptr_t size = T == BNK_TYPE_FLOAT32 ? 4 : 2, mask = 16 * size - 1;
    ptrdiff_t head = (ptrdiff_t)((((uintptr_t)run->out + mask) & ~mask) - (uintptr_t)run->out) / (ptrdiff_t)size;
    if (head > run->n) head = run->n;
    for (ptrdiff_t i = 0; i < head; i++) BNK_NAME(apply1)(F, T, run, i);
    return head;
}

/// The elements i ..< run->n of a run, 16 at a time, then the tail one by one.
BNK_FN void BNK_NAME(apply_rest)(const int F, const int T, const int ST, const bnk_apply_run *run, ptrdiff_t i) {
    for (; i + 16 <= run->n; i += 16) BNK_NAME(apply16)(F, T, ST, run, i);
    for (; i < run->n; i++) BNK_NAME(apply1)(F, T, run, i);
}

/// out[i] = F(g[i], x[i]) for i < n with scalar coefficients (broadcast to every lane):
/// apply_head, then apply_rest.
BNK_FN void BNK_NAME(contiguous_apply_impl)(const int F, const int T, const int ST, const bnk_apply_run *run) {
    BNK_NAME(apply_rest)(F, T, ST, run, BNK_NAME(apply_head)(F, T, ST, run));
}

/// One step of an apply run interleaved with a reduction (nothing when run is NULL): the
/// 32 values at *at when the run has that many left, *at advanced past them.
BNK_FN void BNK_NAME(apply_step)(const int F, const int T, const int ST, const bnk_apply_run *run, ptrdiff_t *at) {
    if (run && *at + 32 <= run->n) {
        BNK_NAME(apply16)(F, T, ST, run, *at);
        BNK_NAME(apply16)(F, T, ST, run, *at + 16);
        *at += 32;
    }
}

/// out[i] = F(g[i], x[i]) for i < length with coefficients a[j], b[j], shift[j], offset[j]
/// of position j = i mod P (replicated: coefficients = a[0..<P] b[0..<P] shift[0..<P]
/// offset[0..<P]); chunks strictly in order.
BNK_FN void BNK_NAME(interleaved_apply_impl)(int formula, int type, int streaming, const void *g, const void *x,
                                             void *out, ptrdiff_t length, ptrdiff_t period, ptrdiff_t vector_period,
                                             const float *coefficients) {
    const float *a = coefficients, *b = a + period, *shift = b + period, *offset = shift + period;
    for (ptrdiff_t start = 0; start < length; start += period) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16)
            BNK_NAME(store16)(type, streaming, out, start + j,
                              BNK_NAME(formula16)(formula, type, g, x, start + j, BNK_NAME(loadf)(a + j),
                                                  BNK_NAME(loadf)(b + j), BNK_NAME(loadf)(shift + j),
                                                  BNK_NAME(loadf)(offset + j)));
        for (; j < count; j++)
            BNK_NAME(store1)(type, out, start + j,
                             BNK_NAME(formula1)(formula, type, g, x, start + j, a[j], b[j], shift[j], offset[j]));
    }
}

/// interleaved_apply_impl for a short period P = 16·V (V <= 8): the coefficients of
/// positions 0..<P stay in registers for the whole run; whole chunks of P values, then the
/// partial one (length mod P values, whole rows) one value at a time. The same formulas,
/// so the same float results. V is a constant after inlining.
BNK_FN void BNK_NAME(short_apply)(int formula, int type, int streaming, const void *g, const void *x, void *out,
                                  ptrdiff_t length, const int V, const float *coefficients) {
    ptrdiff_t P = 16 * V;
    const float *a = coefficients, *b = a + P, *shift = b + P, *offset = shift + P;
    bnk_v16f av[8], bv[8], sv[8], ov[8];
    for (int v = 0; v < V; v++) {
        av[v] = BNK_NAME(loadf)(a + 16 * v);
        bv[v] = BNK_NAME(loadf)(b + 16 * v);
        sv[v] = BNK_NAME(loadf)(shift + 16 * v);
        ov[v] = BNK_NAME(loadf)(offset + 16 * v);
    }
    ptrdiff_t i = 0;
    for (; i + P <= length; i += P)
        for (int v = 0; v < V; v++) {
            ptrdiff_t at = i + 16 * v;
            BNK_NAME(store16)(type, streaming, out, at,
                              BNK_NAME(formula16)(formula, type, g, x, at, av[v], bv[v], sv[v], ov[v]));
        }
    for (ptrdiff_t j = 0; i + j < length; j++)
        BNK_NAME(store1)(type, out, i + j,
                         BNK_NAME(formula1)(formula, type, g, x, i + j, a[j], b[j], shift[j], offset[j]));
}

/// interleaved_apply_impl, or short_apply when the period P is at most 128.
BNK_FN void BNK_NAME(interleaved_apply_typed)(int formula, int type, int streaming, const void *g, const void *x,
                                              void *out, ptrdiff_t length, ptrdiff_t period,
                                              ptrdiff_t vector_period, const float *coefficients) {
    switch (period) {
#define BNK_SHORT_APPLY(V) \
    case 16 * V: BNK_NAME(short_apply)(formula, type, streaming, g, x, out, length, V, coefficients); break;
    BNK_SHORT_APPLY(1) BNK_SHORT_APPLY(2) BNK_SHORT_APPLY(3) BNK_SHORT_APPLY(4)
    BNK_SHORT_APPLY(5) BNK_SHORT_APPLY(6) BNK_SHORT_APPLY(7) BNK_SHORT_APPLY(8)
#undef BNK_SHORT_APPLY
    default:
        BNK_NAME(interleaved_apply_impl)(formula, type, streaming, g, x, out, length, period, vector_period,
                                         coefficients);
        break;
    }
}

/// Calls BODY(F, T) with the formula and the storage type as constants.
#define BNK_FOR_FORMULA_AND_TYPE(formula, type, BODY)                  \
    switch (formula) {                                                 \
    case BNK_APPLY_FORWARD: {                                          \
        const int F = BNK_APPLY_FORWARD;                               \
        BNK_FOR_TYPE(type, BODY)                                       \
        break;                                                         \
    }                                                                  \
    case BNK_APPLY_GRADIENT: {                                         \
        const int F = BNK_APPLY_GRADIENT;                              \
        BNK_FOR_TYPE(type, BODY)                                       \
        break;                                                         \
    }                                                                  \
    default: {                                                         \
        const int F = BNK_APPLY_GRADIENT_AND_INPUT;                    \
        BNK_FOR_TYPE(type, BODY)                                       \
        break;                                                         \
    }                                                                  \
    }

/// Calls BODY(F, T) with streaming (ST) as a constant too.
#define BNK_FOR_APPLY(formula, type, streaming, BODY)           \
    if (streaming) {                                            \
        const int ST = 1;                                       \
        BNK_FOR_FORMULA_AND_TYPE(formula, type, BODY)           \
    } else {                                                    \
        const int ST = 0;                                       \
        BNK_FOR_FORMULA_AND_TYPE(formula, type, BODY)           \
    }

BNK_TARGET static void BNK_NAME(contiguous_apply)(int formula, int type, int streaming, const void *g,
                                                   const void *x, void *out, ptrdiff_t n, float a, float b,
                                                   float shift, float offset) {
    const bnk_apply_run run = {formula, streaming, g, x, out, n, a, b, shift, offset};
#define BNK_BODY(T) BNK_NAME(contiguous_apply_impl)(F, T, ST, &run)
    BNK_FOR_APPLY(formula, type, streaming, BNK_BODY)
#undef BNK_BODY
}

BNK_TARGET static void BNK_NAME(interleaved_apply)(int formula, int type, int streaming, const void *g,
                                                    const void *x, void *out, ptrdiff_t length, ptrdiff_t period,
                                                    ptrdiff_t vector_period, const float *coefficients) {
#define BNK_BODY(T) \
    BNK_NAME(interleaved_apply_typed)(F, T, ST, g, x, out, length, period, vector_period, coefficients)
    BNK_FOR_APPLY(formula, type, streaming, BNK_BODY)
#undef BNK_BODY
}

// MARK: Statistics

/// Moments of one channels-first run of n >= 1 values, in double, in one pass shifted by
/// its first value k = x[0] (a value of the channel, so the shifted sums do not cancel
/// badly; the same scheme as interleaved_moments):
///   d = x[i] − k;  s1 = Σ_{i<n} d;  s2 = Σ_{i<n} d²;
///   mean = k + s1 / n;  m2 = max(0, s2 − s1·(s1 / n)).
/// One pass rather than two (mean, then squared deviations): it reads the data once, and
/// was faster from every memory level (figures in the Benchmarks article).
/// With an apply run (F, ST constants; run NULL for none): its head, then 32 of its values
/// after each 32 of x (while it has 32 left), then the rest of it (see apply_head,
/// apply_rest). The moments do not depend on it.
BNK_FN void BNK_NAME(contiguous_moments_impl)(int type, const void *x, ptrdiff_t n, double *mean_out,
                                              double *m2_out, const int F, const int ST, const bnk_apply_run *run) {
    ptrdiff_t at = run ? BNK_NAME(apply_head)(F, type, ST, run) : 0;
    double k = (double)BNK_NAME(load1)(type, x, 0);
    bnk_v8d kv = BNK_NAME(splat8)(k);
    bnk_v8d a0 = BNK_NAME(splat8)(0), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    bnk_v8d one = BNK_NAME(opaque_one)(), minus_k = -kv;
    ptrdiff_t i = 0;
    // Four vector accumulators per sum (32 values per turn), then 16, then scalars. In the
    // main loop the shifts and the plain sums go through add (the same bits; see add).
    for (; i + 32 <= n; i += 32) {
        BNK_NAME(prefetch)(type, x, i);
        BNK_NAME(prefetch)(type, x, i + 16);
        bnk_v16f v = BNK_NAME(load16)(type, x, i), w = BNK_NAME(load16)(type, x, i + 16);
        bnk_v8d d0 = BNK_NAME(add)(BNK_NAME(low)(v), minus_k, one);
        bnk_v8d d1 = BNK_NAME(add)(BNK_NAME(high)(v), minus_k, one);
        bnk_v8d d2 = BNK_NAME(add)(BNK_NAME(low)(w), minus_k, one);
        bnk_v8d d3 = BNK_NAME(add)(BNK_NAME(high)(w), minus_k, one);
        a0 = BNK_NAME(add)(d0, a0, one);
        a1 = BNK_NAME(add)(d1, a1, one);
        a2 = BNK_NAME(add)(d2, a2, one);
        a3 = BNK_NAME(add)(d3, a3, one);
        b0 = BNK_NAME(multiply_add)(d0, d0, b0);
        b1 = BNK_NAME(multiply_add)(d1, d1, b1);
        b2 = BNK_NAME(multiply_add)(d2, d2, b2);
        b3 = BNK_NAME(multiply_add)(d3, d3, b3);
        BNK_NAME(apply_step)(F, type, ST, run, &at);
    }
    if (i + 16 <= n) {
        bnk_v16f v = BNK_NAME(load16)(type, x, i);
        bnk_v8d d0 = BNK_NAME(low)(v) - kv, d1 = BNK_NAME(high)(v) - kv;
        a0 += d0;
        a1 += d1;
        b0 = BNK_NAME(multiply_add)(d0, d0, b0);
        b1 = BNK_NAME(multiply_add)(d1, d1, b1);
        i += 16;
    }
    double s1 = BNK_NAME(hsum)((a0 + a2) + (a1 + a3)), s2 = BNK_NAME(hsum)((b0 + b2) + (b1 + b3));
    for (; i < n; i++) {
        double d = (double)BNK_NAME(load1)(type, x, i) - k;
        s1 += d;
        s2 = BNK_NAME(multiply_add1)(d, d, s2);
    }
    double count = (double)n, centered = s2 - s1 * (s1 / count);
    *mean_out = k + s1 / count;
    *m2_out = centered > 0 ? centered : 0;
    if (run) BNK_NAME(apply_rest)(F, type, ST, run, at);
}

BNK_TARGET static void BNK_NAME(contiguous_moments)(int type, const void *x, ptrdiff_t n, double *mean_out,
                                                     double *m2_out) {
#define BNK_BODY(T) BNK_NAME(contiguous_moments_impl)(T, x, n, mean_out, m2_out, 0, 0, NULL)
    BNK_FOR_TYPE(type, BNK_BODY)
#undef BNK_BODY
}

BNK_TARGET static void BNK_NAME(contiguous_moments_and_apply)(int type, const void *x, ptrdiff_t n,
                                                               double *mean_out, double *m2_out,
                                                               const bnk_apply_run *run) {
    const bnk_apply_run local = *run;
#define BNK_BODY(T) BNK_NAME(contiguous_moments_impl)(T, x, n, mean_out, m2_out, F, ST, &local)
    BNK_FOR_APPLY(local.formula, type, local.streaming, BNK_BODY)
#undef BNK_BODY
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
BNK_FN void BNK_NAME(replicate_first_row)(int type, const void *x, ptrdiff_t channels, ptrdiff_t period,
                                          double *k) {
    for (ptrdiff_t j = 0, c = 0; j < period; j++) {
        k[j] = (double)BNK_NAME(load1)(type, x, c);
        c = c + 1 == channels ? 0 : c + 1;
    }
}

/// Folds the per-position shifted sums s1, s2 (P each) into channels and finishes the
/// block's moments: mean[c] = x[c] + s1[c] / rows; m2[c] = max(0, s2[c] − s1[c]·(s1[c] / rows)).
BNK_FN void BNK_NAME(finish_moments)(int type, const void *x, ptrdiff_t rows, ptrdiff_t channels,
                                     ptrdiff_t period, double *s1, double *s2, double *mean, double *m2) {
    BNK_NAME(fold)(s1, channels, period, mean);
    BNK_NAME(fold)(s2, channels, period, m2);
    double n = (double)rows;
    for (ptrdiff_t c = 0; c < channels; c++) {
        double sum = mean[c], centered = m2[c] - sum * (sum / n);
        mean[c] = (double)BNK_NAME(load1)(type, x, c) + sum / n;
        m2[c] = centered > 0 ? centered : 0;
    }
}

/// Adds one chunk of P = 16·V values starting at x[i] to an accumulator set of
/// short_moments: d = x − k; a1 += d; a2 += d², lane by lane (k, a1, a2: 2·V vectors of
/// doubles).
BNK_FN void BNK_NAME(short_moments_chunk)(int type, const void *x, ptrdiff_t i, const int V, const bnk_v8d *k,
                                          bnk_v8d *a1, bnk_v8d *a2) {
    for (int v = 0; v < V; v++) {
        BNK_NAME(prefetch)(type, x, i + 16 * v);
        bnk_v16f w = BNK_NAME(load16)(type, x, i + 16 * v);
        bnk_v8d lo = BNK_NAME(low)(w) - k[2 * v], hi = BNK_NAME(high)(w) - k[2 * v + 1];
        a1[2 * v] += lo;
        a1[2 * v + 1] += hi;
        a2[2 * v] = BNK_NAME(multiply_add)(lo, lo, a2[2 * v]);
        a2[2 * v + 1] = BNK_NAME(multiply_add)(hi, hi, a2[2 * v + 1]);
    }
}

/// out[8·v ..< 8·v + 8] = ((sets[0][v] + sets[1][v]) + ..) + sets[T − 1][v] for v < count.
BNK_FN void BNK_NAME(store_sets)(bnk_v8d (*sets)[8], const int T, const int count, double *out) {
    for (int v = 0; v < count; v++) {
        bnk_v8d sum = sets[0][v];
        for (int t = 1; t < T; t++) sum += sets[t][v];
        BNK_NAME(store8)(out + 8 * v, sum);
    }
}

/// interleaved_moments for a short period P = 16·V (V <= 4): the same shifted sums with
/// the per-position accumulators in registers for the whole block. Chunks of P values go
/// round-robin to T independent accumulator sets (chunk q to set q mod T, for enough
/// independent additions when V is small; the < T whole chunks left over go to set 0),
/// the sets are added in order 0, 1, .., T − 1, and the last partial chunk (length mod P
/// values, whole rows) is added one value at a time. V and T are constants after
/// inlining; k and the position sums live on the stack (P <= BNK_SHORT_PERIOD_MAX).
BNK_FN void BNK_NAME(short_moments)(int type, const void *x, ptrdiff_t rows, ptrdiff_t channels, const int V,
                                    const int T, double *mean, double *m2) {
    ptrdiff_t P = 16 * V, length = rows * channels;
    double k[BNK_SHORT_PERIOD_MAX], s1[BNK_SHORT_PERIOD_MAX], s2[BNK_SHORT_PERIOD_MAX];
    BNK_NAME(replicate_first_row)(type, x, channels, P, k);
    bnk_v8d kv[8], a1[4][8], a2[4][8];
    for (int v = 0; v < 2 * V; v++) kv[v] = BNK_NAME(load8)(k + 8 * v);
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 2 * V; v++) a1[t][v] = a2[t][v] = BNK_NAME(splat8)(0);
    ptrdiff_t i = 0;
    for (; i + T * P <= length; i += T * P)
        for (int t = 0; t < T; t++) BNK_NAME(short_moments_chunk)(type, x, i + t * P, V, kv, a1[t], a2[t]);
    for (; i + P <= length; i += P) BNK_NAME(short_moments_chunk)(type, x, i, V, kv, a1[0], a2[0]);
    BNK_NAME(store_sets)(a1, T, 2 * V, s1);
    BNK_NAME(store_sets)(a2, T, 2 * V, s2);
    for (ptrdiff_t j = 0; i + j < length; j++) {
        double d = (double)BNK_NAME(load1)(type, x, i + j) - k[j];
        s1[j] += d;
        s2[j] = BNK_NAME(multiply_add1)(d, d, s2[j]);
    }
    BNK_NAME(finish_moments)(type, x, rows, channels, P, s1, s2, mean, m2);
}

/// The pairs of whole chunks (p + u·P, r + u·P) for u < U of interleaved_moments_impl:
/// per position j < P, for u = 0, 1, .., U − 1 in order, with d = x − k[j] of each chunk,
/// s1[j] = (s1[j] + d_first) + d_second;  s2[j] = fma(d_second, d_second, fma(d_first, d_first, s2[j])).
/// The sums are loaded and stored once per U pairs instead of once per pair; the additions
/// per position are the same, in the same order, as U calls with U = 1 (the same bits);
/// fewer loads and stores of the sums make it faster (figures in the Benchmarks article).
/// U is a constant after inlining.
BNK_FN void BNK_NAME(moment_pairs)(int type, const void *x, ptrdiff_t p, ptrdiff_t r, ptrdiff_t period,
                                   ptrdiff_t vector_period, const int U, const double *k, double *s1, double *s2) {
    ptrdiff_t j = 0;
    for (; j < vector_period; j += 16) {
        bnk_v8d k0 = BNK_NAME(load8)(k + j), k1 = BNK_NAME(load8)(k + j + 8);
        bnk_v8d t0 = BNK_NAME(load8)(s1 + j), t1 = BNK_NAME(load8)(s1 + j + 8);
        bnk_v8d q0 = BNK_NAME(load8)(s2 + j), q1 = BNK_NAME(load8)(s2 + j + 8);
        for (int u = 0; u < U; u++) {
            ptrdiff_t first = p + u * period + j, second = r + u * period + j;
            BNK_NAME(prefetch)(type, x, first);
            BNK_NAME(prefetch)(type, x, second);
            bnk_v16f v = BNK_NAME(load16)(type, x, first), w = BNK_NAME(load16)(type, x, second);
            bnk_v8d a0 = BNK_NAME(low)(v) - k0, b0 = BNK_NAME(high)(v) - k1;
            bnk_v8d a1 = BNK_NAME(low)(w) - k0, b1 = BNK_NAME(high)(w) - k1;
            t0 = (t0 + a0) + a1;
            t1 = (t1 + b0) + b1;
            q0 = BNK_NAME(multiply_add)(a1, a1, BNK_NAME(multiply_add)(a0, a0, q0));
            q1 = BNK_NAME(multiply_add)(b1, b1, BNK_NAME(multiply_add)(b0, b0, q1));
        }
        BNK_NAME(store8)(s1 + j, t0);
        BNK_NAME(store8)(s1 + j + 8, t1);
        BNK_NAME(store8)(s2 + j, q0);
        BNK_NAME(store8)(s2 + j + 8, q1);
    }
    for (; j < period; j++)
        for (int u = 0; u < U; u++) {
            double d0 = (double)BNK_NAME(load1)(type, x, p + u * period + j) - k[j];
            double d1 = (double)BNK_NAME(load1)(type, x, r + u * period + j) - k[j];
            s1[j] = (s1[j] + d0) + d1;
            s2[j] = BNK_NAME(multiply_add1)(d1, d1, BNK_NAME(multiply_add1)(d0, d0, s2[j]));
        }
}

/// Moments of each channel over one channels-last block of `rows` >= 1 whole rows
/// (x[r·C + c], length rows·C), in double, in one pass shifted by the block's first row
/// k[c] = x[c] (a value of the channel, so the shifted sums do not cancel badly):
///   d = x[r·C + c] − k[c];  s1[c] = Σ_r d;  s2[c] = Σ_r d²;
///   mean[c] = k[c] + s1[c] / rows;  m2[c] = max(0, s2[c] − s1[c]·(s1[c] / rows)).
/// The sums run per pattern position j < P (j mod C = c; k replicated to P positions).
/// With h = ⌊chunks / 2⌋, whole chunks q and h + q go in pairs, acc[j] = (acc[j] + d_q) +
/// d_{h+q} for q < h: two sequential streams (faster from DRAM than tiles of four adjacent
/// chunks; figures in the Benchmarks article), four pairs per pass over the positions
/// (moment_pairs). The odd chunk and the partial one follow one at a time;
/// positions are then folded into channels with fold.
/// scratch holds 3·P doubles (unused, and may be NULL, when P <= BNK_SHORT_PERIOD_MAX:
/// short_moments).
BNK_FN void BNK_NAME(interleaved_moments_impl)(int type, const void *x, ptrdiff_t rows, ptrdiff_t channels,
                                               ptrdiff_t period, ptrdiff_t vector_period, double *scratch,
                                               double *mean, double *m2) {
    // Short periods keep the per-position sums in registers (see short_moments).
    switch (period) {
    case 16: BNK_NAME(short_moments)(type, x, rows, channels, 1, 4, mean, m2); return;
    case 32: BNK_NAME(short_moments)(type, x, rows, channels, 2, 2, mean, m2); return;
    case 48: BNK_NAME(short_moments)(type, x, rows, channels, 3, 1, mean, m2); return;
    case 64: BNK_NAME(short_moments)(type, x, rows, channels, 4, 1, mean, m2); return;
    default: break;
    }
    double *k = scratch, *s1 = scratch + period, *s2 = scratch + 2 * period;
    ptrdiff_t length = rows * channels;
    BNK_NAME(replicate_first_row)(type, x, channels, period, k);
    __builtin_memset(s1, 0, 2 * (size_t)period * sizeof(double));
    // Pairs of whole chunks (q, h + q), four pairs per pass over the positions, then one.
    ptrdiff_t half = length / period / 2, q = 0;
    for (; q + 4 <= half; q += 4)
        BNK_NAME(moment_pairs)(type, x, q * period, (half + q) * period, period, vector_period, 4, k, s1, s2);
    for (; q < half; q++)
        BNK_NAME(moment_pairs)(type, x, q * period, (half + q) * period, period, vector_period, 1, k, s1, s2);
    // The last whole chunk when their number is odd, then the partial one.
    ptrdiff_t start = 2 * half * period;
    while (start < length) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            bnk_v16f v = BNK_NAME(load16)(type, x, start + j);
            bnk_v8d a = BNK_NAME(low)(v) - BNK_NAME(load8)(k + j), b = BNK_NAME(high)(v) - BNK_NAME(load8)(k + j + 8);
            BNK_NAME(store8)(s1 + j, BNK_NAME(load8)(s1 + j) + a);
            BNK_NAME(store8)(s1 + j + 8, BNK_NAME(load8)(s1 + j + 8) + b);
            BNK_NAME(store8)(s2 + j, BNK_NAME(multiply_add)(a, a, BNK_NAME(load8)(s2 + j)));
            BNK_NAME(store8)(s2 + j + 8, BNK_NAME(multiply_add)(b, b, BNK_NAME(load8)(s2 + j + 8)));
        }
        for (; j < count; j++) {
            double d = (double)BNK_NAME(load1)(type, x, start + j) - k[j];
            s1[j] += d;
            s2[j] = BNK_NAME(multiply_add1)(d, d, s2[j]);
        }
        start += period;
    }
    BNK_NAME(finish_moments)(type, x, rows, channels, period, s1, s2, mean, m2);
}

BNK_TARGET static void BNK_NAME(interleaved_moments)(int type, const void *x, ptrdiff_t rows, ptrdiff_t channels,
                                                      ptrdiff_t period, ptrdiff_t vector_period, double *scratch,
                                                      double *mean, double *m2) {
#define BNK_BODY(T) BNK_NAME(interleaved_moments_impl)(T, x, rows, channels, period, vector_period, scratch, mean, m2)
    BNK_FOR_TYPE(type, BNK_BODY)
#undef BNK_BODY
}

// MARK: Gradient reduction

/// sum_g = Σ_{i<n} g[i];  sum_gx = Σ_{i<n} g[i]·(x[i] − mean)  (one pass, double), with an
/// apply run interleaved as in contiguous_moments_impl.
BNK_FN void BNK_NAME(contiguous_gradient_sums_impl)(int type, const void *g, const void *x, ptrdiff_t n,
                                                    double mean, double *sum_g, double *sum_gx, const int F,
                                                    const int ST, const bnk_apply_run *run) {
    ptrdiff_t at = run ? BNK_NAME(apply_head)(F, type, ST, run) : 0;
    bnk_v8d mu = BNK_NAME(splat8)(mean), minus_mu = -mu, one = BNK_NAME(opaque_one)();
    bnk_v8d s0 = BNK_NAME(splat8)(0), s1 = s0, s2 = s0, s3 = s0, p0 = s0, p1 = s0, p2 = s0, p3 = s0;
    ptrdiff_t i = 0;
    // The main loop's plain sums and centerings go through add (the same bits), as in
    // contiguous_moments_impl.
    for (; i + 32 <= n; i += 32) {
        BNK_NAME(prefetch)(type, g, i);
        BNK_NAME(prefetch)(type, x, i);
        BNK_NAME(prefetch)(type, g, i + 16);
        BNK_NAME(prefetch)(type, x, i + 16);
        bnk_v16f gv = BNK_NAME(load16)(type, g, i), xv = BNK_NAME(load16)(type, x, i);
        bnk_v16f gw = BNK_NAME(load16)(type, g, i + 16), xw = BNK_NAME(load16)(type, x, i + 16);
        bnk_v8d g0 = BNK_NAME(low)(gv), g1 = BNK_NAME(high)(gv), g2 = BNK_NAME(low)(gw), g3 = BNK_NAME(high)(gw);
        s0 = BNK_NAME(add)(g0, s0, one);
        s1 = BNK_NAME(add)(g1, s1, one);
        s2 = BNK_NAME(add)(g2, s2, one);
        s3 = BNK_NAME(add)(g3, s3, one);
        p0 = BNK_NAME(multiply_add)(g0, BNK_NAME(add)(BNK_NAME(low)(xv), minus_mu, one), p0);
        p1 = BNK_NAME(multiply_add)(g1, BNK_NAME(add)(BNK_NAME(high)(xv), minus_mu, one), p1);
        p2 = BNK_NAME(multiply_add)(g2, BNK_NAME(add)(BNK_NAME(low)(xw), minus_mu, one), p2);
        p3 = BNK_NAME(multiply_add)(g3, BNK_NAME(add)(BNK_NAME(high)(xw), minus_mu, one), p3);
        BNK_NAME(apply_step)(F, type, ST, run, &at);
    }
    if (i + 16 <= n) {
        bnk_v16f gv = BNK_NAME(load16)(type, g, i), xv = BNK_NAME(load16)(type, x, i);
        bnk_v8d g0 = BNK_NAME(low)(gv), g1 = BNK_NAME(high)(gv);
        s0 += g0;
        s1 += g1;
        p0 = BNK_NAME(multiply_add)(g0, BNK_NAME(low)(xv) - mu, p0);
        p1 = BNK_NAME(multiply_add)(g1, BNK_NAME(high)(xv) - mu, p1);
        i += 16;
    }
    double sg = BNK_NAME(hsum)((s0 + s2) + (s1 + s3)), sgx = BNK_NAME(hsum)((p0 + p2) + (p1 + p3));
    for (; i < n; i++) {
        double gi = (double)BNK_NAME(load1)(type, g, i);
        sg += gi;
        sgx = BNK_NAME(multiply_add1)(gi, (double)BNK_NAME(load1)(type, x, i) - mean, sgx);
    }
    *sum_g = sg;
    *sum_gx = sgx;
    if (run) BNK_NAME(apply_rest)(F, type, ST, run, at);
}

BNK_TARGET static void BNK_NAME(contiguous_gradient_sums)(int type, const void *g, const void *x, ptrdiff_t n,
                                                           double mean, double *sum_g, double *sum_gx) {
#define BNK_BODY(T) BNK_NAME(contiguous_gradient_sums_impl)(T, g, x, n, mean, sum_g, sum_gx, 0, 0, NULL)
    BNK_FOR_TYPE(type, BNK_BODY)
#undef BNK_BODY
}

BNK_TARGET static void BNK_NAME(contiguous_gradient_sums_and_apply)(int type, const void *g, const void *x,
                                                                     ptrdiff_t n, double mean, double *sum_g,
                                                                     double *sum_gx, const bnk_apply_run *run) {
    const bnk_apply_run local = *run;
#define BNK_BODY(T) BNK_NAME(contiguous_gradient_sums_impl)(T, g, x, n, mean, sum_g, sum_gx, F, ST, &local)
    BNK_FOR_APPLY(local.formula, type, local.streaming, BNK_BODY)
#undef BNK_BODY
}

/// acc_g[j] = Σ_k g[k·P + j];  acc_gx[j] = Σ_k g[k·P + j]·(x[k·P + j] − mean[j])  for j < P,
/// chunks one at a time in order (two sequential streams).
BNK_FN void BNK_NAME(position_gradient_sums)(int type, const void *g, const void *x, ptrdiff_t length,
                                             ptrdiff_t period, ptrdiff_t vector_period, const double *mean,
                                             double *acc_g, double *acc_gx) {
    for (ptrdiff_t j = 0; j < period; j++) acc_g[j] = acc_gx[j] = 0;
    for (ptrdiff_t start = 0; start < length; start += period) {
        ptrdiff_t count = length - start < period ? length - start : period;
        ptrdiff_t v16 = (count < vector_period ? count : vector_period) & ~(ptrdiff_t)15;
        ptrdiff_t j = 0;
        for (; j < v16; j += 16) {
            BNK_NAME(prefetch)(type, g, start + j);
            BNK_NAME(prefetch)(type, x, start + j);
            bnk_v16f gv = BNK_NAME(load16)(type, g, start + j), xv = BNK_NAME(load16)(type, x, start + j);
            bnk_v8d gl = BNK_NAME(low)(gv), gh = BNK_NAME(high)(gv);
            bnk_v8d d0 = BNK_NAME(low)(xv) - BNK_NAME(load8)(mean + j);
            bnk_v8d d1 = BNK_NAME(high)(xv) - BNK_NAME(load8)(mean + j + 8);
            BNK_NAME(store8)(acc_g + j, BNK_NAME(load8)(acc_g + j) + gl);
            BNK_NAME(store8)(acc_g + j + 8, BNK_NAME(load8)(acc_g + j + 8) + gh);
            BNK_NAME(store8)(acc_gx + j, BNK_NAME(multiply_add)(gl, d0, BNK_NAME(load8)(acc_gx + j)));
            BNK_NAME(store8)(acc_gx + j + 8, BNK_NAME(multiply_add)(gh, d1, BNK_NAME(load8)(acc_gx + j + 8)));
        }
        for (; j < count; j++) {
            double gi = (double)BNK_NAME(load1)(type, g, start + j);
            acc_g[j] += gi;
            acc_gx[j] = BNK_NAME(multiply_add1)(gi, (double)BNK_NAME(load1)(type, x, start + j) - mean[j], acc_gx[j]);
        }
    }
}

/// Adds one chunk of P = 16·V values of g and x starting at element i to an accumulator
/// set of short_gradient_sums: sg += g; sx += g·(x − m), lane by lane (2·V vectors each).
BNK_FN void BNK_NAME(short_gradient_chunk)(int type, const void *g, const void *x, ptrdiff_t i, const int V,
                                           const bnk_v8d *m, bnk_v8d *sg, bnk_v8d *sx) {
    for (int v = 0; v < V; v++) {
        BNK_NAME(prefetch)(type, g, i + 16 * v);
        BNK_NAME(prefetch)(type, x, i + 16 * v);
        bnk_v16f gv = BNK_NAME(load16)(type, g, i + 16 * v), xv = BNK_NAME(load16)(type, x, i + 16 * v);
        bnk_v8d gl = BNK_NAME(low)(gv), gh = BNK_NAME(high)(gv);
        sg[2 * v] += gl;
        sg[2 * v + 1] += gh;
        sx[2 * v] = BNK_NAME(multiply_add)(gl, BNK_NAME(low)(xv) - m[2 * v], sx[2 * v]);
        sx[2 * v + 1] = BNK_NAME(multiply_add)(gh, BNK_NAME(high)(xv) - m[2 * v + 1], sx[2 * v + 1]);
    }
}

/// short_gradient_sums: interleaved_gradient_sums for a short period P = 16·V (V <= 4)
/// with the per-position sums in registers for the whole block; chunks of P values go
/// round-robin to T accumulator sets (as in short_moments), the sets are added in order,
/// then the partial chunk one value at a time. acc holds 2·P doubles; mean holds μ[j mod C]
/// for j < P.
BNK_FN void BNK_NAME(short_gradient_sums)(int type, const void *g, const void *x, ptrdiff_t length, const int V,
                                          const int T, const double *mean, double *acc_g, double *acc_gx) {
    ptrdiff_t P = 16 * V;
    bnk_v8d mv[8], sg[4][8], sx[4][8];
    for (int v = 0; v < 2 * V; v++) mv[v] = BNK_NAME(load8)(mean + 8 * v);
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 2 * V; v++) sg[t][v] = sx[t][v] = BNK_NAME(splat8)(0);
    ptrdiff_t i = 0;
    for (; i + T * P <= length; i += T * P)
        for (int t = 0; t < T; t++) BNK_NAME(short_gradient_chunk)(type, g, x, i + t * P, V, mv, sg[t], sx[t]);
    for (; i + P <= length; i += P) BNK_NAME(short_gradient_chunk)(type, g, x, i, V, mv, sg[0], sx[0]);
    BNK_NAME(store_sets)(sg, T, 2 * V, acc_g);
    BNK_NAME(store_sets)(sx, T, 2 * V, acc_gx);
    for (ptrdiff_t j = 0; i + j < length; j++) {
        double gi = (double)BNK_NAME(load1)(type, g, i + j);
        acc_g[j] += gi;
        acc_gx[j] = BNK_NAME(multiply_add1)(gi, (double)BNK_NAME(load1)(type, x, i + j) - mean[j], acc_gx[j]);
    }
}

/// Per channel c < C of one channels-last block of `rows` whole rows of g and x:
/// sum_g[c] = Σ_r g[r·C + c];  sum_gx[c] = Σ_r g[r·C + c]·(x[r·C + c] − mean[c]), in double
/// (mean: C values). The sums run per pattern position j < P (μ replicated), chunks one at
/// a time in order (two sequential streams; P <= BNK_SHORT_PERIOD_MAX: short_gradient_sums,
/// on the stack), then are folded into channels with fold. scratch holds 3·P doubles (may
/// be NULL when P <= BNK_SHORT_PERIOD_MAX).
BNK_FN void BNK_NAME(interleaved_gradient_sums_impl)(int type, const void *g, const void *x, ptrdiff_t rows,
                                                     ptrdiff_t channels, ptrdiff_t period, ptrdiff_t vector_period,
                                                     const double *mean, double *scratch, double *sum_g,
                                                     double *sum_gx) {
    ptrdiff_t length = rows * channels;
    if (period <= BNK_SHORT_PERIOD_MAX) {
        double m[BNK_SHORT_PERIOD_MAX], acc_g[BNK_SHORT_PERIOD_MAX], acc_gx[BNK_SHORT_PERIOD_MAX];
        BNK_NAME(replicate)(mean, channels, period, m);
        switch (period) {
        case 16: BNK_NAME(short_gradient_sums)(type, g, x, length, 1, 4, m, acc_g, acc_gx); break;
        case 32: BNK_NAME(short_gradient_sums)(type, g, x, length, 2, 2, m, acc_g, acc_gx); break;
        case 48: BNK_NAME(short_gradient_sums)(type, g, x, length, 3, 1, m, acc_g, acc_gx); break;
        default: BNK_NAME(short_gradient_sums)(type, g, x, length, 4, 1, m, acc_g, acc_gx); break;
        }
        BNK_NAME(fold)(acc_g, channels, period, sum_g);
        BNK_NAME(fold)(acc_gx, channels, period, sum_gx);
        return;
    }
    double *m = scratch, *acc_g = scratch + period, *acc_gx = scratch + 2 * period;
    BNK_NAME(replicate)(mean, channels, period, m);
    BNK_NAME(position_gradient_sums)(type, g, x, length, period, vector_period, m, acc_g, acc_gx);
    BNK_NAME(fold)(acc_g, channels, period, sum_g);
    BNK_NAME(fold)(acc_gx, channels, period, sum_gx);
}

BNK_TARGET static void BNK_NAME(interleaved_gradient_sums)(int type, const void *g, const void *x, ptrdiff_t rows,
                                                            ptrdiff_t channels, ptrdiff_t period,
                                                            ptrdiff_t vector_period, const double *mean,
                                                            double *scratch, double *sum_g, double *sum_gx) {
#define BNK_BODY(T)                                                                                          \
    BNK_NAME(interleaved_gradient_sums_impl)(T, g, x, rows, channels, period, vector_period, mean, scratch, \
                                             sum_g, sum_gx)
    BNK_FOR_TYPE(type, BNK_BODY)
#undef BNK_BODY
}

#undef BNK_FOR_APPLY
#undef BNK_FOR_FORMULA_AND_TYPE
#undef BNK_FOR_TYPE
#undef BNK_FN
