/// The element type of a ``Tensor``.
public enum TensorDataType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, `Float`: the type of every computation on the CPU.
    case float32
    /// IEEE 754 binary16, `Float16`: storage type for GPU data (parameters and statistics
    /// stay `Float32`); the CPU backend rejects it.
    case float16

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float32: 4
        case .float16: 2
        }
    }

    /// NumPy's name (`"float32"`, `"float16"`).
    public var description: String { rawValue }
}

/// The heap buffer behind one or more ``Tensor`` values.
///
/// A storage is a reference: every tensor created from it sees writes made through any
/// other (PuzzleLib's `gpuarray` and `torch.Tensor` semantics). Memory is 64-byte aligned
/// and zero-initialized.
public final class TensorStorage: @unchecked Sendable {
    /// Start of the buffer; valid for ``byteCount`` bytes until the storage is freed.
    public let rawAddress: UnsafeMutableRawPointer
    /// Size of the buffer in bytes.
    public let byteCount: Int

    /// Allocates `byteCount` zeroed bytes.
    public init(byteCount: Int) {
        precondition(byteCount >= 0, "TensorStorage byteCount must be >= 0")
        rawAddress = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        rawAddress.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 64))
        self.byteCount = byteCount
    }

    deinit {
        rawAddress.deallocate()
    }

    /// The buffer as `Float` values (meaningful for `float32` tensors).
    public var floats: UnsafeMutablePointer<Float> { rawAddress.assumingMemoryBound(to: Float.self) }
}
