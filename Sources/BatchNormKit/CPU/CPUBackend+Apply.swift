// Shape legend: N batch, C channels, S spatial size; per channel c the coefficients
// a[c] (gradient multiplier), b[c] (input multiplier), shift[c], offset[c]; g the gradient,
// x the input, out the output (which may alias x or g: every element is read before it
// is written, by the same thread). Runs go to the kernels of `kernelLevel` (Swift, or C
// for AVX2 / AVX-512); both give the same float result per element.

import CBatchNormKernels

extension CPUBackend {
    /// Apply (forward), one read of `x` and one write of `y`:
    /// `y[n,c,s] = b[c]·(x[n,c,s] − shift[c]) + offset[c]`.
    public func normalize(_ input: Tensor, into output: Tensor, coefficients: ChannelCoefficients) throws {
        applyChannelwise(gradient: nil, input: input, output: output, coefficients: coefficients)
    }

    /// Apply (backward), one read of `g` and `x` and one write of `dx`:
    /// `dx[n,c,s] = a[c]·g[n,c,s] + b[c]·(x[n,c,s] − shift[c]) + offset[c]`;
    /// `x` is not read when every `b[c]` is 0 (`dx = a[c]·g + offset[c]`).
    public func applyGradient(_ gradient: Tensor, input: Tensor, into output: Tensor,
                              coefficients: ChannelCoefficients) throws {
        applyChannelwise(gradient: gradient, input: coefficients.ignoresInput ? nil : input,
                         output: output, coefficients: coefficients)
    }

    /// `out = a·g + b·(x − shift) + offset` over every element; a missing `g` or `x`
    /// contributes nothing. All tensors share shape and layout.
    ///
    /// Work is split into one contiguous range of storage per thread (whole rows in
    /// channels-last); each element's result does not depend on the split.
    private func applyChannelwise(gradient: Tensor?, input: Tensor?, output: Tensor,
                                  coefficients: ChannelCoefficients) {
        let geometry = ChannelGeometry(shape: output.shape)
        let (channels, spatial) = (geometry.channels, geometry.spatial)
        guard geometry.elementCount > 0 else { return }
        let g = gradient.map { SharedPointer($0.storage.floats) }
        let x = input.map { SharedPointer($0.storage.floats) }
        let y = SharedPointer(output.storage.floats)
        let level = kernelLevel
        let (b, shift, offset) = (coefficients.inputMultiplier, coefficients.shift, coefficients.offset)
        // a[c] is read only when there is a gradient.
        let a = gradient == nil ? b : coefficients.gradientMultiplier

        if output.layout == .channelsFirst && spatial > 1 {
            // Runs are pieces of planes (n, c); thread ranges are cut at multiples of 64 values.
            let elements = geometry.elementCount
            let pieces = (elements + 63) / 64
            parallelFor(pieces, elements: elements) { range in
                var position = range.lowerBound * 64
                let end = min(range.upperBound * 64, elements)
                while position < end {
                    let plane = position / spatial
                    let runEnd = min(end, (plane + 1) * spatial)
                    let c = plane % channels
                    Kernels.dispatchContiguous(level: level, g: g, x: x, y: y, at: position, count: runEnd - position,
                                               a: a[c], b: b[c], shift: shift[c], offset: offset[c])
                    position = runEnd
                }
            }
            return
        }

        // Channels-last rows (also channels-first with S = 1): a, b, shift and offset
        // replicated over the pattern, in temporary storage (on the stack when small).
        let pattern = ChannelPattern(channels: channels, level: level)
        let period = pattern.period
        withUnsafeTemporaryAllocation(byteCount: 4 * period * MemoryLayout<Float>.stride, alignment: 64) { raw in
            let replicated = raw.baseAddress!.bindMemory(to: Float.self, capacity: 4 * period)
            // One pass over the positions for all four (a small tensor's call is mostly this).
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    shift.withUnsafeBufferPointer { shift in
                        offset.withUnsafeBufferPointer { offset in
                            var c = 0
                            for j in 0..<period {
                                replicated[j] = a[c]
                                replicated[period + j] = b[c]
                                replicated[2 * period + j] = shift[c]
                                replicated[3 * period + j] = offset[c]
                                c = c + 1 == channels ? 0 : c + 1
                            }
                        }
                    }
                }
            }
            let coefficientsPointer = SharedPointer(replicated)
            let rows = geometry.batch * spatial
            parallelFor(rows, elements: geometry.elementCount) { range in
                Kernels.dispatchInterleaved(level: level, g: g, x: x, y: y, at: range.lowerBound * channels,
                                            length: range.count * channels, pattern: pattern,
                                            coefficients: coefficientsPointer.base)
            }
        }
    }
}

extension Kernels {
    /// The C kernels' formula code (BNK_APPLY_*) for the terms present.
    @inline(__always)
    static func formula(g: Bool, x: Bool) -> Int32 {
        switch (g, x) {
        case (true, true): return Int32(BNK_APPLY_GRADIENT_AND_INPUT)
        case (true, false): return Int32(BNK_APPLY_GRADIENT)
        default: return Int32(BNK_APPLY_FORWARD)
        }
    }

    /// ``contiguousApply(_:g:x:out:count:a:b:shift:offset:)`` with the formula of the terms
    /// present (`x` and `g` both absent does not occur).
    static func dispatchContiguous(level: KernelLevel, g: SharedPointer<Float>?, x: SharedPointer<Float>?,
                                   y: SharedPointer<Float>, at start: Int, count: Int,
                                   a: Float, b: Float, shift: Float, offset: Float) {
        let out = y.base + start
        let gp = UnsafePointer((g ?? y).base + start), xp = UnsafePointer((x ?? y).base + start)
        if level.usesC {
            bnk_contiguous_apply(level.rawValue, formula(g: g != nil, x: x != nil), gp, xp, out, count,
                                 a, b, shift, offset)
            return
        }
        switch (g != nil, x != nil) {
        case (true, true):
            contiguousApply(GradientAndInputFormula.self, g: gp, x: xp, out: out, count: count,
                            a: a, b: b, shift: shift, offset: offset)
        case (true, false):
            contiguousApply(GradientFormula.self, g: gp, x: xp, out: out, count: count,
                            a: a, b: b, shift: shift, offset: offset)
        default:
            contiguousApply(ForwardFormula.self, g: gp, x: xp, out: out, count: count,
                            a: a, b: b, shift: shift, offset: offset)
        }
    }

    /// ``interleavedApply(_:g:x:out:length:pattern:coefficients:)`` with the formula of the
    /// terms present.
    static func dispatchInterleaved(level: KernelLevel, g: SharedPointer<Float>?, x: SharedPointer<Float>?,
                                    y: SharedPointer<Float>, at start: Int, length: Int, pattern: ChannelPattern,
                                    coefficients: UnsafeMutablePointer<Float>) {
        let out = y.base + start
        let gp = UnsafePointer((g ?? y).base + start), xp = UnsafePointer((x ?? y).base + start)
        if level.usesC {
            bnk_interleaved_apply(level.rawValue, formula(g: g != nil, x: x != nil), gp, xp, out, length,
                                  pattern.base, pattern.period, pattern.vectorPeriod, coefficients)
            return
        }
        switch (g != nil, x != nil) {
        case (true, true):
            interleavedApply(GradientAndInputFormula.self, g: gp, x: xp, out: out, length: length,
                             pattern: pattern, coefficients: coefficients)
        case (true, false):
            interleavedApply(GradientFormula.self, g: gp, x: xp, out: out, length: length,
                             pattern: pattern, coefficients: coefficients)
        default:
            interleavedApply(ForwardFormula.self, g: gp, x: xp, out: out, length: length,
                             pattern: pattern, coefficients: coefficients)
        }
    }
}
