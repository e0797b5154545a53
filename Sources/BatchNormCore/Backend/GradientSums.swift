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
