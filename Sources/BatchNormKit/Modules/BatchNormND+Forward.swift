extension BatchNormND {
    /// Forward pass: training or evaluation according to the mode (see ``BatchNormND``).
    ///
    /// - Parameter data: `(N, C, S...)` of rank ``dataRank`` with `C == maps`, in either
    ///   layout; the output has the same shape, layout and data type.
    /// - Returns: The normalized tensor (the input's storage itself for an `inplace`
    ///   evaluation forward).
    /// - Throws: ``BatchNormError/emptyModule(name:)``,
    ///   ``BatchNormError/rankMismatch(argument:expected:actual:shape:)``,
    ///   ``BatchNormError/mapsMismatch(argument:expected:actual:)``,
    ///   ``BatchNormError/dataTypeMismatch(argument:expected:actual:)``; in training also
    ///   ``BatchNormError/inplaceInTraining(name:)``,
    ///   ``BatchNormError/tooFewValuesPerChannel(expected:actual:shape:)`` (`M < 2`) and
    ///   ``BatchNormError/nonFiniteStatistics(channel:mean:variance:)``. The module is
    ///   unchanged after any throw.
    public func callAsFunction(_ data: Tensor) throws -> Tensor {
        let parameters = try loadedParameters()
        try checkShape(of: data, argument: "data")
        if isTraining {
            return try trainingForward(data, parameters: parameters)
        }
        return try evaluationForward(data, parameters: parameters)
    }

    /// Rank, maps and data-type checks shared by forward and backward.
    func checkShape(of tensor: Tensor, argument: String) throws {
        guard tensor.rank == dataRank else {
            throw BatchNormError.rankMismatch(argument: argument, expected: dataRank, actual: tensor.rank, shape: tensor.shape)
        }
        guard tensor.shape[1] == maps else {
            throw BatchNormError.mapsMismatch(argument: argument, expected: maps, actual: tensor.shape[1])
        }
        guard backend.supports(tensor.dataType) else {
            let supported = TensorDataType.allCases.filter(backend.supports).map(\.rawValue).joined(separator: " or ")
            throw BatchNormError.dataTypeMismatch(argument: argument, expected: "\(supported) on \(backend.name)",
                                                  actual: tensor.dataType.rawValue)
        }
    }

    /// Collect → merge (backend), finalize (here), apply (backend); commits state last.
    private func trainingForward(_ data: Tensor, parameters: Parameters) throws -> Tensor {
        guard !inplace else { throw BatchNormError.inplaceInTraining(name: name) }
        let valuesPerChannel = ChannelGeometry(shape: data.shape).valuesPerChannel
        guard valuesPerChannel >= 2 else {
            throw BatchNormError.tooFewValuesPerChannel(expected: "at least 2", actual: valuesPerChannel, shape: data.shape)
        }
        let moments = try backend.collectStatistics(of: data)

        // Finalize: μ, σ² = M2/M, invstd = 1/sqrt(σ² + ε); running-stat update with the
        // factor weighting the new batch and the unbiased variance σ²·M/(M−1).
        let count = Double(valuesPerChannel)
        let propagation = numOfProps + 1
        let factor = max(initFactor / Double(propagation), minFactor)
        var batchMean = [Double](), invstd = [Double](), runningMean = [Float](), runningVariance = [Float]()
        let oldMean = parameters.mean.scalars, oldVariance = parameters.variance.scalars
        for c in 0..<maps {
            let mu = moments[c].mean, variance = moments[c].m2 / count
            // Finite in Double is not enough: the running statistics and savemean are Float,
            // and a batch of finite values near ±1e20 has σ² beyond Float's range.
            let newMean = Float((1 - factor) * Double(oldMean[c]) + factor * mu)
            let newVariance = Float((1 - factor) * Double(oldVariance[c]) + factor * variance * count / (count - 1))
            guard mu.isFinite, variance.isFinite, Float(mu).isFinite, newMean.isFinite, newVariance.isFinite else {
                throw BatchNormError.nonFiniteStatistics(channel: c, mean: mu, variance: variance)
            }
            batchMean.append(mu)
            invstd.append(1 / (variance + epsilon).squareRoot())
            runningMean.append(newMean)
            runningVariance.append(newVariance)
        }

        let scale = parameters.scale.scalars, bias = parameters.bias.scalars
        let multiplier = (0..<maps).map { Double(scale[$0]) * invstd[$0] }
        let shift = batchMean.map { Float($0) }
        let coefficients = ChannelCoefficients(
            inputMultiplier: multiplier.map { Float($0) }, shift: shift,
            offset: (0..<maps).map { Float(Double(bias[$0]) - multiplier[$0] * (batchMean[$0] - Double(shift[$0]))) })
        releasePreviousOutputs()
        let output = try Tensor(uninitialized: data.shape, layout: data.layout, dataType: data.dataType)
        try backend.normalize(data, into: output, coefficients: coefficients)

        // Commit: nothing above changed the module.
        let shape = parameters.mean.shape
        parameters.mean.storage.floats.update(from: runningMean, count: maps)
        parameters.variance.storage.floats.update(from: runningVariance, count: maps)
        numOfProps = propagation
        savedStatistics = (batchMean, invstd)
        savemean = try Tensor(shift, shape: shape)
        saveinvvar = try Tensor(invstd.map { Float($0) }, shape: shape)
        inData = data
        self.data = output
        grad = nil
        return output
    }

    /// `y = scale·(x − mean)/sqrt(var + ε) + bias` with the running statistics.
    private func evaluationForward(_ data: Tensor, parameters: Parameters) throws -> Tensor {
        let scale = parameters.scale.scalars, bias = parameters.bias.scalars
        let mean = parameters.mean.scalars, variance = parameters.variance.scalars
        let coefficients = ChannelCoefficients(
            inputMultiplier: (0..<maps).map { Float(Double(scale[$0]) / (Double(variance[$0]) + epsilon).squareRoot()) },
            shift: mean, offset: bias)
        if !inplace { releasePreviousOutputs() }
        let output = inplace ? data : try Tensor(uninitialized: data.shape, layout: data.layout, dataType: data.dataType)
        try backend.normalize(data, into: output, coefficients: coefficients)
        inData = data
        self.data = output
        grad = nil
        return output
    }

    /// Drops the references to the previous forward output (``data``) and input gradient
    /// (``grad``) just before a new output is allocated, so that their buffers can be
    /// recycled for it: the working set stays input + one output instead of input + two
    /// outputs (which matters when that is the difference between fitting in the cache or
    /// not). Only with ``CPUBackend``, whose apply step cannot fail: every throwing step has
    /// passed by then. With another backend the apply step may throw, and a throw must leave
    /// the module unchanged, so the references are kept until the commit.
    func releasePreviousOutputs() {
        guard backend is CPUBackend else { return }
        data = nil
        grad = nil
    }
}
