import BatchNormCore

/// `CPUBackend` with channel-fused training passes turned off whatever the
/// environment says: the separate collect and apply passes that a module with a process group
/// runs where the local module would fuse, for side-by-side measurements (`bnkit bench --mpi`).
/// Every step is the CPU backend's own; only ``fusesChannels(shape:layout:dataType:backward:)``
/// differs.
public struct UnfusedCPUBackend: BatchNormBackend {
    /// The backend whose steps run.
    public let base: CPUBackend

    /// Wraps `base`.
    public init(_ base: CPUBackend) { self.base = base }

    /// `"<base name> unfused"`.
    public var name: String { base.name + " unfused" }

    /// The base backend's.
    public var supportedDataTypes: [TensorDataType] { base.supportedDataTypes }

    /// The base backend's (`true`).
    public var applyNeverFails: Bool { base.applyNeverFails }

    /// `false`: the training passes run as separate steps.
    public func fusesChannels(shape: [Int], layout: TensorLayout, dataType: TensorDataType, backward: Bool) -> Bool {
        false
    }

    /// The base backend's.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        try base.collectStatistics(of: input)
    }

    /// The base backend's.
    public func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws {
        try base.normalize(input, into: output, coefficients: coefficients)
    }

    /// The base backend's.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        try base.reduceGradient(gradient, input: input, mean: mean)
    }

    /// The base backend's.
    public func applyGradient(
        _ gradient: Tensor, input: Tensor, into output: Tensor, coefficients: ChannelCoefficients
    ) throws {
        try base.applyGradient(gradient, input: input, into: output, coefficients: coefficients)
    }
}
