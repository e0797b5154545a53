import BatchNormKit

/// The CUDA implementation of ``BatchNormKit/BatchNormBackend`` for host tensors.
///
/// Each call copies its host tensors to the device (buffers come from the device's caching
/// allocator, so repeated calls of one shape do not `cuMemAlloc`), runs one kernel and
/// copies the result back, synchronizing before it returns: correct, and as fast as the
/// PCIe copies allow. For speed keep the data on the GPU and use the ``DeviceTensor`` API
/// (``BatchNormKit/BatchNormND/forward(_:)``, ``BatchNormKit/BatchNormND/backward(_:updParamGrads:updGrad:scale:momentum:)``).
///
/// Supports `float32` and `float16` data (parameters and statistics stay `Float32`),
/// channels-first and channels-last. Statistics are per-block shifted sums in `Double`
/// merged with Chan's update in a fixed order: bitwise reproducible run to run.
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
    public var name: String {
        "cuda (\(device.name), \((try? device.prepareKernels()) ?? "not compiled"))"
    }

    /// `true` for `float32` and `float16`.
    public func supports(_ dataType: TensorDataType) -> Bool { true }

    /// Collect → merge on the GPU: one kernel launch; moments copied back.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        let geometry = KernelGeometry(shape: input.shape, layout: input.layout)
        guard geometry.elementCount > 0 else { return Array(repeating: .empty, count: geometry.channels) }
        let x = try DeviceTensor(input, on: device)
        return try device.channelMoments(of: x.buffer.address, geometry: geometry, dataType: input.dataType)
    }

    /// Apply on the GPU: `output = b·(input − shift) + offset`; `output` may be `input`.
    public func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws {
        let geometry = KernelGeometry(shape: input.shape, layout: input.layout)
        guard geometry.elementCount > 0 else { return }
        let x = try DeviceTensor(input, on: device)
        try device.enqueueApply(
            gradient: nil, input: x.buffer.address, output: x.buffer.address, geometry: geometry,
            dataType: input.dataType, coefficients: coefficients)
        try x.copy(into: output)
    }

    /// Backward reduce on the GPU: one launch; sums copied back.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        let geometry = KernelGeometry(shape: input.shape, layout: input.layout)
        guard geometry.elementCount > 0 else {
            return Array(repeating: GradientSums(gradient: 0, gradientTimesCentered: 0), count: geometry.channels)
        }
        let g = try DeviceTensor(gradient, on: device), x = try DeviceTensor(input, on: device)
        return try device.gradientSums(
            gradient: g.buffer.address, input: x.buffer.address, geometry: geometry,
            dataType: input.dataType, mean: mean)
    }

    /// Backward apply on the GPU: `output = a·gradient + b·(input − shift) + offset`.
    public func applyGradient(
        _ gradient: Tensor, input: Tensor, into output: Tensor,
        coefficients: ChannelCoefficients
    ) throws {
        let geometry = KernelGeometry(shape: gradient.shape, layout: gradient.layout)
        guard geometry.elementCount > 0 else { return }
        let g = try DeviceTensor(gradient, on: device)
        let x = coefficients.ignoresInput ? nil : try DeviceTensor(input, on: device)
        try device.enqueueApply(
            gradient: g.buffer.address, input: x?.buffer.address, output: g.buffer.address,
            geometry: geometry, dataType: gradient.dataType, coefficients: coefficients)
        try g.copy(into: output)
    }
}
