// The bandwidth loops of the bench roofline, written once with clang vector extensions and
// instantiated by CBenchmarkKernels.c per kernel level: before including this file, define
// BNK_TARGET (a function attribute, or empty) and BNK_NAME(name) (the instance's name).
// Not a public header.

#define BNK_FN static inline __attribute__((always_inline)) BNK_TARGET

BNK_FN bnk_v16f BNK_NAME(splat16)(float v) { return (bnk_v16f)(v); }

BNK_FN bnk_v16f BNK_NAME(loadf)(const float *p) {
    bnk_v16f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

/// Stores v at p: non-temporal with `streaming` (a constant after inlining) where p is
/// 64-byte aligned (no read for ownership, no eviction of cached data), else an ordinary store.
BNK_FN void BNK_NAME(store16)(int streaming, float *p, bnk_v16f v) {
    if (streaming && ((uintptr_t)p & 63) == 0) __builtin_nontemporal_store(v, (bnk_v16f *)p);
    else __builtin_memcpy(p, &v, sizeof v);
}

/// Orders the non-temporal stores of this thread before its later stores (on x86 they are
/// weakly ordered), so that a hand-over to another thread publishes them.
BNK_FN void BNK_NAME(store_fence)(int streaming) {
#if defined(__x86_64__) || defined(__i386__)
    if (streaming) _mm_sfence();
#else
    (void)streaming;
#endif
}

/// *sum = Σ x[i] over n floats of any alignment: 64 per step in 4 independent accumulators of
/// 16 lanes (a_k += x[i + 16k ..< i + 16k + 16]), then (a0 + a1) + (a2 + a3) lane by lane and
/// the tail, in double. A plain streaming read, bound by memory rather than by one add chain.
BNK_TARGET static void BNK_NAME(bandwidth_read)(const void *x, ptrdiff_t n, double *sum) {
    const float *p = (const float *)x;
    bnk_v16f a0 = BNK_NAME(splat16)(0), a1 = a0, a2 = a0, a3 = a0;
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 += BNK_NAME(loadf)(p + i);
        a1 += BNK_NAME(loadf)(p + i + 16);
        a2 += BNK_NAME(loadf)(p + i + 32);
        a3 += BNK_NAME(loadf)(p + i + 48);
    }
    bnk_v16f lanes = (a0 + a1) + (a2 + a3);
    double total = 0;
    for (int lane = 0; lane < 16; lane++) total += lanes[lane];
    for (; i < n; i++) {
        float v;
        __builtin_memcpy(&v, p + i, sizeof v);
        total += v;
    }
    *sum = total;
}

/// y[i] = 2·x[i] + 1 over n floats of any alignment, 64 per step (4 vector stores, through
/// store16: non-temporal where aligned when streaming); streaming, the values before y's
/// first 64-byte boundary go one by one (all of them when y is not 4-byte aligned), then the
/// fence. A plain read-and-write pass, the fastest a kernel with that traffic can run.
BNK_FN void BNK_NAME(bandwidth_read_write_impl)(const float *x, float *y, ptrdiff_t n, int streaming) {
    ptrdiff_t i = 0;
    for (; i < n && streaming && ((uintptr_t)(y + i) & 63) != 0; i++) {
        float v;
        __builtin_memcpy(&v, x + i, sizeof v);
        v = v * 2.0f + 1.0f;
        __builtin_memcpy(y + i, &v, sizeof v);
    }
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++)
            BNK_NAME(store16)(streaming, y + i + 16 * k, BNK_NAME(loadf)(x + i + 16 * k) * 2.0f + 1.0f);
    for (; i < n; i++) {
        float v;
        __builtin_memcpy(&v, x + i, sizeof v);
        v = v * 2.0f + 1.0f;
        __builtin_memcpy(y + i, &v, sizeof v);
    }
    BNK_NAME(store_fence)(streaming);
}

BNK_TARGET static void BNK_NAME(bandwidth_read_write)(const void *x, void *y, ptrdiff_t n, int streaming) {
    if (streaming) BNK_NAME(bandwidth_read_write_impl)((const float *)x, (float *)y, n, 1);
    else BNK_NAME(bandwidth_read_write_impl)((const float *)x, (float *)y, n, 0);
}

#undef BNK_FN
