import BatchNormKit

/// Enqueue-only launchers for the kernels of ``CUDAKernelSource``; nothing here synchronizes.
/// Addresses are device pointers; `C` below is the channel count.
extension CUDADevice {
    /// Device outputs of the forward *finalize* done by the statistics kernel's last block.
    struct ForwardFinalize {
        /// `4C` floats: scale, bias, running mean, running variance (the module's values).
        var parameters: UInt64
        var epsilon: Double
        /// `max(initFactor / n, minFactor)` of this pass.
        var factor: Double
        /// `2C` doubles written: μ, invstd.
        var saved: UInt64
        /// `2C` floats written: updated running mean, running variance.
        var running: UInt64
        /// `4C` floats written (the last `3C`): apply coefficients b, shift, offset.
        var coefficients: UInt64
    }

    /// Device outputs of the backward *finalize* done by the reduce kernel's last block.
    struct BackwardFinalize {
        /// `C` floats: scale `γ`.
        var scale: UInt64
        /// `4C` floats written: a, b, shift, offset.
        var coefficients: UInt64
    }

    private func suffix(_ dataType: TensorDataType) -> String { dataType == .float16 ? "f16" : "f32" }

    /// Collect → merge (→ finalize): one launch. Writes `moments` (`3C` doubles: counts, means, M2).
    func enqueueStatistics(of input: UInt64, geometry: KernelGeometry, dataType: TensorDataType,
                           moments: UInt64, finalize: ForwardFinalize?) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let partials = try allocate(byteCount: 3 * 8 * geometry.partialCount)
        let tail: [KernelArgument] = [
            .pointer(partials.address), .pointer(blockCounter), .pointer(moments), .int32(finalize == nil ? 0 : 1),
            .pointer(finalize?.parameters ?? 0), .double(finalize?.epsilon ?? 0), .double(finalize?.factor ?? 0),
            .pointer(finalize?.saved ?? 0), .pointer(finalize?.running ?? 0), .pointer(finalize?.coefficients ?? 0),
        ]
        if geometry.channelsFirst {
            try launch(kernels.function("bn_stats_cf_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                       threads: CUDAKernelSource.threadsPerBlock,
                       arguments: [.pointer(input), .int32(Int32(geometry.batch)), .int32(Int32(geometry.channels)),
                                   .int64(Int64(geometry.spatial)), .int32(Int32(geometry.chunksPerPlane))] + tail)
        } else {
            try launch(kernels.function("bn_stats_cl_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                       threads: CUDAKernelSource.threadsPerBlock,
                       arguments: [.pointer(input), .int32(Int32(geometry.channels)), .int64(Int64(geometry.rows)),
                                   .int32(Int32(geometry.threadsAcrossChannels)), .int32(Int32(geometry.rowBlocks))]
                           + tail)
        }
    }

    /// Backward reduce (→ finalize): one launch. `saved` holds `2C` doubles (μ, invstd; only
    /// μ is read unless finalizing). Writes `sums` (`2C` doubles: Σg, Σg·(x − μ)).
    func enqueueGradientReduction(gradient: UInt64, input: UInt64, geometry: KernelGeometry,
                                  dataType: TensorDataType, saved: UInt64, sums: UInt64,
                                  finalize: BackwardFinalize?) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let partials = try allocate(byteCount: 2 * 8 * geometry.partialCount)
        let tail: [KernelArgument] = [
            .pointer(partials.address), .pointer(blockCounter), .pointer(sums), .int32(finalize == nil ? 0 : 1),
            .pointer(finalize?.scale ?? 0), .pointer(saved), .pointer(finalize?.coefficients ?? 0),
        ]
        if geometry.channelsFirst {
            try launch(kernels.function("bn_reduce_cf_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                       threads: CUDAKernelSource.threadsPerBlock,
                       arguments: [.pointer(gradient), .pointer(input), .int32(Int32(geometry.batch)),
                                   .int32(Int32(geometry.channels)), .int64(Int64(geometry.spatial)),
                                   .int32(Int32(geometry.chunksPerPlane))] + tail)
        } else {
            try launch(kernels.function("bn_reduce_cl_\(suffix(dataType))"), blocks: geometry.reductionBlocks,
                       threads: CUDAKernelSource.threadsPerBlock,
                       arguments: [.pointer(gradient), .pointer(input), .int32(Int32(geometry.channels)),
                                   .int64(Int64(geometry.rows)), .int32(Int32(geometry.threadsAcrossChannels)),
                                   .int32(Int32(geometry.rowBlocks))] + tail)
        }
    }

    /// Apply: `output = a·gradient + b·(input − shift) + offset` with `coefficients` (`4C`
    /// floats a, b, shift, offset); a `nil` gradient or input drops its term. One launch.
    func enqueueApply(gradient: UInt64?, input: UInt64?, output: UInt64, geometry: KernelGeometry,
                      dataType: TensorDataType, coefficients: UInt64) throws {
        guard geometry.elementCount > 0 else { return }
        let kernels = try self.kernels()
        let mode = switch (gradient != nil, input != nil) {
        case (true, true): "gx"
        case (true, false): "g"
        default: "x"
        }
        let threads = CUDAKernelSource.threadsPerBlock
        let head: [KernelArgument] = [.pointer(gradient ?? 0), .pointer(input ?? 0), .pointer(output),
                                      .int32(Int32(geometry.channels))]
        if geometry.channelsFirst {
            try launch(kernels.function("bn_apply_cf_\(mode)_\(suffix(dataType))"),
                       blocks: geometry.batch * geometry.channels * geometry.chunksPerPlane, threads: threads,
                       arguments: head + [.int64(Int64(geometry.spatial)), .int32(Int32(geometry.chunksPerPlane)),
                                          .pointer(coefficients)])
        } else {
            let width = dataType == .float16 ? 8 : 4
            let units = geometry.channels % width == 0 ? geometry.elementCount / width : geometry.elementCount
            let blocks = max(1, min((units + threads - 1) / threads, multiprocessorCount * 32))
            try launch(kernels.function("bn_apply_cl_\(mode)_\(suffix(dataType))"), blocks: blocks, threads: threads,
                       arguments: head + [.int64(Int64(geometry.elementCount)), .pointer(coefficients)])
        }
    }
}
