/// A CUDA event on a device's stream, for timing GPU work (`cuEventRecord`,
/// `cuEventElapsedTime`): what `bnkit bench --device cuda` uses.
///
/// ```swift
/// let device = try CUDADevice.shared()
/// let milliseconds = try device.time { _ = try bn(x) }          // one run
/// let copy = try device.measureCopyBandwidth(byteCount: 1 << 30)        // GB/s, device to device
/// ```
///
/// A GPU bench (the Benchmarks article (Sources/BatchNormCore/BatchNormCore.docc/Benchmarks.md)) with the device-tensor API, per shape:
/// ```swift
/// let x = try DeviceTensor(Tensor(values, shape: shape), on: device)
/// let g = try DeviceTensor(Tensor(gradient, shape: shape), on: device)
/// let bn = try BatchNorm3D(maps: shape[1])
/// let train = try device.time(repetitions: 5) { _ = try bn(x) }          // 12 B/element
/// let backward = try device.time(repetitions: 5) { _ = try bn.backward(g) }      // 20 B/element
/// bn.evalMode()
/// let eval = try device.time(repetitions: 5) { _ = try bn(x) }           // 8 B/element
/// // GB/s = bytesPerElement · elementCount / (median ms · 1e-3) / 1e9, beside
/// // device.measureCopyBandwidth() from the same run.
/// ```
/// `bn.backward(g)` needs a training `bn(x)` first (it uses that forward's input).
public final class CUDAEvent: @unchecked Sendable {
    /// The device whose stream the event is recorded on.
    public let device: CUDADevice
    private let event: OpaquePointer

    /// Creates an event (with timing enabled).
    public init(device: CUDADevice) throws {
        self.device = device
        try device.makeCurrent()
        var event: OpaquePointer?
        try device.driver.check(device.driver.cuEventCreate(&event, 0 /* CU_EVENT_DEFAULT */), "cuEventCreate")
        guard let event else { throw CUDAError.nullHandle(function: "cuEventCreate", what: "event") }
        self.event = event
    }

    deinit { _ = device.driver.cuEventDestroy(event) }

    /// Enqueues the event on the device's stream: it completes when all earlier work has.
    public func record() throws {
        try device.makeCurrent()
        try device.driver.check(device.driver.cuEventRecord(event, device.stream), "cuEventRecord")
    }

    /// Waits until the event has completed.
    public func synchronize() throws {
        try device.driver.check(device.driver.cuEventSynchronize(event), "cuEventSynchronize")
    }

    /// Milliseconds of GPU time from `start` to this event (both recorded; waits for this one).
    public func elapsedMilliseconds(since start: CUDAEvent) throws -> Double {
        try synchronize()
        var milliseconds: Float = 0
        try device.driver.check(
            device.driver.cuEventElapsedTime(&milliseconds, start.event, event),
            "cuEventElapsedTime")
        return Double(milliseconds)
    }
}

extension CUDADevice {
    /// GPU milliseconds taken by the work `body` enqueues, measured with two events around it
    /// on the device's stream. Host-side synchronizations inside `body` (for example the
    /// copy-back of a training forward's statistics) are included in the time.
    public func time(_ body: () throws -> Void) throws -> Double {
        let start = try CUDAEvent(device: self), stop = try CUDAEvent(device: self)
        try start.record()
        try body()
        try stop.record()
        return try stop.elapsedMilliseconds(since: start)
    }

    /// GPU milliseconds of each of `repetitions` runs of `body`, after `warmUp` untimed runs
    /// (the first run in a process also compiles the kernels). A bench reports the median.
    public func time(repetitions: Int, warmUp: Int = 2, _ body: () throws -> Void) throws -> [Double] {
        for _ in 0..<max(0, warmUp) { try body() }
        try synchronize()
        return try (0..<max(1, repetitions)).map { _ in try time(body) }
    }

    /// Device-to-device copy bandwidth in GB/s (10⁹ bytes per second), counting the bytes
    /// read plus the bytes written (`2·byteCount` per copy), as bandwidth figures for kernels
    /// count their minimal traffic: the median of `repetitions` timed `cuMemcpyDtoDAsync`
    /// copies of `byteCount` bytes after one warm-up copy.
    public func measureCopyBandwidth(byteCount: Int = 1 << 28, repetitions: Int = 7) throws -> Double {
        let source = try allocate(byteCount: byteCount), destination = try allocate(byteCount: byteCount)
        try zero(source.address, byteCount: byteCount)
        try copy(from: source.address, toDevice: destination.address, byteCount: byteCount)
        var times = [Double]()
        for _ in 0..<max(1, repetitions) {
            times.append(
                try time { try copy(from: source.address, toDevice: destination.address, byteCount: byteCount) })
        }
        times.sort()
        let median = times[times.count / 2]
        return 2 * Double(byteCount) / (median * 1e-3) / 1e9
    }
}
