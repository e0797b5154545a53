import BatchNormCore
import SystemLibrary

/// One NVIDIA GPU, reached through the CUDA driver API loaded at run time.
///
/// A device owns the primary context of its ordinal, one stream on which every copy and
/// kernel of BatchNormCUDA is enqueued (so work is ordered without extra synchronization),
/// a caching allocator (``allocate(byteCount:)``: released buffers return to a per-size
/// free list instead of `cuMemFree`, so repeated calls do not `cuMemAlloc`), and the kernels,
/// compiled with NVRTC at first use for the device's compute capability and cached for the
/// life of the process.
///
/// Synchronization points are explicit: ``synchronize()``, and every copy to the host
/// (``DeviceTensor/toHost()``), which waits for the stream.
///
/// ```swift
/// let device = try CUDADevice.shared()      // throws CUDAError without driver or GPU
/// print(device.name, device.computeCapability)
/// ```
public final class CUDADevice: @unchecked Sendable {
    /// Device ordinal (`cuDeviceGet`).
    public let ordinal: Int
    /// Marketing name (`cuDeviceGetName`), such as `"NVIDIA H100 80GB HBM3"`.
    public let name: String
    /// Compute capability, such as `(9, 0)` for H100.
    public let computeCapability: (major: Int, minor: Int)
    /// Number of streaming multiprocessors.
    public let multiprocessorCount: Int
    /// Driver version as `cuDriverGetVersion` reports it (`12040` for 12.4).
    public let driverVersion: Int
    /// The library search this device was opened with (NVRTC is searched the same way).
    public let search: CUDALibrarySearch

    let driver: CUDADriver
    let context: OpaquePointer
    /// The stream every operation is enqueued on.
    let stream: OpaquePointer
    /// Last-block-done counter shared by the statistics and reduce kernels (zero between launches).
    private(set) var blockCounter: UInt64 = 0

    private let lock = Lock()
    private var compiled: CUDAKernels?
    private var freeBlocks = [Int: [UInt64]]()
    private var allocations = 0
    private var launches = 0
    private var cachedBytes = 0

    /// Opens device `ordinal`: loads the driver, `cuInit`, retains the primary context and
    /// creates a stream. Kernels are compiled later, at first use.
    /// - Throws: ``CUDAError/libraryNotFound(library:environmentVariable:searched:)`` without a
    ///   driver, ``CUDAError/noDevice(reason:)`` or a driver error (`CUDA_ERROR_NO_DEVICE`, …).
    public init(ordinal: Int? = nil, search: CUDALibrarySearch = CUDALibrarySearch()) throws {
        let driver = try CUDADriver(search: search)
        let ordinal = ordinal ?? search.deviceOrdinal
        try driver.check(driver.cuInit(0), "cuInit")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard count > 0 else { throw CUDAError.noDevice(reason: "cuDeviceGetCount reports 0 devices") }
        guard ordinal >= 0 && ordinal < Int(count) else {
            throw CUDAError.noDevice(reason: "device \(ordinal) requested, \(count) present")
        }
        var device: Int32 = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet")
        var nameBytes = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBytes, 255, device), "cuDeviceGetName")
        func attribute(_ attribute: Int32) throws -> Int {
            var value: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&value, attribute, device), "cuDeviceGetAttribute")
            return Int(value)
        }
        let major = try attribute(CUDADriver.computeCapabilityMajor)
        let minor = try attribute(CUDADriver.computeCapabilityMinor)
        multiprocessorCount = try attribute(CUDADriver.multiprocessorCount)
        var version: Int32 = 0
        try driver.check(driver.cuDriverGetVersion(&version), "cuDriverGetVersion")
        var context: OpaquePointer?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        var stream: OpaquePointer?
        try driver.check(driver.cuStreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate")
        guard let context, let stream else {
            throw CUDAError.nullHandle(function: "cuDevicePrimaryCtxRetain / cuStreamCreate", what: "context or stream")
        }
        self.driver = driver
        self.ordinal = ordinal
        self.name = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.computeCapability = (major, minor)
        self.driverVersion = Int(version)
        self.search = search
        self.context = context
        self.stream = stream
        var counter: UInt64 = 0
        try driver.check(driver.cuMemAlloc(&counter, 256), "cuMemAlloc")
        try driver.check(driver.cuMemsetD8Async(counter, 0, 256, stream), "cuMemsetD8Async")
        try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
        blockCounter = counter
    }

    private static let sharedLock = Lock()
    nonisolated(unsafe) private static var sharedResult: Result<CUDADevice, CUDAError>?

    /// The process-wide device (ordinal from `BNKIT_CUDA_DEVICE`, default 0), opened once.
    /// A failure is remembered too: every later call throws the same error.
    /// - Throws: ``CUDAError``: no driver (naming every path searched), no device, driver errors.
    public static func shared() throws -> CUDADevice {
        try availability().get()
    }

    /// The process-wide device, or why there is none; never throws.
    public static func availability() -> Result<CUDADevice, CUDAError> {
        sharedLock.withLock {
            if let sharedResult { return sharedResult }
            let result: Result<CUDADevice, CUDAError>
            do {
                result = .success(try CUDADevice())
            } catch let error as CUDAError {
                result = .failure(error)
            } catch {
                result = .failure(.noDevice(reason: "\(error)"))
            }
            sharedResult = result
            return result
        }
    }

    /// `"NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, driver 12.4)"`.
    public var summary: String {
        "\(name) (sm_\(computeCapability.major)\(computeCapability.minor), \(multiprocessorCount) SMs, "
            + "driver \(driverVersion / 1000).\(driverVersion % 1000 / 10))"
    }

    /// The data types the kernels compute on here: `float32` and `float16` on every device,
    /// `bfloat16` where the kernels were compiled for compute capability 8.0 (sm_80) or later,
    /// the first with its conversion instruction (``CUDAKernelSource/bfloat16MinimumCapability``).
    /// The one statement of what the GPU supports: the module's validation (of host tensors
    /// through ``CUDABackend`` and of ``DeviceTensor``s alike) checks it before any copy or
    /// launch, so an older device refuses bfloat16 with a `BatchNormError.dataTypeMismatch`
    /// naming the device.
    public var supportedDataTypes: [TensorDataType] {
        let capability = computeCapability.major * 10 + computeCapability.minor
        let bfloat16 =
            (try? kernels().hasBFloat16Kernels) ?? (capability >= CUDAKernelSource.bfloat16MinimumCapability)
        return bfloat16 ? [.float32, .float16, .bfloat16] : [.float32, .float16]
    }

    /// `"cuda (NVIDIA H100 80GB HBM3, sm_90)"`: what both backends print as their name.
    var backendName: String {
        "cuda (\(name), \((try? prepareKernels()) ?? "not compiled"))"
    }

    /// Makes the device's context current on the calling thread (the driver API is per thread).
    func makeCurrent() throws {
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    /// Waits until every operation enqueued so far has finished.
    /// - Throws: ``CUDAError/driver(function:code:name:message:)``, including errors of
    ///   earlier asynchronous kernels (`CUDA_ERROR_ILLEGAL_ADDRESS`, …).
    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
    }

    // MARK: Kernels

    /// The compiled kernels; compiled with NVRTC on the first call, then cached.
    /// - Throws: NVRTC not found, compilation errors, `cuModuleLoadData` errors.
    func kernels() throws -> CUDAKernels {
        try lock.withLock {
            if let compiled { return compiled }
            try makeCurrent()
            let kernels = try CUDAKernels(
                device: self,
                nvrtc: NVRTC(
                    search: search,
                    maximumMajorVersion: driverVersion / 1000))
            compiled = kernels
            return kernels
        }
    }

    /// Compiles (if not done yet) and loads the kernels: call it to pay the NVRTC cost, or
    /// to learn about a missing NVRTC, up front. Returns the architecture compiled for.
    @discardableResult
    public func prepareKernels() throws -> String { try kernels().architecture }

    // MARK: Memory

    /// Bytes a request of `byteCount` occupies in the cache: multiples of 512 B up to 1 MiB,
    /// of 2 MiB beyond.
    static func roundedSize(_ byteCount: Int) -> Int {
        let size = max(byteCount, 1)
        let granule = size <= 1 << 20 ? 512 : 2 << 20
        return (size + granule - 1) / granule * granule
    }

    /// A device buffer of at least `byteCount` bytes (contents undefined), taken from the
    /// cache when one of the same rounded size is free, else from `cuMemAlloc` (after
    /// emptying the cache and retrying when the device is out of memory).
    public func allocate(byteCount: Int) throws -> DeviceBuffer {
        let size = Self.roundedSize(byteCount)
        let reused: UInt64? = lock.withLock {
            guard var list = freeBlocks[size], let address = list.popLast() else { return nil }
            freeBlocks[size] = list
            cachedBytes -= size
            return address
        }
        if let reused { return DeviceBuffer(device: self, address: reused, byteCount: byteCount, capacity: size) }
        try makeCurrent()
        var address: UInt64 = 0
        var result = driver.cuMemAlloc(&address, size)
        if result == 2 /* CUDA_ERROR_OUT_OF_MEMORY */ {
            try emptyCache()
            result = driver.cuMemAlloc(&address, size)
        }
        try driver.check(result, "cuMemAlloc")
        lock.withLock { allocations += 1 }
        return DeviceBuffer(device: self, address: address, byteCount: byteCount, capacity: size)
    }

    /// Called by ``DeviceBuffer``'s `deinit`: the block goes back to the free list.
    func release(address: UInt64, capacity: Int) {
        lock.withLock {
            freeBlocks[capacity, default: []].append(address)
            cachedBytes += capacity
        }
    }

    /// Number of `cuMemAlloc` calls made so far (cache misses).
    public var allocationCount: Int { lock.withLock { allocations } }

    /// Bytes held in the free lists.
    public var cachedByteCount: Int { lock.withLock { cachedBytes } }

    /// Synchronizes, then returns every cached block to the driver (`cuMemFree`).
    public func emptyCache() throws {
        try synchronize()
        let blocks = lock.withLock {
            defer {
                freeBlocks = [:]
                cachedBytes = 0
            }
            return freeBlocks.values.flatMap { $0 }
        }
        for address in blocks { try driver.check(driver.cuMemFree(address), "cuMemFree") }
    }

    // MARK: Copies (enqueued on the stream)

    /// Enqueues a host-to-device copy (pageable host memory: the bytes are staged before the call returns).
    func copy(from host: UnsafeRawPointer, to address: UInt64, byteCount: Int) throws {
        guard byteCount > 0 else { return }
        try makeCurrent()
        try driver.check(driver.cuMemcpyHtoDAsync(address, host, byteCount, stream), "cuMemcpyHtoDAsync")
    }

    /// Enqueues a device-to-host copy; the host bytes are valid after ``synchronize()``.
    func copy(from address: UInt64, to host: UnsafeMutableRawPointer, byteCount: Int) throws {
        guard byteCount > 0 else { return }
        try makeCurrent()
        try driver.check(driver.cuMemcpyDtoHAsync(host, address, byteCount, stream), "cuMemcpyDtoHAsync")
    }

    /// Enqueues a device-to-device copy.
    func copy(from source: UInt64, toDevice destination: UInt64, byteCount: Int) throws {
        guard byteCount > 0 else { return }
        try makeCurrent()
        try driver.check(driver.cuMemcpyDtoDAsync(destination, source, byteCount, stream), "cuMemcpyDtoDAsync")
    }

    /// Enqueues a fill of `byteCount` bytes with zero.
    func zero(_ address: UInt64, byteCount: Int) throws {
        guard byteCount > 0 else { return }
        try makeCurrent()
        try driver.check(driver.cuMemsetD8Async(address, 0, byteCount, stream), "cuMemsetD8Async")
    }

    /// Uploads `values` into a fresh buffer.
    func upload<T>(_ values: [T]) throws -> DeviceBuffer {
        let buffer = try allocate(byteCount: values.count * MemoryLayout<T>.stride)
        try values.withUnsafeBytes { try copy(from: $0.baseAddress!, to: buffer.address, byteCount: $0.count) }
        return buffer
    }

    // MARK: Launches

    /// Enqueues `function` on a 1-D grid of 1-D blocks.
    func launch(_ function: OpaquePointer, blocks: Int, threads: Int, arguments: [KernelArgument]) throws {
        guard blocks > 0 else { return }
        guard blocks <= Int(Int32.max) else {
            throw CUDAError.invalidArgument(
                name: "grid size", expected: "at most \(Int32.max) blocks", actual: "\(blocks)")
        }
        try makeCurrent()
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 8 * max(arguments.count, 1), alignment: 8)
        defer { storage.deallocate() }
        var pointers = [UnsafeMutableRawPointer?]()
        for (index, argument) in arguments.enumerated() {
            let slot = storage + 8 * index
            switch argument {
            case .pointer(let value): slot.storeBytes(of: value, as: UInt64.self)
            case .int32(let value): slot.storeBytes(of: value, as: Int32.self)
            case .int64(let value): slot.storeBytes(of: value, as: Int64.self)
            }
            pointers.append(slot)
        }
        let result = pointers.withUnsafeMutableBufferPointer {
            driver.cuLaunchKernel(function, UInt32(blocks), 1, 1, UInt32(threads), 1, 1, 0, stream, $0.baseAddress, nil)
        }
        try driver.check(result, "cuLaunchKernel")
        lock.withLock { launches += 1 }
    }

    /// Number of kernels launched so far (a training forward of device tensors adds 2).
    public var launchCount: Int { lock.withLock { launches } }
}

/// One kernel argument, passed by value to `cuLaunchKernel`.
enum KernelArgument {
    /// A device address (`T*` in the kernel).
    case pointer(UInt64)
    /// `int`.
    case int32(Int32)
    /// `long long`.
    case int64(Int64)
}

/// A block of device memory from ``CUDADevice/allocate(byteCount:)``. When the last
/// reference goes away the block returns to the device's cache (not to the driver); since
/// every operation runs on the device's one stream, reuse is ordered after earlier work.
public final class DeviceBuffer: @unchecked Sendable {
    /// The device that owns the memory.
    public let device: CUDADevice
    /// Device address (`CUdeviceptr`), 256-byte aligned.
    public let address: UInt64
    /// Bytes requested.
    public let byteCount: Int
    /// Bytes reserved (the cache's size class).
    let capacity: Int

    init(device: CUDADevice, address: UInt64, byteCount: Int, capacity: Int) {
        self.device = device
        self.address = address
        self.byteCount = byteCount
        self.capacity = capacity
    }

    deinit { device.release(address: address, capacity: capacity) }
}
