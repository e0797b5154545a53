import BatchNormCore

extension DeviceTensor: BatchNormOperand {
    /// `"cuda:N"`, N the device ordinal.
    public var placement: String { "cuda:\(device.ordinal)" }

    /// A tensor of the same shape, layout and data type on the same device, contents undefined.
    /// - Throws: Allocation errors (``CUDAError``).
    public func makeUninitializedLike() throws -> DeviceTensor {
        try DeviceTensor(uninitialized: shape, layout: layout, dataType: dataType, on: device)
    }

    /// Whether `other` reads and writes the same device memory.
    public func sharesStorage(with other: DeviceTensor) -> Bool { sharesBuffer(with: other) }

    /// The tensor's own device. A module whose backend is a ``CUDABackend`` takes device tensors
    /// on that backend's device only.
    /// - Throws: ``CUDAError/invalidArgument(name:expected:actual:)`` for a tensor on another
    ///   device than the module's ``CUDABackend``.
    public func backend(moduleBackend: any BatchNormBackend<Tensor>) throws -> any BatchNormBackend<DeviceTensor> {
        if let cuda = moduleBackend as? CUDABackend, cuda.device !== device {
            throw CUDAError.invalidArgument(
                name: "tensor", expected: "a tensor on device \(cuda.device.ordinal), the module's backend",
                actual: "device \(device.ordinal)")
        }
        return DeviceTensorBackend(device: device)
    }
}

/// The seam on device-resident tensors: each step is one launch on the device's stream; the
/// statistics and the gradient sums are copied back (one synchronization each) for the
/// module to finalize on the host, as on every path. Apply steps are enqueued only: their
/// output is ready when the stream gets there.
struct DeviceTensorBackend: BatchNormBackend {
    let device: CUDADevice

    var name: String { device.backendName }

    var supportedDataTypes: [TensorDataType] { device.supportedDataTypes }

    func collectStatistics(of input: DeviceTensor) throws -> [ChannelMoments] {
        try device.channelMoments(of: input.buffer.address, geometry: input.geometry, dataType: input.dataType)
    }

    func normalize(_ input: DeviceTensor, into output: DeviceTensor, coefficients: ChannelCoefficients) throws {
        try device.enqueueApply(
            gradient: nil, input: input.buffer.address, output: output.buffer.address, geometry: input.geometry,
            dataType: input.dataType, coefficients: coefficients)
    }

    func reduceGradient(_ gradient: DeviceTensor, input: DeviceTensor, mean: [Double]) throws -> [GradientSums] {
        try device.gradientSums(
            gradient: gradient.buffer.address, input: input.buffer.address, geometry: input.geometry,
            dataType: input.dataType, mean: mean)
    }

    func applyGradient(
        _ gradient: DeviceTensor, input: DeviceTensor, into output: DeviceTensor,
        coefficients: ChannelCoefficients
    ) throws {
        try device.enqueueApply(
            gradient: gradient.buffer.address, input: coefficients.ignoresInput ? nil : input.buffer.address,
            output: output.buffer.address, geometry: gradient.geometry, dataType: gradient.dataType,
            coefficients: coefficients)
    }
}

extension DeviceTensor {
    /// The kernels' view of the shape and layout.
    var geometry: KernelGeometry { KernelGeometry(shape: shape, layout: layout) }
}
