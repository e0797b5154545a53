import BatchNormKit

/// What a device forward pass keeps for its backward pass (in `BatchNormND.backendState`).
final class DeviceForwardState {
    /// The forward input and output.
    let input: DeviceTensor
    let output: DeviceTensor
    /// Mode of the forward pass.
    let training: Bool

    init(input: DeviceTensor, output: DeviceTensor, training: Bool) {
        self.input = input
        self.output = output
        self.training = training
    }
}

extension BatchNormND {
    /// Forward pass on the GPU for device-resident data; training or evaluation according to
    /// the mode, with the semantics of ``BatchNormND/callAsFunction(_:)`` (see ``BatchNormND``).
    ///
    /// Training runs two kernels: statistics (collect, merge and finalize: the running
    /// statistics, `μ`, `invstd` and the apply coefficients, all on the device) and apply;
    /// then the small per-channel results are copied back (one synchronization) and
    /// committed to the module. Evaluation runs one kernel; with `inplace` the result is
    /// written into `data`'s buffer and the returned tensor shares it.
    ///
    /// Afterwards ``inData`` and ``data`` are `nil` (they are host tensors); the device input
    /// is kept for the device-tensor `backward`. A host-tensor forward in between makes the
    /// device-tensor `backward` throw ``BatchNormKit/BatchNormError/backwardBeforeForward(name:)``.
    ///
    /// - Throws: the errors of ``BatchNormND/callAsFunction(_:)`` and ``CUDAError``. The
    ///   module is unchanged after any throw.
    public func forward(_ data: DeviceTensor) throws -> DeviceTensor {
        let parameters = try loadedParameters()
        try checkDeviceShape(of: data, argument: "data")
        let device = data.device
        let geometry = KernelGeometry(shape: data.shape, layout: data.layout)
        let channels = maps

        guard isTraining else {
            // y = b·(x − mean) + bias with b = scale/sqrt(var + ε), as the host evaluation forward.
            let scale = parameters.scale.scalars, variance = parameters.variance.scalars
            let multiplier = (0..<channels).map { Float(Double(scale[$0]) / (Double(variance[$0]) + epsilon).squareRoot()) }
            let table = try device.upload([Float](repeating: 0, count: channels) + multiplier
                                          + parameters.mean.scalars + parameters.bias.scalars)
            let output = inplace ? data
                : try DeviceTensor(uninitialized: data.shape, layout: data.layout, dataType: data.dataType, on: device)
            try device.enqueueApply(gradient: nil, input: data.buffer.address, output: output.buffer.address,
                                    geometry: geometry, dataType: data.dataType, coefficients: table.address)
            commitDeviceForward(DeviceForwardState(input: data, output: output, training: false))
            return output
        }

        guard !inplace else { throw BatchNormError.inplaceInTraining(name: name) }
        let valuesPerChannel = geometry.batch * geometry.spatial
        guard valuesPerChannel >= 2 else {
            throw BatchNormError.tooFewValuesPerChannel(expected: "at least 2", actual: valuesPerChannel, shape: data.shape)
        }
        let propagation = numOfProps + 1
        let factor = max(initFactor / Double(propagation), minFactor)

        // One scratch buffer: [moments 3C f64 | saved 2C f64 | running 2C f32 | coeff 4C f32 | params 4C f32].
        let c = channels
        let scratch = try device.allocate(byteCount: 40 * c + 40 * c)
        let moments = scratch.address, saved = moments + UInt64(24 * c), running = saved + UInt64(16 * c)
        let coefficients = running + UInt64(8 * c), parameterTable = coefficients + UInt64(16 * c)
        let hostParameters = parameters.scale.scalars + parameters.bias.scalars + parameters.mean.scalars
            + parameters.variance.scalars
        try hostParameters.withUnsafeBytes {
            try device.copy(from: $0.baseAddress!, to: parameterTable, byteCount: $0.count)
        }
        let output = try DeviceTensor(uninitialized: data.shape, layout: data.layout, dataType: data.dataType, on: device)
        try device.enqueueStatistics(
            of: data.buffer.address, geometry: geometry, dataType: data.dataType, moments: moments,
            finalize: .init(parameters: parameterTable, epsilon: epsilon, factor: factor, saved: saved,
                            running: running, coefficients: coefficients))
        try device.enqueueApply(gradient: nil, input: data.buffer.address, output: output.buffer.address,
                                geometry: geometry, dataType: data.dataType, coefficients: coefficients)

        // Synchronization point: the per-channel results come back (40C bytes).
        var doubles = [Double](repeating: 0, count: 5 * c)
        var floats = [Float](repeating: 0, count: 2 * c)
        try doubles.withUnsafeMutableBytes { d in
            try floats.withUnsafeMutableBytes { f in
                try device.copy(from: moments, to: d.baseAddress!, byteCount: d.count)
                try device.copy(from: running, to: f.baseAddress!, byteCount: f.count)
                try device.synchronize()
            }
        }
        // The host's rule (BatchNormND's training forward): μ and σ² finite in Double, and μ
        // and the new Float running statistics (computed on the device the same way) finite.
        let count = Double(valuesPerChannel)
        for channel in 0..<c {
            let mu = doubles[c + channel], variance = doubles[2 * c + channel] / count
            guard mu.isFinite, variance.isFinite, Float(mu).isFinite, floats[channel].isFinite,
                  floats[c + channel].isFinite else {
                throw BatchNormError.nonFiniteStatistics(channel: channel, mean: mu, variance: variance)
            }
        }

        // Commit: nothing above changed the module.
        let batchMean = Array(doubles[(3 * c)..<(4 * c)]), invstd = Array(doubles[(4 * c)..<(5 * c)])
        let shape = parameters.mean.shape
        parameters.mean.storage.floats.update(from: Array(floats[0..<c]), count: c)
        parameters.variance.storage.floats.update(from: Array(floats[c..<(2 * c)]), count: c)
        numOfProps = propagation
        savedStatistics = (batchMean, invstd)
        savemean = try Tensor(batchMean.map { Float($0) }, shape: shape)
        saveinvvar = try Tensor(invstd.map { Float($0) }, shape: shape)
        commitDeviceForward(DeviceForwardState(input: data, output: output, training: true))
        return output
    }

    /// Backward pass on the GPU for the gradient of the last ``forward(_:)``; the semantics
    /// of ``BatchNormND/backward(_:updParamGrads:updGrad:scale:momentum:)``.
    ///
    /// Training runs two kernels: reduce (`Σg`, `Σg·(x − μ)` merged and turned into the apply
    /// coefficients on the device) and apply; the sums come back (one synchronization) to
    /// accumulate ``scaleGrad`` and ``biasGrad``. Evaluation runs one kernel.
    ///
    /// - Returns: `dx` on the device, or `nil` when `updGrad` is `false`. ``grad`` (a host
    ///   tensor) is set to `nil`.
    /// - Throws: the errors of the host `backward` (a device forward must come first) and
    ///   ``CUDAError``. The module is unchanged after any throw.
    @discardableResult
    public func backward(_ grad: DeviceTensor, updParamGrads: Bool = true, updGrad: Bool = true,
                         scale: Float = 1, momentum: Float = 0) throws -> DeviceTensor? {
        let parameters = try loadedParameters()
        try checkDeviceShape(of: grad, argument: "grad")
        guard inData == nil, let state = backendState as? DeviceForwardState, state.training == isTraining else {
            throw BatchNormError.backwardBeforeForward(name: name)
        }
        let input = state.input
        try checkGradient((grad.shape, grad.layout, grad.dataType), matches: (input.shape, input.layout, input.dataType))
        guard grad.device === input.device else {
            throw CUDAError.invalidArgument(name: "grad", expected: "a tensor on device \(input.device.ordinal)",
                                            actual: "device \(grad.device.ordinal)")
        }
        let device = grad.device
        let geometry = KernelGeometry(shape: grad.shape, layout: grad.layout)
        let c = maps
        let gamma = parameters.scale.scalars

        guard isTraining, let (mean, invstd) = savedStatistics else {
            // Evaluation: dx = g·scale/sqrt(var + ε).
            guard updGrad else { self.grad = nil; return nil }
            let variance = parameters.variance.scalars
            let multiplier = (0..<c).map { Float(Double(gamma[$0]) / (Double(variance[$0]) + epsilon).squareRoot()) }
            let table = try device.upload(multiplier + [Float](repeating: 0, count: 3 * c))
            let output = try DeviceTensor(uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType,
                                          on: device)
            try device.enqueueApply(gradient: grad.buffer.address, input: nil, output: output.buffer.address,
                                    geometry: geometry, dataType: grad.dataType, coefficients: table.address)
            self.grad = nil
            return output
        }

        let accumulate = updParamGrads && affine
        guard updGrad || accumulate else { self.grad = nil; return nil }
        // Scratch: [saved 2C f64 | sums 2C f64 | scale C f32 | coeff 4C f32].
        let scratch = try device.allocate(byteCount: 32 * c + 20 * c)
        let saved = scratch.address, sums = saved + UInt64(16 * c), scaleTable = sums + UInt64(16 * c)
        let coefficients = scaleTable + UInt64(4 * c)
        try (mean + invstd).withUnsafeBytes { try device.copy(from: $0.baseAddress!, to: saved, byteCount: $0.count) }
        try gamma.withUnsafeBytes { try device.copy(from: $0.baseAddress!, to: scaleTable, byteCount: $0.count) }
        try device.enqueueGradientReduction(
            gradient: grad.buffer.address, input: input.buffer.address, geometry: geometry, dataType: grad.dataType,
            saved: saved, sums: sums, finalize: updGrad ? .init(scale: scaleTable, coefficients: coefficients) : nil)
        var output: DeviceTensor?
        if updGrad {
            let result = try DeviceTensor(uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType,
                                          on: device)
            try device.enqueueApply(gradient: grad.buffer.address, input: input.buffer.address,
                                    output: result.buffer.address, geometry: geometry, dataType: grad.dataType,
                                    coefficients: coefficients)
            output = result
        }
        if accumulate {
            // Synchronization point: Σg and Σg·(x − μ) come back for the parameter gradients.
            var values = [Double](repeating: 0, count: 2 * c)
            try values.withUnsafeMutableBytes {
                try device.copy(from: sums, to: $0.baseAddress!, byteCount: $0.count)
                try device.synchronize()
            }
            let scaleGrad = parameters.scaleGrad.storage.floats, biasGrad = parameters.biasGrad.storage.floats
            for channel in 0..<c {
                scaleGrad[channel] = Float(Double(scale) * invstd[channel] * values[c + channel]
                                           + Double(momentum) * Double(scaleGrad[channel]))
                biasGrad[channel] = Float(Double(scale) * values[channel] + Double(momentum) * Double(biasGrad[channel]))
            }
        }
        self.grad = nil
        return output
    }

    /// Rank, maps and data-type checks for device tensors.
    private func checkDeviceShape(of tensor: DeviceTensor, argument: String) throws {
        guard tensor.rank == dataRank else {
            throw BatchNormError.rankMismatch(argument: argument, expected: dataRank, actual: tensor.rank, shape: tensor.shape)
        }
        guard tensor.shape[1] == maps else {
            throw BatchNormError.mapsMismatch(argument: argument, expected: maps, actual: tensor.shape[1])
        }
    }

    /// Records a device forward pass: host ``inData``/``data``/``grad`` are dropped.
    private func commitDeviceForward(_ state: DeviceForwardState) {
        inData = nil
        data = nil
        grad = nil
        backendState = state
    }
}
