import BatchNormKit

/// What a device forward pass keeps for its backward pass (the module's saved forward).
final class DeviceForwardState: SavedForward {
    /// The forward input and output.
    let input: DeviceTensor
    let output: DeviceTensor
    /// Mode of the forward pass.
    let isTraining: Bool

    init(input: DeviceTensor, output: DeviceTensor, isTraining: Bool) {
        self.input = input
        self.output = output
        self.isTraining = isTraining
    }
}

extension BatchNormND {
    /// Forward pass on the GPU for device-resident data; training or evaluation according to
    /// the mode, with the semantics of ``BatchNormND/callAsFunction(_:)`` (see ``BatchNormND``).
    ///
    /// The work runs on `data`'s device, whatever the module's ``BatchNormND/backend`` (which
    /// serves host tensors); when that backend is a ``CUDABackend`` it must be on the same
    /// device. Training runs the statistics kernel (collect → merge), copies the `3C`
    /// per-channel moments back (one synchronization), finalizes on the host exactly as
    /// the host path does, and enqueues the apply kernel with the resulting coefficients;
    /// the output is ready when the stream gets there. Evaluation runs one kernel; with
    /// `inplace` the result is written into `data`'s buffer and the returned tensor shares it.
    ///
    /// With a ``BatchNormND/processGroup`` the moments are all-gathered and merged in rank
    /// order on the host between the two kernels (host-staged: the same `3C` doubles come
    /// back and `4C` float coefficients go out as without a group), exactly as for host
    /// tensors (see the SynchronizedStatistics article of BatchNormKit).
    ///
    /// Afterwards ``inData`` and ``data`` are `nil` (they are host tensors); the device input
    /// is kept for the device-tensor `backward`. A host-tensor forward in between makes the
    /// device-tensor `backward` throw ``BatchNormKit/BatchNormError/backwardBeforeForward(name:)``.
    ///
    /// - Throws: the errors of ``BatchNormND/callAsFunction(_:)``, ``CUDAError`` (and
    ///   ``CUDAError/invalidArgument(name:expected:actual:)`` when the module's backend is a
    ///   ``CUDABackend`` on another device). The module is unchanged after any throw.
    public func forward(_ data: DeviceTensor) throws -> DeviceTensor {
        let device = data.device
        let geometry = KernelGeometry(shape: data.shape, layout: data.layout)
        guard isTraining else {
            let parameters = try loadedParameters()
            try checkDeviceShape(of: data, argument: "data")
            let output =
                inplace
                ? data
                : try DeviceTensor(uninitialized: data.shape, layout: data.layout, dataType: data.dataType, on: device)
            try device.enqueueApply(
                gradient: nil, input: data.buffer.address, output: output.buffer.address,
                geometry: geometry, dataType: data.dataType,
                coefficients: evaluationCoefficients(parameters: parameters))
            commitForward(
                input: nil, output: nil,
                savedForward: DeviceForwardState(input: data, output: output, isTraining: false))
            return output
        }

        let valuesPerChannel = geometry.batch * geometry.spatial
        // Validate and collect (moments copied back), merge (across processGroup when set).
        let (parameters, moments, count) = try mergeMoments(localCount: valuesPerChannel) {
            let parameters = try loadedParameters()
            try checkDeviceShape(of: data, argument: "data")
            guard !inplace else { throw BatchNormError.inplaceInTraining(name: name) }
            if processGroup == nil { try checkValuesPerChannel(valuesPerChannel, shape: data.shape) }
            return (
                parameters,
                try device.channelMoments(of: data.buffer.address, geometry: geometry, dataType: data.dataType)
            )
        }
        let finalized = try finalizeTraining(moments, count: count, shape: data.shape, parameters: parameters)
        let output = try DeviceTensor(
            uninitialized: data.shape, layout: data.layout, dataType: data.dataType, on: device)
        try device.enqueueApply(
            gradient: nil, input: data.buffer.address, output: output.buffer.address,
            geometry: geometry, dataType: data.dataType, coefficients: finalized.coefficients)
        // Commit: nothing above changed the module.
        try commitTraining(finalized, parameters: parameters)
        commitForward(
            input: nil, output: nil,
            savedForward: DeviceForwardState(input: data, output: output, isTraining: true))
        return output
    }

    /// Backward pass on the GPU for the gradient of the last ``forward(_:)``; the semantics
    /// of ``BatchNormND/backward(_:updParamGrads:updGrad:scale:momentum:)``, on the
    /// gradient's device like ``forward(_:)``.
    ///
    /// Training runs the reduce kernel (`Σg`, `Σg·(x − μ)`), copies the `2C` sums back (one
    /// synchronization), computes the apply coefficients and the parameter gradients on the
    /// host exactly as the host path does, and enqueues the apply kernel. Evaluation runs one
    /// kernel.
    ///
    /// - Returns: `dx` on the device, or `nil` when `updGrad` is `false`. ``grad`` (a host
    ///   tensor) is set to `nil`.
    /// With a ``BatchNormND/processGroup`` the sums are all-gathered and summed in rank
    /// order on the host before the coefficients are computed (host-staged, like the forward).
    ///
    /// - Throws: the errors of the host `backward` (a device forward must come first) and
    ///   ``CUDAError``. The module is unchanged after any throw.
    @discardableResult
    public func backward(
        _ grad: DeviceTensor, updParamGrads: Bool = true, updGrad: Bool = true,
        scale: Float = 1, momentum: Float = 0
    ) throws -> DeviceTensor? {
        let accumulate = updParamGrads && affine
        guard isTraining else {
            // Evaluation: dx = g·scale/sqrt(var + ε); no communication.
            let (parameters, _) = try backwardInputs(grad)
            guard updGrad else {
                self.grad = nil
                return nil
            }
            let output = try DeviceTensor(
                uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType,
                on: grad.device)
            try grad.device.enqueueApply(
                gradient: grad.buffer.address, input: nil, output: output.buffer.address,
                geometry: KernelGeometry(shape: grad.shape, layout: grad.layout),
                dataType: grad.dataType,
                coefficients: evaluationGradientCoefficients(parameters: parameters))
            self.grad = nil
            return output
        }
        guard updGrad || accumulate else {
            _ = try backwardInputs(grad)
            self.grad = nil
            return nil
        }

        // Validate and reduce (sums copied back), merge (across processGroup when set).
        let device = grad.device
        let geometry = KernelGeometry(shape: grad.shape, layout: grad.layout)
        let (context, sums) = try mergeGradientSums {
            let (parameters, input) = try backwardInputs(grad)
            guard let saved = savedStatistics else { throw BatchNormError.backwardBeforeForward(name: name) }
            let sums = try device.gradientSums(
                gradient: grad.buffer.address, input: input.buffer.address,
                geometry: geometry, dataType: grad.dataType, mean: saved.mean)
            return ((parameters, input, saved), sums)
        }
        let (parameters, input, saved) = context
        var output: DeviceTensor?
        if updGrad {
            let result = try DeviceTensor(
                uninitialized: grad.shape, layout: grad.layout, dataType: grad.dataType,
                on: device)
            try device.enqueueApply(
                gradient: grad.buffer.address, input: input.buffer.address,
                output: result.buffer.address, geometry: geometry, dataType: grad.dataType,
                coefficients: trainingGradientCoefficients(
                    sums, saved: saved,
                    parameters: parameters))
            output = result
        }
        if accumulate {
            accumulateParameterGradients(sums, saved: saved, parameters: parameters, scale: scale, momentum: momentum)
        }
        self.grad = nil
        return output
    }

    /// The checks every device backward makes: parameters loaded, `grad` valid for the
    /// module, a device forward in the current mode to pair with, and the same shape,
    /// layout, type and device as its input.
    private func backwardInputs(_ grad: DeviceTensor) throws -> (Parameters, DeviceTensor) {
        let parameters = try loadedParameters()
        try checkDeviceShape(of: grad, argument: "grad")
        guard let state = savedForward as? DeviceForwardState, state.isTraining == isTraining else {
            throw BatchNormError.backwardBeforeForward(name: name)
        }
        let input = state.input
        try checkGradient(
            (grad.shape, grad.layout, grad.dataType), matches: (input.shape, input.layout, input.dataType))
        guard grad.device === input.device else {
            throw CUDAError.invalidArgument(
                name: "grad", expected: "a tensor on device \(input.device.ordinal)",
                actual: "device \(grad.device.ordinal)")
        }
        return (parameters, input)
    }

    /// The module's shape check for a device tensor, plus the device check: a module whose
    /// ``BatchNormND/backend`` is a ``CUDABackend`` only takes tensors on that backend's device.
    private func checkDeviceShape(of tensor: DeviceTensor, argument: String) throws {
        try checkShape(
            tensor.shape, dataType: tensor.dataType, argument: argument,
            supports: { $0 == .float32 || $0 == .float16 }, placement: "cuda")
        if let cuda = backend as? CUDABackend, cuda.device !== tensor.device {
            throw CUDAError.invalidArgument(
                name: argument, expected: "a tensor on device \(cuda.device.ordinal), the module's backend",
                actual: "device \(tensor.device.ordinal)")
        }
    }
}
