import SystemLibrary

/// The CUDA driver API functions BatchNormCUDA uses, resolved with `dlsym` from `libcuda`.
///
/// Handles (`CUcontext`, `CUmodule`, `CUfunction`, `CUstream`, `CUevent`) are opaque
/// pointers; device addresses (`CUdeviceptr`) are `UInt64`; `CUresult` is `Int32`.
final class CUDADriver: @unchecked Sendable {
    typealias Handle = OpaquePointer?
    typealias Result = Int32

    let library: DynamicLibrary

    let cuInit: @convention(c) (UInt32) -> Result
    let cuDriverGetVersion: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Result
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Result
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Result
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Result
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle>, Int32) -> Result
    let cuCtxSetCurrent: @convention(c) (Handle) -> Result
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle>, UnsafeRawPointer) -> Result
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle>, Handle, UnsafePointer<CChar>) -> Result
    let cuLaunchKernel:
        @convention(c) (
            Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
            UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
            UnsafeMutablePointer<UnsafeMutableRawPointer?>?
        ) -> Result
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Result
    let cuMemFree: @convention(c) (UInt64) -> Result
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer, Int, Handle) -> Result
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Handle) -> Result
    let cuMemcpyDtoDAsync: @convention(c) (UInt64, UInt64, Int, Handle) -> Result
    let cuMemsetD8Async: @convention(c) (UInt64, UInt8, Int, Handle) -> Result
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuStreamSynchronize: @convention(c) (Handle) -> Result
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle>, UInt32) -> Result
    let cuEventRecord: @convention(c) (Handle, Handle) -> Result
    let cuEventSynchronize: @convention(c) (Handle) -> Result
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Result
    let cuEventDestroy: @convention(c) (Handle) -> Result
    let cuGetErrorName: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result
    let cuGetErrorString: @convention(c) (Result, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Result

    /// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
    static let multiprocessorCount: Int32 = 16
    /// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
    static let computeCapabilityMajor: Int32 = 75
    /// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
    static let computeCapabilityMinor: Int32 = 76

    /// Loads `libcuda` and resolves every function (the `_v2` entry points where the ABI has them).
    init(search: CUDALibrarySearch) throws {
        do {
            let library = try DynamicLibrary.open(
                "libcuda (the NVIDIA driver)", candidates: search.driverCandidates,
                environmentVariable: CUDALibrarySearch.driverPathVariable)
            self.library = library
            cuInit = try library.function("cuInit")
            cuDriverGetVersion = try library.function("cuDriverGetVersion")
            cuDeviceGetCount = try library.function("cuDeviceGetCount")
            cuDeviceGet = try library.function("cuDeviceGet")
            cuDeviceGetName = try library.function("cuDeviceGetName")
            cuDeviceGetAttribute = try library.function("cuDeviceGetAttribute")
            cuDevicePrimaryCtxRetain = try library.function("cuDevicePrimaryCtxRetain")
            cuCtxSetCurrent = try library.function("cuCtxSetCurrent")
            cuModuleLoadData = try library.function("cuModuleLoadData")
            cuModuleGetFunction = try library.function("cuModuleGetFunction")
            cuLaunchKernel = try library.function("cuLaunchKernel")
            cuMemAlloc = try library.function("cuMemAlloc_v2")
            cuMemFree = try library.function("cuMemFree_v2")
            cuMemcpyHtoDAsync = try library.function("cuMemcpyHtoDAsync_v2")
            cuMemcpyDtoHAsync = try library.function("cuMemcpyDtoHAsync_v2")
            cuMemcpyDtoDAsync = try library.function("cuMemcpyDtoDAsync_v2")
            cuMemsetD8Async = try library.function("cuMemsetD8Async")
            cuStreamCreate = try library.function("cuStreamCreate")
            cuStreamSynchronize = try library.function("cuStreamSynchronize")
            cuEventCreate = try library.function("cuEventCreate")
            cuEventRecord = try library.function("cuEventRecord")
            cuEventSynchronize = try library.function("cuEventSynchronize")
            cuEventElapsedTime = try library.function("cuEventElapsedTime")
            cuEventDestroy = try library.function("cuEventDestroy_v2")
            cuGetErrorName = try library.function("cuGetErrorName")
            cuGetErrorString = try library.function("cuGetErrorString")
        } catch let error as DynamicLibraryError {
            throw CUDAError(error)
        }
    }

    /// Throws ``CUDAError/driver(function:code:name:message:)`` unless `result` is `CUDA_SUCCESS`.
    func check(_ result: Result, _ function: StaticString) throws {
        guard result != 0 else { return }
        throw CUDAError.driver(
            function: "\(function)", code: result, name: errorName(result),
            message: errorMessage(result))
    }

    /// `cuGetErrorName`, or the fallback table when the driver does not know the code.
    func errorName(_ result: Result) -> String {
        var name: UnsafePointer<CChar>?
        if cuGetErrorName(result, &name) == 0, let name { return String(cString: name) }
        return CUDAResultName.name(of: result)
    }

    /// `cuGetErrorString`, or an empty string.
    func errorMessage(_ result: Result) -> String {
        var message: UnsafePointer<CChar>?
        if cuGetErrorString(result, &message) == 0, let message { return String(cString: message) }
        return ""
    }
}

/// Names of common `CUresult` codes, used when the driver cannot name one itself.
public enum CUDAResultName {
    static let names: [Int32: String] = [
        0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
        3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY",
        35: "CUDA_ERROR_INSUFFICIENT_DRIVER", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
        200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
        218: "CUDA_ERROR_INVALID_PTX", 222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 300: "CUDA_ERROR_INVALID_SOURCE",
        400: "CUDA_ERROR_INVALID_HANDLE", 500: "CUDA_ERROR_NOT_FOUND", 600: "CUDA_ERROR_NOT_READY",
        700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702: "CUDA_ERROR_LAUNCH_TIMEOUT",
        719: "CUDA_ERROR_LAUNCH_FAILED", 801: "CUDA_ERROR_NOT_SUPPORTED", 803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", 999: "CUDA_ERROR_UNKNOWN",
    ]

    /// The `CUresult` enumerator's name for `code`, or `CUresult(<code>)` when unknown.
    public static func name(of code: Int32) -> String { names[code] ?? "CUresult(\(code))" }
}
