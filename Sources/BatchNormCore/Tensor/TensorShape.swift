/// The one rule for shapes read from arguments or files: every extent is `>= 0`, and the
/// product of the **non-zero** extents times the element size fits in `Int`.
///
/// Checking only the element count is not enough: `(0, 3, 2³², 2³²)` has 0 elements, yet
/// the flattened spatial size `2⁶⁴` of ``ChannelGeometry`` overflows. NumPy refuses such
/// shapes too. Once a shape passes, the product of any subset of its extents (a sample, a
/// plane, a chunk of samples) fits in `Int`, so the size computations that follow need no
/// further overflow checks.
package enum TensorShape {
    /// Why a shape is refused.
    package enum Violation: Error {
        case negativeExtent
        case overflow
    }

    /// The element count and byte count of `shape` at `elementByteCount` bytes per element.
    /// - Throws: ``Violation`` for a negative extent or an overflowing product.
    package static func size(of shape: [Int], elementByteCount: Int) throws(Violation) -> (elements: Int, bytes: Int) {
        var nonZeroBytes = elementByteCount
        var hasZeroExtent = false
        for extent in shape {
            guard extent >= 0 else { throw .negativeExtent }
            if extent == 0 {
                hasZeroExtent = true
                continue
            }
            let (product, overflow) = nonZeroBytes.multipliedReportingOverflow(by: extent)
            guard !overflow else { throw .overflow }
            nonZeroBytes = product
        }
        return hasZeroExtent ? (0, 0) : (nonZeroBytes / elementByteCount, nonZeroBytes)
    }

    /// A phrase for messages: `"has a negative dimension"` or `"overflows: the product of its
    /// non-zero dimensions exceeds Int.max bytes"`.
    package static func reason(_ violation: Violation) -> String {
        switch violation {
        case .negativeExtent: "has a negative dimension"
        case .overflow:
            "is too large: the product of its non-zero dimensions times the element size exceeds \(Int.max) bytes"
        }
    }
}
