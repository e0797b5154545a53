// Shape legend: N batch, C channels, S spatial size, L = CPUBackend.blockLength;
// g is the incoming gradient, x the forward input, μ[c] the forward batch mean.

extension CPUBackend {
    /// Reduce: per channel `Σg` and `Σg·(x − μ)` in `Double`, over the same fixed blocks as
    /// ``collectStatistics(of:)``, summed per channel in block order.
    public func reduceGradient(_ gradient: Tensor, input: Tensor, mean: [Double]) throws -> [GradientSums] {
        let geometry = ChannelGeometry(shape: input.shape)
        let (batch, channels, spatial) = (geometry.batch, geometry.channels, geometry.spatial)
        let zero = GradientSums(gradient: 0, gradientTimesCentered: 0)
        guard geometry.elementCount > 0 else { return Array(repeating: zero, count: channels) }
        let g = SharedPointer(gradient.storage.floats)
        let x = SharedPointer(input.storage.floats)
        let length = CPUBackend.blockLength

        switch input.layout {
        case .channelsFirst:
            let blocksPerPlane = (spatial + length - 1) / length
            let blockCount = batch * channels * blocksPerPlane
            var partials = [GradientSums](repeating: zero, count: blockCount)
            partials.withUnsafeMutableBufferPointer { buffer in
                let out = SharedPointer(buffer.baseAddress!)
                parallelFor(blockCount, elements: geometry.elementCount) { blocks in
                    for block in blocks {
                        let plane = block / blocksPerPlane
                        let start = plane * spatial + (block % blocksPerPlane) * length
                        let end = min(start + length, (plane + 1) * spatial)
                        let mu = mean[plane % channels]
                        var sumG = 0.0, sumGX = 0.0
                        for i in start..<end {
                            let gi = Double(g.base[i])
                            sumG += gi
                            sumGX += gi * (Double(x.base[i]) - mu)
                        }
                        out.base[block] = GradientSums(gradient: sumG, gradientTimesCentered: sumGX)
                    }
                }
            }
            return (0..<channels).map { c in
                var total = zero
                for n in 0..<batch {
                    let first = (n * channels + c) * blocksPerPlane
                    for block in first..<(first + blocksPerPlane) {
                        total.gradient += partials[block].gradient
                        total.gradientTimesCentered += partials[block].gradientTimesCentered
                    }
                }
                return total
            }

        case .channelsLast:
            let rowsPerBlock = max(1, length / channels)
            let blocksPerItem = (spatial + rowsPerBlock - 1) / rowsPerBlock
            let blockCount = batch * blocksPerItem
            var partials = [GradientSums](repeating: zero, count: blockCount * channels)
            partials.withUnsafeMutableBufferPointer { buffer in
                let out = SharedPointer(buffer.baseAddress!)
                parallelFor(blockCount, elements: geometry.elementCount) { blocks in
                    for block in blocks {
                        let n = block / blocksPerItem
                        let firstRow = (block % blocksPerItem) * rowsPerBlock
                        let rows = min(rowsPerBlock, spatial - firstRow)
                        let base = (n * spatial + firstRow) * channels
                        let sums = out.base + block * channels
                        for r in 0..<rows {
                            for c in 0..<channels {
                                let i = base + r * channels + c
                                let gi = Double(g.base[i])
                                sums[c].gradient += gi
                                sums[c].gradientTimesCentered += gi * (Double(x.base[i]) - mean[c])
                            }
                        }
                    }
                }
            }
            return (0..<channels).map { c in
                var total = zero
                for block in 0..<blockCount {
                    total.gradient += partials[block * channels + c].gradient
                    total.gradientTimesCentered += partials[block * channels + c].gradientTimesCentered
                }
                return total
            }
        }
    }
}
