import BatchNormReference
import BatchNormTestSupport
import CBatchNormKernels
import Testing

@testable import BatchNormCore

/// Non-temporal stores and channel-fused training passes: the bits do not depend on either
/// choice (every kernel level, every storage type, odd lengths, tails and unaligned starts,
/// any thread count), both paths match the `Double` reference, and the size rules that pick
/// them hold on both sides of their thresholds.
@Suite struct CPUBackendMemoryTuningTests {
    static let levels = CPUKernelDispatchTests.levels

    static func tuning(streaming: MemoryTuning.Choice, fusion: MemoryTuning.Choice) -> MemoryTuning {
        MemoryTuning(streamingStores: streaming, channelFusion: fusion, caches: .running)
    }

    /// Random storage bytes of `type` (finite values: float16 and bfloat16 bit patterns
    /// drawn from float32 values).
    static func randomElements(_ count: Int, type: TensorDataType, using generator: inout SeededGenerator) throws
        -> [UInt8]
    {
        let values = (0..<count).map { _ in Float(generator.standardNormal() * 3 + 1) }
        let tensor = try Tensor(values, shape: [count, 1]).converted(to: .channelsFirst, dataType: type)
        let bytes = UnsafeRawBufferPointer(start: tensor.storage.rawAddress, count: count * type.byteCount)
        return Array(bytes)
    }

    /// Every apply formula of both C apply kernels, streaming and not, from every start
    /// offset 0 ..< 17 elements of a 64-byte aligned buffer and lengths with every kind of
    /// tail: the same output bytes, and nothing written outside the run.
    @Test(arguments: TensorDataType.allCases)
    func streamingStoresGiveTheSameBits(type: TensorDataType) throws {
        var generator = SeededGenerator(seed: 91)
        let size = type.byteCount, guardBytes = 64
        let capacity = 4200 + 17
        let g = try Self.randomElements(capacity, type: type, using: &generator)
        let x = try Self.randomElements(capacity, type: type, using: &generator)
        let kernelType = type.kernelType
        for level in Self.levels {
            for formula in [BNK_APPLY_FORWARD, BNK_APPLY_GRADIENT, BNK_APPLY_GRADIENT_AND_INPUT].map(Int32.init) {
                for offset in 0..<17 {
                    for length in [0, 1, 7, 15, 16, 17, 31, 33, 100, 1023, 4099] {
                        var outputs = [[UInt8]]()
                        for streaming: Int32 in [0, 1] {
                            var out = [UInt8](repeating: 0xA5, count: capacity * size + 2 * guardBytes)
                            g.withUnsafeBytes { g in
                                x.withUnsafeBytes { x in
                                    out.withUnsafeMutableBytes { out in
                                        bnk_contiguous_apply(
                                            level.cValue, kernelType, formula, streaming,
                                            g.baseAddress! + offset * size,
                                            x.baseAddress! + offset * size,
                                            out.baseAddress! + guardBytes + offset * size, length,
                                            0.75, -1.25, 0.5, 0.125)
                                    }
                                }
                            }
                            let written = guardBytes + offset * size..<guardBytes + (offset + length) * size
                            #expect(
                                out[..<written.lowerBound].allSatisfy { $0 == 0xA5 }
                                    && out[written.upperBound...].allSatisfy { $0 == 0xA5 },
                                "\(level) \(type) formula \(formula) offset \(offset) length \(length): wrote outside")
                            outputs.append(Array(out[written]))
                        }
                        #expect(
                            outputs[0] == outputs[1],
                            "\(level) \(type) formula \(formula) offset \(offset) length \(length): bits differ")
                    }
                }
            }
        }
    }

    /// The reductions with an apply run inside (the kernels of the channel-fused passes): the
    /// moments and gradient sums are the bits of the plain reductions, and the run's output
    /// is the bits of `bnk_contiguous_apply` on it, for every level, type, formula and store
    /// kind, run lengths shorter than, equal to and longer than the reduction's, and unaligned
    /// output starts; nothing is written outside the run.
    @Test(arguments: TensorDataType.allCases)
    func reductionsWithAnApplyRunGiveTheSameBits(type: TensorDataType) throws {
        var generator = SeededGenerator(seed: 57)
        let size = type.byteCount, guardBytes = 64, capacity = 4200 + 17
        let g = try Self.randomElements(capacity, type: type, using: &generator)
        let x = try Self.randomElements(capacity, type: type, using: &generator)
        let kernelType = type.kernelType
        /// The output bytes of `body(out)` writing `count` elements at element `offset`, with
        /// the guard bytes around them checked.
        func written(
            offset: Int, count: Int, _ context: String,
            _ body: (UnsafeMutableRawPointer) -> Void
        ) -> [UInt8] {
            var out = [UInt8](repeating: 0xA5, count: capacity * size + 2 * guardBytes)
            out.withUnsafeMutableBytes { body($0.baseAddress! + guardBytes + offset * size) }
            let range = guardBytes + offset * size..<guardBytes + (offset + count) * size
            #expect(
                out[..<range.lowerBound].allSatisfy { $0 == 0xA5 }
                    && out[range.upperBound...].allSatisfy { $0 == 0xA5 }, "\(context): wrote outside")
            return Array(out[range])
        }
        g.withUnsafeBytes { g in
            x.withUnsafeBytes { x in
                let (gp, xp) = (g.baseAddress!, x.baseAddress!)
                for level in Self.levels {
                    for formula in [BNK_APPLY_FORWARD, BNK_APPLY_GRADIENT, BNK_APPLY_GRADIENT_AND_INPUT].map(Int32.init)
                    {
                        for streaming: Int32 in [0, 1] {
                            for length in [1, 15, 16, 31, 32, 33, 100, 4099] {
                                for (runLength, offset) in [
                                    (length, 0), (length, 5), (length + 17, 16), (length / 2, 3),
                                ] {
                                    let context =
                                        "\(level) \(type) formula \(formula) streaming \(streaming) length \(length) run \(runLength) offset \(offset)"
                                    // The run reads the other end of g and x, as the previous channel.
                                    let (runG, runX) = (gp + 64 * size, xp + 64 * size)
                                    let expected = written(offset: offset, count: runLength, context) { out in
                                        bnk_contiguous_apply(
                                            level.cValue, kernelType, formula, streaming, runG, runX,
                                            out, runLength, 0.75, -1.25, 0.5, 0.125)
                                    }
                                    // mean, m2, Σg, Σg·(x − 0.25): plain, then with the run.
                                    var (mean, m2, sumG, sumGX) = (0.0, 0.0, 0.0, 0.0)
                                    var (fusedMean, fusedM2, fusedSumG, fusedSumGX) = (0.0, 0.0, 0.0, 0.0)
                                    bnk_contiguous_moments(level.cValue, kernelType, xp, length, &mean, &m2)
                                    bnk_contiguous_gradient_sums(
                                        level.cValue, kernelType, gp, xp, length, 0.25,
                                        &sumG, &sumGX)
                                    for kernel in 0..<2 {
                                        let output = written(offset: offset, count: runLength, context) { out in
                                            var run = bnk_apply_run(
                                                formula: formula, streaming: streaming, g: runG,
                                                x: runX, out: out, n: runLength, a: 0.75, b: -1.25,
                                                shift: 0.5, offset: 0.125)
                                            if kernel == 0 {
                                                bnk_contiguous_moments_and_apply(
                                                    level.cValue, kernelType, xp, length,
                                                    &fusedMean, &fusedM2, &run)
                                            } else {
                                                bnk_contiguous_gradient_sums_and_apply(
                                                    level.cValue, kernelType, gp, xp,
                                                    length, 0.25, &fusedSumG,
                                                    &fusedSumGX, &run)
                                            }
                                        }
                                        #expect(output == expected, "\(context) kernel \(kernel): apply bits differ")
                                    }
                                    #expect(
                                        [fusedMean, fusedM2, fusedSumG, fusedSumGX].map(\.bitPattern)
                                            == [mean, m2, sumG, sumGX].map(\.bitPattern),
                                        "\(context): reduction bits differ")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The channels-last kernel: short periods (C = 16, 24), a long replicated one (C = 67:
    /// P = 1072) and one too long to replicate (C = 129: P = C, scalar tails in every row),
    /// from unaligned starts: streaming gives the same bits as ordinary stores.
    @Test(arguments: [3, 16, 24, 67, 129])
    func streamingInterleavedApplyGivesTheSameBits(channels: Int) throws {
        var generator = SeededGenerator(seed: UInt64(channels))
        let pattern = ChannelPattern(channels: channels)
        let coefficients = (0..<4 * pattern.period).map { Float($0 % channels) / 7 - 1 }
        for type in TensorDataType.allCases {
            let size = type.byteCount
            for rows in [1, 5, 33] {
                let length = rows * channels
                let g = try Self.randomElements(length + 3, type: type, using: &generator)
                let x = try Self.randomElements(length + 3, type: type, using: &generator)
                for level in Self.levels {
                    for offset in 0..<3 {
                        var outputs = [[UInt8]]()
                        for streaming: Int32 in [0, 1] {
                            var out = [UInt8](repeating: 0x5A, count: (length + 3) * size)
                            g.withUnsafeBytes { g in
                                x.withUnsafeBytes { x in
                                    out.withUnsafeMutableBytes { out in
                                        bnk_interleaved_apply(
                                            level.cValue, type.kernelType,
                                            Int32(BNK_APPLY_GRADIENT_AND_INPUT), streaming,
                                            g.baseAddress! + offset * size,
                                            x.baseAddress! + offset * size,
                                            out.baseAddress! + offset * size, length,
                                            pattern.period, pattern.vectorPeriod, coefficients)
                                    }
                                }
                            }
                            outputs.append(out)
                        }
                        #expect(
                            outputs[0] == outputs[1], "C \(channels) \(type) \(level) rows \(rows) offset \(offset)")
                    }
                }
            }
        }
    }

    /// Bit patterns of a short training run (two forwards and backwards, then evaluation) on
    /// a backend with the given tuning.
    static func results(
        shape: [Int], dataType: TensorDataType, threads: Int, level: KernelLevel,
        tuning: MemoryTuning
    ) throws -> [String: [UInt32]] {
        var generator = SeededGenerator(seed: 4242)
        let backend = CPUBackend(threadCount: threads, kernelLevel: level, tuning: tuning)
        let bn = try Rank.batchNorm3D.makeModule(maps: shape[1], sscale: 0.2, backend: backend, using: &generator)
        var results = [String: [UInt32]]()
        for step in 1...2 {
            let x = try randomTensor(shape: shape, layout: .channelsFirst, offset: 20, using: &generator)
                .converted(to: .channelsFirst, dataType: dataType)
            results["y\(step)"] = bits(try bn(x).scalars)
            results["mean\(step)"] = bits(try bn.mean.scalars)
            results["var\(step)"] = bits(try bn.var.scalars)
            results["saveinvvar\(step)"] = bits(bn.saveinvvar!.scalars)
            let g = try randomTensor(shape: shape, layout: .channelsFirst, using: &generator)
                .converted(to: .channelsFirst, dataType: dataType)
            results["dx\(step)"] = bits(try #require(try bn.backward(g, momentum: 0.5)).scalars)
            results["scaleGrad\(step)"] = bits(try bn.scaleGrad.scalars)
            results["biasGrad\(step)"] = bits(try bn.biasGrad.scalars)
        }
        bn.evalMode()
        let x = try randomTensor(shape: shape, layout: .channelsFirst, using: &generator)
            .converted(to: .channelsFirst, dataType: dataType)
        results["evaluation y"] = bits(try bn(x).scalars)
        return results
    }

    /// NCDHW shapes with odd planes (unaligned plane starts), one below the parallel
    /// threshold, several above it (so 2 and 3 threads split the channels), and fewer
    /// channels than threads: fused and unfused, streaming and not, every level, 1 to 3
    /// threads, float32 and float16 — all the same bits as the unfused single-threaded run
    /// with ordinary stores.
    @Test(arguments: [[2, 3, 5, 7, 9], [3, 5, 7, 30, 31], [1, 2, 6, 80, 80], [4, 16, 3, 17, 19]])
    func fusedAndStreamingPassesGiveTheSameBits(shape: [Int]) throws {
        for dataType in [TensorDataType.float32, .float16] {
            let baseline = try Self.results(
                shape: shape, dataType: dataType, threads: 1, level: .generic,
                tuning: Self.tuning(streaming: .never, fusion: .never))
            #expect(baseline.count == 15)
            for level in Self.levels {
                for threads in [1, 2, 3] {
                    for (streaming, fusion) in [
                        (MemoryTuning.Choice.never, MemoryTuning.Choice.always),
                        (.always, .always), (.always, .never),
                    ] {
                        let results = try Self.results(
                            shape: shape, dataType: dataType, threads: threads, level: level,
                            tuning: Self.tuning(streaming: streaming, fusion: fusion))
                        for (key, expected) in baseline.sorted(by: { $0.key < $1.key }) {
                            #expect(
                                results[key] == expected,
                                "\(shape) \(dataType) \(level) \(threads) threads streaming \(streaming) fusion \(fusion): \(key)"
                            )
                        }
                    }
                }
            }
        }
    }

    /// The fused path against the `Double` reference directly (the unfused one is checked
    /// by the reference tests and above bitwise): output, running statistics and `dx`.
    @Test(arguments: [[2, 3, 5, 7, 9], [3, 5, 7, 30, 31]])
    func fusedPassesMatchTheReference(shape: [Int]) throws {
        var generator = SeededGenerator(seed: 12)
        let backend = CPUBackend(
            threadCount: 2, kernelLevel: .selected,
            tuning: Self.tuning(
                streaming: .always,
                fusion: .always))
        #expect(backend.fusesChannels(shape: shape, layout: .channelsFirst, dataType: .float32, backward: true))
        let bn = try Rank.batchNorm3D.makeModule(maps: shape[1], sscale: 0.3, backend: backend, using: &generator)
        var reference = ReferenceBatchNorm(state: try bn.state(), epsilon: bn.epsilon)
        for step in 1...2 {
            let x = try randomTensor(shape: shape, layout: .channelsFirst, offset: 100, using: &generator)
            expectClose(
                try bn(x).scalars, reference.trainingForward(doubles(x), shape: shape),
                tolerance: Tolerance.output, "step \(step): y")
            expectClose(try bn.mean.scalars, reference.mean, tolerance: Tolerance.output, "step \(step): mean")
            expectClose(try bn.var.scalars, reference.variance, tolerance: Tolerance.output, "step \(step): var")
            let g = try randomTensor(shape: shape, layout: .channelsFirst, using: &generator)
            let expected = reference.backward(doubles(g), shape: shape, training: true)
            let dx = try #require(try bn.backward(g))
            expectClose(
                dx.scalars, expected, tolerance: Tolerance.inputGradient,
                floor: rootMeanSquare(doubles(g)) * reference.savedInvstd.max()! * 0.3, "step \(step): dx")
        }
    }

    /// A fused forward whose finalize rejects a channel (σ² beyond Float's range) throws
    /// `nonFiniteStatistics` and leaves the module as it was, previous output included.
    @Test func fusedForwardLeavesTheModuleUnchangedOnError() throws {
        var generator = SeededGenerator(seed: 3)
        let shape = [2, 3, 4, 5, 6]
        let backend = CPUBackend(
            threadCount: 2, kernelLevel: .selected,
            tuning: Self.tuning(
                streaming: .never,
                fusion: .always))
        let bn = try Rank.batchNorm3D.makeModule(maps: 3, backend: backend, using: &generator)
        _ = try bn(try randomTensor(shape: shape, layout: .channelsFirst, using: &generator))
        var values = try randomTensor(shape: shape, layout: .channelsFirst, using: &generator).scalars
        for i in values.indices where (i / 120) % 3 == 2 { values[i] = i % 2 == 0 ? 1e20 : -1e20 }
        let x = try Tensor(values, shape: shape)
        let before = ModuleSnapshot(bn)
        let error = #expect(throws: BatchNormError.self) { _ = try bn(x) }
        if case .nonFiniteStatistics(let channel, _, _)? = error {
            #expect(channel == 2)
        } else {
            Issue.record("expected nonFiniteStatistics, got \(String(describing: error))")
        }
        #expect(ModuleSnapshot(bn) == before)
    }

    /// The size rules on both sides of their thresholds.
    @Test func thresholds() {
        let caches = CacheSizes(levelTwo: 1 << 20, lastLevel: 32 << 20, lastLevelSharedBy: 2)
        #expect(caches.perCore == 16 << 20)
        #expect(CacheSizes(levelTwo: 2 << 20, lastLevel: 8 << 20, lastLevelSharedBy: 8).perCore == 2 << 20)
        // Where the last level does not keep a pass's tensors (Intel), the L2s of the
        // processors sharing it do, up to the last level's size; per-core shares are unchanged.
        let intel = CacheSizes(
            levelTwo: 2 << 20, lastLevel: 260 << 20, lastLevelSharedBy: 2, lastLevelKeepsTensors: false)
        #expect(intel.keeping == 4 << 20 && intel.perCore == 130 << 20 && caches.keeping == 32 << 20)
        #expect(
            CacheSizes(levelTwo: 2 << 20, lastLevel: 8 << 20, lastLevelSharedBy: 8, lastLevelKeepsTensors: false)
                .keeping == 8 << 20)
        let intelTuning = MemoryTuning(streamingStores: .automatic, channelFusion: .automatic, caches: intel)
        #expect(intelTuning.streamingThreshold == 3 << 20 && intelTuning.fusionThreshold == 3 << 20)
        #expect(
            !intelTuning.streams(workingSetBytes: (3 << 20) - 1, fused: false)
                && intelTuning.streams(workingSetBytes: 3 << 20, fused: false))
        // Elsewhere unfused passes stream from the whole last level, fused ones always (they
        // run only from 3/4 of it).
        let automatic = MemoryTuning(streamingStores: .automatic, channelFusion: .automatic, caches: caches)
        #expect(automatic.streamingThreshold == 32 << 20 && automatic.fusionThreshold == 24 << 20)
        #expect(
            !automatic.streams(workingSetBytes: (32 << 20) - 1, fused: false)
                && automatic.streams(workingSetBytes: 32 << 20, fused: false))
        #expect(automatic.streams(workingSetBytes: 24 << 20, fused: true))
        // Fusion: tensors that leave the cache, two channels within one core's share, balance.
        let large = 1 << 30
        #expect(
            automatic.staysInCache(workingSetBytes: (24 << 20) - 1)
                && !automatic.staysInCache(workingSetBytes: 24 << 20))
        #expect(automatic.fuses(channelBytes: 16 << 20, workingSetBytes: large, channels: 64, threads: 2))
        #expect(automatic.fuses(channelBytes: 1024, workingSetBytes: 24 << 20, channels: 64, threads: 2))
        #expect(!automatic.fuses(channelBytes: 1024, workingSetBytes: (24 << 20) - 1, channels: 64, threads: 2))
        #expect(!automatic.fuses(channelBytes: (16 << 20) + 1, workingSetBytes: large, channels: 64, threads: 2))
        // Channels over threads: 3 over 2 is 2 against 1.5 (a third more); 9 over 2 is 5 against 4.5.
        #expect(!automatic.fuses(channelBytes: 1024, workingSetBytes: large, channels: 3, threads: 2))
        #expect(automatic.fuses(channelBytes: 1024, workingSetBytes: large, channels: 9, threads: 2))
        #expect(automatic.fuses(channelBytes: 1024, workingSetBytes: large, channels: 3, threads: 1))
        #expect(automatic.fuses(channelBytes: 1024, workingSetBytes: large, channels: 6, threads: 3))
        var forced = automatic
        forced.streamingStores = .always
        forced.channelFusion = .never
        #expect(
            forced.streams(workingSetBytes: 0, fused: false)
                && !forced.fuses(channelBytes: 0, workingSetBytes: large, channels: 64, threads: 1))
        forced.streamingStores = .never
        forced.channelFusion = .always
        #expect(
            !forced.streams(workingSetBytes: 1 << 40, fused: true)
                && forced.fuses(channelBytes: 1 << 40, workingSetBytes: large, channels: 3, threads: 2))

        // The backend's decision: channels-first with S > 1 only; two channels per thread
        // (the one being applied, the next being reduced), of x, and of g too in backward.
        let backend = CPUBackend(threadCount: 2, kernelLevel: .generic, tuning: automatic)
        let fits = [8, 64, 16, 128, 128] // 8 MiB per channel in float32: 16 MiB forward, 32 MiB backward
        #expect(backend.fusesChannels(shape: fits, layout: .channelsFirst, dataType: .float32, backward: false))
        #expect(!backend.fusesChannels(shape: fits, layout: .channelsFirst, dataType: .float32, backward: true))
        #expect(backend.fusesChannels(shape: fits, layout: .channelsFirst, dataType: .float16, backward: true))
        #expect(!backend.fusesChannels(shape: fits, layout: .channelsLast, dataType: .float32, backward: false))
        #expect(!backend.fusesChannels(shape: [8, 64], layout: .channelsFirst, dataType: .float32, backward: false))
        #expect(
            !backend.fusesChannels(
                shape: [9, 64, 16, 128, 128], layout: .channelsFirst, dataType: .float32,
                backward: false))
        // Passes whose tensors stay in the last-level cache run unfused: x and y of 4 MiB
        // (8 < 24 MiB), g, x and dx of 4 MiB (12 < 24 MiB); at 8 MiB the backward's three
        // (24 MiB) fuse and the forward's two (16 MiB) do not.
        let cached = [1, 64, 16, 32, 32], backwardOnly = [2, 64, 16, 32, 32]
        #expect(!backend.fusesChannels(shape: cached, layout: .channelsFirst, dataType: .float32, backward: false))
        #expect(!backend.fusesChannels(shape: cached, layout: .channelsFirst, dataType: .float32, backward: true))
        #expect(
            !backend.fusesChannels(shape: backwardOnly, layout: .channelsFirst, dataType: .float32, backward: false))
        #expect(backend.fusesChannels(shape: backwardOnly, layout: .channelsFirst, dataType: .float32, backward: true))
        let always = CPUBackend(threadCount: 2, kernelLevel: .generic, tuning: forced)
        #expect(always.fusesChannels(shape: cached, layout: .channelsFirst, dataType: .float32, backward: false))
    }

    /// The sysfs formats the cache sizes are read from, and the running machine's sizes.
    @Test func cacheSizeFormats() {
        #expect(CacheSizes.parseSize("512K") == 512 << 10)
        #expect(CacheSizes.parseSize("32768K") == 32 << 20)
        #expect(CacheSizes.parseSize("2M") == 2 << 20)
        #expect(CacheSizes.parseSize("1G") == 1 << 30)
        #expect(CacheSizes.parseSize("4096") == 4096)
        #expect(CacheSizes.parseSize("big") == nil)
        #expect(CacheSizes.countProcessors("0-1") == 2)
        #expect(CacheSizes.countProcessors("0-3,8,10-11") == 7)
        #expect(CacheSizes.countProcessors("5") == 1)
        let running = CacheSizes.running
        #expect(running.levelTwo > 0 && running.lastLevel >= running.levelTwo && running.lastLevelSharedBy >= 1)
    }

    /// Sysfs files of cpu0's cache levels: (index, level, type, size or nil, shared_cpu_list).
    static func sysfs(_ levels: [(Int, Int, String, String?, String)]) -> (String) -> String? {
        var files = [String: String]()
        for (index, level, type, size, shared) in levels {
            let directory = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
            files[directory + "level"] = "\(level)"
            files[directory + "type"] = type
            files[directory + "size"] = size
            files[directory + "shared_cpu_list"] = shared
        }
        return { files[$0] }
    }

    /// Each source of the cache sizes, in order: sysfs (an x86-64 guest, an aarch64 server),
    /// Darwin's sysctl (Apple silicon, an Intel Mac), glibc's sysconf, and the defaults (an
    /// aarch64 machine whose sysfs has no cache sizes).
    @Test func cacheSizesFromEachSource() {
        func sizes(
            file: @escaping (String) -> String? = { _ in nil }, sysctl: [String: [Int]] = [:],
            sysconf: (Int, Int) = (0, 0), processors: Int = 16
        ) -> CacheSizes {
            CacheSizes(
                file: file, systemValues: { sysctl[$0] }, sysconfSizes: (sysconf.0, sysconf.1),
                onlineProcessors: processors, lastLevelKeepsTensors: true)
        }
        let zen = Self.sysfs([
            (0, 1, "Data", "48K", "0"), (1, 1, "Instruction", "32K", "0"), (2, 2, "Unified", "1024K", "0"),
            (3, 3, "Unified", "32768K", "0-1"),
        ])
        #expect(
            sizes(file: zen, sysconf: (4 << 20, 64 << 20))
                == CacheSizes(levelTwo: 1 << 20, lastLevel: 32 << 20, lastLevelSharedBy: 2))
        let graviton = Self.sysfs([
            (0, 1, "Data", "64K", "0"), (1, 1, "Instruction", "64K", "0"), (2, 2, "Unified", "1024K", "0"),
            (3, 3, "Unified", "32768K", "0-63"),
        ])
        #expect(sizes(file: graviton) == CacheSizes(levelTwo: 1 << 20, lastLevel: 32 << 20, lastLevelSharedBy: 64))
        let appleSilicon = [
            "hw.perflevel0.l2cachesize": [16 << 20], "hw.perflevel0.cpusperl2": [4], "hw.l2cachesize": [4 << 20],
        ]
        #expect(
            sizes(sysctl: appleSilicon) == CacheSizes(levelTwo: 16 << 20, lastLevel: 16 << 20, lastLevelSharedBy: 4))
        let intelMac = ["hw.l2cachesize": [256 << 10], "hw.l3cachesize": [8 << 20], "hw.cacheconfig": [8, 2, 2, 8, 0]]
        #expect(sizes(sysctl: intelMac) == CacheSizes(levelTwo: 256 << 10, lastLevel: 8 << 20, lastLevelSharedBy: 8))
        #expect(
            sizes(sysconf: (2 << 20, 64 << 20))
                == CacheSizes(levelTwo: 2 << 20, lastLevel: 64 << 20, lastLevelSharedBy: 1))
        // Levels listed without sizes (some aarch64 firmware) fall through to the defaults.
        let noSizes = Self.sysfs([(0, 1, "Data", nil, "0"), (2, 2, "Unified", nil, "0")])
        let defaults = sizes(file: noSizes, processors: 16)
        #expect(defaults == CacheSizes(levelTwo: 1 << 20, lastLevel: 32 << 20, lastLevelSharedBy: 16))
        #expect(defaults.perCore == 2 << 20)
    }
}
