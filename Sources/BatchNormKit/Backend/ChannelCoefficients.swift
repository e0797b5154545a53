/// Per-channel coefficients of an *apply* pass, `out = a·u + b·(x − shift) + offset`.
///
/// - Forward (`u` absent): `y = b·(x − shift) + offset` with `b = scale·invstd`,
///   `shift = Float(μ)`, `offset = bias − b·(μ − shift)`. Centering on a `Float` shift
///   first keeps data with large offsets exact (`α·x + β` would cancel catastrophically).
/// - Backward (`u = g`): `dx = a·g + b·(x − shift) + offset`; in evaluation mode
///   `b = offset = 0` and `x` is not read.
public struct ChannelCoefficients: Equatable, Sendable {
    /// Multiplier of the gradient `g` (backward only; empty in forward).
    public var gradientMultiplier: [Float]
    /// Multiplier of the centered input `x − shift`.
    public var inputMultiplier: [Float]
    /// Value subtracted from `x` before multiplying.
    public var shift: [Float]
    /// Value added last.
    public var offset: [Float]

    /// Creates coefficients; all non-empty arrays hold one value per channel.
    public init(gradientMultiplier: [Float] = [], inputMultiplier: [Float], shift: [Float], offset: [Float]) {
        self.gradientMultiplier = gradientMultiplier
        self.inputMultiplier = inputMultiplier
        self.shift = shift
        self.offset = offset
    }

    /// Whether the input term vanishes (`b = 0` for every channel), so `x` need not be read.
    public var ignoresInput: Bool { inputMultiplier.allSatisfy { $0 == 0 } }
}
