extension BatchNormND {
    /// Backward pass for the gradient `g` of the last forward output.
    ///
    /// With `x̂ = (x − μ)·invstd` from the last training forward and `M` values per channel:
    /// - training: `dbias = Σg`, `dscale = Σg·x̂`,
    ///   `dx = scale·invstd/M · (M·g − Σg − x̂·Σ(g·x̂))`;
    /// - evaluation: `dx = g·scale/sqrt(var + ε)`, the gradient of the evaluation forward
    ///   (PuzzleLib recomputes batch statistics here; this library uses the consistent one).
    ///
    /// Parameter gradients accumulate only in training mode and when `affine`:
    /// `scaleGrad ← scale·dscale + momentum·scaleGrad`, likewise `biasGrad`.
    ///
    /// - Parameters:
    ///   - grad: Same shape, layout and data type as the last forward input.
    ///   - updParamGrads: Accumulate ``scaleGrad`` and ``biasGrad``. Default `true`.
    ///   - updGrad: Compute the input gradient. Default `true`.
    ///   - scale: Weight of the new parameter gradient. Default 1.
    ///   - momentum: Weight of the accumulated parameter gradient. Default 0.
    /// - Returns: `dx` (also stored in ``grad``), or `nil` when `updGrad` is `false`.
    /// - Throws: ``BatchNormError/emptyModule(name:)``,
    ///   ``BatchNormError/backwardBeforeForward(name:)``, the rank, maps and data-type errors
    ///   of the forward pass, ``BatchNormError/shapeMismatch(argument:expected:actual:)`` and
    ///   ``BatchNormError/layoutMismatch(argument:expected:actual:)``. The module is
    ///   unchanged after any throw.
    @discardableResult
    public func backward(_ grad: Tensor, updParamGrads: Bool = true, updGrad: Bool = true,
                         scale: Float = 1, momentum: Float = 0) throws -> Tensor? {
        let parameters = try loadedParameters()
        try checkShape(of: grad, argument: "grad")
        guard let input = inData else { throw BatchNormError.backwardBeforeForward(name: name) }
        try checkGradient((grad.shape, grad.layout, grad.dataType), matches: (input.shape, input.layout, input.dataType))
        let gamma = parameters.scale.scalars.map(Double.init)

        guard isTraining, let (mean, invstd) = savedStatistics else {
            // Evaluation: dx = g·scale/sqrt(var + ε); no parameter gradients.
            guard updGrad else { self.grad = nil; return nil }
            let variance = parameters.variance.scalars
            let coefficients = ChannelCoefficients(
                gradientMultiplier: (0..<maps).map { Float(gamma[$0] / (Double(variance[$0]) + epsilon).squareRoot()) },
                inputMultiplier: Array(repeating: 0, count: maps), shift: Array(repeating: 0, count: maps),
                offset: Array(repeating: 0, count: maps))
            releasePreviousGradient()
            let output = try Tensor(uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType)
            try backend.applyGradient(grad, input: input, into: output, coefficients: coefficients)
            self.grad = output
            return output
        }

        let accumulate = updParamGrads && affine
        guard updGrad || accumulate else { self.grad = nil; return nil }
        let sums = try backend.reduceGradient(grad, input: input, mean: mean)
        let count = Double(ChannelGeometry(shape: input.shape).valuesPerChannel)

        var output: Tensor?
        if updGrad {
            // dx = A·g + B·(x − shift) + C with A = γ·invstd, B = −γ·invstd³·Σg(x−μ)/M,
            // C = −A·Σg/M − B·(μ − shift): the formula above, centered on a Float shift.
            let shift = mean.map { Float($0) }
            var a = [Float](), b = [Float](), offset = [Float]()
            for c in 0..<maps {
                let gradientMultiplier = gamma[c] * invstd[c]
                let inputMultiplier = -gamma[c] * invstd[c] * invstd[c] * invstd[c] * sums[c].gradientTimesCentered / count
                a.append(Float(gradientMultiplier))
                b.append(Float(inputMultiplier))
                offset.append(Float(-gradientMultiplier * sums[c].gradient / count
                                    - inputMultiplier * (mean[c] - Double(shift[c]))))
            }
            releasePreviousGradient()
            let result = try Tensor(uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType)
            try backend.applyGradient(grad, input: input,
                                      into: result,
                                      coefficients: ChannelCoefficients(gradientMultiplier: a, inputMultiplier: b,
                                                                        shift: shift, offset: offset))
            output = result
        }

        // Commit: accumulate parameter gradients (dscale = invstd·Σg(x−μ), dbias = Σg).
        if accumulate {
            let scaleGrad = parameters.scaleGrad.storage.floats, biasGrad = parameters.biasGrad.storage.floats
            for c in 0..<maps {
                scaleGrad[c] = Float(Double(scale) * invstd[c] * sums[c].gradientTimesCentered + Double(momentum) * Double(scaleGrad[c]))
                biasGrad[c] = Float(Double(scale) * sums[c].gradient + Double(momentum) * Double(biasGrad[c]))
            }
        }
        self.grad = output
        return output
    }

    /// Checks that a gradient has the shape, layout and data type of the forward input.
    /// - Throws: ``BatchNormError/shapeMismatch(argument:expected:actual:)``,
    ///   ``BatchNormError/layoutMismatch(argument:expected:actual:)`` or
    ///   ``BatchNormError/dataTypeMismatch(argument:expected:actual:)``.
    package func checkGradient(_ grad: (shape: [Int], layout: TensorLayout, dataType: TensorDataType),
                               matches input: (shape: [Int], layout: TensorLayout, dataType: TensorDataType)) throws {
        guard grad.shape == input.shape else {
            throw BatchNormError.shapeMismatch(argument: "grad", expected: input.shape, actual: grad.shape)
        }
        guard grad.layout == input.layout else {
            throw BatchNormError.layoutMismatch(argument: "grad", expected: input.layout, actual: grad.layout)
        }
        guard grad.dataType == input.dataType else {
            throw BatchNormError.dataTypeMismatch(argument: "grad", expected: input.dataType.rawValue,
                                                  actual: grad.dataType.rawValue)
        }
    }

    /// Drops the previous input gradient (``grad``) just before a new one is allocated, so
    /// that its buffer is recycled; CPU only, for the reason given at
    /// ``releasePreviousOutputs()``.
    func releasePreviousGradient() {
        guard backend is CPUBackend else { return }
        self.grad = nil
    }
}
