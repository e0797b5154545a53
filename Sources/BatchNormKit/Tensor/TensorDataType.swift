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
