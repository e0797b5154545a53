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
    ///   ``BatchNormError/nonFiniteStatistics(channel:mean:variance:)``; with a
    ///   ``processGroup`` in training mode also ``BatchNormError/peerFailed(rank:reason:)``
    ///   and ``ProcessGroupError``. The module is unchanged after any throw.
    ///
    /// With a ``processGroup``, a training forward joins one all-gather of the per-channel
    /// moments, or one per group of channels where the pass fuses (every rank must make the
    /// same call), and uses the statistics of all ranks' batches together; `N = 0` is then
    /// accepted as long as the global `M` is at least 2 (<doc:SynchronizedStatistics>). An
    /// evaluation forward never communicates.
    public func callAsFunction(_ data: Tensor) throws -> Tensor {
        try forward(data)
    }

    /// Forward pass of any operand, a host ``Tensor`` or a device tensor (computed on its own
    /// device), with the semantics and errors of ``callAsFunction(_:)-(Tensor)``; the output is
    /// an operand of the same type and place. A device training forward copies the `3C`
    /// moments to the host (one synchronization) to finalize them there, as every path does.
    ///
    /// - Throws: The errors of ``callAsFunction(_:)-(Tensor)``, and those of the operand's place
    ///   (``BatchNormOperand/backend(moduleBackend:)``, allocation, launches).
    public func callAsFunction<Operand: BatchNormOperand>(_ data: Operand) throws -> Operand {
        try forward(data)
    }

    /// The one forward orchestration, for every operand type.
    private func forward<Operand: BatchNormOperand>(_ data: Operand) throws -> Operand {
        let backend = try data.backend(moduleBackend: self.backend)
        if isTraining { return try trainingForward(data, on: backend) }
        let parameters = try loadedParameters()
        try checkShape(of: data, argument: "data", on: backend)
        return try evaluationForward(data, on: backend, parameters: parameters)
    }

    /// ``checkShape(_:dataType:argument:supports:placement:)`` for a tensor computed on `backend`.
    func checkShape<Operand: BatchNormOperand>(
        of tensor: Operand, argument: String, on backend: any BatchNormBackend<Operand>
    ) throws {
        try checkShape(
            tensor.shape, dataType: tensor.dataType, argument: argument, supports: backend.supports,
            placement: backend.name)
    }

    /// Validate and collect (backend), merge (across ``processGroup`` when set), finalize and
    /// commit (shared with every path), apply (backend). Alone, and when the backend
    /// ``BatchNormBackend/fusesChannels(shape:layout:dataType:backward:)``, collect, finalize
    /// and apply run channel by channel in one backend call; the finalize of every channel is
    /// then repeated here in one call (the same function of the same moments, so the same
    /// values) for the commit and the errors. With a group whose agreed schedule fuses the
    /// forward, the grouped form runs instead; the first synchronized forward agrees on the
    /// schedule (its exchange carries this rank's header).
    private func trainingForward<Operand: BatchNormOperand>(_ data: Operand, on backend: any BatchNormBackend<Operand>)
        throws
        -> Operand
    {
        let valuesPerChannel = ChannelGeometry(shape: data.shape).valuesPerChannel
        var header = [Double]()
        if let group = processGroup {
            if let perGroup = schedule(for: group)?.forwardGroup {
                return try groupedTrainingForward(data, on: backend, group: group, channelsPerGroup: perGroup)
            }
            if schedule(for: group) == nil {
                header = SynchronizedSchedule.header(
                    limits: backend.channelFusionLimits, byteCount: data.dataType.byteCount,
                    planar: data.layout == .channelsFirst && ChannelGeometry(shape: data.shape).spatial > 1)
            }
        }
        var fusedOutput: Operand?
        let (parameters, moments, count, agreed) = try mergeMoments(localCount: valuesPerChannel, header: header) {
            let parameters = try loadedParameters()
            try checkShape(of: data, argument: "data", on: backend)
            guard !inplace else { throw BatchNormError.inplaceInTraining(name: name) }
            // Alone, M < 2 is known before reading the data; in a group only the global M counts.
            guard processGroup == nil else { return (parameters, try backend.collectStatistics(of: data)) }
            try checkValuesPerChannel(valuesPerChannel, shape: data.shape)
            guard
                backend.fusesChannels(
                    shape: data.shape, layout: data.layout, dataType: data.dataType,
                    backward: false)
            else {
                return (parameters, try backend.collectStatistics(of: data))
            }
            // Finalize can still throw after the apply, so the previous output is kept (not
            // recycled) until the commit.
            let output = try data.makeUninitializedLike()
            let finalizer = trainingFinalizer(count: valuesPerChannel, parameters: parameters)
            let moments = try backend.collectStatisticsAndNormalize(data, into: output) { c, moments in
                finalizer.channel(c, moments)?.coefficients
            }
            fusedOutput = output
            return (parameters, moments)
        }
        let finalized = try finalizeTraining(moments, count: count, shape: data.shape, parameters: parameters)
        let output: Operand
        if let fusedOutput {
            output = fusedOutput
        } else {
            releasePreviousOutputs(backend)
            output = try data.makeUninitializedLike()
            try backend.normalize(data, into: output, coefficients: finalized.coefficients)
        }
        // Commit: nothing above changed the module.
        try commitTraining(finalized, parameters: parameters)
        commitForward(input: data, output: output)
        if let group = processGroup, let agreed { agreedSchedule = (group, agreed) }
        return output
    }

    /// A synchronized training forward in groups of channels (``SynchronizedSchedule``):
    /// validate, then collect each group, exchange and merge its moments in rank order, and
    /// apply it (``BatchNormBackend/collectStatisticsAndNormalize(_:into:channelsPerGroup:coefficients:)``)
    /// with the coefficients of ``TrainingFinalizer`` from the global moments; finalize and
    /// commit once, after the last group, so a failure in any group leaves the module
    /// unchanged on every rank.
    private func groupedTrainingForward<Operand: BatchNormOperand>(
        _ data: Operand, on backend: any BatchNormBackend<Operand>, group: any ProcessGroup, channelsPerGroup: Int
    ) throws -> Operand {
        let groups = ChannelGroups(channels: maps, perGroup: channelsPerGroup)
        var merged = [ChannelMoments](), count = 0
        let (parameters, output) = try runGrouped(groups) { channels, error in
            _ = try? exchangeMoments(over: group, channels: channels, local: .failure(error))
        } pass: { progress in
            let parameters = try loadedParameters()
            try checkShape(of: data, argument: "data", on: backend)
            guard !inplace else { throw BatchNormError.inplaceInTraining(name: name) }
            // Finalize can still throw after the apply, so the previous output is kept (not
            // recycled) until the commit.
            let output = try data.makeUninitializedLike()
            var finalizer: TrainingFinalizer?
            _ = try backend.collectStatisticsAndNormalize(data, into: output, channelsPerGroup: channelsPerGroup) {
                channels, local in
                try progress.step {
                    let (moments, total, _) = try exchangeMoments(
                        over: group, channels: channels, local: .success(local))
                    if finalizer == nil {
                        // The global M, the same on every rank: every rank stops here alike.
                        try checkValuesPerChannel(total, shape: data.shape)
                        (count, finalizer) = (total, trainingFinalizer(count: total, parameters: parameters))
                    }
                    merged += moments
                    return channels.map { finalizer?.channel($0, moments[$0 - channels.lowerBound])?.coefficients }
                }
            }
            return (parameters, output)
        }
        let finalized = try finalizeTraining(merged, count: count, shape: data.shape, parameters: parameters)
        try commitTraining(finalized, parameters: parameters)
        commitForward(input: data, output: output)
        return output
    }

    /// `y = scale·(x − mean)/sqrt(var + ε) + bias` with the running statistics.
    private func evaluationForward<Operand: BatchNormOperand>(
        _ data: Operand, on backend: any BatchNormBackend<Operand>, parameters: Parameters
    ) throws -> Operand {
        if !inplace { releasePreviousOutputs(backend) }
        let output = inplace ? data : try data.makeUninitializedLike()
        try backend.normalize(data, into: output, coefficients: evaluationCoefficients(parameters: parameters))
        commitForward(input: data, output: output)
        return output
    }

    /// Drops the references to the previous forward output (``data``) and input gradient
    /// (``grad``) just before a new output is allocated, so that their buffers can be
    /// recycled for it: the working set stays input + one output instead of input + two
    /// outputs (which matters when that is the difference between fitting in the cache or
    /// not). Only when the backend's apply step cannot fail
    /// (``BatchNormBackend/applyNeverFails``): every throwing step has passed by then.
    /// Otherwise the apply step may throw, and a throw must leave the module unchanged, so
    /// the references are kept until the commit.
    func releasePreviousOutputs<Operand: BatchNormOperand>(_ backend: any BatchNormBackend<Operand>) {
        guard backend.applyNeverFails else { return }
        savedOutput = nil
        savedGradient = nil
    }
}
