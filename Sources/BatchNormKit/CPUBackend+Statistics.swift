// Shape legend: N batch, C channels, S spatial size (∏ D·H·W), M = N·S values per channel,
// L = CPUBackend.blockLength. x is the input; a block is a run of one channel's values.

extension CPUBackend {
    /// Collect and merge: per-channel `(count, mean, M2)`.
    ///
    /// Channels-first: block `(n, c, k)` covers `x[n, c, k·L ..< min((k+1)·L, S)]`.
    /// Channels-last: block `(n, k)` covers rows `k·R ..< min((k+1)·R, S)` of item `n`,
    /// `R = max(1, L / C)`, for every channel at once. Per block and channel:
    /// `μb = Σx / nb`, `M2b = Σ(x − μb)²` in `Double`; then, per channel, blocks are merged
    /// in index order with Chan's update.
    public func collectStatistics(of input: Tensor) throws -> [ChannelMoments] {
        let geometry = ChannelGeometry(shape: input.shape)
        let (batch, channels, spatial) = (geometry.batch, geometry.channels, geometry.spatial)
        guard geometry.elementCount > 0 else {
            return Array(repeating: .empty, count: channels)
        }
        let x = SharedPointer(input.storage.floats)
        let length = CPUBackend.blockLength

        switch input.layout {
        case .channelsFirst:
            let blocksPerPlane = (spatial + length - 1) / length
            let blockCount = batch * channels * blocksPerPlane
            var partials = [ChannelMoments](repeating: .empty, count: blockCount)
            partials.withUnsafeMutableBufferPointer { buffer in
                let out = SharedPointer(buffer.baseAddress!)
                parallelFor(blockCount, elements: geometry.elementCount) { blocks in
                    for block in blocks {
                        let plane = block / blocksPerPlane
                        let start = (block % blocksPerPlane) * length
                        let count = min(length, spatial - start)
                        out.base[block] = CPUBackend.moments(x.base + plane * spatial + start, count: count)
                    }
                }
            }
            return (0..<channels).map { c in
                var total = ChannelMoments.empty
                for n in 0..<batch {
                    let first = (n * channels + c) * blocksPerPlane
                    for block in first..<(first + blocksPerPlane) { total = total.merged(with: partials[block]) }
                }
                return total
            }

        case .channelsLast:
            let rowsPerBlock = max(1, length / channels)
            let blocksPerItem = (spatial + rowsPerBlock - 1) / rowsPerBlock
            let blockCount = batch * blocksPerItem
            var partials = [ChannelMoments](repeating: .empty, count: blockCount * channels)
            partials.withUnsafeMutableBufferPointer { buffer in
                let out = SharedPointer(buffer.baseAddress!)
                parallelFor(blockCount, elements: geometry.elementCount) { blocks in
                    var sums = [Double](repeating: 0, count: channels)
                    for block in blocks {
                        let n = block / blocksPerItem
                        let firstRow = (block % blocksPerItem) * rowsPerBlock
                        let rows = min(rowsPerBlock, spatial - firstRow)
                        let start = x.base + (n * spatial + firstRow) * channels
                        CPUBackend.rowMoments(start, rows: rows, channels: channels, sums: &sums,
                                              into: out.base + block * channels)
                    }
                }
            }
            return (0..<channels).map { c in
                var total = ChannelMoments.empty
                for block in 0..<blockCount { total = total.merged(with: partials[block * channels + c]) }
                return total
            }
        }
    }

    /// Moments of `count` contiguous values: `μ = Σx / count`, `M2 = Σ(x − μ)²`, in `Double`.
    static func moments(_ x: UnsafePointer<Float>, count: Int) -> ChannelMoments {
        var sum = 0.0
        for i in 0..<count { sum += Double(x[i]) }
        let mean = sum / Double(count)
        var m2 = 0.0
        for i in 0..<count {
            let centered = Double(x[i]) - mean
            m2 += centered * centered
        }
        return ChannelMoments(count: Double(count), mean: mean, m2: m2)
    }

    /// Moments of each of `channels` interleaved columns over `rows` rows of a
    /// channels-last block; `sums` is scratch of `channels` entries.
    static func rowMoments(_ x: UnsafePointer<Float>, rows: Int, channels: Int, sums: inout [Double],
                           into out: UnsafeMutablePointer<ChannelMoments>) {
        for c in 0..<channels { sums[c] = 0 }
        for r in 0..<rows {
            for c in 0..<channels { sums[c] += Double(x[r * channels + c]) }
        }
        for c in 0..<channels { out[c] = ChannelMoments(count: Double(rows), mean: sums[c] / Double(rows), m2: 0) }
        for r in 0..<rows {
            for c in 0..<channels {
                let centered = Double(x[r * channels + c]) - out[c].mean
                out[c].m2 += centered * centered
            }
        }
    }
}
