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
    ///   ``BatchNormError/layoutMismatch(argument:expected:actual:)``; with a
    ///   ``processGroup`` in training mode also ``BatchNormError/peerFailed(rank:reason:)``
    ///   and ``ProcessGroupError``. The module is unchanged after any throw.
    ///
    /// With a ``processGroup``, a training backward that computes `dx` or parameter gradients
    /// joins one all-gather of the per-channel sums, or one per group of channels where the
    /// pass fuses (every rank must make the same call);
    /// `dx` and the parameter gradients use the global sums and `M`, so they are identical
    /// on every rank (<doc:SynchronizedStatistics>).
    @discardableResult
    public func backward(
        _ grad: Tensor, updParamGrads: Bool = true, updGrad: Bool = true,
        scale: Float = 1, momentum: Float = 0
    ) throws -> Tensor? {
        try backward(
            grad, on: grad.backend(moduleBackend: backend), updParamGrads: updParamGrads, updGrad: updGrad,
            scale: scale, momentum: momentum)
    }

    /// Backward pass of any operand, a host ``Tensor`` or a device tensor (computed on its own
    /// device), for the gradient of the last forward output: the semantics and errors of
    /// ``backward(_:updParamGrads:updGrad:scale:momentum:)-(Tensor,_,_,_,_)``. `grad` must be
    /// of the forward input's operand type and place. A device training backward copies the
    /// `2C` sums to the host (one synchronization) to finalize them there.
    ///
    /// - Returns: `dx`, an operand of `grad`'s type and place, or `nil` when `updGrad` is `false`.
    /// - Throws: The errors of the host backward;
    ///   ``BatchNormError/invalidArgument(name:expected:actual:)`` when the forward input was of
    ///   another type or place; the errors of the operand's place.
    @discardableResult
    public func backward<Operand: BatchNormOperand>(
        _ grad: Operand, updParamGrads: Bool = true, updGrad: Bool = true,
        scale: Float = 1, momentum: Float = 0
    ) throws -> Operand? {
        try backward(
            grad, on: grad.backend(moduleBackend: backend), updParamGrads: updParamGrads, updGrad: updGrad,
            scale: scale, momentum: momentum)
    }

    /// The one backward orchestration, for every operand type.
    private func backward<Operand: BatchNormOperand>(
        _ grad: Operand, on backend: any BatchNormBackend<Operand>, updParamGrads: Bool, updGrad: Bool,
        scale: Float, momentum: Float
    ) throws -> Operand? {
        let accumulate = updParamGrads && affine
        guard isTraining else {
            // Evaluation: dx = g·scale/sqrt(var + ε); no parameter gradients, no communication.
            let (parameters, input) = try backwardInputs(grad, on: backend)
            guard updGrad else {
                savedGradient = nil
                return nil
            }
            releasePreviousGradient(backend)
            let output = try grad.makeUninitializedLike()
            try backend.applyGradient(
                grad, input: input, into: output,
                coefficients: evaluationGradientCoefficients(parameters: parameters))
            savedGradient = output
            return output
        }
        guard updGrad || accumulate else {
            _ = try backwardInputs(grad, on: backend)
            savedGradient = nil
            return nil
        }

        if updGrad, let group = processGroup, let perGroup = schedule(for: group)?.backwardGroup {
            return try groupedTrainingBackward(
                grad, on: backend, group: group, channelsPerGroup: perGroup, accumulate: accumulate, scale: scale,
                momentum: momentum)
        }

        // Validate and reduce (backend), merge (across processGroup when set); alone, and
        // when the backend fuses the channels of this tensor, reduce and apply in one call.
        var fusedOutput: Operand?
        let (context, sums) = try mergeGradientSums {
            let (parameters, input) = try backwardInputs(grad, on: backend)
            guard let saved = savedStatistics else { throw BatchNormError.backwardBeforeForward(name: name) }
            guard updGrad, processGroup == nil,
                backend.fusesChannels(
                    shape: grad.shape, layout: grad.layout, dataType: grad.dataType,
                    backward: true)
            else {
                return ((parameters, input, saved), try backend.reduceGradient(grad, input: input, mean: saved.mean))
            }
            releasePreviousGradient(backend)
            let result = try grad.makeUninitializedLike()
            let finalizer = GradientFinalizer(saved: saved, scale: parameters.scale.scalars)
            let sums = try backend.reduceGradientAndApply(
                grad, input: input, mean: saved.mean, into: result,
                coefficients: finalizer.coefficients)
            fusedOutput = result
            return ((parameters, input, saved), sums)
        }
        let (parameters, input, saved) = context
        var output = fusedOutput
        if updGrad && fusedOutput == nil {
            releasePreviousGradient(backend)
            let result = try grad.makeUninitializedLike()
            try backend.applyGradient(
                grad, input: input, into: result,
                coefficients: trainingGradientCoefficients(
                    sums, saved: saved,
                    parameters: parameters))
            output = result
        }
        // Commit: accumulate parameter gradients (dscale = invstd·Σg(x−μ), dbias = Σg).
        if accumulate {
            accumulateParameterGradients(sums, saved: saved, parameters: parameters, scale: scale, momentum: momentum)
        }
        savedGradient = output
        return output
    }

    /// A synchronized training backward that computes `dx`, in groups of channels
    /// (``SynchronizedSchedule``): validate, then reduce each group, exchange and sum its sums
    /// in rank order, and apply it
    /// (``BatchNormBackend/reduceGradientAndApply(_:input:mean:into:channelsPerGroup:coefficients:)``)
    /// with the coefficients of ``GradientFinalizer``; the parameter gradients and `dx` are
    /// committed once, after the last group.
    private func groupedTrainingBackward<Operand: BatchNormOperand>(
        _ grad: Operand, on backend: any BatchNormBackend<Operand>, group: any ProcessGroup, channelsPerGroup: Int,
        accumulate: Bool, scale: Float, momentum: Float
    ) throws -> Operand {
        let groups = ChannelGroups(channels: maps, perGroup: channelsPerGroup)
        var sums = [GradientSums]()
        let (parameters, saved, output) = try runGrouped(groups) { channels, error in
            _ = try? exchangeGradientSums(over: group, channels: channels, local: .failure(error))
        } pass: { progress in
            let (parameters, input) = try backwardInputs(grad, on: backend)
            guard let saved = savedStatistics else { throw BatchNormError.backwardBeforeForward(name: name) }
            // A throw below must leave the module unchanged: the previous gradient is kept.
            let output = try grad.makeUninitializedLike()
            let finalizer = GradientFinalizer(saved: saved, scale: parameters.scale.scalars)
            _ = try backend.reduceGradientAndApply(
                grad, input: input, mean: saved.mean, into: output, channelsPerGroup: channelsPerGroup
            ) { channels, local in
                try progress.step {
                    let global = try exchangeGradientSums(over: group, channels: channels, local: .success(local))
                    sums += global
                    return channels.map { finalizer.coefficients($0, global[$0 - channels.lowerBound]) }
                }
            }
            return (parameters, saved, output)
        }
        if accumulate {
            accumulateParameterGradients(sums, saved: saved, parameters: parameters, scale: scale, momentum: momentum)
        }
        savedGradient = output
        return output
    }

    /// The checks every backward makes: parameters loaded, `grad` of the module's rank, maps
    /// and a supported type, a forward input of the same operand type and place to pair with,
    /// and the same shape, layout and type as that input.
    private func backwardInputs<Operand: BatchNormOperand>(_ grad: Operand, on backend: any BatchNormBackend<Operand>)
        throws
        -> (Parameters, Operand)
    {
        let parameters = try loadedParameters()
        try checkShape(of: grad, argument: "grad", on: backend)
        guard let saved = savedInput else { throw BatchNormError.backwardBeforeForward(name: name) }
        guard let input = saved as? Operand, saved.placement == grad.placement else {
            throw BatchNormError.invalidArgument(
                name: "grad", expected: "a \(type(of: saved)) on \(saved.placement), like the forward input",
                actual: "a \(Operand.self) on \(grad.placement)")
        }
        try checkGradient(
            (grad.shape, grad.layout, grad.dataType), matches: (input.shape, input.layout, input.dataType))
        return (parameters, input)
    }

    /// Drops the previous input gradient (``grad``) just before a new one is allocated, so
    /// that its buffer is recycled; only when ``BatchNormBackend/applyNeverFails``, for the reason given at
    /// ``releasePreviousOutputs(_:)``.
    func releasePreviousGradient<Operand: BatchNormOperand>(_ backend: any BatchNormBackend<Operand>) {
        guard backend.applyNeverFails else { return }
        savedGradient = nil
    }
}
