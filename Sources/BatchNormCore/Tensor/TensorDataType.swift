/// The element type of a ``Tensor``.
///
/// Parameters and running statistics are always `Float32`; data may be stored in any of
/// these types. Every computation runs in `Float32` (apply) or `Double` (sums), and half
/// results are rounded once to the storage type, to nearest even.
public enum TensorDataType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, `Float`.
    case float32
    /// IEEE 754 binary16, `Float16`: 11 significant bits, largest finite value 65504
    /// (larger values round to ±infinity), subnormals below 2⁻¹⁴.
    case float16
    /// bfloat16: the upper 16 bits of a binary32, so the same range as `Float` with 8
    /// significant bits. Rounding from `Float` is to nearest even; `Float` subnormals
    /// (magnitude below 2⁻¹²⁶) become a zero of the same sign, as the AVX512-BF16
    /// instruction does, on every CPU.
    case bfloat16

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        }
    }

    /// NumPy's name (`"float32"`, `"float16"`), or `"bfloat16"` (PyTorch's; NumPy has none).
    public var description: String { rawValue }
}
