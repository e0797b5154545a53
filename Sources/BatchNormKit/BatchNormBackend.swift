/// Count, mean and sum of squared deviations (`M2`) of one channel's values, in `Double`.
///
/// The partial result of the *collect* step; partials combine with ``merged(with:)``
/// (Chan, Golub and LeVeque's pairwise update), which is also how statistics from other
/// threads, GPU blocks or processes join.
public struct ChannelMoments: Equatable, Sendable {
    /// Number of values.
    public var count: Double
    /// Their mean.
    public var mean: Double
    /// `Σ(x − mean)²`.
    public var m2: Double

    /// Creates moments from their parts.
    public init(count: Double, mean: Double, m2: Double) {
        self.count = count
        self.mean = mean
        self.m2 = m2
    }

    /// No values.
    public static let empty = ChannelMoments(count: 0, mean: 0, m2: 0)

    /// The moments of the union of both value sets:
    /// `n = na + nb`, `δ = μb − μa`, `μ = μa + δ·nb/n`, `M2 = M2a + M2b + δ²·na·nb/n`.
    @inlinable
    public func merged(with other: ChannelMoments) -> ChannelMoments {
        if other.count == 0 { return self }
        if count == 0 { return other }
        let total = count + other.count
        let delta = other.mean - mean
        return ChannelMoments(count: total,
                              mean: mean + delta * (other.count / total),
                              m2: m2 + other.m2 + delta * delta * (count * other.count / total))
    }

    /// Biased variance `M2 / n`.
    public var biasedVariance: Double { m2 / count }
}

/// Per-channel sums of the training backward's *reduce* step, in `Double`.
public struct GradientSums: Equatable, Sendable {
    /// `Σ g` over the channel.
    public var gradient: Double
    /// `Σ g·(x − μ)` over the channel, with `μ` the batch mean of the forward pass.
    public var gradientTimesCentered: Double

    /// Creates sums from their parts.
    public init(gradient: Double, gradientTimesCentered: Double) {
        self.gradient = gradient
        self.gradientTimesCentered = gradientTimesCentered
    }
}

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

/// The compute seam every backend implements (DESIGN.md section 3).
///
/// Training forward is *collect → merge* (``collectStatistics(of:)``), *finalize*
/// (in ``BatchNormND``, shared by all backends) and *apply* (``normalize(_:into:coefficients:)``).
/// Backward is *reduce* (``reduceGradient(_:input:mean:)``) and *apply*
/// (``applyGradient(_:input:into:coefficients:)``). Tensors handed to a backend have already
/// been validated (rank, channels, matching shapes and layouts).
public protocol BatchNormBackend: Sendable {
    /// A short name for printouts, such as `"cpu (2 threads)"`.
    var name: String { get }

    /// Whether tensors of `dataType` can be processed (the CPU handles `float32` only).
    func supports(_ dataType: TensorDataType) -> Bool

    /// Per-channel moments of `input`, accumulated in `Double` (or an equally accurate
    /// scheme) and bitwise reproducible whatever the degree of parallelism.
    func collectStatistics(of input: Tensor) throws -> [ChannelMoments]

    /// Writes `output = b·(input − shift) + offset` per channel. `output` may share
    /// `input`'s storage (in-place evaluation).
    func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws

    /// Per-channel `Σg` and `Σg·(x − mean)` in `Double`, bitwise reproducible.
    func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums]

    /// Writes `output = a·gradient + b·(input − shift) + offset` per channel; `input` is
    /// not read when ``ChannelCoefficients/ignoresInput``.
    func applyGradient(_ gradient: Tensor, input: Tensor, into output: Tensor,
                       coefficients: ChannelCoefficients) throws
}
