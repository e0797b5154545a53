import BatchNormCore

/// Enqueue-only launchers for the kernels of ``CUDAKernelSource``; nothing here synchronizes.
/// Addresses are device pointers; `C` below is the channel count.
extension CUDADevice {
    /// The entry-point suffix of `dataType`'s kernels (only types in ``supportedDataTypes``
    /// reach a launch: the module validates against it).
    private func suffix(_ dataType: TensorDataType) -> String {
        switch dataType {
        case .float32: "f32"
        case .float16: "f16"
        case .bfloat16: "bf16"
        }
    }

    /// Collect → merge: one launch. Writes `moments` (`3C` doubles: counts, means, M2). The
    /// kernel does no finalize: that runs on the host, in `BatchNormND`, for
    /// every path.
    func enqueueStatistics(
        of input: UInt64, geometry: KernelGeometry, dataType: TensorDataType,
        moments: UInt64
    ) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let partials = try allocate(byteCount: 3 * 8 * geometry.partialCount)
        let tail: [KernelArgument] = [.pointer(partials.address), .pointer(blockCounter), .pointer(moments)]
        if geometry.channelsFirst {
            try launch(
                kernels.function("bn_stats_cf_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                threads: CUDAKernelSource.threadsPerBlock,
                arguments: [
                    .pointer(input), .int32(Int32(geometry.batch)), .int32(Int32(geometry.channels)),
                    .int64(Int64(geometry.spatial)), .int32(Int32(geometry.chunksPerPlane)),
                ] + tail)
        } else {
            try launch(
                kernels.function("bn_stats_cl_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                threads: CUDAKernelSource.threadsPerBlock,
                arguments: [
                    .pointer(input), .int32(Int32(geometry.channels)), .int64(Int64(geometry.rows)),
                    .int32(Int32(geometry.threadsAcrossChannels)), .int32(Int32(geometry.rowBlocks)),
                ]
                    + tail)
        }
    }

    /// Backward reduce: one launch. `mean` holds `C` doubles (μ). Writes `sums` (`2C`
    /// doubles: Σg, Σg·(x − μ)); as for the statistics, the host does the rest.
    func enqueueGradientReduction(
        gradient: UInt64, input: UInt64, geometry: KernelGeometry,
        dataType: TensorDataType, mean: UInt64, sums: UInt64
    ) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let partials = try allocate(byteCount: 2 * 8 * geometry.partialCount)
        let tail: [KernelArgument] = [
            .pointer(mean), .pointer(partials.address), .pointer(blockCounter), .pointer(sums),
        ]
        if geometry.channelsFirst {
            try launch(
                kernels.function("bn_reduce_cf_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                threads: CUDAKernelSource.threadsPerBlock,
                arguments: [
                    .pointer(gradient), .pointer(input), .int32(Int32(geometry.batch)),
                    .int32(Int32(geometry.channels)), .int64(Int64(geometry.spatial)),
                    .int32(Int32(geometry.chunksPerPlane)),
                ] + tail)
        } else {
            try launch(
                kernels.function("bn_reduce_cl_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                threads: CUDAKernelSource.threadsPerBlock,
                arguments: [
                    .pointer(gradient), .pointer(input), .int32(Int32(geometry.channels)),
                    .int64(Int64(geometry.rows)), .int32(Int32(geometry.threadsAcrossChannels)),
                    .int32(Int32(geometry.rowBlocks)),
                ] + tail)
        }
    }

    /// Apply: `output = a·gradient + b·(input − shift) + offset` with `coefficients` (`4C`
    /// floats a, b, shift, offset); a `nil` gradient or input drops its term. One launch.
    func enqueueApply(
        gradient: UInt64?, input: UInt64?, output: UInt64, geometry: KernelGeometry,
        dataType: TensorDataType, coefficients: UInt64
    ) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let mode =
            switch (gradient != nil, input != nil) {
            case (true, true): "gx"
            case (true, false): "g"
            default: "x"
            }
        let threads = CUDAKernelSource.threadsPerBlock
        let head: [KernelArgument] = [
            .pointer(gradient ?? 0), .pointer(input ?? 0), .pointer(output),
            .int32(Int32(geometry.channels)),
        ]
        if geometry.channelsFirst {
            try launch(
                kernels.function("bn_apply_cf_\(mode)_\(suffix(dataType))"),
                blocks: geometry.batch * geometry.channels * geometry.chunksPerPlane, threads: threads,
                arguments: head + [
                    .int64(Int64(geometry.spatial)), .int32(Int32(geometry.chunksPerPlane)),
                    .pointer(coefficients),
                ])
        } else {
            let width = 16 / dataType.byteCount
            let units = geometry.channels % width == 0 ? geometry.elementCount / width : geometry.elementCount
            let blocks = max(1, min((units + threads - 1) / threads, multiprocessorCount * 32))
            try launch(
                kernels.function("bn_apply_cl_\(mode)_\(suffix(dataType))"), blocks: blocks, threads: threads,
                arguments: head + [.int64(Int64(geometry.elementCount)), .pointer(coefficients)])
        }
    }

    // MARK: Stages with host results (each synchronizes once)

    /// Collect → merge of `input`: per-channel moments, copied back (synchronizes). An
    /// empty tensor has count-0 moments.
    func channelMoments(of input: UInt64, geometry: KernelGeometry, dataType: TensorDataType) throws
        -> [ChannelMoments]
    {
        let channels = geometry.channels
        guard geometry.elementCount > 0 else { return Array(repeating: .empty, count: channels) }
        let moments = try allocate(byteCount: 3 * 8 * channels)
        try enqueueStatistics(of: input, geometry: geometry, dataType: dataType, moments: moments.address)
        let values: [Double] = try download(moments.address, count: 3 * channels)
        return (0..<channels).map {
            ChannelMoments(count: values[$0], mean: values[channels + $0], m2: values[2 * channels + $0])
        }
    }

    /// Backward reduce: per-channel `Σg` and `Σg·(x − mean)`, copied back (synchronizes).
    /// An empty tensor has zero sums.
    func gradientSums(
        gradient: UInt64, input: UInt64, geometry: KernelGeometry, dataType: TensorDataType,
        mean: [Double]
    ) throws -> [GradientSums] {
        let channels = geometry.channels
        guard geometry.elementCount > 0 else {
            return Array(repeating: GradientSums(gradient: 0, gradientTimesCentered: 0), count: channels)
        }
        let means = try upload(mean)
        let sums = try allocate(byteCount: 2 * 8 * channels)
        try enqueueGradientReduction(
            gradient: gradient, input: input, geometry: geometry, dataType: dataType,
            mean: means.address, sums: sums.address)
        let values: [Double] = try download(sums.address, count: 2 * channels)
        return (0..<channels).map { GradientSums(gradient: values[$0], gradientTimesCentered: values[channels + $0]) }
    }

    /// ``enqueueApply(gradient:input:output:geometry:dataType:coefficients:)`` with host
    /// coefficients, uploaded as the kernel's table `[a | b | shift | offset]` (`a = 0` for a
    /// forward, whose `ChannelCoefficients/gradientMultiplier` is empty).
    func enqueueApply(
        gradient: UInt64?, input: UInt64?, output: UInt64, geometry: KernelGeometry,
        dataType: TensorDataType, coefficients: ChannelCoefficients
    ) throws {
        guard geometry.elementCount > 0 else { return }
        let a =
            coefficients.gradientMultiplier.isEmpty
            ? [Float](repeating: 0, count: geometry.channels) : coefficients.gradientMultiplier
        let table = try upload(a + coefficients.inputMultiplier + coefficients.shift + coefficients.offset)
        try enqueueApply(
            gradient: gradient, input: input, output: output, geometry: geometry, dataType: dataType,
            coefficients: table.address)
    }

    /// Copies `count` values from the device and synchronizes.
    func download<T: Numeric>(_ address: UInt64, count: Int) throws -> [T] {
        var values = [T](repeating: 0, count: count)
        try values.withUnsafeMutableBytes {
            try copy(from: address, to: $0.baseAddress!, byteCount: $0.count)
            try synchronize()
        }
        return values
    }
}
