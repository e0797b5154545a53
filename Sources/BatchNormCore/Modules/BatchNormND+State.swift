/// A module's complete state as plain per-channel values: what is saved and loaded.
public struct BatchNormState: Equatable, Sendable {
    /// Learned scale `γ` (PyTorch's `weight`), `C` values.
    public var scale: [Float]
    /// Learned bias `β`, `C` values.
    public var bias: [Float]
    /// Running mean, `C` values.
    public var mean: [Float]
    /// Running unbiased variance, `C` values.
    public var `var`: [Float]
    /// Training forward passes made (PyTorch's `num_batches_tracked`), so the factor
    /// schedule resumes where it stopped.
    public var numOfProps: Int

    /// Creates a state from its parts.
    public init(scale: [Float], bias: [Float], mean: [Float], `var` variance: [Float], numOfProps: Int) {
        self.scale = scale
        self.bias = bias
        self.mean = mean
        self.var = variance
        self.numOfProps = numOfProps
    }

    /// Number of channels (the length of ``scale``).
    public var maps: Int { scale.count }

    /// The per-channel lists, for ``firstInvalidValue(affine:)``.
    package enum Field: String, CaseIterable {
        case scale, bias, mean
        case variance = "var"
    }

    /// Why a value is invalid.
    package enum ValueProblem: Equatable {
        /// NaN or infinite.
        case nonFinite
        /// A negative running variance.
        case negativeVariance
        /// A non-affine module's scale or bias other than `expected` (1 or 0).
        case notIdentity(expected: Float)
    }

    /// The rule every loaded state follows, from a file or not: scale, bias and mean finite,
    /// variance finite and `>= 0`, and for an `affine: false` module scale exactly 1 and bias
    /// exactly 0 (such a module never applies them, and PyTorch's `affine=False` modules have
    /// none: accepting others would make a save and a load differ). Returns the first value
    /// that breaks it, in the order scale, bias, mean, variance, or `nil`.
    package func firstInvalidValue(affine: Bool) -> (field: Field, index: Int, value: Float, problem: ValueProblem)? {
        for (field, values) in [(Field.scale, scale), (.bias, bias), (.mean, mean), (.variance, self.var)] {
            for (index, value) in values.enumerated() {
                if !value.isFinite { return (field, index, value, .nonFinite) }
                if field == .variance, value < 0 { return (field, index, value, .negativeVariance) }
                if !affine, field == .scale || field == .bias {
                    let identity: Float = field == .scale ? 1 : 0
                    if value != identity { return (field, index, value, .notIdentity(expected: identity)) }
                }
            }
        }
        return nil
    }
}

extension BatchNormND {
    /// The current state (a copy).
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before a state is loaded.
    public func state() throws -> BatchNormState {
        let parameters = try loadedParameters()
        return BatchNormState(
            scale: parameters.scale.scalars, bias: parameters.bias.scalars,
            mean: parameters.mean.scalars, var: parameters.variance.scalars, numOfProps: numOfProps)
    }

    /// Replaces the state; an `empty` module becomes usable. Parameter gradients are zeroed
    /// and saved tensors dropped.
    /// - Throws: ``BatchNormError/parameterCountMismatch(parameter:expected:actual:)`` when a
    ///   list does not hold `maps` values,
    ///   ``BatchNormError/invalidArgument(name:expected:actual:)`` for a negative
    ///   `numOfProps`, a non-finite value, a negative variance, or (for an `affine: false`
    ///   module) a scale other than 1 or a bias other than 0, naming the channel.
    ///   The module is unchanged after a throw.
    public func load(_ state: BatchNormState) throws {
        for (label, values) in [("scale", state.scale), ("bias", state.bias), ("mean", state.mean), ("var", state.var)]
        where values.count != maps {
            throw BatchNormError.parameterCountMismatch(parameter: label, expected: maps, actual: values.count)
        }
        guard state.numOfProps >= 0 else {
            throw BatchNormError.invalidArgument(name: "numOfProps", expected: ">= 0", actual: "\(state.numOfProps)")
        }
        if let invalid = state.firstInvalidValue(affine: affine) {
            let expected =
                switch invalid.problem {
                case .nonFinite: "a finite value"
                case .negativeVariance: "a finite value >= 0"
                case .notIdentity(let identity): "\(identity) (the module is not affine)"
                }
            throw BatchNormError.invalidArgument(
                name: "\(invalid.field.rawValue)[\(invalid.index)]", expected: expected,
                actual: "\(invalid.value)")
        }
        parameters = try Parameters(
            shape: [1, maps] + Array(repeating: 1, count: dataRank - 2), scale: state.scale,
            bias: state.bias, mean: state.mean, variance: state.var)
        numOfProps = state.numOfProps
        reset()
    }

    /// Sets ``scaleGrad`` and ``biasGrad`` to zero.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before a state is loaded.
    public func zeroGradParams() throws {
        let parameters = try loadedParameters()
        parameters.scaleGrad.storage.floats.update(repeating: 0, count: maps)
        parameters.biasGrad.storage.floats.update(repeating: 0, count: maps)
    }

    /// `scale += learnRate·scaleGrad`, `bias += learnRate·biasGrad` (PuzzleLib's sign
    /// convention: its costs hand back the descent direction). Without `affine` the
    /// gradients stay zero, so the parameters stay 1 and 0.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before a state is loaded.
    public func updateParams(learnRate: Float) throws {
        let parameters = try loadedParameters()
        for (parameter, gradient) in [(parameters.scale, parameters.scaleGrad), (parameters.bias, parameters.biasGrad)]
        {
            for c in 0..<maps { parameter.storage.floats[c] += learnRate * gradient.storage.floats[c] }
        }
    }
}
