// Shape legend: N batch, C channels, S spatial size, L = CPUBackend.gradientBlockLength;
// g is the incoming gradient, x the forward input, μ[c] the forward batch mean.
// Blocks are reduced by the kernels of `kernelLevel` (Swift, or C for AVX2 / AVX-512).

import CBatchNormKernels

extension CPUBackend {
    /// Reduce, one read of `g` and `x`: per channel `Σg` and `Σg·(x − μ)` in `Double`.
    ///
    /// Blocks depend only on the shape and layout (channels-first: `PlaneBlocks` of `L`
    /// values; channels-last and `S = 1`: `RowBlocks`); each block's sums are stored in its
    /// own slot and added per channel in block order, so the result is bitwise identical for
    /// any thread count.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        let geometry = ChannelGeometry(shape: input.shape)
        let (batch, channels, spatial) = (geometry.batch, geometry.channels, geometry.spatial)
        let zero = GradientSums(gradient: 0, gradientTimesCentered: 0)
        guard geometry.elementCount > 0 else { return Array(repeating: zero, count: channels) }
        let g = SharedPointer(gradient.storage.floats)
        let x = SharedPointer(input.storage.floats)
        let level = kernelLevel

        if input.layout == .channelsFirst && spatial > 1 {
            let blocks = PlaneBlocks(geometry, length: CPUBackend.gradientBlockLength)
            let blockCount = blocks.count, blocksPerPlane = blocks.perPlane
            let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * blockCount)
            defer { partials.deallocate() }
            let sumG = SharedPointer(partials.baseAddress!), sumGX = SharedPointer(partials.baseAddress! + blockCount)
            parallelFor(blockCount, elements: geometry.elementCount) { range in
                for block in range {
                    let start = blocks.start(block), count = blocks.values(block)
                    let channelMean = mean[blocks.plane(block) % channels]
                    if level.usesC {
                        bnk_contiguous_gradient_sums(level.rawValue, g.base + start, x.base + start, count,
                                                     channelMean, sumG.base + block, sumGX.base + block)
                    } else {
                        let sums = Kernels.contiguousGradientSums(UnsafePointer(g.base + start),
                                                                  UnsafePointer(x.base + start),
                                                                  count: count, mean: channelMean)
                        sumG.base[block] = sums.gradient
                        sumGX.base[block] = sums.gradientTimesCentered
                    }
                }
            }
            return (0..<channels).map { c in
                var total = zero
                for n in 0..<batch {
                    let first = (n * channels + c) * blocksPerPlane
                    for block in first..<(first + blocksPerPlane) {
                        total.gradient += sumG.base[block]
                        total.gradientTimesCentered += sumGX.base[block]
                    }
                }
                return total
            }
        }

        // Channels-last rows (also channels-first with S = 1), blocks over all N·S rows.
        let blocks = RowBlocks(geometry), blockCount = blocks.count
        let pattern = ChannelPattern(channels: channels, level: level)
        let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * blockCount * channels)
        defer { partials.deallocate() }
        let sumG = SharedPointer(partials.baseAddress!)
        let sumGX = SharedPointer(partials.baseAddress! + blockCount * channels)
        mean.withUnsafeBufferPointer { mean in
            let mean = SharedPointer(mean.baseAddress!)
            parallelFor(blockCount, elements: geometry.elementCount) { range in
                Kernels.withScratch(count: pattern.scratchCount(arrays: 3, level: level)) { scratch in
                    for block in range {
                        let start = blocks.firstRow(block) * channels
                        Kernels.interleavedGradientSums(UnsafePointer(g.base + start), UnsafePointer(x.base + start),
                                                        rows: blocks.rows(block), pattern: pattern,
                                                        level: level, mean: mean.base, scratch: scratch,
                                                        sumG: sumG.base + block * channels,
                                                        sumGX: sumGX.base + block * channels)
                    }
                }
            }
        }
        var totalG = [Double](repeating: 0, count: channels), totalGX = [Double](repeating: 0, count: channels)
        totalG.withUnsafeMutableBufferPointer { totalG in
            totalGX.withUnsafeMutableBufferPointer { totalGX in
                for block in 0..<blockCount {
                    let blockG = sumG.base + block * channels, blockGX = sumGX.base + block * channels
                    for c in 0..<channels {
                        totalG[c] += blockG[c]
                        totalGX[c] += blockGX[c]
                    }
                }
            }
        }
        return (0..<channels).map { GradientSums(gradient: totalG[$0], gradientTimesCentered: totalGX[$0]) }
    }
}
