/// Errors thrown by ``BatchNormND`` and its family.
///
/// Each case carries the expected and the actual value; ``description`` renders them as
/// one sentence. Whenever one of these is thrown the module is left exactly as it was:
/// parameters, running statistics, ``BatchNormND/numOfProps``, gradients and saved tensors.
public enum BatchNormError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The tensor's rank is not the module's (`expected` is 2 for `BatchNorm`, 5 for
    /// `BatchNorm3D`); `argument` is `"data"` or `"grad"`.
    case rankMismatch(argument: String, expected: Int, actual: Int, shape: [Int])
    /// The tensor's channel axis is not `maps`.
    case mapsMismatch(argument: String, expected: Int, actual: Int)
    /// The gradient's shape differs from the data's of the last forward pass.
    case shapeMismatch(argument: String, expected: [Int], actual: [Int])
    /// The gradient's layout differs from the data's of the last forward pass.
    case layoutMismatch(argument: String, expected: TensorLayout, actual: TensorLayout)
    /// The element type is not supported here (for example `Float16` data on the CPU).
    case dataTypeMismatch(argument: String, expected: String, actual: String)
    /// A value list (loaded state) does not have `maps` entries.
    case parameterCountMismatch(parameter: String, expected: Int, actual: Int)
    /// The module was created with `empty: true` and no state has been loaded yet.
    case emptyModule(name: String?)
    /// `backward` was called without a forward pass in the current mode.
    case backwardBeforeForward(name: String?)
    /// A training batch with one value per channel (`M = N·∏S = 1`): the unbiased
    /// variance `σ²·M/(M−1)` is undefined. `M = 0` (an empty batch) is reported too.
    case tooFewValuesPerChannel(expected: String, actual: Int, shape: [Int])
    /// The batch statistics of `channel` are not finite (NaN or ±Inf in the input), or
    /// would not be finite as the `Float` running statistics (finite input beyond about
    /// ±1e19); the running statistics and the counter were not updated.
    case nonFiniteStatistics(channel: Int, mean: Double, variance: Double)
    /// `inplace: true` in training mode (PuzzleLib: "using inplace flag in train mode is
    /// prohibited").
    case inplaceInTraining(name: String?)
    /// An argument outside its domain, such as a negative `epsilon` or `maps`.
    case invalidArgument(name: String, expected: String, actual: String)
    /// Another rank of the module's ``BatchNormND/processGroup`` failed its local step of a
    /// synchronized forward or backward (`reason` says how; that rank threw its own error),
    /// so this rank threw too and left its module unchanged.
    case peerFailed(rank: Int, reason: String)

    public var description: String {
        switch self {
        case .rankMismatch(let argument, let expected, let actual, let shape):
            "\(argument) must be a \(expected)-d tensor, got a \(actual)-d tensor of shape \(shape)"
        case .mapsMismatch(let argument, let expected, let actual):
            "\(argument) has \(actual) maps (expected: \(expected))"
        case .shapeMismatch(let argument, let expected, let actual):
            "\(argument) has shape \(actual) (expected: \(expected), the shape of the last forward input)"
        case .layoutMismatch(let argument, let expected, let actual):
            "\(argument) has layout \(actual) (expected: \(expected), the layout of the last forward input)"
        case .dataTypeMismatch(let argument, let expected, let actual):
            "\(argument) has dtype \(actual) (expected: \(expected))"
        case .parameterCountMismatch(let parameter, let expected, let actual):
            "\(parameter) has \(actual) values (expected: \(expected), one per map)"
        case .emptyModule(let name):
            "module \(name ?? "<unnamed>") was created empty: load its state before using it"
        case .backwardBeforeForward(let name):
            "module \(name ?? "<unnamed>"): backward called before a forward pass in the current mode"
        case .tooFewValuesPerChannel(let expected, let actual, let shape):
            "training needs \(expected) values per channel, got \(actual) for data of shape \(shape)"
        case .nonFiniteStatistics(let channel, let mean, let variance):
            "batch statistics of channel \(channel) are not finite (mean \(mean), variance \(variance)); "
                + "expected finite input: running statistics left unchanged"
        case .inplaceInTraining(let name):
            "module \(name ?? "<unnamed>"): using inplace flag in train mode is prohibited (expected evaluation mode)"
        case .invalidArgument(let name, let expected, let actual):
            "\(name) must be \(expected), got \(actual)"
        case .peerFailed(let rank, let reason):
            "rank \(rank) of the process group failed: \(reason); expected every rank to succeed "
                + "(module left unchanged)"
        }
    }
}
