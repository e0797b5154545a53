// The finalize and commit steps of the compute seam (<doc:ComputeSeam>), written once for
// every path: host tensors on any backend, the CUDA target's device tensors, and (through
// ``BatchNormND/processGroup``) statistics merged across processes. Each path collects and
// merges its own way, then hands the merged per-channel values to these functions.
//
// Legend: C channels (`maps`), M values per channel over the whole (possibly global) batch,
// μ batch mean, σ² = M2/M biased batch variance, γ scale, β bias.

/// What a training forward's *finalize* step computes from the merged moments: the batch
/// statistics, the new running statistics and the apply coefficients. Nothing in the module
/// changes until ``BatchNormND/commitTraining(_:)`` stores it.
package struct TrainingFinalization {
    /// `n` of the factor rule: ``BatchNormND/numOfProps`` after this pass.
    package let propagation: Int
    /// `M` of the batch the statistics describe.
    package let count: Int
    /// `μ` per channel.
    package let mean: [Double]
    /// `invstd = 1/sqrt(σ² + ε)` per channel.
    package let invstd: [Double]
    /// `(1 − factor)·mean + factor·μ` per channel.
    package let runningMean: [Float]
    /// `(1 − factor)·var + factor·σ²·M/(M − 1)` per channel.
    package let runningVariance: [Float]
    /// `y = b·(x − shift) + offset` with `b = γ·invstd`, `shift = Float(μ)`,
    /// `offset = β − b·(μ − shift)`.
    package let coefficients: ChannelCoefficients
}

/// What a training forward keeps for its backward: `μ`, `invstd` and `M` (global when the
/// statistics were synchronized).
package struct SavedStatistics: Sendable {
    package let mean: [Double]
    package let invstd: [Double]
    package let count: Int
}

/// The per-channel rule of a training forward's *finalize*, written once: the one-call
/// ``BatchNormND/finalizeTraining(_:count:shape:parameters:)`` and the channel-fused
/// ``BatchNormBackend/collectStatisticsAndNormalize(_:into:coefficients:)`` both call
/// ``channel(_:_:)``, so they apply the same coefficients.
package struct TrainingFinalizer: Sendable {
    /// `n` of the factor rule after this pass.
    package let propagation: Int
    /// `M`.
    let count: Double
    /// `max(initFactor/n, minFactor)`.
    let factor: Double
    let epsilon: Double
    let oldMean: [Float], oldVariance: [Float], scale: [Float], bias: [Float]

    /// What finalize computes for one channel.
    package struct Channel {
        /// `μ`.
        package let mean: Double
        /// `invstd = 1/sqrt(σ² + ε)`.
        package let invstd: Double
        /// `(1 − factor)·mean + factor·μ`.
        package let runningMean: Float
        /// `(1 − factor)·var + factor·σ²·M/(M − 1)`.
        package let runningVariance: Float
        /// `y = b·(x − shift) + offset` with `b = γ·invstd`, `shift = Float(μ)`,
        /// `offset = β − b·(μ − shift)`.
        package let coefficients: ChannelCoefficients.Channel
    }

    /// Channel `c` from its merged moments (`σ² = M2/M`), or `nil` when `μ` or `σ²` is not
    /// finite in `Double`, or `μ` or a new running statistic is not finite in `Float` (a batch
    /// of finite values near ±1e20 has σ² beyond Float's range).
    package func channel(_ c: Int, _ moments: ChannelMoments) -> Channel? {
        let mu = moments.mean, variance = moments.m2 / count
        let newMean = Float((1 - factor) * Double(oldMean[c]) + factor * mu)
        let newVariance = Float((1 - factor) * Double(oldVariance[c]) + factor * variance * count / (count - 1))
        guard mu.isFinite, variance.isFinite, Float(mu).isFinite, newMean.isFinite, newVariance.isFinite else {
            return nil
        }
        let inverse = 1 / (variance + epsilon).squareRoot()
        let b = Double(scale[c]) * inverse
        let coefficients = ChannelCoefficients.Channel(
            inputMultiplier: Float(b), shift: Float(mu),
            offset: Float(Double(bias[c]) - b * (mu - Double(Float(mu)))))
        return Channel(
            mean: mu, invstd: inverse, runningMean: newMean, runningVariance: newVariance,
            coefficients: coefficients)
    }
}

/// The per-channel rule of a training backward's finalize, written once (the one-call and
/// the channel-fused backward both use it): the apply coefficients of
/// `dx = γ·invstd/M · (M·g − Σg − x̂·Σ(g·x̂))` as `dx = a·g + b·(x − shift) + offset` with
/// `a = γ·invstd`, `b = −γ·invstd³·Σg(x−μ)/M`, `shift = Float(μ)` and
/// `offset = −a·Σg/M − b·(μ − shift)` (the formula centered on a `Float` shift).
package struct GradientFinalizer: Sendable {
    let saved: SavedStatistics
    let scale: [Float]

    package func coefficients(_ c: Int, _ sums: GradientSums) -> ChannelCoefficients.Channel {
        let count = Double(saved.count), invstd = saved.invstd[c], gamma = Double(scale[c])
        let gradientMultiplier = gamma * invstd
        let inputMultiplier = -gamma * invstd * invstd * invstd * sums.gradientTimesCentered / count
        let center = Float(saved.mean[c])
        return ChannelCoefficients.Channel(
            gradientMultiplier: Float(gradientMultiplier), inputMultiplier: Float(inputMultiplier), shift: center,
            offset: Float(
                -gradientMultiplier * sums.gradient / count - inputMultiplier * (saved.mean[c] - Double(center))))
    }
}

extension BatchNormND {
    /// Rank, maps and data-type checks shared by forward and backward, for host and device
    /// tensors alike.
    /// - Parameter supports: Whether the tensor's data type can be processed where it lives,
    ///   named `placement` in the message.
    /// - Throws: ``BatchNormError/rankMismatch(argument:expected:actual:shape:)``,
    ///   ``BatchNormError/mapsMismatch(argument:expected:actual:)`` or
    ///   ``BatchNormError/dataTypeMismatch(argument:expected:actual:)``.
    package func checkShape(
        _ shape: [Int], dataType: TensorDataType, argument: String,
        supports: (TensorDataType) -> Bool, placement: String
    ) throws {
        guard shape.count == dataRank else {
            throw BatchNormError.rankMismatch(argument: argument, expected: dataRank, actual: shape.count, shape: shape)
        }
        guard shape[1] == maps else {
            throw BatchNormError.mapsMismatch(argument: argument, expected: maps, actual: shape[1])
        }
        guard supports(dataType) else {
            let supported = TensorDataType.allCases.filter(supports).map(\.rawValue).joined(separator: " or ")
            throw BatchNormError.dataTypeMismatch(
                argument: argument, expected: "\(supported) on \(placement)",
                actual: dataType.rawValue)
        }
    }

    /// The training rule `M >= 2` (the unbiased variance divides by `M − 1`); with a
    /// ``processGroup``, `M` is the global count and the message says so.
    /// - Throws: ``BatchNormError/tooFewValuesPerChannel(expected:actual:shape:)``.
    package func checkValuesPerChannel(_ count: Int, shape: [Int]) throws {
        guard count < 2 else { return }
        let expected = processGroup.map { "at least 2 (summed over the \($0.size) ranks of the group)" } ?? "at least 2"
        throw BatchNormError.tooFewValuesPerChannel(expected: expected, actual: count, shape: shape)
    }

    /// Finalize of a training forward: from the merged moments of `count` values per channel
    /// to ``TrainingFinalization``, channel by channel with ``TrainingFinalizer``. Changes
    /// nothing.
    ///
    /// - Parameters:
    ///   - moments: `C` merged moments (each with count `M`).
    ///   - count: `M`.
    ///   - shape: The shape named in the `M < 2` error (the local batch's).
    /// - Throws: ``BatchNormError/tooFewValuesPerChannel(expected:actual:shape:)`` when
    ///   `M < 2`; ``BatchNormError/nonFiniteStatistics(channel:mean:variance:)`` for the first
    ///   channel ``TrainingFinalizer/channel(_:_:)`` rejects.
    package func finalizeTraining(
        _ moments: [ChannelMoments], count: Int, shape: [Int],
        parameters: Parameters
    ) throws -> TrainingFinalization {
        try checkValuesPerChannel(count, shape: shape)
        let finalizer = trainingFinalizer(count: count, parameters: parameters)
        var mean = [Double](), invstd = [Double](), runningMean = [Float](), runningVariance = [Float]()
        var coefficients = [ChannelCoefficients.Channel]()
        for c in 0..<maps {
            guard let channel = finalizer.channel(c, moments[c]) else {
                throw BatchNormError.nonFiniteStatistics(
                    channel: c, mean: moments[c].mean,
                    variance: moments[c].m2 / Double(count))
            }
            mean.append(channel.mean)
            invstd.append(channel.invstd)
            runningMean.append(channel.runningMean)
            runningVariance.append(channel.runningVariance)
            coefficients.append(channel.coefficients)
        }
        return TrainingFinalization(
            propagation: finalizer.propagation, count: count, mean: mean, invstd: invstd, runningMean: runningMean,
            runningVariance: runningVariance, coefficients: ChannelCoefficients(coefficients))
    }

    /// The per-channel finalize of a training forward over `count` values per channel.
    ///
    /// The counter `n` saturates at `Int.max` (a loaded state may hold any count): `Double(n)`
    /// is 2⁶³ for `Int.max` and for `Int.max + 1` alike, so the factor is the same either way.
    package func trainingFinalizer(count: Int, parameters: Parameters) -> TrainingFinalizer {
        let (next, overflow) = numOfProps.addingReportingOverflow(1)
        let propagation = overflow ? Int.max : next
        return TrainingFinalizer(
            propagation: propagation, count: Double(count),
            factor: max(initFactor / Double(propagation), minFactor), epsilon: epsilon,
            oldMean: parameters.mean.scalars, oldVariance: parameters.variance.scalars,
            scale: parameters.scale.scalars, bias: parameters.bias.scalars)
    }

    /// Commit of a training forward: stores the running statistics, ``numOfProps``,
    /// ``savemean``, ``saveinvvar`` and the statistics backward needs. Cannot fail once the
    /// parameters exist (the two small tensors are allocated before anything is written).
    package func commitTraining(_ finalized: TrainingFinalization, parameters: Parameters) throws {
        let shape = parameters.mean.shape
        let savedMean = try Tensor(finalized.coefficients.shift, shape: shape)
        let savedInvstd = try Tensor(finalized.invstd.map { Float($0) }, shape: shape)
        parameters.mean.storage.floats.update(from: finalized.runningMean, count: maps)
        parameters.variance.storage.floats.update(from: finalized.runningVariance, count: maps)
        numOfProps = finalized.propagation
        savedStatistics = SavedStatistics(mean: finalized.mean, invstd: finalized.invstd, count: finalized.count)
        savemean = savedMean
        saveinvvar = savedInvstd
    }

    /// Records the tensors of a forward pass (``inData``, ``data``); drops the previous input
    /// gradient.
    func commitForward(input: some BatchNormOperand, output: some BatchNormOperand) {
        savedInput = input
        savedOutput = output
        savedGradient = nil
    }

    /// `γ/sqrt(var + ε)` per channel with the running variance: the multiplier of the
    /// evaluation forward (of `x − mean`) and of the evaluation backward (of `g`).
    package func evaluationMultiplier(parameters: Parameters) -> [Float] {
        let scale = parameters.scale.scalars, variance = parameters.variance.scalars
        return (0..<maps).map { Float(Double(scale[$0]) / (Double(variance[$0]) + epsilon).squareRoot()) }
    }

    /// The evaluation forward's coefficients: `y = b·(x − mean) + β` with
    /// ``evaluationMultiplier(parameters:)``.
    package func evaluationCoefficients(parameters: Parameters) -> ChannelCoefficients {
        ChannelCoefficients(
            inputMultiplier: evaluationMultiplier(parameters: parameters),
            shift: parameters.mean.scalars, offset: parameters.bias.scalars)
    }

    /// The evaluation backward's coefficients: `dx = a·g` with
    /// ``evaluationMultiplier(parameters:)``.
    package func evaluationGradientCoefficients(parameters: Parameters) -> ChannelCoefficients {
        let zero = [Float](repeating: 0, count: maps)
        return ChannelCoefficients(
            gradientMultiplier: evaluationMultiplier(parameters: parameters),
            inputMultiplier: zero, shift: zero, offset: zero)
    }

    /// Finalize of a training backward: ``GradientFinalizer/coefficients(_:_:)`` of every channel.
    package func trainingGradientCoefficients(
        _ sums: [GradientSums], saved: SavedStatistics,
        parameters: Parameters
    ) -> ChannelCoefficients {
        let finalizer = GradientFinalizer(saved: saved, scale: parameters.scale.scalars)
        return ChannelCoefficients(sums.enumerated().map { finalizer.coefficients($0.offset, $0.element) })
    }

    /// Commit of a training backward's parameter gradients:
    /// `scaleGrad ← scale·invstd·Σg(x−μ) + momentum·scaleGrad`,
    /// `biasGrad ← scale·Σg + momentum·biasGrad`.
    package func accumulateParameterGradients(
        _ sums: [GradientSums], saved: SavedStatistics, parameters: Parameters,
        scale: Float, momentum: Float
    ) {
        let scaleGrad = parameters.scaleGrad.storage.floats, biasGrad = parameters.biasGrad.storage.floats
        for c in 0..<maps {
            scaleGrad[c] = Float(
                Double(scale) * saved.invstd[c] * sums[c].gradientTimesCentered
                    + Double(momentum) * Double(scaleGrad[c]))
            biasGrad[c] = Float(Double(scale) * sums[c].gradient + Double(momentum) * Double(biasGrad[c]))
        }
    }

    /// Checks that a gradient has the shape, layout and data type of the forward input.
    /// - Throws: ``BatchNormError/shapeMismatch(argument:expected:actual:)``,
    ///   ``BatchNormError/layoutMismatch(argument:expected:actual:)`` or
    ///   ``BatchNormError/dataTypeMismatch(argument:expected:actual:)``.
    package func checkGradient(
        _ grad: (shape: [Int], layout: TensorLayout, dataType: TensorDataType),
        matches input: (shape: [Int], layout: TensorLayout, dataType: TensorDataType)
    ) throws {
        guard grad.shape == input.shape else {
            throw BatchNormError.shapeMismatch(argument: "grad", expected: input.shape, actual: grad.shape)
        }
        guard grad.layout == input.layout else {
            throw BatchNormError.layoutMismatch(argument: "grad", expected: input.layout, actual: grad.layout)
        }
        guard grad.dataType == input.dataType else {
            throw BatchNormError.dataTypeMismatch(
                argument: "grad", expected: input.dataType.rawValue,
                actual: grad.dataType.rawValue)
        }
    }
}
