// The block-partition-and-merge scaffolding shared by the two reductions of the CPU
// backend, *collect* (statistics, CPUBackend+Statistics.swift) and *reduce* (gradient
// sums, CPUBackend+Backward.swift).
//
// Shape legend: N batch, C channels, S spatial size; blocks as in ReductionBlocks. Each
// block's kernel writes two partial results per channel it holds (its `width`: 1 or C)
// into its own slots; once every block is done, the partials of each channel are merged
// in block order. Neither step depends on how blocks are spread over threads.

import CBatchNormKernels

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
        /// Channel-fused passes: the apply run the kernel interleaves with this block (the
        /// previous channel's piece at the same place in its plane), or `nil`.
        let apply: UnsafePointer<bnk_apply_run>?
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

    /// The apply half of a channel-fused pass (see ``reduce(_:elements:kernel:merge:fusion:)``).
    struct ChannelFusion<Result>: Sendable {
        /// Channel `c`'s apply coefficients from its merged result, or `nil` to leave the
        /// channel unwritten.
        let coefficients: @Sendable (_ channel: Int, Result) -> ChannelCoefficients.Channel?
        /// The apply kernel's arguments for one channel's coefficients over a storage range.
        let apply: PlaneApply
    }

    /// The apply half of a channel-fused pass in groups of channels (see
    /// ``reduce(_:elements:kernel:merge:fusion:grouped:)``): a synchronized module's schedule.
    struct GroupedFusion<Result> {
        /// Channels per group (at least 1).
        let channelsPerGroup: Int
        /// A group's apply coefficients from its merged results (`nil` leaves a channel
        /// unwritten), called on the calling thread in group order; a throw stops the pass.
        let coefficients: (_ channels: Range<Int>, [Result]) throws -> [ChannelCoefficients.Channel?]
        /// The apply kernel's arguments for one channel's coefficients over a storage range.
        let apply: PlaneApply
    }

    /// Runs `kernel` on every block of `blocks` (in parallel over blocks, `elements` deciding
    /// whether threads are worth waking), then `merge` once per channel, in channel order.
    ///
    /// With `fusion` (channel-fused; plane blocks only): in parallel over channels instead.
    /// Each thread takes its channels in order; channel `c`'s blocks are reduced and merged
    /// (the same blocks and merge order, so the same results), its coefficients computed, and
    /// its apply runs over the same pieces of storage as its blocks, each piece inside the
    /// kernel call that reduces the same piece of the thread's next channel (the kernels'
    /// `_and_apply` forms, 32 values of each at a time): the apply re-reads channel `c` from
    /// the cache and writes while the next channel streams in from memory, so reads and
    /// writes overlap as in a one-pass kernel. The thread's last channel is applied alone.
    /// The cache must hold two channels per thread.
    ///
    /// With `grouped` (plane blocks only), the same in groups of channels: for each group in
    /// order, in parallel over its channels (thread `t` of the group's `T` takes the range
    /// `⌊k·t/T⌋ ..< ⌊k·(t+1)/T⌋` of its `k` channels), the group's channels are reduced and
    /// merged while the previous group's channels at the same positions are applied inside
    /// the same kernel calls (a longer previous group's remaining channels alone, by the
    /// thread that ends the range); then, on the calling thread, the group's coefficients are
    /// asked for. The last group is applied alone. The cache must hold two groups' share of
    /// channels per thread.
    func reduce<Result>(
        _ blocks: ReductionBlocks, elements: Int,
        kernel: @Sendable (ReductionBlock) -> Void,
        merge: @Sendable (ChannelPartials) -> Result,
        fusion: ChannelFusion<Result>? = nil,
        grouped: GroupedFusion<Result>? = nil
    ) throws -> [Result] {
        let slots = blocks.count * blocks.width
        let partials = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * max(1, slots))
        defer { partials.deallocate() }
        let first = SharedPointer(partials.baseAddress!), second = SharedPointer(partials.baseAddress! + slots)
        let width = blocks.width
        @Sendable func run(
            _ index: Int, _ scratch: UnsafeMutablePointer<Double>?,
            apply: UnsafePointer<bnk_apply_run>? = nil
        ) {
            let (start, length, channel) = blocks.block(index)
            kernel(
                ReductionBlock(
                    start: start, length: length, channel: channel,
                    first: first.base + index * width, second: second.base + index * width,
                    scratch: scratch, apply: apply))
        }
        @Sendable func partialsOf(_ c: Int) -> ChannelPartials {
            ChannelPartials(blocks: blocks, channel: c, first: first.base, second: second.base)
        }
        let perChannel = blocks.planeBlocksPerChannel
        @Sendable func applyRun(
            _ apply: PlaneApply, _ coefficients: ChannelCoefficients.Channel, channel c: Int, block i: Int
        ) -> bnk_apply_run {
            let (start, length, _) = blocks.block(blocks.planeBlock(ofChannel: c, i))
            return apply.run(coefficients, start: start, length: length)
        }
        if let grouped, case .planes = blocks.partition {
            // Each group's results are merged by the threads into `merged`, then kept here.
            var results = [Result?](repeating: nil, count: blocks.channels)
            let apply = grouped.apply
            var previous: (channels: Range<Int>, coefficients: [ChannelCoefficients.Channel?]) = (0..<0, [])
            for group in ChannelGroups(channels: blocks.channels, perGroup: grouped.channelsPerGroup) {
                let before = previous
                let merged = UnsafeMutableBufferPointer<Result>.allocate(capacity: group.count)
                defer { merged.deallocate() }
                let shared = SharedPointer(merged.baseAddress!)
                parallelFor(group.count, elements: elements / blocks.channels * group.count) { range in
                    for j in range {
                        let c = group.lowerBound + j
                        let pending = j < before.channels.count ? before.coefficients[j] : nil
                        for i in 0..<perChannel {
                            let index = blocks.planeBlock(ofChannel: c, i)
                            if let pending {
                                var job = applyRun(apply, pending, channel: before.channels.lowerBound + j, block: i)
                                run(index, nil, apply: &job)
                            } else {
                                run(index, nil)
                            }
                        }
                        (shared.base + j).initialize(to: merge(partialsOf(c)))
                    }
                    guard range.upperBound == group.count else { return }
                    for j in group.count..<max(group.count, before.channels.count) {
                        guard let pending = before.coefficients[j] else { continue }
                        for i in 0..<perChannel {
                            apply(applyRun(apply, pending, channel: before.channels.lowerBound + j, block: i))
                        }
                    }
                }
                let groupResults = Array(merged)
                for (j, result) in groupResults.enumerated() { results[group.lowerBound + j] = result }
                let coefficients = try ChannelGroups.checked(try grouped.coefficients(group, groupResults), for: group)
                previous = (group, coefficients)
            }
            let last = previous
            parallelFor(last.channels.count, elements: elements / blocks.channels * last.channels.count) { range in
                for j in range {
                    guard let pending = last.coefficients[j] else { continue }
                    for i in 0..<perChannel {
                        apply(applyRun(apply, pending, channel: last.channels.lowerBound + j, block: i))
                    }
                }
            }
            return results.map { $0! }
        }
        if let fusion, case .planes = blocks.partition {
            let results = UnsafeMutableBufferPointer<Result>.allocate(capacity: blocks.channels)
            defer { results.deallocate() }
            let shared = SharedPointer(results.baseAddress!)
            parallelFor(blocks.channels, elements: elements) { range in
                // Plane blocks hold one channel each: a partial's slot is its block's index.
                var pending: (coefficients: ChannelCoefficients.Channel, channel: Int)?
                for c in range {
                    for i in 0..<perChannel {
                        let index = blocks.planeBlock(ofChannel: c, i)
                        if let pending {
                            var job = applyRun(fusion.apply, pending.coefficients, channel: pending.channel, block: i)
                            run(index, nil, apply: &job)
                        } else {
                            run(index, nil)
                        }
                    }
                    let result = merge(partialsOf(c))
                    (shared.base + c).initialize(to: result)
                    pending = fusion.coefficients(c, result).map { ($0, c) }
                }
                if let pending {
                    for i in 0..<perChannel {
                        fusion.apply(applyRun(fusion.apply, pending.coefficients, channel: pending.channel, block: i))
                    }
                }
            }
            return Array(UnsafeBufferPointer(results))
        }
        let pattern: ChannelPattern? = if case let .rows(_, _, pattern) = blocks.partition { pattern } else { nil }
        parallelFor(blocks.count, elements: elements) { range in
            func runRange(_ scratch: UnsafeMutablePointer<Double>?) {
                for index in range { run(index, scratch) }
            }
            if let pattern { pattern.withScratch(arrays: 3, runRange) } else { runRange(nil) }
        }
        return (0..<blocks.channels).map { merge(partialsOf($0)) }
    }
}
