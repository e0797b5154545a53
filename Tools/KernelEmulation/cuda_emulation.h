// A minimal CUDA-on-CPU shim: runs BatchNormKit's kernel source (BatchNormKernels.cu) as
// C++ with one std::thread per CUDA thread, so that index math, block reductions, warp
// shuffles and the last-block-done merge can be checked on a machine without a GPU.
// Blocks run one after another; __syncthreads is a std::barrier over the block's threads,
// __shfl_down_sync an exchange through per-warp slots between two warp barriers.
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static
using std::fmax;
using std::max;
using std::min;
using std::sqrt;

struct bn_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local bn_dim3 threadIdx;
inline thread_local bn_dim3 blockIdx;
inline bn_dim3 gridDim;

struct uint4 { unsigned x, y, z, w; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline float bn_emulated_half_to_float(unsigned bits) {
    unsigned short h = (unsigned short)bits;
    _Float16 f;
    std::memcpy(&f, &h, 2);
    return (float)f;
}
inline unsigned bn_emulated_float_to_half(float v) {
    _Float16 f = (_Float16)v;
    unsigned short h;
    std::memcpy(&h, &f, 2);
    return h;
}
// What PTX cvt.rn.bf16.f32 does: round to nearest even on the bits (bias 0x7fff plus the last
// kept bit; finite values past the largest bfloat16 become ±inf, float32 subnormals round to
// bfloat16 subnormals), and any NaN becomes the canonical NaN 0x7fff (the value cuda_bf16.h
// gives for the same conversion where it has no instruction).
inline unsigned bn_emulated_cvt_rn_bf16_f32(float v) {
    const unsigned x = __float_as_uint(v);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

// One block's worth of persistent worker threads (one per CUDA thread), reused for every
// block of every launch: __syncthreads is a barrier over them, each warp has its own barrier
// and exchange slots for shuffles. Every thread of a block reaches the same barriers (as
// CUDA requires), so the barriers' phases stay aligned from block to block.
class BNEmulatedBlock {
public:
    explicit BNEmulatedBlock(unsigned threads)
        : threads_(threads), block_(threads), start_(threads + 1), done_(threads + 1), slots_(threads, 0.0) {
        for (unsigned w = 0; w < threads / 32; ++w) warps_.push_back(std::make_unique<std::barrier<>>(32));
        for (unsigned t = 0; t < threads; ++t) {
            workers_.emplace_back([this, t] {
                threadIdx.x = t;
                for (;;) {
                    start_.arrive_and_wait();
                    if (quit_) return;
                    blockIdx.x = block_index_;
                    (*kernel_)();
                    done_.arrive_and_wait();
                }
            });
        }
    }
    ~BNEmulatedBlock() {
        quit_ = true;
        start_.arrive_and_wait();
        for (auto& worker : workers_) worker.join();
    }
    // Runs `kernel` for block `index` on all threads and waits for them.
    void run(unsigned index, const std::function<void()>& kernel) {
        block_index_ = index;
        kernel_ = &kernel;
        start_.arrive_and_wait();
        done_.arrive_and_wait();
    }
    void sync() { block_.arrive_and_wait(); }
    double shuffle_down(double v, int offset) {
        const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
        auto& barrier = *warps_[warp];
        double* slots = slots_.data() + 32 * warp;
        slots[lane] = v;
        barrier.arrive_and_wait();
        const double result = lane + offset < 32 ? slots[lane + offset] : v;
        barrier.arrive_and_wait();
        return result;
    }
    unsigned threads() const { return threads_; }

private:
    unsigned threads_;
    std::barrier<> block_, start_, done_;
    std::vector<std::unique_ptr<std::barrier<>>> warps_;
    std::vector<double> slots_;
    std::vector<std::thread> workers_;
    unsigned block_index_ = 0;
    const std::function<void()>* kernel_ = nullptr;
    bool quit_ = false;
};
inline std::unique_ptr<BNEmulatedBlock> bn_emulated_block;

inline void __syncthreads() { bn_emulated_block->sync(); }
inline double __shfl_down_sync(unsigned, double v, int offset) { return bn_emulated_block->shuffle_down(v, offset); }

// Runs `kernel` on `blocks` blocks of `threads` threads, one block at a time.
inline void bn_emulated_launch(unsigned blocks, unsigned threads, const std::function<void()>& kernel) {
    if (!bn_emulated_block || bn_emulated_block->threads() != threads)
        bn_emulated_block = std::make_unique<BNEmulatedBlock>(threads);
    gridDim.x = blocks;
    for (unsigned b = 0; b < blocks; ++b) bn_emulated_block->run(b, kernel);
}
