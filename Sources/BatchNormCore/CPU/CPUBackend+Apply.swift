// Shape legend: N batch, C channels, S spatial size; per channel c the coefficients
// a[c] (gradient multiplier), b[c] (input multiplier), shift[c], offset[c] (float32); g the
// gradient, x the input, out the output, all of one storage type (float32, float16 or
// bfloat16: computed in float32, rounded once to it) (which may alias x or g: every element is read before it
// is written, by the same thread). Runs go to the C kernels of `kernelLevel`; every level
// gives the same float result per element (the same IEEE operations, no fused multiply-add).
// Stores stream (non-temporal) in channel-fused passes and when the pass's tensors (inputs and
// output) take at least `tuning.streamingThreshold` bytes; the bits are the same either way.

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
    public func applyGradient(
        _ gradient: Tensor, input: Tensor, into output: Tensor,
        coefficients: ChannelCoefficients
    ) throws {
        applyChannelwise(
            gradient: gradient, input: coefficients.ignoresInput ? nil : input,
            output: output, coefficients: coefficients)
    }

    /// `out = a·g + b·(x − shift) + offset` over every element; a missing `g` or `x`
    /// contributes nothing. All tensors share shape and layout.
    ///
    /// Work is split into one contiguous range of storage per thread (whole rows in
    /// channels-last); each element's result does not depend on the split.
    private func applyChannelwise(
        gradient: Tensor?, input: Tensor?, output: Tensor,
        coefficients: ChannelCoefficients
    ) {
        let geometry = ChannelGeometry(shape: output.shape)
        let (channels, spatial) = (geometry.channels, geometry.spatial)
        guard geometry.elementCount > 0 else { return }
        let g = gradient.map(KernelData.init), x = input.map(KernelData.init), y = KernelData(output)
        let level = kernelLevel.cValue
        let (b, shift, offset) = (coefficients.inputMultiplier, coefficients.shift, coefficients.offset)
        // a[c] is read only when there is a gradient.
        let a = gradient == nil ? b : coefficients.gradientMultiplier

        let formula = Int32(
            gradient == nil
                ? BNK_APPLY_FORWARD
                : input == nil ? BNK_APPLY_GRADIENT : BNK_APPLY_GRADIENT_AND_INPUT)
        // Pointers of terms the formula leaves out are never read; they point at the output.
        let gp = g ?? y, xp = x ?? y
        let streaming = streamingStores(tensors: 1 + (gradient == nil ? 0 : 1) + (input == nil ? 0 : 1), like: output)

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
                    bnk_contiguous_apply(
                        level, y.type, formula, streaming, gp[position], xp[position], y[position],
                        runEnd - position, a[c], b[c], shift[c], offset[c])
                    position = runEnd
                }
            }
            return
        }

        // Channels-last rows (also channels-first with S = 1): a, b, shift and offset
        // replicated over the pattern, in temporary storage (on the stack when small).
        let pattern = ChannelPattern(channels: channels)
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
            let coefficients = SharedPointer(replicated)
            // Thread ranges are whole periods (P/C rows), so each starts at a multiple of P
            // values: aligned for streaming stores when P is a multiple of 16.
            let rows = geometry.batch * spatial, rowsPerPeriod = period / channels
            let periods = (rows + rowsPerPeriod - 1) / rowsPerPeriod
            parallelFor(periods, elements: geometry.elementCount) { range in
                let start = range.lowerBound * period
                let length = min(range.upperBound * rowsPerPeriod, rows) * channels - start
                bnk_interleaved_apply(
                    level, y.type, formula, streaming, gp[start], xp[start], y[start],
                    length, period, pattern.vectorPeriod, coefficients.base)
            }
        }
    }

    /// Whether a training pass of this tensor runs channel-fused: channels-first with `S > 1`
    /// and `MemoryTuning.fuses` (`BNKIT_CHANNEL_FUSION` forces it) for its tensors (`x` and
    /// `y`; `g`, `x` and `dx`) and for two channels' values of every tensor it reads. A fused
    /// forward also cannot recycle the previous output's buffer (its finalize may still
    /// throw after the apply), one more reason to fuse only where the tensors would not stay
    /// in the cache (see the Benchmarks article).
    public func fusesChannels(shape: [Int], layout: TensorLayout, dataType: TensorDataType, backward: Bool) -> Bool {
        let geometry = ChannelGeometry(shape: shape)
        guard layout == .channelsFirst, geometry.spatial > 1, geometry.elementCount > 0 else { return false }
        let read = backward ? 2 : 1
        return limits(threads: threadWidth(geometry.channels, elements: geometry.elementCount)).fuses(
            channelBytes: 2 * read * geometry.valuesPerChannel * dataType.byteCount,
            workingSetBytes: (read + 1) * geometry.elementCount * dataType.byteCount,
            channels: geometry.channels)
    }

    /// The fusion limits for a pass over `threads` threads: the replacement limits when
    /// set, else the tuning's.
    private func limits(threads: Int) -> ChannelFusionLimits {
        fusionLimits ?? tuning.limits(threads: threads)
    }

    /// The limits of ``fusesChannels(shape:layout:dataType:backward:)`` with this backend's
    /// threads (`BNKIT_CHANNEL_FUSION` sets the mode); a synchronized module agrees on rank 0's.
    public var channelFusionLimits: ChannelFusionLimits { limits(threads: threadCount) }

    /// The `streaming` argument of the apply kernels for a pass over `tensors` tensors (inputs
    /// and output) of `output`'s size and type, channel-`fused` or not: `MemoryTuning.streams`.
    func streamingStores(tensors: Int, like output: Tensor, fused: Bool = false) -> Int32 {
        tuning.streams(workingSetBytes: tensors * output.elementCount * output.dataType.byteCount, fused: fused)
            ? 1 : 0
    }

    /// The apply of the channel-fused passes (channels-first, `S > 1`), one piece of one
    /// channel at a time: `out[i] = F(g[i], x[i])` over a storage range inside one plane, with
    /// the same kernel formulas (and streaming rule) as ``normalize(_:into:coefficients:)``,
    /// run alone or inside a reduction kernel (`bnk_apply_run`).
    struct PlaneApply: Sendable {
        let level: Int32, formula: Int32, streaming: Int32
        let g: KernelData, x: KernelData, y: KernelData

        init(_ backend: CPUBackend, formula: Int32, gradient: Tensor?, input: Tensor, output: Tensor) {
            level = backend.kernelLevel.cValue
            self.formula = formula
            streaming = backend.streamingStores(tensors: gradient == nil ? 2 : 3, like: output, fused: true)
            y = KernelData(output)
            x = KernelData(input)
            g = gradient.map(KernelData.init) ?? y
        }

        /// The kernel's arguments for coefficients `k` over `start ..< start + length`.
        func run(_ k: ChannelCoefficients.Channel, start: Int, length: Int) -> bnk_apply_run {
            bnk_apply_run(
                formula: formula, streaming: streaming, g: g[start], x: x[start], out: y[start],
                n: length, a: k.gradientMultiplier, b: k.inputMultiplier, shift: k.shift,
                offset: k.offset)
        }

        /// Runs `r` alone (no reduction beside it).
        func callAsFunction(_ r: bnk_apply_run) {
            bnk_contiguous_apply(
                level, y.type, r.formula, r.streaming, r.g, r.x, r.out, r.n, r.a, r.b, r.shift,
                r.offset)
        }
    }
}
