// Shape legend: N batch, C channels, S spatial size (∏ D·H·W), M = N·S values per channel,
// L = CPUBackend.blockLength, L' = CPUBackend.rowBlockLength. x is the input; a block is a fixed piece of the tensor whose
// boundaries depend only on the shape and layout (never on the thread count).
//
// Each block is reduced by the kernels of `kernelLevel`: the Swift ones in `Kernels`, or
// the C ones of CBatchNormKernels (AVX2 / AVX-512, chosen at run time), which compute
// the same formulas over the same blocks in their own fixed order.

import CBatchNormKernels

extension CPUBackend {
    /// Collect and merge: per-channel `(count, mean, M2)`.
    ///
    /// Collect, one read of `x`, in parallel over blocks:
    /// - channels-first: block `(n, c, k)` covers `x[n, c, k·L ..< min((k+1)·L, S)]`;
    /// - channels-last (and channels-first with `S = 1`, the same storage): block `k` covers
    ///   rows `k·R ..< min((k+1)·R, N·S)` of all items (rows `x[n, s, 0..<C]` are contiguous
    ///   across items, row `n·S + s`), `R = max(1, L' / C)`, every channel at once.
    ///
    /// Per block `b` and channel, in `Double`: `n_b`, `μ_b = Σx / n_b`, `M2_b = Σ(x − μ_b)²`,
    /// in one pass shifted by a value of the channel in the block: channels-first by the
    /// block's first value (`Kernels.contiguousMoments`), channels-last by its
    /// first row (`Kernels.interleavedMoments`).
    ///
    /// Merge, per channel over its blocks in index order (the k-way form of Chan's update):
    /// `μ = Σ n_b·μ_b / M`, `M2 = Σ (M2_b + n_b·(μ_b − μ)²)`.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        let geometry = ChannelGeometry(shape: input.shape)
        let (batch, channels, spatial) = (geometry.batch, geometry.channels, geometry.spatial)
        guard geometry.elementCount > 0 else {
            return Array(repeating: .empty, count: channels)
        }
        let x = SharedPointer(input.storage.floats)
        let total = Double(geometry.valuesPerChannel)
        let level = kernelLevel

        if input.layout == .channelsFirst && spatial > 1 {
            let blocks = PlaneBlocks(geometry, length: CPUBackend.blockLength)
            let blockCount = blocks.count, blocksPerPlane = blocks.perPlane
            let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * blockCount)
            defer { partials.deallocate() }
            let means = SharedPointer(partials.baseAddress!), m2s = SharedPointer(partials.baseAddress! + blockCount)
            parallelFor(blockCount, elements: geometry.elementCount) { range in
                for block in range {
                    let run = UnsafePointer(x.base + blocks.start(block)), count = blocks.values(block)
                    if level.usesC {
                        bnk_contiguous_moments(level.rawValue, run, count, means.base + block, m2s.base + block)
                    } else {
                        let moments = Kernels.contiguousMoments(run, count: count)
                        means.base[block] = moments.mean
                        m2s.base[block] = moments.m2
                    }
                }
            }
            // Block k of a plane holds min(L, S − k·L) values.
            @inline(__always) func count(_ k: Int) -> Double { Double(blocks.values(k)) }
            return (0..<channels).map { c in
                var sum = 0.0
                for n in 0..<batch {
                    let first = (n * channels + c) * blocksPerPlane
                    for k in 0..<blocksPerPlane { sum += count(k) * means.base[first + k] }
                }
                let mean = sum / total
                var m2 = 0.0
                for n in 0..<batch {
                    let first = (n * channels + c) * blocksPerPlane
                    for k in 0..<blocksPerPlane {
                        let delta = means.base[first + k] - mean
                        m2 += m2s.base[first + k] + count(k) * delta * delta
                    }
                }
                return ChannelMoments(count: total, mean: mean, m2: m2)
            }
        }

        // Channels-last rows (also channels-first with S = 1: element (n, c) at n·C + c). Rows of
        // consecutive items are contiguous, so blocks run over all N·S rows (a small tensor is
        // one block, not one per item).
        let blocks = RowBlocks(geometry), blockCount = blocks.count
        let pattern = ChannelPattern(channels: channels, level: level)
        let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * blockCount * channels)
        defer { partials.deallocate() }
        let means = SharedPointer(partials.baseAddress!)
        let m2s = SharedPointer(partials.baseAddress! + blockCount * channels)
        parallelFor(blockCount, elements: geometry.elementCount) { range in
            Kernels.withScratch(count: pattern.scratchCount(arrays: 3, level: level)) { scratch in
                for block in range {
                    Kernels.interleavedMoments(UnsafePointer(x.base + blocks.firstRow(block) * channels),
                                               rows: blocks.rows(block), pattern: pattern, level: level,
                                               scratch: scratch, mean: means.base + block * channels,
                                               m2: m2s.base + block * channels)
                }
            }
        }
        // Merge, every channel at once, blocks in index order.
        var sums = [Double](repeating: 0, count: channels), m2 = [Double](repeating: 0, count: channels)
        sums.withUnsafeMutableBufferPointer { sums in
            for block in 0..<blockCount {
                let count = Double(blocks.rows(block)), blockMeans = means.base + block * channels
                for c in 0..<channels { sums[c] += count * blockMeans[c] }
            }
            for c in 0..<channels { sums[c] /= total }
            m2.withUnsafeMutableBufferPointer { m2 in
                for block in 0..<blockCount {
                    let count = Double(blocks.rows(block))
                    let blockMeans = means.base + block * channels, blockM2 = m2s.base + block * channels
                    for c in 0..<channels {
                        let delta = blockMeans[c] - sums[c]
                        m2[c] += blockM2[c] + count * delta * delta
                    }
                }
            }
        }
        return (0..<channels).map { ChannelMoments(count: total, mean: sums[$0], m2: m2[$0]) }
    }
}
