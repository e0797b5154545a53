// BatchNormKit CUDA kernels (compiled at run time with NVRTC; no CUDA headers needed).
//
// Shape legend: N batch, C channels, S spatial size (D·H·W), M = N·S values per channel.
//   channels-first (NCDHW): element (n, c, s) at (n·C + c)·S + s; plane p = n·C + c.
//   channels-last  (NDHWC): element (n, c, s) at r·C + c with row r = n·S + s, R = N·S rows.
// T is the storage type: float, bn_half (IEEE binary16 bits) or bn_bfloat16 (bfloat16 bits,
// sm_80 and later); arithmetic is float, statistics double. L = BN_CHUNK values per
// channels-first block; channels-last blocks hold BN_ROWS_PER_THREAD rows per thread row (see
// bn_row_block).
//
// Kernels: bn_stats_* (collect → merge: per-channel moments), bn_reduce_* (collect → merge:
// per-channel gradient sums), bn_apply_* (per-channel affine map). Finalize is not done here:
// the host copies the moments or sums back and finalizes in BatchNormND, the one place for
// that rule, then launches the apply with the coefficients it computed.
//
// Determinism: block boundaries depend only on the shape; every reduction (threads of a
// block, blocks of a channel) runs in a fixed order, so results are bitwise reproducible.

typedef unsigned short bn_half;
typedef unsigned long long bn_u64;

// bfloat16 storage needs cvt.rn.bf16.f32 (sm_80 and later, PTX ISA 7.0): its conversions and
// entry points exist only where __CUDA_ARCH__ (major·100 + minor·10) is at least this value,
// and in the CPU emulation (which defines no __CUDA_ARCH__). The host reads this line
// (CUDAKernelSource), so it is the one place the rule is written.
#define BN_BFLOAT16_MINIMUM_ARCH 800
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= BN_BFLOAT16_MINIMUM_ARCH
#define BN_HAS_BFLOAT16
// The bits of a __nv_bfloat16 (the upper half of a binary32), in a struct of its own so that
// overloads and BNPack tell it from bn_half.
struct bn_bfloat16 {
    unsigned short bits;
};
#endif

// Block geometry. The host reads these three lines (CUDAKernelSource), so they are the only
// place the values are written: threads per block, values per channels-first block, rows per
// thread row of a channels-last block.
#define BN_THREADS 256
#define BN_CHUNK 16384
#define BN_ROWS_PER_THREAD 64

// binary16 <-> float with the PTX conversion instructions (round to nearest even).
// BN_HOST_EMULATION is defined only by the CPU emulation harness (Tools/KernelEmulation).
#ifdef BN_HOST_EMULATION
__device__ __forceinline__ float bn_half_to_float(unsigned bits) { return bn_emulated_half_to_float(bits); }
__device__ __forceinline__ unsigned bn_float_to_half(float v) { return bn_emulated_float_to_half(v); }
#else
__device__ __forceinline__ float bn_half_to_float(unsigned bits) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((bn_half)bits));
    return f;
}
__device__ __forceinline__ unsigned bn_float_to_half(float v) {
    bn_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return (unsigned)h;
}
#endif

#ifdef BN_HAS_BFLOAT16
// bfloat16 -> float, exact: the bits are the upper half of a binary32.
__device__ __forceinline__ float bn_bfloat16_to_float(unsigned bits) { return __uint_as_float(bits << 16); }

// float -> bfloat16, the rounding rule of the CPU backend (bit for bit on every non-NaN input):
// a float32 subnormal or zero (|v| < 2^-126) becomes a zero of the same sign (as the CPU's
// vcvtneps2bf16 does; cvt would round it to a bfloat16 subnormal); any other value rounds to
// nearest even with cvt.rn.bf16.f32 (overflowing to ±inf). NaN gives what cvt gives: the
// canonical NaN 0x7fff (the CPU keeps sign and payload: (bits >> 16) | 0x40).
#ifdef BN_HOST_EMULATION
__device__ __forceinline__ unsigned bn_cvt_rn_bf16_f32(float v) { return bn_emulated_cvt_rn_bf16_f32(v); }
#else
__device__ __forceinline__ unsigned bn_cvt_rn_bf16_f32(float v) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return (unsigned)h;
}
#endif
__device__ __forceinline__ unsigned bn_float_to_bfloat16(float v) {
    const unsigned bits = __float_as_uint(v);
    return (bits & 0x7f800000u) == 0u ? (bits >> 16) & 0x8000u : bn_cvt_rn_bf16_f32(v);
}
#endif

// The 16-bit storage types: bits -> float (exact) and float -> bits (to nearest even).
template <typename T> struct BNBits;
template <> struct BNBits<bn_half> {
    static __device__ __forceinline__ float to_float(unsigned bits) { return bn_half_to_float(bits); }
    static __device__ __forceinline__ unsigned from_float(float v) { return bn_float_to_half(v); }
};
#ifdef BN_HAS_BFLOAT16
template <> struct BNBits<bn_bfloat16> {
    static __device__ __forceinline__ float to_float(unsigned bits) { return bn_bfloat16_to_float(bits); }
    static __device__ __forceinline__ unsigned from_float(float v) { return bn_float_to_bfloat16(v); }
};
#endif

__device__ __forceinline__ float bn_load(const float* p) { return __ldg(p); }
__device__ __forceinline__ void bn_store(float* p, float v) { *p = v; }
template <typename T> __device__ __forceinline__ float bn_load(const T* p) {
    return BNBits<T>::to_float(__ldg(reinterpret_cast<const unsigned short*>(p)));
}
template <typename T> __device__ __forceinline__ void bn_store(T* p, float v) {
    *reinterpret_cast<unsigned short*>(p) = (unsigned short)BNBits<T>::from_float(v);
}

// 16-byte packs: 4 floats or 8 values of a 16-bit type, loaded and stored as one uint4.
template <typename T> struct BNPack {
    enum { width = 8 };
    static __device__ __forceinline__ void unpack(uint4 v, float* out) {
        unsigned w[4] = {v.x, v.y, v.z, v.w};
        #pragma unroll
        for (int k = 0; k < 4; ++k) {
            out[2 * k] = BNBits<T>::to_float(w[k] & 0xffffu);
            out[2 * k + 1] = BNBits<T>::to_float(w[k] >> 16);
        }
    }
    static __device__ __forceinline__ uint4 pack(const float* in) {
        unsigned w[4];
        #pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = BNBits<T>::from_float(in[2 * k]) | (BNBits<T>::from_float(in[2 * k + 1]) << 16);
        return make_uint4(w[0], w[1], w[2], w[3]);
    }
};
template <> struct BNPack<float> {
    enum { width = 4 };
    static __device__ __forceinline__ void unpack(uint4 v, float* out) {
        out[0] = __uint_as_float(v.x); out[1] = __uint_as_float(v.y);
        out[2] = __uint_as_float(v.z); out[3] = __uint_as_float(v.w);
    }
    static __device__ __forceinline__ uint4 pack(const float* in) {
        return make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]),
                          __float_as_uint(in[2]), __float_as_uint(in[3]));
    }
};

template <typename T> __device__ __forceinline__ uint4 bn_load_pack(const T* p) {
    return __ldg(reinterpret_cast<const uint4*>(p));
}
template <typename T> __device__ __forceinline__ void bn_store_pack(T* p, uint4 v) {
    *reinterpret_cast<uint4*>(p) = v;
}

// ---------------------------------------------------------------------------------------
// Fixed-order reductions.

// Sum over the block of two doubles per thread (warp shuffles, then warp 0 over the warp
// sums). Every thread must call it; the result is valid in thread 0.
__device__ __forceinline__ void bn_block_sum2(double& a, double& b) {
    __shared__ double shared_a[BN_THREADS / 32], shared_b[BN_THREADS / 32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    #pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        a += __shfl_down_sync(0xffffffffu, a, offset);
        b += __shfl_down_sync(0xffffffffu, b, offset);
    }
    if (lane == 0) { shared_a[warp] = a; shared_b[warp] = b; }
    __syncthreads();
    if (warp == 0) {
        a = lane < BN_THREADS / 32 ? shared_a[lane] : 0.0;
        b = lane < BN_THREADS / 32 ? shared_b[lane] : 0.0;
        #pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            a += __shfl_down_sync(0xffffffffu, a, offset);
            b += __shfl_down_sync(0xffffffffu, b, offset);
        }
    }
}

// A channels-last block (see bn_stats_channels_last): thread (tx, ty), threadIdx.x =
// ty·TX + tx, of row-block b sums channel c over rows first + ty + i·TY < first + rows.
struct BNRowBlock {
    int TX, TY, tx, ty, c;
    long long b, first, rows;
};

__device__ __forceinline__ BNRowBlock bn_row_block(int C, long long R, int TX) {
    BNRowBlock k;
    k.TX = TX;
    k.TY = BN_THREADS / TX;
    const int G = (C + TX - 1) / TX;
    const long long rows_per_block = (long long)k.TY * BN_ROWS_PER_THREAD;
    k.tx = threadIdx.x % TX;
    k.ty = threadIdx.x / TX;
    k.b = blockIdx.x / G;
    k.c = (int)(blockIdx.x - k.b * G) * TX + k.tx;
    k.first = k.b * rows_per_block;
    k.rows = min(rows_per_block, R - k.first);
    return k;
}

// Sum of two doubles over the TY threads of each column tx, in a fixed tree over ty. Every
// thread must call it; the column's sums are valid in its thread ty = 0.
__device__ __forceinline__ void bn_column_sum2(double& a, double& b, const BNRowBlock& k) {
    __shared__ double shared_a[BN_THREADS], shared_b[BN_THREADS];
    shared_a[threadIdx.x] = a;
    shared_b[threadIdx.x] = b;
    __syncthreads();
    for (int stride = k.TY / 2; stride > 0; stride >>= 1) {
        if (k.ty < stride) {
            shared_a[threadIdx.x] += shared_a[threadIdx.x + stride * k.TX];
            shared_b[threadIdx.x] += shared_b[threadIdx.x + stride * k.TX];
        }
        __syncthreads();
    }
    a = shared_a[threadIdx.x];
    b = shared_b[threadIdx.x];
}

// Chan et al.: (na, μa, M2a) ∪ (nb, μb, M2b):
//   n = na + nb, δ = μb − μa, μ = μa + δ·nb/n, M2 = M2a + M2b + δ²·na·nb/n.
__device__ __forceinline__ void bn_chan_merge(double& n, double& mean, double& m2,
                                              double nb, double meanb, double m2b) {
    if (nb == 0.0) return;
    if (n == 0.0) { n = nb; mean = meanb; m2 = m2b; return; }
    const double total = n + nb, delta = meanb - mean;
    mean = mean + delta * (nb / total);
    m2 = m2 + m2b + delta * delta * (n * nb / total);
    n = total;
}

// Last-block-done: every thread of every block calls it after the block's partials are
// stored (by any of its threads). Returns true in every thread of the block that finished
// last, after which all partials are visible (read them with __ldcg). That block resets
// the counter for the next launch.
__device__ __forceinline__ bool bn_is_last_block(unsigned* counter) {
    __shared__ bool last;
    __threadfence();  // each writer's partials are visible device-wide before the count
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned done = atomicAdd(counter, 1u);
        last = (done == gridDim.x - 1);
    }
    __syncthreads();
    if (last) {
        __threadfence();
        if (threadIdx.x == 0) *counter = 0u;
    }
    return last;
}

// Partials of channel c, in fixed order j = 0 ..< count: index of the j-th one.
//   channels-first: blocks (n, c, k), j = n·K + k with K chunks per plane → (n·C + c)·K + k
//   channels-last:  row-blocks b, j = b                             → b·C + c
__device__ __forceinline__ long long bn_partial_index(int channels_first, long long j, int c, int C, int K) {
    if (channels_first) {
        const long long n = j / K, k = j - n * K;
        return (n * C + c) * K + k;
    }
    return j * C + c;
}

// ---------------------------------------------------------------------------------------
// Statistics: collect → merge in one launch.
//
// Merge (last block): one warp per channel; lane ℓ merges partials j = ℓ, ℓ+32, … with
// Chan's update in order, then the 32 lane results merge in a fixed shuffle tree.
// Output: moments[3C] = (count, μ, M2) per channel as [count…, μ…, M2…]; the host
// finalizes them (see the top of this file).
__device__ void bn_stats_merge(const double* partials, long long per_channel, int channels_first, int C, int K,
                               double* moments) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    for (int c = warp; c < C; c += BN_THREADS / 32) {
        double n = 0.0, mean = 0.0, m2 = 0.0;
        for (long long j = lane; j < per_channel; j += 32) {
            const long long p = 3 * bn_partial_index(channels_first, j, c, C, K);
            bn_chan_merge(n, mean, m2, __ldcg(partials + p), __ldcg(partials + p + 1), __ldcg(partials + p + 2));
        }
        #pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            const double nb = __shfl_down_sync(0xffffffffu, n, offset);
            const double meanb = __shfl_down_sync(0xffffffffu, mean, offset);
            const double m2b = __shfl_down_sync(0xffffffffu, m2, offset);
            if (lane + offset < 32) bn_chan_merge(n, mean, m2, nb, meanb, m2b);
        }
        if (lane != 0) continue;
        moments[c] = n;
        moments[C + c] = mean;
        moments[2 * C + c] = m2;
    }
}

// Channels-first statistics. Grid: N·C·K blocks of BN_THREADS, block = (plane p, chunk k),
// K = ceil(S / L). Block values: x[p·S + k·L ..< p·S + min((k+1)·L, S)], count nb.
// Per thread, shifted sums with the block pivot P = x[p·S + k·L] (exact in double):
//   s1 = Σ(x − P), s2 = Σ(x − P)²; block sums in a fixed tree;
//   partial = (nb, μb = P + s1/nb, M2b = s2 − s1²/nb).
// 16-byte loads when S is a multiple of the pack width (4 floats, 8 values of a 16-bit type).
template <typename T>
__device__ void bn_stats_channels_first(const T* __restrict__ x, int N, int C, long long S, int K,
                                        double* partials, unsigned* counter, double* moments) {
    const long long block = blockIdx.x, plane = block / K, k = block - plane * K;
    const long long start = k * (long long)BN_CHUNK;
    const long long count = min((long long)BN_CHUNK, S - start);
    const T* values = x + plane * S + start;
    const double pivot = (double)bn_load(values);
    double s1 = 0.0, s2 = 0.0;
    const int width = BNPack<T>::width;
    if (S % width == 0) {
        for (long long v = threadIdx.x; v < count / width; v += BN_THREADS) {
            float f[BNPack<T>::width];
            BNPack<T>::unpack(bn_load_pack(values + v * width), f);
            #pragma unroll
            for (int i = 0; i < BNPack<T>::width; ++i) {
                const double d = (double)f[i] - pivot;
                s1 += d;
                s2 += d * d;
            }
        }
    } else {
        for (long long i = threadIdx.x; i < count; i += BN_THREADS) {
            const double d = (double)bn_load(values + i) - pivot;
            s1 += d;
            s2 += d * d;
        }
    }
    bn_block_sum2(s1, s2);
    if (threadIdx.x == 0) {
        const double nb = (double)count;
        partials[3 * block] = nb;
        partials[3 * block + 1] = pivot + s1 / nb;
        partials[3 * block + 2] = fmax(s2 - s1 * (s1 / nb), 0.0);
    }
    if (!bn_is_last_block(counter)) return;
    bn_stats_merge(partials, (long long)N * K, 1, C, K, moments);
}

// Channels-last statistics. Block shape (TX, TY) = (min(32, pow2 ≥ C), BN_THREADS/TX) as
// threadIdx.x = ty·TX + tx; G = ceil(C/TX) channel groups; Rb = TY·BN_ROWS_PER_THREAD rows
// per block. Grid: B·G blocks, block = (row-block b, group g), b = blockIdx.x / G.
// Thread (tx, ty) sums channel c = g·TX + tx over rows r = b·Rb + ty + i·TY (shifted by the
// pivot P_c = x[b·Rb·C + c]); threads of one channel sum in a fixed tree over ty.
// partial(b, c) = (nb, P_c + s1/nb, s2 − s1²/nb).
template <typename T>
__device__ void bn_stats_channels_last(const T* __restrict__ x, int C, long long R, int TX, int B,
                                       double* partials, unsigned* counter, double* moments) {
    const BNRowBlock k = bn_row_block(C, R, TX);
    double s1 = 0.0, s2 = 0.0, pivot = 0.0;
    if (k.c < C) {
        pivot = (double)bn_load(x + k.first * C + k.c);
        for (long long r = k.ty; r < k.rows; r += k.TY) {
            const double d = (double)bn_load(x + (k.first + r) * C + k.c) - pivot;
            s1 += d;
            s2 += d * d;
        }
    }
    bn_column_sum2(s1, s2, k);
    if (k.ty == 0 && k.c < C) {
        const double nb = (double)k.rows;
        const long long p = 3 * (k.b * C + k.c);
        partials[p] = nb;
        partials[p + 1] = pivot + s1 / nb;
        partials[p + 2] = fmax(s2 - s1 * (s1 / nb), 0.0);
    }
    if (!bn_is_last_block(counter)) return;
    bn_stats_merge(partials, B, 0, C, 1, moments);
}

// ---------------------------------------------------------------------------------------
// Backward reduce: Σg and Σg·(x − μ) per channel in double, in one launch.
// Same blocks as the statistics kernels; partial = (Σg, Σg·(x − μ_c)) over the block, with
// μ_c = mean[c], the saved batch means (C doubles, uploaded by the host).
// Merge (last block): one warp per channel, lanes sum partials j ≡ ℓ (mod 32) in order,
// then a fixed shuffle tree.
// Output: sums[2C] = (Σg…, Σg(x−μ)…); the host turns them into the backward apply
// coefficients and the parameter gradients (see the top of this file).
__device__ void bn_reduce_merge(const double* partials, long long per_channel, int channels_first, int C, int K,
                                double* sums) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    for (int c = warp; c < C; c += BN_THREADS / 32) {
        double sum_g = 0.0, sum_gx = 0.0;
        for (long long j = lane; j < per_channel; j += 32) {
            const long long p = 2 * bn_partial_index(channels_first, j, c, C, K);
            sum_g += __ldcg(partials + p);
            sum_gx += __ldcg(partials + p + 1);
        }
        #pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            sum_g += __shfl_down_sync(0xffffffffu, sum_g, offset);
            sum_gx += __shfl_down_sync(0xffffffffu, sum_gx, offset);
        }
        if (lane != 0) continue;
        sums[c] = sum_g;
        sums[C + c] = sum_gx;
    }
}

// Channels-first reduce: blocks as bn_stats_channels_first; μ_c = mean[c].
template <typename T>
__device__ void bn_reduce_channels_first(const T* __restrict__ g, const T* __restrict__ x, int N, int C,
                                         long long S, int K, const double* mean, double* partials,
                                         unsigned* counter, double* sums) {
    const long long block = blockIdx.x, plane = block / K, k = block - plane * K;
    const long long start = k * (long long)BN_CHUNK;
    const long long count = min((long long)BN_CHUNK, S - start);
    const long long offset = plane * S + start;
    const double mu = mean[(int)(plane % C)];
    double sum_g = 0.0, sum_gx = 0.0;
    const int width = BNPack<T>::width;
    if (S % width == 0) {
        for (long long v = threadIdx.x; v < count / width; v += BN_THREADS) {
            float fg[BNPack<T>::width], fx[BNPack<T>::width];
            BNPack<T>::unpack(bn_load_pack(g + offset + v * width), fg);
            BNPack<T>::unpack(bn_load_pack(x + offset + v * width), fx);
            #pragma unroll
            for (int i = 0; i < BNPack<T>::width; ++i) {
                sum_g += (double)fg[i];
                sum_gx += (double)fg[i] * ((double)fx[i] - mu);
            }
        }
    } else {
        for (long long i = threadIdx.x; i < count; i += BN_THREADS) {
            const double gi = (double)bn_load(g + offset + i);
            sum_g += gi;
            sum_gx += gi * ((double)bn_load(x + offset + i) - mu);
        }
    }
    bn_block_sum2(sum_g, sum_gx);
    if (threadIdx.x == 0) {
        partials[2 * block] = sum_g;
        partials[2 * block + 1] = sum_gx;
    }
    if (!bn_is_last_block(counter)) return;
    bn_reduce_merge(partials, (long long)N * K, 1, C, K, sums);
}

// Channels-last reduce: blocks as bn_stats_channels_last.
template <typename T>
__device__ void bn_reduce_channels_last(const T* __restrict__ g, const T* __restrict__ x, int C, long long R,
                                        int TX, int B, const double* mean, double* partials, unsigned* counter,
                                        double* sums) {
    const BNRowBlock k = bn_row_block(C, R, TX);
    double sum_g = 0.0, sum_gx = 0.0;
    if (k.c < C) {
        const double mu = mean[k.c];
        for (long long r = k.ty; r < k.rows; r += k.TY) {
            const long long i = (k.first + r) * C + k.c;
            const double gi = (double)bn_load(g + i);
            sum_g += gi;
            sum_gx += gi * ((double)bn_load(x + i) - mu);
        }
    }
    bn_column_sum2(sum_g, sum_gx, k);
    if (k.ty == 0 && k.c < C) {
        const long long p = 2 * (k.b * C + k.c);
        partials[p] = sum_g;
        partials[p + 1] = sum_gx;
    }
    if (!bn_is_last_block(counter)) return;
    bn_reduce_merge(partials, B, 0, C, 1, sums);
}

// ---------------------------------------------------------------------------------------
// Apply: out = a_c·g + b_c·(x − shift_c) + offset_c in float, with coeff[4C] = (a…, b…, shift…, offset…)
// computed on the host (BatchNormND's finalize) and uploaded.
// HAS_G / HAS_X drop the g or x term (forward: x only; evaluation backward: g only).
// out may alias x or g (each element is read, then written, by the same thread).
// out = (a·g + b·(x − shift)) + offset, with the absent term left out: forward
// y = b·(x − shift) + offset, evaluation backward dx = a·g + offset. The same operations in
// the same order as the CPU kernels (CBatchNormKernels.h), and no FMA (--fmad=false), so
// both backends round alike.
__device__ __forceinline__ float bn_apply_one(bool has_g, bool has_x, float a, float b, float shift, float offset,
                                              float gv, float xv) {
    float result;
    if (has_g && has_x) result = a * gv + b * (xv - shift);
    else if (has_g) result = a * gv;
    else result = b * (xv - shift);
    return result + offset;
}

// Channels-first apply. Grid: N·C·K blocks, block = (plane p, chunk k) as in the statistics
// kernel, so c = p mod C is uniform per block; 16-byte packs when S % width == 0.
template <typename T, bool HAS_G, bool HAS_X>
__device__ void bn_apply_channels_first(const T* g, const T* x, T* out, int C, long long S, int K,
                                        const float* coeff) {
    const long long block = blockIdx.x, plane = block / K, k = block - plane * K;
    const int c = (int)(plane % C);
    const float a = HAS_G ? coeff[c] : 0.0f, b = HAS_X ? coeff[C + c] : 0.0f;
    const float shift = coeff[2 * C + c], offset = coeff[3 * C + c];
    const long long start = plane * S + k * (long long)BN_CHUNK;
    const long long count = min((long long)BN_CHUNK, S - k * (long long)BN_CHUNK);
    const int width = BNPack<T>::width;
    if (S % width == 0) {
        for (long long v = threadIdx.x; v < count / width; v += BN_THREADS) {
            const long long i = start + v * width;
            float fg[BNPack<T>::width], fx[BNPack<T>::width], fy[BNPack<T>::width];
            if (HAS_G) BNPack<T>::unpack(bn_load_pack(g + i), fg);
            if (HAS_X) BNPack<T>::unpack(bn_load_pack(x + i), fx);
            #pragma unroll
            for (int e = 0; e < BNPack<T>::width; ++e)
                fy[e] = bn_apply_one(HAS_G, HAS_X, a, b, shift, offset, HAS_G ? fg[e] : 0.0f, HAS_X ? fx[e] : 0.0f);
            bn_store_pack(out + i, BNPack<T>::pack(fy));
        }
    } else {
        for (long long e = threadIdx.x; e < count; e += BN_THREADS) {
            const long long i = start + e;
            bn_store(out + i, bn_apply_one(HAS_G, HAS_X, a, b, shift, offset, HAS_G ? bn_load(g + i) : 0.0f,
                                           HAS_X ? bn_load(x + i) : 0.0f));
        }
    }
}

// Channels-last apply. Grid-stride over the E = R·C elements; element i has channel i mod C,
// tracked incrementally (one modulo per thread, then + step mod C per iteration).
// When C % width == 0, a 16-byte pack never straddles rows: channels c0 … c0+width−1.
template <typename T, bool HAS_G, bool HAS_X>
__device__ void bn_apply_channels_last(const T* g, const T* x, T* out, int C, long long E, const float* coeff) {
    const int width = BNPack<T>::width;
    const long long step = (long long)gridDim.x * BN_THREADS;
    const long long first = (long long)blockIdx.x * BN_THREADS + threadIdx.x;
    if (C % width == 0) {
        const int step_c = (int)((step * width) % C);
        int c0 = (int)((first * width) % C);
        for (long long v = first; v < E / width; v += step) {
            const long long i = v * width;
            float fg[BNPack<T>::width], fx[BNPack<T>::width], fy[BNPack<T>::width];
            if (HAS_G) BNPack<T>::unpack(bn_load_pack(g + i), fg);
            if (HAS_X) BNPack<T>::unpack(bn_load_pack(x + i), fx);
            #pragma unroll
            for (int e = 0; e < BNPack<T>::width; ++e) {
                const int c = c0 + e;
                fy[e] = bn_apply_one(HAS_G, HAS_X, HAS_G ? __ldg(coeff + c) : 0.0f,
                                     HAS_X ? __ldg(coeff + C + c) : 0.0f, __ldg(coeff + 2 * C + c),
                                     __ldg(coeff + 3 * C + c), HAS_G ? fg[e] : 0.0f, HAS_X ? fx[e] : 0.0f);
            }
            bn_store_pack(out + i, BNPack<T>::pack(fy));
            c0 += step_c;
            if (c0 >= C) c0 -= C;
        }
    } else {
        const int step_c = (int)(step % C);
        int c = (int)(first % C);
        for (long long i = first; i < E; i += step) {
            bn_store(out + i, bn_apply_one(HAS_G, HAS_X, HAS_G ? __ldg(coeff + c) : 0.0f,
                                           HAS_X ? __ldg(coeff + C + c) : 0.0f, __ldg(coeff + 2 * C + c),
                                           __ldg(coeff + 3 * C + c), HAS_G ? bn_load(g + i) : 0.0f,
                                           HAS_X ? bn_load(x + i) : 0.0f));
            c += step_c;
            if (c >= C) c -= C;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points (extern "C": unmangled names for cuModuleGetFunction). Suffix: _f32 / _f16, and
// _bf16 where BN_HAS_BFLOAT16 (sm_80 and later).

#define BN_ENTRY_POINTS(SUFFIX, T)                                                                             \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                       \
bn_stats_cf_##SUFFIX(const T* x, int N, int C, long long S, int K, double* partials, unsigned* counter,        \
                     double* moments) {                                                                        \
    bn_stats_channels_first<T>(x, N, C, S, K, partials, counter, moments);                                     \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                       \
bn_stats_cl_##SUFFIX(const T* x, int C, long long R, int TX, int B, double* partials, unsigned* counter,       \
                     double* moments) {                                                                        \
    bn_stats_channels_last<T>(x, C, R, TX, B, partials, counter, moments);                                     \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                       \
bn_reduce_cf_##SUFFIX(const T* g, const T* x, int N, int C, long long S, int K, const double* mean,            \
                      double* partials, unsigned* counter, double* sums) {                                     \
    bn_reduce_channels_first<T>(g, x, N, C, S, K, mean, partials, counter, sums);                              \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                       \
bn_reduce_cl_##SUFFIX(const T* g, const T* x, int C, long long R, int TX, int B, const double* mean,           \
                      double* partials, unsigned* counter, double* sums) {                                     \
    bn_reduce_channels_last<T>(g, x, C, R, TX, B, mean, partials, counter, sums);                              \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cf_x_##SUFFIX(const T* g, const T* x, T* out, int C, long long S, int K, const float* coeff) {        \
    bn_apply_channels_first<T, false, true>(g, x, out, C, S, K, coeff);                                        \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cf_gx_##SUFFIX(const T* g, const T* x, T* out, int C, long long S, int K, const float* coeff) {       \
    bn_apply_channels_first<T, true, true>(g, x, out, C, S, K, coeff);                                         \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cf_g_##SUFFIX(const T* g, const T* x, T* out, int C, long long S, int K, const float* coeff) {        \
    bn_apply_channels_first<T, true, false>(g, x, out, C, S, K, coeff);                                        \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cl_x_##SUFFIX(const T* g, const T* x, T* out, int C, long long E, const float* coeff) {               \
    bn_apply_channels_last<T, false, true>(g, x, out, C, E, coeff);                                            \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cl_gx_##SUFFIX(const T* g, const T* x, T* out, int C, long long E, const float* coeff) {              \
    bn_apply_channels_last<T, true, true>(g, x, out, C, E, coeff);                                             \
}                                                                                                              \
extern "C" __global__ void __launch_bounds__(BN_THREADS)                                                      \
bn_apply_cl_g_##SUFFIX(const T* g, const T* x, T* out, int C, long long E, const float* coeff) {               \
    bn_apply_channels_last<T, true, false>(g, x, out, C, E, coeff);                                            \
}

BN_ENTRY_POINTS(f32, float)
BN_ENTRY_POINTS(f16, bn_half)
#ifdef BN_HAS_BFLOAT16
BN_ENTRY_POINTS(bf16, bn_bfloat16)
#endif
