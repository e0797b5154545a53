/// The compute seam every backend implements (<doc:ComputeSeam>).
///
/// Training forward is *collect → merge* (``collectStatistics(of:)``), *finalize*
/// (in ``BatchNormND``, shared by all backends) and *apply* (``normalize(_:into:coefficients:)``).
/// Backward is *reduce* (``reduceGradient(_:input:mean:)``) and *apply*
/// (``applyGradient(_:input:into:coefficients:)``). Tensors handed to a backend have already
/// been validated (rank, channels, matching shapes and layouts).
public protocol BatchNormBackend: Sendable {
    /// A short name for printouts, such as `"cpu (2 threads)"`.
    var name: String { get }

    /// Whether ``normalize(_:into:coefficients:)`` and
    /// ``applyGradient(_:input:into:coefficients:)`` never throw for validated tensors. A
    /// module then drops its previous output just before allocating the next one, so that
    /// the buffer is recycled (a throw after that would leave the module changed, hence the
    /// promise). Default `false`.
    var applyNeverFails: Bool { get }

    /// Whether tensors of `dataType` can be processed (the CPU backend handles every type).
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

extension BatchNormBackend {
    /// `false`: the apply steps may throw (they copy, allocate device memory or launch).
    public var applyNeverFails: Bool { false }
}
