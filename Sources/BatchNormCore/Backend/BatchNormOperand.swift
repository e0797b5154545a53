/// A tensor a batch-normalization module computes on, wherever its elements live: ``Tensor``
/// in host memory, or a device tensor of a GPU backend (BatchNormCUDA's `DeviceTensor`).
///
/// A module runs one orchestration for every operand type (validate, collect, merge,
/// finalize, apply, commit: <doc:ComputeSeam>); the operand only says what it is (shape,
/// layout, type, place), how to make an output next to it, and which backend computes on it.
/// `bn(x)` and `bn.backward(g)` therefore take a host tensor and a device tensor alike, and
/// return a tensor of the same type and place.
public protocol BatchNormOperand: Sendable {
    /// The logical shape `(N, C, S...)`, whatever the layout.
    var shape: [Int] { get }
    /// How the elements are ordered.
    var layout: TensorLayout { get }
    /// The element type.
    var dataType: TensorDataType { get }
    /// Where the elements live, as errors name it: `"host"` for ``Tensor``, `"cuda:0"` for a
    /// tensor on the first GPU. A backward pass takes a gradient from the place of the forward
    /// input only.
    var placement: String { get }

    /// A tensor of the same shape, layout, data type and place whose contents are undefined,
    /// for outputs that a backend overwrites entirely.
    /// - Throws: Allocation errors of the place.
    func makeUninitializedLike() throws -> Self

    /// Whether `other` reads and writes the same memory (an in-place evaluation output).
    func sharesStorage(with other: Self) -> Bool

    /// The backend that computes on this tensor in a module whose ``BatchNormND/backend`` (the
    /// backend for host tensors) is `moduleBackend`: that backend itself for a host
    /// ``Tensor``; the tensor's own device for a device tensor.
    /// - Throws: When the tensor cannot be computed on with `moduleBackend` (for example a
    ///   device tensor on another GPU than the module's GPU backend), naming both places.
    func backend(moduleBackend: any BatchNormBackend<Tensor>) throws -> any BatchNormBackend<Self>
}

extension Tensor: BatchNormOperand {
    /// `"host"`.
    public var placement: String { "host" }

    /// A host tensor of the same shape, layout and data type with undefined contents.
    /// - Throws: ``TensorError/invalidShape(shape:)`` (never for a valid tensor's shape).
    public func makeUninitializedLike() throws -> Tensor {
        try Tensor(uninitialized: shape, layout: layout, dataType: dataType)
    }

    /// `moduleBackend`: host tensors are computed on by the module's backend (the CPU, or a GPU
    /// backend that copies them to its device and back).
    public func backend(moduleBackend: any BatchNormBackend<Tensor>) -> any BatchNormBackend<Tensor> {
        moduleBackend
    }
}
