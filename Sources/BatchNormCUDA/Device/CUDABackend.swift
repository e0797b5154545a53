import BatchNormCore

/// The CUDA implementation of `BatchNormBackend` for host tensors.
///
/// Each call copies its host tensors to the device (buffers come from the device's caching
/// allocator, so repeated calls of one shape do not `cuMemAlloc`), runs the device-tensor step
/// (one kernel) and copies the result back, synchronizing before it returns: correct, and as
/// fast as the PCIe copies allow. For speed keep the data on the GPU: a ``DeviceTensor`` goes
/// through the same `bn(x)` and `bn.backward(g)` and stays on its device.
///
/// Data types: ``CUDADevice/supportedDataTypes`` (float32 and float16 everywhere, bfloat16 from
/// compute capability 8.0 on; parameters and statistics stay `Float32`), channels-first and
/// channels-last. Statistics are per-block shifted sums in `Double` merged with Chan's update
/// in a fixed order: bitwise reproducible run to run.
///
/// ```swift
/// let bn = try BatchNorm3D(maps: 16, backend: try CUDABackend())  // throws without CUDA
/// ```
public struct CUDABackend: BatchNormBackend {
    /// The device the work runs on.
    public let device: CUDADevice

    /// A backend on `device` (default: ``CUDADevice/shared()``). Compiles the kernels now
    /// (first use in the process) so that a missing NVRTC is reported here.
    /// - Throws: ``CUDAError``: no driver, no GPU, no NVRTC (naming every path searched),
    ///   compilation or module-loading errors.
    public init(device: CUDADevice? = nil) throws {
        self.device = try device ?? CUDADevice.shared()
        try self.device.prepareKernels()
    }

    /// `"cuda (NVIDIA H100 80GB HBM3, sm_90)"`.
    public var name: String { device.backendName }

    /// ``CUDADevice/supportedDataTypes``.
    public var supportedDataTypes: [TensorDataType] { device.supportedDataTypes }

    /// The device-tensor steps every method runs between its copies.
    private var onDevice: DeviceTensorBackend { DeviceTensorBackend(device: device) }

    /// Collect → merge on the GPU: one kernel launch; moments copied back.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        guard input.elementCount > 0 else { return Array(repeating: .empty, count: input.shape[1]) }
        return try onDevice.collectStatistics(of: DeviceTensor(input, on: device))
    }

    /// Apply on the GPU: `output = b·(input − shift) + offset`; `output` may be `input`.
    public func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws {
        guard input.elementCount > 0 else { return }
        let x = try DeviceTensor(input, on: device)
        try onDevice.normalize(x, into: x, coefficients: coefficients)
        try x.copy(into: output)
    }

    /// Backward reduce on the GPU: one launch; sums copied back.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        guard input.elementCount > 0 else {
            return Array(repeating: GradientSums(gradient: 0, gradientTimesCentered: 0), count: input.shape[1])
        }
        return try onDevice.reduceGradient(
            DeviceTensor(gradient, on: device), input: DeviceTensor(input, on: device), mean: mean)
    }

    /// Backward apply on the GPU: `output = a·gradient + b·(input − shift) + offset`.
    public func applyGradient(
        _ gradient: Tensor, input: Tensor, into output: Tensor,
        coefficients: ChannelCoefficients
    ) throws {
        guard gradient.elementCount > 0 else { return }
        let g = try DeviceTensor(gradient, on: device)
        let x = coefficients.ignoresInput ? g : try DeviceTensor(input, on: device)
        try onDevice.applyGradient(g, input: x, into: g, coefficients: coefficients)
        try g.copy(into: output)
    }
}
