/// Errors thrown when a ``Tensor`` is created or accessed with inconsistent arguments.
///
/// Every case names the expected and the actual value, and ``description`` renders them
/// as one readable sentence.
public enum TensorError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A dimension of the shape is negative, or the product of the non-zero dimensions in
    /// bytes overflows `Int`.
    case invalidShape(shape: [Int])
    /// The number of values does not match the product of the shape.
    case elementCountMismatch(expected: Int, actual: Int)
    /// An index list has the wrong number of entries for the tensor's rank.
    case indexRankMismatch(expected: Int, actual: Int)
    /// An index lies outside the shape.
    case indexOutOfRange(index: [Int], shape: [Int])

    public var description: String {
        switch self {
        case .invalidShape(let shape):
            "invalid tensor shape \(shape): every dimension must be >= 0 and the product of the non-zero dimensions must fit in Int bytes"
        case .elementCountMismatch(let expected, let actual):
            "expected \(expected) values for the shape, got \(actual)"
        case .indexRankMismatch(let expected, let actual):
            "expected an index with \(expected) entries, got \(actual)"
        case .indexOutOfRange(let index, let shape):
            "index \(index) is out of range for shape \(shape)"
        }
    }
}
