import BatchNormCore

/// A GPU-resident tensor: a logical shape `(N, C, S...)`, a layout and a data type, like
/// `Tensor`, with its elements in a ``DeviceBuffer``.
///
/// Copying a `DeviceTensor` value copies the reference: tensors made from one another share
/// the buffer (an in-place evaluation forward writes through every one of them).
///
/// ```swift
/// let device = try CUDADevice.shared()
/// let x = try DeviceTensor(Tensor.arange(shape: [5, 3, 10, 10, 10]), on: device) // to device
/// let y = try bn(x)                                                       // on the GPU
/// let host = try y.toHost()                                                       // to host (synchronizes)
/// ```
public struct DeviceTensor: @unchecked Sendable {
    /// Logical shape, batch first, channels second.
    public let shape: [Int]
    /// Storage order.
    public let layout: TensorLayout
    /// Element type (see ``CUDADevice/supportedDataTypes`` for what the kernels compute on).
    public let dataType: TensorDataType
    /// The device memory holding the elements in ``layout`` order.
    public let buffer: DeviceBuffer

    /// The device holding the tensor.
    public var device: CUDADevice { buffer.device }
    /// Number of axes.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }
    /// Bytes of the elements.
    public var byteCount: Int { elementCount * dataType.byteCount }

    /// A tensor with undefined contents.
    /// - Throws: ``CUDAError/invalidArgument(name:expected:actual:)`` for a negative
    ///   dimension; allocation errors.
    public init(
        uninitialized shape: [Int], layout: TensorLayout = .channelsFirst,
        dataType: TensorDataType = .float32, on device: CUDADevice
    ) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw CUDAError.invalidArgument(name: "shape", expected: "dimensions >= 0", actual: "\(shape)")
        }
        self.shape = shape
        self.layout = layout
        self.dataType = dataType
        buffer = try device.allocate(byteCount: shape.reduce(1, *) * dataType.byteCount)
    }

    /// A zero-filled tensor (the fill is enqueued on the device's stream).
    public init(
        zeros shape: [Int], layout: TensorLayout = .channelsFirst, dataType: TensorDataType = .float32,
        on device: CUDADevice
    ) throws {
        try self.init(uninitialized: shape, layout: layout, dataType: dataType, on: device)
        try device.zero(buffer.address, byteCount: byteCount)
    }

    /// Copies a host tensor to the device (same shape, layout, data type). The host bytes are
    /// staged before this returns, so `host` may change afterwards.
    public init(_ host: Tensor, on device: CUDADevice) throws {
        try self.init(uninitialized: host.shape, layout: host.layout, dataType: host.dataType, on: device)
        try device.copy(from: host.storage.rawAddress, to: buffer.address, byteCount: byteCount)
    }

    /// Copies the tensor to a new host tensor; synchronizes the device's stream.
    public func toHost() throws -> Tensor {
        let host = try Tensor(zeros: shape, layout: layout, dataType: dataType)
        try copy(into: host)
        return host
    }

    /// Copies the tensor into `host`, which must have the same shape, layout and data type;
    /// synchronizes the device's stream.
    public func copy(into host: Tensor) throws {
        guard host.shape == shape, host.layout == layout, host.dataType == dataType else {
            throw CUDAError.invalidArgument(
                name: "host tensor", expected: "\(shape) \(layout) \(dataType)",
                actual: "\(host.shape) \(host.layout) \(host.dataType)")
        }
        try device.copy(from: buffer.address, to: host.storage.rawAddress, byteCount: byteCount)
        try device.synchronize()
    }

    /// Overwrites the tensor with a host tensor of the same shape, layout and data type (enqueued).
    public func copy(from host: Tensor) throws {
        guard host.shape == shape, host.layout == layout, host.dataType == dataType else {
            throw CUDAError.invalidArgument(
                name: "host tensor", expected: "\(shape) \(layout) \(dataType)",
                actual: "\(host.shape) \(host.layout) \(host.dataType)")
        }
        try device.copy(from: host.storage.rawAddress, to: buffer.address, byteCount: byteCount)
    }

    /// An independent device copy (device-to-device, enqueued).
    public func copy() throws -> DeviceTensor {
        let result = try DeviceTensor(uninitialized: shape, layout: layout, dataType: dataType, on: device)
        try device.copy(from: buffer.address, toDevice: result.buffer.address, byteCount: byteCount)
        return result
    }

    /// Whether `other` reads and writes the same device memory.
    public func sharesBuffer(with other: DeviceTensor) -> Bool { buffer === other.buffer }
}
