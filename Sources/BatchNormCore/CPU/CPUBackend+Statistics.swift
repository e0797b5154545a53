// Shape legend: N batch, C channels, S spatial size (∏ D·H·W), M = N·S values per channel,
// L = CPUBackend.blockLength. x is the input (float32, float16 or bfloat16, widened to
// double by the kernels); blocks are ReductionBlocks (fixed pieces of
// the tensor whose boundaries depend only on the shape and layout, never on the thread
// count), reduced by the C kernels of `kernelLevel` and merged by CPUBackend+Reduction.swift.

import CBatchNormKernels

extension CPUBackend {
    /// Collect and merge: per-channel `(count, mean, M2)`.
    ///
    /// Collect, one read of `x`, in parallel over `ReductionBlocks` (channels-first: plane
    /// blocks of `L` values; channels-last and `S = 1`: row blocks of every channel). Per
    /// block `b` and channel, in `Double`: `n_b`, `μ_b = Σx / n_b`, `M2_b = Σ(x − μ_b)²`, in
    /// one pass shifted by a value of the channel in the block: channels-first by the
    /// block's first value (`bnk_contiguous_moments`), channels-last by its first row
    /// (`bnk_interleaved_moments`).
    ///
    /// Merge, per channel over its blocks in index order (the k-way form of Chan's update):
    /// `μ = Σ n_b·μ_b / M`, `M2 = Σ (M2_b + n_b·(μ_b − μ)²)`.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        let geometry = ChannelGeometry(shape: input.shape)
        guard geometry.elementCount > 0 else {
            return Array(repeating: .empty, count: geometry.channels)
        }
        return try collect(input, geometry: geometry)
    }

    /// Collect and apply fused per channel (channels-first with `S > 1`; other tensors run
    /// ``collectStatistics(of:)`` then one apply): one thread takes channel `c`, collects and
    /// merges its blocks exactly as ``collectStatistics(of:)`` does (so the same moments,
    /// bitwise, for any thread count), then writes `y[n, c, ·]` for every `n` with the
    /// coefficients `coefficients(c, moments)` while the channel's values are still in its
    /// cache: `x` is read from memory once when a channel fits
    /// (``fusesChannels(shape:layout:dataType:backward:)``).
    public func collectStatisticsAndNormalize(
        _ input: Tensor, into output: Tensor,
        coefficients: @Sendable (_ channel: Int, ChannelMoments) -> ChannelCoefficients.Channel?
    ) throws
        -> [ChannelMoments]
    {
        let geometry = ChannelGeometry(shape: input.shape)
        guard geometry.elementCount > 0, input.layout == .channelsFirst, geometry.spatial > 1 else {
            return try collectThenNormalize(input, into: output, coefficients: coefficients)
        }
        let apply = PlaneApply(self, formula: Int32(BNK_APPLY_FORWARD), gradient: nil, input: input, output: output)
        // The fusion's closures outlive nothing: `collect` returns after every channel is done.
        return try withoutActuallyEscaping(coefficients) { coefficients in
            try collect(input, geometry: geometry, fusion: ChannelFusion(coefficients: coefficients, apply: apply))
        }
    }

    /// Collect and apply in groups of channels, fused where
    /// ``collectStatisticsAndNormalize(_:into:coefficients:)`` fuses (other tensors run the
    /// unfused default): each group's channels are collected and merged exactly as
    /// ``collectStatistics(of:)`` does, their coefficients asked for on the calling thread, and
    /// they are applied inside the kernel calls that collect the next group (the last group
    /// alone), so a group is read from memory once when two groups' share of every thread
    /// fits in its cache.
    public func collectStatisticsAndNormalize(
        _ input: Tensor, into output: Tensor, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ moments: [ChannelMoments]) throws -> [ChannelCoefficients.Channel?]
    ) throws -> [ChannelMoments] {
        let geometry = ChannelGeometry(shape: input.shape)
        guard geometry.elementCount > 0, input.layout == .channelsFirst, geometry.spatial > 1 else {
            return try collectThenNormalize(
                input, into: output, channelsPerGroup: channelsPerGroup, coefficients: coefficients)
        }
        let apply = PlaneApply(self, formula: Int32(BNK_APPLY_FORWARD), gradient: nil, input: input, output: output)
        // The closure outlives nothing: `collect` returns after the last group.
        return try withoutActuallyEscaping(coefficients) { coefficients in
            try collect(
                input, geometry: geometry,
                grouped: GroupedFusion(channelsPerGroup: channelsPerGroup, coefficients: coefficients, apply: apply))
        }
    }

    /// The blocks of ``collectStatistics(of:)``, their kernel and their merge, with
    /// `fusion` and `grouped` as in ``reduce(_:elements:kernel:merge:fusion:grouped:)``.
    private func collect(
        _ input: Tensor, geometry: ChannelGeometry,
        fusion: ChannelFusion<ChannelMoments>? = nil, grouped: GroupedFusion<ChannelMoments>? = nil
    ) throws -> [ChannelMoments] {
        let x = KernelData(input)
        let total = Double(geometry.valuesPerChannel)
        let level = kernelLevel.cValue
        let blocks = ReductionBlocks(geometry, layout: input.layout, planeLength: CPUBackend.blockLength)
        return try reduce(
            blocks, elements: geometry.elementCount,
            kernel: { block in
                switch blocks.partition {
                case .planes:
                    if let run = block.apply {
                        bnk_contiguous_moments_and_apply(
                            level, x.type, x[block.start], block.length, block.first,
                            block.second, run)
                    } else {
                        bnk_contiguous_moments(level, x.type, x[block.start], block.length, block.first, block.second)
                    }
                case let .rows(_, _, pattern):
                    bnk_interleaved_moments(
                        level, x.type, x[block.start], block.length, pattern.channels,
                        pattern.period, pattern.vectorPeriod, block.scratch, block.first, block.second)
                }
            },
            merge: { partials in
                var sum = 0.0
                partials.forEach { count, mean, _ in sum += count * mean }
                let mean = sum / total
                var m2 = 0.0
                partials.forEach { count, blockMean, blockM2 in
                    let delta = blockMean - mean
                    m2 += blockM2 + count * delta * delta
                }
                return ChannelMoments(count: total, mean: mean, m2: m2)
            }, fusion: fusion, grouped: grouped)
    }
}
