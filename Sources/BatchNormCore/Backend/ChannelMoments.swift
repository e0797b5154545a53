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
        return ChannelMoments(
            count: total,
            mean: mean + delta * (other.count / total),
            m2: m2 + other.m2 + delta * delta * (count * other.count / total))
    }
}
