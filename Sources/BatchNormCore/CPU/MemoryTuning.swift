import CBatchNormKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The cache sizes of the running CPU, read once per process (``running``), from the first
/// source that has them: `/sys/devices/system/cpu/cpu0/cache` on Linux, x86-64 and aarch64
/// alike (each level's `size` and the CPUs in its `shared_cpu_list`); on Darwin `sysctl`
/// (`hw.perflevel0.l2cachesize`, else `hw.l2cachesize`, and `hw.l3cachesize` where there is
/// one; sharers from `hw.perflevel0.cpusperl2` or `hw.cacheconfig`); glibc's `sysconf`;
/// else the defaults: 1 MiB of L2 and 32 MiB of last-level cache shared by every online
/// processor (what an aarch64 Linux machine without cache entries in sysfs gets).
struct CacheSizes: Equatable, Sendable {
    /// Bytes of the unified level-2 cache of one core.
    var levelTwo: Int
    /// Bytes of the last-level cache (L3 where there is one, else L2).
    var lastLevel: Int
    /// Online processors sharing the last-level cache (1 or more).
    var lastLevelSharedBy: Int
    /// Whether the last-level cache keeps a pass's tensors from one step to the next well
    /// enough that ordinary stores beat streaming ones while they fit in it: everywhere but
    /// on Intel CPUs, whose L3 is a victim cache spread over the socket's mesh and shared with
    /// cores a virtual machine does not see; there streaming won from a few MiB up (figures
    /// in the Benchmarks article).
    var lastLevelKeepsTensors = true

    /// The cache that keeps a pass's tensors from one step to the next: the last level where
    /// ``lastLevelKeepsTensors``, else the L2s of the processors sharing it (at most the last
    /// level).
    var keeping: Int { lastLevelKeepsTensors ? lastLevel : min(lastLevel, levelTwo * lastLevelSharedBy) }

    /// The cache a core can count on for data it revisits soon: its L2, or its share of the
    /// last-level cache when that is larger (the L3 of a 2-core guest on one core complex).
    var perCore: Int { max(levelTwo, lastLevel / max(1, lastLevelSharedBy)) }

    static let running = CacheSizes(
        file: contents(of:), systemValues: systemValues(named:), sysconfSizes: sysconfSizes(),
        onlineProcessors: CPUBackend.onlineProcessorCount,
        lastLevelKeepsTensors: Int(bnk_cpu_vendor()) != Int(BNK_VENDOR_INTEL))

    /// The sizes from the first source that has them (see ``CacheSizes``): `file` reads a
    /// sysfs file's first line, `systemValues` a Darwin sysctl value (its integers),
    /// `sysconfSizes` glibc's L2 and L3 sizes (0 where unknown).
    init(
        file: (String) -> String?, systemValues: (String) -> [Int]?, sysconfSizes: (levelTwo: Int, levelThree: Int),
        onlineProcessors: Int, lastLevelKeepsTensors: Bool
    ) {
        var levelTwo = 0, lastLevel = 0, lastLevelLevel = 0, sharedBy = 1
        for index in 0..<8 {
            let directory = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
            guard let level = file(directory + "level").flatMap({ Int($0) }),
                let type = file(directory + "type"), type != "Instruction",
                let size = file(directory + "size").flatMap(CacheSizes.parseSize)
            else { continue }
            if level == 2 { levelTwo = size }
            if level >= lastLevelLevel {
                lastLevelLevel = level
                lastLevel = size
                sharedBy = file(directory + "shared_cpu_list").map(CacheSizes.countProcessors) ?? 1
            }
        }
        // Darwin: hw.cacheconfig[i] is the number of processors sharing level i.
        if levelTwo == 0,
            let size = (systemValues("hw.perflevel0.l2cachesize") ?? systemValues("hw.l2cachesize"))?.first,
            size > 0
        {
            levelTwo = size
            let sharers = systemValues("hw.cacheconfig") ?? []
            if let levelThree = systemValues("hw.l3cachesize")?.first, levelThree > 0 {
                lastLevel = levelThree
                sharedBy = sharers.count > 3 ? sharers[3] : onlineProcessors
            } else {
                lastLevel = size
                sharedBy = systemValues("hw.perflevel0.cpusperl2")?.first ?? (sharers.count > 2 ? sharers[2] : 1)
            }
        }
        if levelTwo == 0 { levelTwo = sysconfSizes.levelTwo }
        if lastLevel == 0 { lastLevel = sysconfSizes.levelThree }
        if levelTwo == 0 { levelTwo = 1 << 20 }
        if lastLevel == 0 {
            lastLevel = max(levelTwo, 32 << 20)
            sharedBy = onlineProcessors
        }
        self.init(
            levelTwo: levelTwo, lastLevel: lastLevel, lastLevelSharedBy: max(1, sharedBy),
            lastLevelKeepsTensors: lastLevelKeepsTensors)
    }

    init(levelTwo: Int, lastLevel: Int, lastLevelSharedBy: Int, lastLevelKeepsTensors: Bool = true) {
        self.levelTwo = levelTwo
        self.lastLevel = lastLevel
        self.lastLevelSharedBy = lastLevelSharedBy
        self.lastLevelKeepsTensors = lastLevelKeepsTensors
    }

    /// glibc's L2 and L3 sizes (`sysconf`; 0 where it does not know them, and elsewhere).
    private static func sysconfSizes() -> (levelTwo: Int, levelThree: Int) {
        #if canImport(Glibc)
            (max(0, sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))), max(0, sysconf(Int32(_SC_LEVEL3_CACHE_SIZE))))
        #else
            (0, 0)
        #endif
    }

    /// The integers of a Darwin sysctl value (`sysctlbyname`; one for a scalar, several for
    /// `hw.cacheconfig`), or `nil` (always `nil` elsewhere).
    private static func systemValues(named name: String) -> [Int]? {
        #if canImport(Darwin)
            var size = 0
            guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else { return nil }
            var bytes = [UInt8](repeating: 0, count: size)
            guard sysctlbyname(name, &bytes, &size, nil, 0) == 0 else { return nil }
            // 4-byte values are Int32 (hw.perflevel0.cpusperl2), others Int64 (sizes, cacheconfig).
            let width = size == 4 ? 4 : 8
            return stride(from: 0, to: size - width + 1, by: width).map { offset in
                bytes[offset..<offset + width].reversed().reduce(0) { $0 << 8 | Int($1) }
            }
        #else
            return nil
        #endif
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
    /// from here too (streaming won there once the tensors outgrew most of the L2s; figures in
    /// the Benchmarks article).
    var fusionThreshold: Int { caches.keeping / 4 * 3 }

    /// Working-set bytes from which a pass that is not channel-fused streams its stores: the
    /// whole last-level cache where it keeps a pass's tensors, else ``fusionThreshold``. Below
    /// it, ordinary stores leave the tensors in the cache for the next step and win; above
    /// it, every line written would be read for ownership and later evicted anyway (figures in
    /// the Benchmarks article). Channel-fused passes always stream: they exist only from
    /// ``fusionThreshold``, and their stores must not evict the channel they read a second time.
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
