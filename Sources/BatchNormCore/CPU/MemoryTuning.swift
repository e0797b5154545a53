import CBatchNormKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The cache sizes of the running CPU, read once per process: from
/// `/sys/devices/system/cpu/cpu0/cache` on Linux (each level's `size` and the CPUs in its
/// `shared_cpu_list`), else `sysconf`, else 1 MiB of L2 and 32 MiB of last-level cache.
struct CacheSizes: Equatable, Sendable {
    /// Bytes of the unified level-2 cache of one core.
    var levelTwo: Int
    /// Bytes of the last-level cache (L3 where there is one, else L2).
    var lastLevel: Int
    /// Online processors sharing the last-level cache (1 or more).
    var lastLevelSharedBy: Int
    /// Whether the last-level cache keeps a pass's tensors from one step to the next well
    /// enough that ordinary stores beat streaming ones while they fit in it: everywhere but
    /// on Intel CPUs. An Intel Xeon's L3 is a victim cache spread over the socket's mesh and
    /// shared with cores a virtual machine does not see (a 2-core guest was shown all
    /// 260 MiB of it), and there streaming won from a few MiB up: measured on such a guest
    /// (family 6 model 207, 2 MiB L2 per core), evaluation forward, 2 threads, medians of 5
    /// alternating rounds: ordinary stores 1.9-2.2x faster with 1-2 MiB of tensors,
    /// streaming 1.2-1.4x faster with 3.2 and 6.4 MB and 1.1-1.5x from 25 to 103 MB (ties
    /// and noise between 12 and 26 MB; see BENCHMARKS.md). On an AMD EPYC guest (Zen 3,
    /// 32 MiB of L3) ordinary stores were still 1.7x faster with 16 MiB.
    var lastLevelKeepsTensors = true

    /// The cache that keeps a pass's tensors from one step to the next: the last level where
    /// ``lastLevelKeepsTensors``, else the L2s of the processors sharing it (at most the last
    /// level).
    var keeping: Int { lastLevelKeepsTensors ? lastLevel : min(lastLevel, levelTwo * lastLevelSharedBy) }

    /// The cache a core can count on for data it revisits soon: its L2, or its share of the
    /// last-level cache when that is larger (the L3 of a 2-core guest on one core complex).
    var perCore: Int { max(levelTwo, lastLevel / max(1, lastLevelSharedBy)) }

    static let running: CacheSizes = read()

    private static func read() -> CacheSizes {
        var levelTwo = 0, lastLevel = 0, lastLevelLevel = 0, sharedBy = 1
        for index in 0..<8 {
            let directory = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
            guard let level = contents(of: directory + "level").flatMap({ Int($0) }),
                let type = contents(of: directory + "type"), type != "Instruction",
                let size = contents(of: directory + "size").flatMap(parseSize)
            else { continue }
            if level == 2 { levelTwo = size }
            if level >= lastLevelLevel {
                lastLevelLevel = level
                lastLevel = size
                sharedBy = contents(of: directory + "shared_cpu_list").map(countProcessors) ?? 1
            }
        }
        #if canImport(Glibc)
            if levelTwo == 0 { levelTwo = max(0, sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))) }
            if lastLevel == 0 { lastLevel = max(0, sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))) }
        #endif
        if levelTwo == 0 { levelTwo = 1 << 20 }
        if lastLevel == 0 { lastLevel = max(levelTwo, 32 << 20) }
        return CacheSizes(
            levelTwo: levelTwo, lastLevel: lastLevel, lastLevelSharedBy: max(1, sharedBy),
            lastLevelKeepsTensors: Int(bnk_cpu_vendor()) != Int(BNK_VENDOR_INTEL))
    }

    /// The first line of a small text file, or `nil`.
    private static func contents(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return line.filter { !$0.isWhitespace }
    }

    /// `"512K"`, `"32M"` or a byte count.
    static func parseSize(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
        return Int(text)
    }

    /// The number of processors in a list such as `"0-3,8,10-11"`.
    static func countProcessors(_ list: String) -> Int {
        list.split(separator: ",").reduce(0) { count, item in
            let bounds = item.split(separator: "-").compactMap { Int($0) }
            return count + (bounds.count == 2 ? max(0, bounds[1] - bounds[0] + 1) : bounds.count)
        }
    }
}

/// Where the CPU backend changes strategy with the size of the data: non-temporal stores
/// (see `bnk_contiguous_apply`) and channel-fused training passes
/// (``CPUBackend/fusesChannels(shape:layout:dataType:backward:)``). Each choice is
/// automatic by default; an environment variable forces it for measurement:
/// `BNKIT_STREAMING_STORES` and `BNKIT_CHANNEL_FUSION`, each `always`, `never` or `auto`.
struct MemoryTuning: Equatable, Sendable {
    enum Choice: Equatable, Sendable {
        case automatic, always, never

        /// `always`/`on`/`1`, `never`/`off`/`0`, anything else automatic.
        init(environment name: String) {
            switch getenv(name).map({ String(cString: $0).lowercased() }) {
            case "always", "on", "1": self = .always
            case "never", "off", "0": self = .never
            default: self = .automatic
            }
        }
    }

    var streamingStores: Choice
    var channelFusion: Choice
    var caches: CacheSizes

    /// What `CPUBackend(threadCount:)` uses: the environment's choices and the running CPU's caches.
    static let selected = MemoryTuning(
        streamingStores: Choice(environment: "BNKIT_STREAMING_STORES"),
        channelFusion: Choice(environment: "BNKIT_CHANNEL_FUSION"),
        caches: .running)

    /// Working-set bytes (every tensor a pass reads, plus its output) from which the pass's
    /// tensors do not stay in the cache from one step to the next: 3/4 of the cache that keeps
    /// them (``CacheSizes/keeping``). Training passes fuse per channel from here (see
    /// ``fuses(channelBytes:workingSetBytes:channels:threads:)``), and on Intel, where that
    /// cache is the L2s (``CacheSizes/lastLevelKeepsTensors``), every pass streams its stores
    /// from here too: streaming won there from 3.2 MB of 4 MiB of L2s.
    var fusionThreshold: Int { caches.keeping / 4 * 3 }

    /// Working-set bytes from which a pass that is not channel-fused streams its stores: the
    /// whole last-level cache where it keeps a pass's tensors, else ``fusionThreshold``. Below
    /// it, ordinary stores leave the tensors in the cache for the next step and win; above
    /// it, every line written would be read for ownership and later evicted anyway. Measured
    /// on a 2-core AMD EPYC (Zen 3) guest with 32 MiB of L3, repeated unfused passes over the
    /// same NCDHW float32 tensors (2×64×D×32×32), ordinary against streaming stores, medians
    /// of 8 alternating rounds: evaluation forward (x and y) with 20, 24, 28 and 32 MiB 2.0,
    /// 1.6, 1.16 and 1.10x faster with ordinary stores, with 40 MiB 1.06x faster streaming;
    /// backward (g, x and dx) with 30 MiB 1.09x faster with ordinary stores, with 36 to
    /// 60 MiB 1.06-1.18x faster streaming. Channel-fused passes always stream: they exist
    /// only from ``fusionThreshold``, and their stores must not evict the channel they read
    /// a second time (on the same guest, the fused and streaming training forward of
    /// 8×256×8×14×14, 24.5 MiB, was 1.37x faster than the unfused one with ordinary stores).
    var streamingThreshold: Int { caches.lastLevelKeepsTensors ? caches.lastLevel : fusionThreshold }

    /// Whether a pass whose tensors (inputs and output) take `bytes` keeps them in the
    /// cache from one step to the next: below ``fusionThreshold``.
    func staysInCache(workingSetBytes bytes: Int) -> Bool { bytes < fusionThreshold }

    /// Whether an apply pass touching `bytes` (inputs and output) streams its stores: from
    /// ``streamingThreshold``, or always when it is channel-`fused`.
    func streams(workingSetBytes bytes: Int, fused: Bool) -> Bool {
        switch streamingStores {
        case .always: true
        case .never: false
        case .automatic: fused || bytes >= streamingThreshold
        }
    }

    /// The fusion limits of a backend of `threads` threads: this tuning's mode, the
    /// ``fusionThreshold`` (where the tensors would not stay in the cache; where they do, the
    /// unfused passes find their data in cache for the second read, and were measured
    /// faster), the cache of one core (``CacheSizes/perCore``) and its L2 for the channel
    /// groups of synchronized passes.
    func limits(threads: Int) -> ChannelFusionLimits {
        let mode: ChannelFusionLimits.Mode =
            switch channelFusion {
            case .always: .always
            case .never: .never
            case .automatic: .automatic
            }
        return ChannelFusionLimits(
            mode: mode, workingSetThreshold: fusionThreshold, threadCacheBytes: caches.perCore,
            groupCacheBytes: caches.levelTwo, threads: threads)
    }

    /// Whether a training pass fuses per channel: ``ChannelFusionLimits/fuses(channelBytes:workingSetBytes:channels:)``
    /// with ``limits(threads:)``.
    func fuses(channelBytes: Int, workingSetBytes: Int, channels: Int, threads: Int) -> Bool {
        limits(threads: threads).fuses(channelBytes: channelBytes, workingSetBytes: workingSetBytes, channels: channels)
    }
}
