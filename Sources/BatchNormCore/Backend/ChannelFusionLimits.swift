/// When a backend runs the training passes channel-fused, as numbers that the ranks of a
/// process group can share: the one rule
/// (``fuses(channelBytes:workingSetBytes:channels:)``) and the channel groups of a
/// synchronized module's fused passes (``channelsPerGroup(channelBytes:channels:)``).
///
/// A local module applies its own backend's limits (``BatchNormBackend/fusesChannels(shape:layout:dataType:backward:)``);
/// a synchronized module applies rank 0's, agreed in its first exchange, so that every rank
/// chooses the same schedule whatever its own caches (<doc:SynchronizedStatistics>).
public struct ChannelFusionLimits: Equatable, Sendable {
    /// Whether fusion follows the rule, or is forced on or off (for measurement).
    public enum Mode: Int, Equatable, Sendable {
        /// Never fused.
        case never = 0
        /// Fused where ``ChannelFusionLimits/fuses(channelBytes:workingSetBytes:channels:)`` says so.
        case automatic = 1
        /// Always fused (channels-first tensors with `S > 1`).
        case always = 2
    }

    /// The mode.
    public var mode: Mode
    /// Working-set bytes (every tensor a pass reads, plus its output) from which a pass's
    /// tensors do not stay in the cache from one step to the next; below it a pass is not
    /// fused (its second read finds the data in the cache anyway).
    public var workingSetThreshold: Int
    /// Bytes of cache one thread can count on for values it revisits soon.
    public var threadCacheBytes: Int
    /// Bytes of one thread's cache that a channel group is sized for: the cache closest to
    /// the core that holds more than a few channels' pieces (its L2), so that a group is
    /// re-read from there after its exchange, as a local fused pass re-reads one channel.
    public var groupCacheBytes: Int
    /// Threads a pass spreads its channels over (at least 1).
    public var threads: Int

    /// Creates limits; `threads` below 1 count as 1.
    public init(mode: Mode, workingSetThreshold: Int, threadCacheBytes: Int, groupCacheBytes: Int, threads: Int) {
        self.mode = mode
        self.workingSetThreshold = workingSetThreshold
        self.threadCacheBytes = threadCacheBytes
        self.groupCacheBytes = groupCacheBytes
        self.threads = max(1, threads)
    }

    /// Never fused: the default of a backend without fused passes.
    public static let never = ChannelFusionLimits(
        mode: .never, workingSetThreshold: 0, threadCacheBytes: 0, groupCacheBytes: 0, threads: 1)

    /// Whether a training pass fuses per channel: in ``Mode/automatic``, when its tensors
    /// (`workingSetBytes`) would not stay in the cache (at least ``workingSetThreshold``),
    /// the per-thread working set `channelBytes` (two channels' values of every tensor the
    /// pass reads: the one being applied and the next being reduced) fits in
    /// ``threadCacheBytes``, and `channels` spread over ``threads`` with at most 1/8 of
    /// imbalance (or evenly).
    public func fuses(channelBytes: Int, workingSetBytes: Int, channels: Int) -> Bool {
        switch mode {
        case .always: return true
        case .never: return false
        case .automatic:
            let width = max(1, min(threads, channels))
            let perThread = (channels + width - 1) / width
            return workingSetBytes >= workingSetThreshold && channelBytes <= threadCacheBytes
                && perThread * width * 8 <= channels * 9
        }
    }

    /// Channels per group of a synchronized fused pass (1 ... `channels`): as many as keep
    /// two groups (the one being applied and the next being reduced) of every thread's share
    /// in ``groupCacheBytes``, `threads · max(1, groupCacheBytes / channelBytes)`, with
    /// `channelBytes` as in ``fuses(channelBytes:workingSetBytes:channels:)``; a multiple of
    /// the threads, so that each group spreads evenly. A group is applied only after its
    /// exchange, so its first channel is re-read after the whole group (and the next group's
    /// first part) has streamed in; where one channel already fills that cache, a group is
    /// one channel per thread, the local pass's own distance.
    public func channelsPerGroup(channelBytes: Int, channels: Int) -> Int {
        let perThread = max(1, groupCacheBytes / max(1, channelBytes))
        let (product, overflow) = perThread.multipliedReportingOverflow(by: max(1, min(threads, channels)))
        return max(1, min(channels, overflow ? channels : product))
    }

    /// The limits as 5 `Double`s (mode, threshold, cache bytes, group cache bytes, threads),
    /// for a message.
    package var encoded: [Double] {
        [
            Double(mode.rawValue), Double(workingSetThreshold), Double(threadCacheBytes), Double(groupCacheBytes),
            Double(threads),
        ]
    }

    /// Limits from ``encoded`` values, or ``never`` for values no backend sends.
    package init(encoded values: ArraySlice<Double>) {
        let numbers = values.map { $0.isFinite && $0 >= 0 && $0 < 0x1p62 ? Int($0) : -1 }
        guard numbers.count == 5, let mode = Mode(rawValue: numbers[0]), !numbers.contains(-1) else {
            self = .never
            return
        }
        self.init(
            mode: mode, workingSetThreshold: numbers[1], threadCacheBytes: numbers[2], groupCacheBytes: numbers[3],
            threads: numbers[4])
    }
}
