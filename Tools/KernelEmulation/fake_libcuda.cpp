// A stand-in libcuda.so.1 for machines without a GPU: implements the driver-API subset
// BatchNormCUDA uses with host memory, and runs kernel launches through the CPU emulation
// of the real kernel source (cuda_emulation.h). With it, `bnkit selftest --device cuda` and
// the GPU tests exercise the whole Swift side (library loading, context, allocator, copies,
// argument marshalling of cuLaunchKernel, copy-back of the moments and sums) end to end.
// It proves nothing about real GPU timing, memory model or NVRTC-compiled code generation.
// Build: ./build_fake_driver.sh; use: BNKIT_CUDA_DRIVER_PATH=<build>/libcuda.so.1.
#include "cuda_emulation.h"
#include "BatchNormKernels.cu"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

namespace {
std::mutex launch_mutex;
struct Function { std::string name; };
std::map<std::string, Function*>& functions() { static std::map<std::string, Function*> table; return table; }
int module_token, context_token, stream_token;
template <class A> A arg(void** params, int i) { return *static_cast<A*>(params[i]); }
const int SM_COUNT = 4;  // reported multiprocessors (sizes the channels-last apply grid)
}

extern "C" {
CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int* version) { *version = 12040; return 0; }
CUresult cuDeviceGetCount(int* count) { *count = 1; return 0; }
CUresult cuDeviceGet(int* device, int ordinal) { if (ordinal != 0) return 101; *device = 0; return 0; }
CUresult cuDeviceGetName(char* name, int length, int) {
    std::snprintf(name, length, "CPU emulation of the BatchNormKit kernels");
    return 0;
}
// The compute capability reported: 90 (sm_90), or BNKIT_FAKE_COMPUTE_CAPABILITY (such as 75, to
// check what an older device refuses).
static int fake_capability() {
    const char* value = std::getenv("BNKIT_FAKE_COMPUTE_CAPABILITY");
    return value ? std::atoi(value) : 90;
}
CUresult cuDeviceGetAttribute(int* value, int attribute, int) {
    switch (attribute) {
    case 16: *value = SM_COUNT; return 0;  // multiprocessors
    case 75: *value = fake_capability() / 10; return 0;  // compute capability major
    case 76: *value = fake_capability() % 10; return 0;  // minor
    default: return 1;
    }
}
CUresult cuDevicePrimaryCtxRetain(void** context, int) { *context = &context_token; return 0; }
CUresult cuCtxSetCurrent(void*) { return 0; }
CUresult cuModuleLoadData(void** module, const void* image) { if (!image) return 1; *module = &module_token; return 0; }
CUresult cuModuleGetFunction(void** function, void*, const char* name) {
    auto& table = functions();
    auto it = table.find(name);
    if (it == table.end()) it = table.emplace(name, new Function{name}).first;
    *function = it->second;
    return 0;
}
CUresult cuMemAlloc_v2(CUdeviceptr* address, size_t size) {
    void* p = std::aligned_alloc(256, (size + 255) / 256 * 256);
    if (!p) return 2;
    *address = reinterpret_cast<CUdeviceptr>(p);
    return 0;
}
CUresult cuMemFree_v2(CUdeviceptr address) { std::free(reinterpret_cast<void*>(address)); return 0; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void*) {
    std::memcpy(reinterpret_cast<void*>(dst), src, n); return 0;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void*) {
    std::memcpy(dst, reinterpret_cast<void*>(src), n); return 0;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void*) {
    std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<void*>(src), n); return 0;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, void*) {
    std::memset(reinterpret_cast<void*>(dst), value, n); return 0;
}
CUresult cuStreamCreate(void** stream, unsigned) { *stream = &stream_token; return 0; }
CUresult cuStreamSynchronize(void*) { return 0; }
CUresult cuEventCreate(void** event, unsigned) { *event = new double(0); return 0; }
CUresult cuEventRecord(void* event, void*) {
    *static_cast<double*>(event) =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
    return 0;
}
CUresult cuEventSynchronize(void*) { return 0; }
CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
    *ms = (float)(*static_cast<double*>(end) - *static_cast<double*>(start)); return 0;
}
CUresult cuEventDestroy_v2(void* event) { delete static_cast<double*>(event); return 0; }
CUresult cuGetErrorName(CUresult code, const char** name) {
    *name = code == 0 ? "CUDA_SUCCESS" : code == 1 ? "CUDA_ERROR_INVALID_VALUE" : code == 2 ? "CUDA_ERROR_OUT_OF_MEMORY"
          : code == 101 ? "CUDA_ERROR_INVALID_DEVICE" : code == 500 ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
CUresult cuGetErrorString(CUresult code, const char** text) { return cuGetErrorName(code, text); }

#define BN_FAKE_DISPATCH(SUFFIX, T)                                                                            \
    if (name == "bn_stats_cf_" #SUFFIX) {                                                                      \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_stats_cf_##SUFFIX(arg<const T*>(p, 0), arg<int>(p, 1), arg<int>(p, 2), arg<long long>(p, 3),    \
                                 arg<int>(p, 4), arg<double*>(p, 5), arg<unsigned*>(p, 6), arg<double*>(p, 7));\
        });                                                                                                    \
        return 0;                                                                                              \
    }                                                                                                          \
    if (name == "bn_stats_cl_" #SUFFIX) {                                                                      \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_stats_cl_##SUFFIX(arg<const T*>(p, 0), arg<int>(p, 1), arg<long long>(p, 2), arg<int>(p, 3),    \
                                 arg<int>(p, 4), arg<double*>(p, 5), arg<unsigned*>(p, 6), arg<double*>(p, 7));\
        });                                                                                                    \
        return 0;                                                                                              \
    }                                                                                                          \
    if (name == "bn_reduce_cf_" #SUFFIX) {                                                                     \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_reduce_cf_##SUFFIX(arg<const T*>(p, 0), arg<const T*>(p, 1), arg<int>(p, 2), arg<int>(p, 3),    \
                                  arg<long long>(p, 4), arg<int>(p, 5), arg<const double*>(p, 6),              \
                                  arg<double*>(p, 7), arg<unsigned*>(p, 8), arg<double*>(p, 9));               \
        });                                                                                                    \
        return 0;                                                                                              \
    }                                                                                                          \
    if (name == "bn_reduce_cl_" #SUFFIX) {                                                                     \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_reduce_cl_##SUFFIX(arg<const T*>(p, 0), arg<const T*>(p, 1), arg<int>(p, 2), arg<long long>(p, 3),\
                                  arg<int>(p, 4), arg<int>(p, 5), arg<const double*>(p, 6),                    \
                                  arg<double*>(p, 7), arg<unsigned*>(p, 8), arg<double*>(p, 9));               \
        });                                                                                                    \
        return 0;                                                                                              \
    }                                                                                                          \
    BN_FAKE_APPLY(cf_x, SUFFIX, T, long long, int)                                                             \
    BN_FAKE_APPLY(cf_gx, SUFFIX, T, long long, int)                                                            \
    BN_FAKE_APPLY(cf_g, SUFFIX, T, long long, int)                                                             \
    BN_FAKE_APPLY_CL(cl_x, SUFFIX, T)                                                                          \
    BN_FAKE_APPLY_CL(cl_gx, SUFFIX, T)                                                                         \
    BN_FAKE_APPLY_CL(cl_g, SUFFIX, T)

#define BN_FAKE_APPLY(MODE, SUFFIX, T, A4, A5)                                                                 \
    if (name == "bn_apply_" #MODE "_" #SUFFIX) {                                                               \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_apply_##MODE##_##SUFFIX(arg<const T*>(p, 0), arg<const T*>(p, 1), arg<T*>(p, 2), arg<int>(p, 3), \
                                       arg<A4>(p, 4), arg<A5>(p, 5), arg<const float*>(p, 6));                 \
        });                                                                                                    \
        return 0;                                                                                              \
    }
#define BN_FAKE_APPLY_CL(MODE, SUFFIX, T)                                                                      \
    if (name == "bn_apply_" #MODE "_" #SUFFIX) {                                                               \
        bn_emulated_launch(gx, bx, [&] {                                                                       \
            bn_apply_##MODE##_##SUFFIX(arg<const T*>(p, 0), arg<const T*>(p, 1), arg<T*>(p, 2), arg<int>(p, 3), \
                                       arg<long long>(p, 4), arg<const float*>(p, 5));                         \
        });                                                                                                    \
        return 0;                                                                                              \
    }

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void*, void** p, void** extra) {
    if (!f || gy != 1 || gz != 1 || by != 1 || bz != 1 || shared != 0 || extra != nullptr || bx != BN_THREADS)
        return 1;
    std::lock_guard<std::mutex> guard(launch_mutex);
    const std::string& name = static_cast<Function*>(f)->name;
    BN_FAKE_DISPATCH(f32, float)
    BN_FAKE_DISPATCH(f16, bn_half)
    BN_FAKE_DISPATCH(bf16, bn_bfloat16)
    return 500;
}
}
