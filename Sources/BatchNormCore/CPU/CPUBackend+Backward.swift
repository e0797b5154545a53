// Shape legend: N batch, C channels, S spatial size, L = CPUBackend.gradientBlockLength;
// g is the incoming gradient, x the forward input (both of one storage type), μ[c] the
// forward batch mean. Blocks are
// ReductionBlocks, reduced by the C kernels of `kernelLevel` and merged by
// CPUBackend+Reduction.swift.

import CBatchNormKernels

extension CPUBackend {
    /// Reduce, one read of `g` and `x`: per channel `Σg` and `Σg·(x − μ)` in `Double`.
    ///
    /// Blocks depend only on the shape and layout (`ReductionBlocks`: channels-first plane
    /// blocks of `L` values; channels-last and `S = 1` row blocks); each block's sums are
    /// stored in its own slot and added per channel in block order, so the result is bitwise
    /// identical for any thread count.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        try reduceGradient(gradient, input: input, mean: mean, fusion: nil)
    }

    /// Reduce and apply fused per channel (channels-first with `S > 1`; other tensors run
    /// ``reduceGradient(_:input:mean:)`` then one apply): one thread takes channel `c`, reduces
    /// and merges its blocks exactly as ``reduceGradient(_:input:mean:)`` does (the same sums,
    /// bitwise, for any thread count), then writes
    /// `dx[n, c, ·] = a·g + b·(x − shift) + offset` for every `n` with
    /// `coefficients(c, sums)` while the channel's `g` and `x` are still in its cache.
    public func reduceGradientAndApply(
        _ gradient: Tensor, input: Tensor, mean: [Double], into output: Tensor,
        coefficients: @Sendable (_ channel: Int, GradientSums) -> ChannelCoefficients.Channel
    )
        throws -> [GradientSums]
    {
        let geometry = ChannelGeometry(shape: input.shape)
        guard geometry.elementCount > 0, input.layout == .channelsFirst, geometry.spatial > 1 else {
            return try reduceThenApply(gradient, input: input, mean: mean, into: output, coefficients: coefficients)
        }
        let apply = PlaneApply(
            self, formula: Int32(BNK_APPLY_GRADIENT_AND_INPUT), gradient: gradient, input: input,
            output: output)
        // The fusion's closures outlive nothing: `reduceGradient` returns after every channel is done.
        return try withoutActuallyEscaping(coefficients) { coefficients in
            try reduceGradient(
                gradient, input: input, mean: mean,
                fusion: ChannelFusion(
                    coefficients: { c, sums in coefficients(c, sums) },
                    apply: apply))
        }
    }

    /// Reduce and apply in groups of channels, fused where
    /// ``reduceGradientAndApply(_:input:mean:into:coefficients:)`` fuses (other tensors run
    /// the unfused default): each group's sums are reduced and merged exactly as
    /// ``reduceGradient(_:input:mean:)`` does, their coefficients asked for on the calling
    /// thread, and the group is applied inside the kernel calls that reduce the next group
    /// (the last group alone).
    public func reduceGradientAndApply(
        _ gradient: Tensor, input: Tensor, mean: [Double], into output: Tensor, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ sums: [GradientSums]) throws -> [ChannelCoefficients.Channel]
    ) throws -> [GradientSums] {
        let geometry = ChannelGeometry(shape: input.shape)
        guard geometry.elementCount > 0, input.layout == .channelsFirst, geometry.spatial > 1 else {
            return try reduceThenApply(
                gradient, input: input, mean: mean, into: output, channelsPerGroup: channelsPerGroup,
                coefficients: coefficients)
        }
        let apply = PlaneApply(
            self, formula: Int32(BNK_APPLY_GRADIENT_AND_INPUT), gradient: gradient, input: input,
            output: output)
        // The closure outlives nothing: `reduceGradient` returns after the last group.
        return try withoutActuallyEscaping(coefficients) { coefficients in
            try reduceGradient(
                gradient, input: input, mean: mean, fusion: nil,
                grouped: GroupedFusion(
                    channelsPerGroup: channelsPerGroup,
                    coefficients: { try coefficients($0, $1).map(Optional.some) }, apply: apply))
        }
    }

    /// The blocks of ``reduceGradient(_:input:mean:)``, their kernel and their merge, with
    /// `fusion` and `grouped` as in ``reduce(_:elements:kernel:merge:fusion:grouped:)``.
    private func reduceGradient(
        _ gradient: Tensor, input: Tensor, mean: [Double],
        fusion: ChannelFusion<GradientSums>?, grouped: GroupedFusion<GradientSums>? = nil
    ) throws -> [GradientSums] {
        let geometry = ChannelGeometry(shape: input.shape)
        let zero = GradientSums(gradient: 0, gradientTimesCentered: 0)
        guard geometry.elementCount > 0 else { return Array(repeating: zero, count: geometry.channels) }
        let g = KernelData(gradient), x = KernelData(input)
        let level = kernelLevel.cValue
        let blocks = ReductionBlocks(geometry, layout: input.layout, planeLength: CPUBackend.gradientBlockLength)
        return try mean.withUnsafeBufferPointer { mean in
            let mean = SharedPointer(mean.baseAddress!)
            return try reduce(
                blocks, elements: geometry.elementCount,
                kernel: { block in
                    switch blocks.partition {
                    case .planes:
                        if let run = block.apply {
                            bnk_contiguous_gradient_sums_and_apply(
                                level, x.type, g[block.start], x[block.start],
                                block.length, mean.base[block.channel], block.first,
                                block.second, run)
                        } else {
                            bnk_contiguous_gradient_sums(
                                level, x.type, g[block.start], x[block.start], block.length,
                                mean.base[block.channel], block.first, block.second)
                        }
                    case let .rows(_, _, pattern):
                        bnk_interleaved_gradient_sums(
                            level, x.type, g[block.start], x[block.start], block.length,
                            pattern.channels, pattern.period, pattern.vectorPeriod, mean.base,
                            block.scratch, block.first, block.second)
                    }
                },
                merge: { partials in
                    var total = zero
                    partials.forEach { _, sumG, sumGX in
                        total.gradient += sumG
                        total.gradientTimesCentered += sumGX
                    }
                    return total
                }, fusion: fusion, grouped: grouped)
        }
    }
}
