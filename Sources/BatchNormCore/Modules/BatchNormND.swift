/// Batch normalization over the channel axis of `(N, C, S...)` data: PuzzleLib's
/// `BatchNormND`, the parent of ``BatchNorm``, ``BatchNorm1D``, ``BatchNorm2D`` and
/// ``BatchNorm3D``, which differ only in the rank they accept (`2 + spatialDimensions`).
///
/// With `M = N·∏S` values per channel:
/// - **Training forward** (`module(x)` in training mode): `μ = Σx/M`, `σ² = Σ(x−μ)²/M`
///   (biased, accumulated in `Double`), `invstd = 1/sqrt(σ² + ε)`,
///   `y = scale·(x − μ)·invstd + bias`; then, with `n` = ``numOfProps`` counting this pass
///   and `factor = max(initFactor/n, minFactor)`:
///   `mean ← (1 − factor)·mean + factor·μ`, `var ← (1 − factor)·var + factor·σ²·M/(M−1)`.
///   **The factor weights the new batch** (as PuzzleLib's code and cuDNN's
///   `exponentialAverageFactor` do; PuzzleLib's prose writes it the other way round): with
///   the defaults the running statistics are the cumulative average of the first 10
///   batches, then an exponential average giving the new batch weight 0.1.
///   ``savemean`` = μ and ``saveinvvar`` = invstd are kept for backward.
/// - **Evaluation forward**: `y = scale·(x − mean)/sqrt(var + ε) + bias`; with `inplace`
///   the result overwrites the input's storage.
/// - **Backward**: see ``backward(_:updParamGrads:updGrad:scale:momentum:)->Tensor?``.
///
/// Parameters and statistics have shape `(1, C, 1, ...)` of the data's rank and are
/// `Float32`. Any thrown error leaves the module exactly as it was. A batch with non-finite
/// statistics throws and leaves the running statistics untouched.
///
/// `BatchNormND` itself cannot be instantiated: use one of its subclasses.
public class BatchNormND: Module {
    /// The number of spatial axes the class normalizes (0 for ``BatchNorm``, 3 for
    /// ``BatchNorm3D``); `nil` for `BatchNormND` itself.
    public class var spatialDimensions: Int? { nil }

    /// Number of channels `C` (PuzzleLib's `maps`).
    public let maps: Int
    /// `ε` added to the variance.
    public let epsilon: Double
    /// Numerator of the running-average factor `max(initFactor/n, minFactor)`.
    public let initFactor: Double
    /// Lower bound of the running-average factor.
    public let minFactor: Double
    /// Standard deviation of the initial `scale ~ Normal(1, sscale)`.
    public let sscale: Double
    /// Whether `scale` and `bias` are learned; when `false` they stay 1 and 0 and get no gradients.
    public let affine: Bool
    /// Whether the evaluation forward writes its result into the input's storage.
    public let inplace: Bool
    /// The module's name.
    public var name: String?
    /// Where host tensors are computed on; ``CPUBackend`` with all cores by default. A device
    /// tensor is computed on by its own device (``BatchNormOperand/backend(moduleBackend:)``).
    public var backend: any BatchNormBackend<Tensor>
    /// The ranks whose batches the training statistics span (<doc:SynchronizedStatistics>);
    /// `nil` (the default): this module's batch alone. With a group, every rank's module
    /// behaves as one module seeing the concatenation along `N` of all ranks' batches: one
    /// all-gather per training forward and per training backward, none in evaluation mode.
    public var processGroup: (any ProcessGroup)?

    /// `true` in training mode (the initial mode).
    public private(set) var isTraining = true
    /// Number of training forward passes made so far (PuzzleLib's `numOfProps`).
    public package(set) var numOfProps = 0
    /// The input of the last forward pass in the current mode, when it was a host ``Tensor``
    /// (`nil` after a forward on a device tensor, whose input the module keeps for its
    /// backward all the same).
    public var inData: Tensor? { savedInput as? Tensor }
    /// The output of the last forward pass in the current mode, when it was a host ``Tensor``.
    public var data: Tensor? { savedOutput as? Tensor }
    /// The input gradient of the last backward pass, when it was a host ``Tensor``.
    public var grad: Tensor? { savedGradient as? Tensor }
    /// Batch mean `μ` of the last training forward, shape `(1, C, 1, ...)`.
    public package(set) var savemean: Tensor?
    /// Batch `invstd = 1/sqrt(σ² + ε)` of the last training forward, shape `(1, C, 1, ...)`.
    public package(set) var saveinvvar: Tensor?

    /// The learned and running values; `nil` while an `empty` module has no state.
    package var parameters: Parameters?
    /// `μ` and `invstd` of the last training forward in `Double`, for backward.
    package var savedStatistics: SavedStatistics?
    /// The input, output and input gradient of the last passes, host or device tensors (see
    /// ``inData``, ``data`` and ``grad``). A backward pairs with the forward input only when
    /// its gradient is of the same operand type and place.
    package var savedInput, savedOutput, savedGradient: (any BatchNormOperand)?
    /// The channel groups agreed with the other ranks of ``processGroup`` in the first
    /// synchronized training forward (the same on every rank; see ``SynchronizedSchedule``).
    package var agreedSchedule: (group: any ProcessGroup, schedule: SynchronizedSchedule)?

    /// Parameter, statistic and gradient tensors, each `(1, C, 1, ...)`.
    package final class Parameters {
        package let scale, bias, mean, variance, scaleGrad, biasGrad: Tensor
        init(shape: [Int], scale: [Float], bias: [Float], mean: [Float], variance: [Float]) throws {
            self.scale = try Tensor(scale, shape: shape)
            self.bias = try Tensor(bias, shape: shape)
            self.mean = try Tensor(mean, shape: shape)
            self.variance = try Tensor(variance, shape: shape)
            scaleGrad = try Tensor(zeros: shape)
            biasGrad = try Tensor(zeros: shape)
        }
    }

    /// Creates a batch-normalization module.
    ///
    /// - Parameters:
    ///   - maps: Number of channels `C`, at least 1.
    ///   - epsilon: `ε` added to the variance, > 0. Default `1e-5`.
    ///   - initFactor: In `[0, 1]`. Default 1: the first batch replaces the initial statistics.
    ///   - minFactor: In `[0, 1]`. Default 0.1, PyTorch's default `momentum`.
    ///   - sscale: Standard deviation of the initial scale, >= 0. Default 0.01.
    ///   - affine: Learn `scale` and `bias`. Default `true`; when `false`, `scale` is exactly 1.
    ///   - name: Optional name.
    ///   - empty: Allocate nothing; every use throws ``BatchNormError/emptyModule(name:)``
    ///     until ``load(_:)`` provides the state.
    ///   - inplace: Evaluation forward writes into the input (training then throws).
    ///   - backend: Where to compute. Default: ``CPUBackend`` on every core.
    ///   - processGroup: The ranks the training statistics span; default `nil` (local).
    ///   - generator: Source of the initial `scale ~ Normal(1, sscale)`, drawn channel by channel.
    /// - Throws: ``BatchNormError/invalidArgument(name:expected:actual:)`` for `maps < 1`,
    ///   `epsilon` not finite and positive, `initFactor` or `minFactor` outside `[0, 1]`, a
    ///   negative or non-finite `sscale`, or when called on `BatchNormND` itself.
    public required init(
        maps: Int, epsilon: Double = 1e-5, initFactor: Double = 1.0, minFactor: Double = 0.1,
        sscale: Double = 0.01, affine: Bool = true, name: String? = nil, empty: Bool = false,
        inplace: Bool = false, backend: any BatchNormBackend<Tensor> = CPUBackend(),
        processGroup: (any ProcessGroup)? = nil, using generator: inout some RandomNumberGenerator
    ) throws {
        guard let spatialDimensions = Self.spatialDimensions else {
            throw BatchNormError.invalidArgument(
                name: "class", expected: "BatchNorm, BatchNorm1D, BatchNorm2D or BatchNorm3D",
                actual: "BatchNormND")
        }
        guard maps >= 1 else {
            throw BatchNormError.invalidArgument(name: "maps", expected: ">= 1", actual: "\(maps)")
        }
        // ε > 0 keeps invstd finite on constant channels; factors in [0, 1] keep the running
        // variance a convex combination of non-negative values.
        let domains: [(String, Double, String, (Double) -> Bool)] = [
            ("epsilon", epsilon, "a finite value > 0", { $0 > 0 && $0.isFinite }),
            ("initFactor", initFactor, "in [0, 1]", { (0...1).contains($0) }),
            ("minFactor", minFactor, "in [0, 1]", { (0...1).contains($0) }),
            ("sscale", sscale, "a finite value >= 0", { $0 >= 0 && $0.isFinite }),
        ]
        for (label, value, expected, isValid) in domains where !isValid(value) {
            throw BatchNormError.invalidArgument(name: label, expected: expected, actual: "\(value)")
        }
        self.maps = maps
        self.epsilon = epsilon
        self.initFactor = initFactor
        self.minFactor = minFactor
        self.sscale = sscale
        self.affine = affine
        self.name = name
        self.inplace = inplace
        self.backend = backend
        self.processGroup = processGroup
        if empty { return }
        let scale = (0..<maps).map { _ in
            affine ? Float(1 + sscale * generator.nextStandardNormal()) : 1
        }
        let shape = [1, maps] + Array(repeating: 1, count: spatialDimensions)
        parameters = try Parameters(
            shape: shape, scale: scale, bias: Array(repeating: 0, count: maps),
            mean: Array(repeating: 0, count: maps), variance: Array(repeating: 1, count: maps))
    }

    /// Creates a module whose initial scale is drawn from the system's random source.
    /// Same parameters and errors as ``init(maps:epsilon:initFactor:minFactor:sscale:affine:name:empty:inplace:backend:processGroup:using:)``.
    public convenience init(
        maps: Int, epsilon: Double = 1e-5, initFactor: Double = 1.0, minFactor: Double = 0.1,
        sscale: Double = 0.01, affine: Bool = true, name: String? = nil, empty: Bool = false,
        inplace: Bool = false, backend: any BatchNormBackend<Tensor> = CPUBackend(),
        processGroup: (any ProcessGroup)? = nil
    ) throws {
        var generator = SystemRandomNumberGenerator()
        try self.init(
            maps: maps, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor, sscale: sscale,
            affine: affine, name: name, empty: empty, inplace: inplace, backend: backend,
            processGroup: processGroup, using: &generator)
    }

    /// The rank of the data the module accepts: `2 + spatialDimensions`.
    public var dataRank: Int { 2 + (Self.spatialDimensions ?? 0) }

    /// The parameters, or ``BatchNormError/emptyModule(name:)``.
    package func loadedParameters() throws -> Parameters {
        guard let parameters else { throw BatchNormError.emptyModule(name: name) }
        return parameters
    }

    /// Learned per-channel scale (`γ`, PyTorch's `weight`), shape `(1, C, 1, ...)`.
    /// Shares storage with the module: writes through it change the module.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var scale: Tensor { get throws { try loadedParameters().scale } }
    /// Learned per-channel bias (`β`), shape `(1, C, 1, ...)`, shared with the module.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var bias: Tensor { get throws { try loadedParameters().bias } }
    /// Running mean (PyTorch's `running_mean`), shape `(1, C, 1, ...)`, shared with the module.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var mean: Tensor { get throws { try loadedParameters().mean } }
    /// Running unbiased variance (PyTorch's `running_var`), shape `(1, C, 1, ...)`, shared
    /// with the module. Written `bn.var` at the call site.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var `var`: Tensor { get throws { try loadedParameters().variance } }
    /// Accumulated gradient of ``scale``, shape `(1, C, 1, ...)`.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var scaleGrad: Tensor { get throws { try loadedParameters().scaleGrad } }
    /// Accumulated gradient of ``bias``, shape `(1, C, 1, ...)`.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before the state is loaded.
    public var biasGrad: Tensor { get throws { try loadedParameters().biasGrad } }

    /// Switches to training mode and drops saved tensors.
    public func trainMode() {
        isTraining = true
        reset()
    }

    /// Switches to evaluation mode and drops saved tensors.
    public func evalMode() {
        isTraining = false
        reset()
    }

    /// Drops the saved input, output, gradient and batch statistics.
    public func reset() {
        savedInput = nil
        savedOutput = nil
        savedGradient = nil
        savemean = nil
        saveinvvar = nil
        savedStatistics = nil
    }

    /// `2·C`: scale and bias (registered even when not `affine`, as in PuzzleLib); 0 while empty.
    public var numOfParams: Int { parameters == nil ? 0 : 2 * maps }

    /// Bytes of ``numOfParams`` `Float32` values.
    public var paramSize: Int { numOfParams * MemoryLayout<Float>.size }
}

extension BatchNormND: CustomStringConvertible {
    /// `Module BatchNorm3D (name: ...)`, as PuzzleLib prints modules.
    public var description: String { "Module \(type(of: self)) (name: \(name ?? "None"))" }
}
