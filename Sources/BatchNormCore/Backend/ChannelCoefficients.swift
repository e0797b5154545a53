/// Per-channel coefficients of an *apply* pass, `out = a·u + b·(x − shift) + offset`.
///
/// - Forward (`u` absent): `y = b·(x − shift) + offset` with `b = scale·invstd`,
///   `shift = Float(μ)`, `offset = bias − b·(μ − shift)`. Centering on a `Float` shift
///   first keeps data with large offsets exact (`α·x + β` would cancel catastrophically).
/// - Backward (`u = g`): `dx = a·g + b·(x − shift) + offset`; in evaluation mode
///   `b = offset = 0` and `x` is not read.
public struct ChannelCoefficients: Equatable, Sendable {
    /// Multiplier of the gradient `g` (backward only; empty or ignored in forward).
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

    /// The four coefficients of one channel.
    public struct Channel: Equatable, Sendable {
        /// `a`, the multiplier of `g` (0 in forward).
        public var gradientMultiplier: Float
        /// `b`, the multiplier of `x − shift`.
        public var inputMultiplier: Float
        /// `shift`.
        public var shift: Float
        /// `offset`.
        public var offset: Float

        /// Creates one channel's coefficients.
        public init(gradientMultiplier: Float = 0, inputMultiplier: Float, shift: Float, offset: Float) {
            self.gradientMultiplier = gradientMultiplier
            self.inputMultiplier = inputMultiplier
            self.shift = shift
            self.offset = offset
        }
    }

    /// Coefficients from one ``Channel`` per channel (a forward apply ignores
    /// ``gradientMultiplier``).
    public init(_ channels: [Channel]) {
        self.init(
            gradientMultiplier: channels.map(\.gradientMultiplier),
            inputMultiplier: channels.map(\.inputMultiplier), shift: channels.map(\.shift),
            offset: channels.map(\.offset))
    }
}
