// The block-partition-and-merge scaffolding shared by the two reductions of the CPU
// backend, *collect* (statistics, CPUBackend+Statistics.swift) and *reduce* (gradient
// sums, CPUBackend+Backward.swift).
//
// Shape legend: N batch, C channels, S spatial size; blocks as in ReductionBlocks. Each
// block's kernel writes two partial results per channel it holds (its `width`: 1 or C)
// into its own slots; once every block is done, the partials of each channel are merged
// in block order. Neither step depends on how blocks are spread over threads.

extension CPUBackend {
    /// One block handed to a reduction kernel.
    struct ReductionBlock {
        /// Storage offset of its first value.
        let start: Int
        /// Plane block: its values (one channel); row block: its whole rows.
        let length: Int
        /// Plane block: its channel; row block: 0 (it holds every channel).
        let channel: Int
        /// Where its two partial results go, `width` values each (channel `c` of a row block
        /// at `first[c]`).
        let first: UnsafeMutablePointer<Double>
        let second: UnsafeMutablePointer<Double>
        /// The per-thread scratch of ``ChannelPattern/withScratch(arrays:_:)`` (3 arrays) for
        /// row blocks, or `nil`.
        let scratch: UnsafeMutablePointer<Double>?
    }

    /// The partial results of one channel, in block order.
    struct ChannelPartials {
        let blocks: ReductionBlocks
        let channel: Int
        let first: UnsafeMutablePointer<Double>
        let second: UnsafeMutablePointer<Double>

        /// Calls `body(n, first, second)` for each block holding the channel, in block order.
        @inline(__always)
        func forEach(_ body: (_ values: Double, _ first: Double, _ second: Double) -> Void) {
            blocks.forEachPartial(ofChannel: channel) { slot, values in body(values, first[slot], second[slot]) }
        }
    }

    /// Runs `kernel` on every block of `blocks` (in parallel over blocks, `elements` deciding
    /// whether threads are worth waking), then `merge` once per channel, in channel order.
    func reduce<Result>(_ blocks: ReductionBlocks, elements: Int,
                        kernel: @Sendable (ReductionBlock) -> Void,
                        merge: (ChannelPartials) -> Result) -> [Result] {
        let slots = blocks.count * blocks.width
        let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * max(1, slots))
        defer { partials.deallocate() }
        let first = SharedPointer(partials.baseAddress!), second = SharedPointer(partials.baseAddress! + slots)
        let width = blocks.width
        let pattern: ChannelPattern? = if case let .rows(_, _, pattern) = blocks.partition { pattern } else { nil }
        parallelFor(blocks.count, elements: elements) { range in
            func run(_ scratch: UnsafeMutablePointer<Double>?) {
                for index in range {
                    let (start, length, channel) = blocks.block(index)
                    kernel(ReductionBlock(start: start, length: length, channel: channel,
                                          first: first.base + index * width, second: second.base + index * width,
                                          scratch: scratch))
                }
            }
            if let pattern { pattern.withScratch(arrays: 3, run) } else { run(nil) }
        }
        return (0..<blocks.channels).map { c in
            merge(ChannelPartials(blocks: blocks, channel: c, first: first.base, second: second.base))
        }
    }
}
