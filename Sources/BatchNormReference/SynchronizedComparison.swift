import BatchNormCore

/// Checks of synchronized statistics shared by the tests (``LocalProcessGroup``) and
/// `bnkit selftest --mpi` (``MPIProcessGroup``): every rank runs a module with the group on
/// its slice of a batch, and a local module on the whole batch (the concatenation along `N`
/// of every rank's slice, generated from a seed, so every rank knows it); the two must agree
/// within the stated tolerances, and every rank must hold the same bits.
public struct SynchronizedComparison: Sendable, CustomStringConvertible {
    /// Layout of the data.
    public let layout: TensorLayout
    /// Channels `C`.
    public let maps: Int
    /// The spatial axes (rank − 2 values).
    public let spatial: [Int]
    /// `N` of each rank's slice (one value per rank; zeros allowed).
    public let batches: [Int]
    /// Training forward + backward steps.
    public let steps: Int
    /// Seed of the data, gradients and initial scale.
    public let seed: UInt64
    /// Channels per group of the fused synchronized passes, forced on (channels-first with
    /// `S > 1`; other layouts run one exchange per pass), or `nil` for the backend's own rule.
    public let channelsPerGroup: Int?

    /// Relative tolerance of `y`, `dx`, running statistics and parameter gradients against
    /// the local module on the whole batch (element-wise, floor: the values' RMS).
    public static let tolerance = 1e-6
    /// Relative tolerance of the `Double` batch statistics (`μ`, `invstd`).
    public static let momentTolerance = 1e-12

    /// A comparison of `steps` steps on `(Σ batches, maps, spatial...)` data in `layout`.
    /// With `channelsPerGroup`, the synchronized module's backend fuses in groups of that
    /// many channels (see ``channelsPerGroup``).
    public init(
        layout: TensorLayout, maps: Int, spatial: [Int], batches: [Int], steps: Int, seed: UInt64,
        channelsPerGroup: Int? = nil
    ) {
        self.layout = layout
        self.maps = maps
        self.spatial = spatial
        self.batches = batches
        self.steps = steps
        self.seed = seed
        self.channelsPerGroup = channelsPerGroup
    }

    /// `sync NCDHW C=3 S=[3, 4, 5] N=[2, 0] steps=12` (and `groups of 4`): what the
    /// comparison covers.
    public var description: String {
        "sync \(layout == .channelsFirst ? "NCDHW" : "NDHWC") C=\(maps) S=\(spatial) N=\(batches) steps=\(steps)"
            + (channelsPerGroup.map { " groups of \($0)" } ?? "")
    }

    /// The backend of a synchronized module whose fused passes run in groups of
    /// `channelsPerGroup` channels (``ChannelFusionLimits/channelsPerGroup(channelBytes:channels:)``
    /// is `threads` with no group cache), or the default CPU backend for `nil`.
    public static func backend(channelsPerGroup: Int?) -> CPUBackend {
        guard let channelsPerGroup else { return CPUBackend(threadCount: 1) }
        return CPUBackend(
            threadCount: 1,
            channelFusionLimits: ChannelFusionLimits(
                mode: .always, workingSetThreshold: 0, threadCacheBytes: 0, groupCacheBytes: 0,
                threads: channelsPerGroup))
    }

    /// The all-gathers the synchronized module must make in training step `step` (from 1):
    /// one per pass unless the passes run in groups (forced, channels-first with `S > 1`),
    /// then one per group, except for the first forward, which agrees on the groups in one
    /// exchange.
    func expectedExchanges(step: Int) -> Int {
        guard let channelsPerGroup, layout == .channelsFirst, spatial.reduce(1, *) > 1 else { return 2 }
        let groups = (maps + channelsPerGroup - 1) / channelsPerGroup
        return (step == 1 ? 1 : groups) + groups
    }

    /// The comparisons for a group of `size` ranks: both layouts, uneven `N` with an empty
    /// rank, `C = 1` and `C = 300`, 12 steps (the factor schedule crosses `minFactor`).
    public static func standardCases(size: Int, seed: UInt64 = 11) -> [SynchronizedComparison] {
        let uneven = (0..<size).map { [2, 0, 1, 3][$0 % 4] } // rank 1 empty when size > 1
        let even = Array(repeating: 2, count: size)
        return [
            .init(layout: .channelsFirst, maps: 3, spatial: [3, 4, 5], batches: uneven, steps: 12, seed: seed),
            .init(layout: .channelsLast, maps: 3, spatial: [3, 4, 5], batches: uneven, steps: 12, seed: seed + 1),
            .init(layout: .channelsFirst, maps: 1, spatial: [7], batches: even, steps: 3, seed: seed + 2),
            .init(
                layout: .channelsLast, maps: 1, spatial: [2, 3], batches: uneven.map { $0 + 1 }, steps: 3,
                seed: seed + 3),
            .init(layout: .channelsFirst, maps: 300, spatial: [2, 2], batches: uneven, steps: 2, seed: seed + 4),
            .init(layout: .channelsLast, maps: 300, spatial: [3], batches: even, steps: 2, seed: seed + 5),
            // Grouped schedule: several groups with a last partial one, an empty rank.
            .init(
                layout: .channelsFirst, maps: 10, spatial: [3, 4, 5], batches: uneven, steps: 4, seed: seed + 6,
                channelsPerGroup: 4),
            .init(
                layout: .channelsFirst, maps: 300, spatial: [2, 2], batches: uneven, steps: 2, seed: seed + 7,
                channelsPerGroup: 64),
            .init(
                layout: .channelsLast, maps: 5, spatial: [2, 3], batches: even, steps: 2, seed: seed + 8,
                channelsPerGroup: 2),
        ]
    }

    /// Runs the comparison as rank `group.rank`, checking that the synchronized module makes
    /// exactly the all-gathers its schedule promises per step (two, or one per group of each
    /// fused pass), plus one all-gather per step for the bitwise check across ranks (`group`
    /// must have `batches.count` members).
    /// - Returns: The failures seen by this rank (empty when it passed). Every rank returns
    ///   the same verdict on the bitwise check.
    /// - Throws: Errors of the modules or the group.
    public func run(group: any ProcessGroup) throws -> [String] {
        try run(group: group, place: { $0 }, host: { $0 })
    }

    /// ``run(group:)`` with the synchronized module computing on other operands, a GPU's device
    /// tensors for example: `place` makes each rank's input and gradient from host tensors and
    /// `host` brings its outputs back (the module on the whole batch stays on the CPU).
    public func run<Operand: BatchNormOperand>(
        group: any ProcessGroup, place: (Tensor) throws -> Operand, host: (Operand) throws -> Tensor
    ) throws -> [String] {
        guard batches.count == group.size else {
            return ["\(self): \(batches.count) batch sizes for a group of \(group.size)"]
        }
        let counting = CountingProcessGroup(group)
        let total = batches.reduce(0, +), before = batches[..<group.rank].reduce(0, +), mine = batches[group.rank]
        let rowLength = maps * spatial.reduce(1, *)
        let module = try make(group: counting, backend: Self.backend(channelsPerGroup: channelsPerGroup))
        let whole = try make(group: nil, backend: CPUBackend(threadCount: 1))
        var generator = SeededGenerator(seed: seed &+ 1000)
        var failures = [String]()
        func check(
            _ actual: [Float], _ expected: [Float], _ what: String, step: Int,
            tolerance: Double = SynchronizedComparison.tolerance
        ) {
            let error = ReferenceComparison.maximumRelativeError(
                actual, expected.map(Double.init),
                floor: rootMeanSquare(expected))
            if actual.count != expected.count || !(error <= tolerance) {
                failures.append("\(self) step \(step): \(what) relative error \(error) > \(tolerance)")
            }
        }
        for step in 1...steps {
            let x = values(count: total * rowLength, using: &generator, offset: 3)
            let g = values(count: total * rowLength, using: &generator, offset: 0)
            let slice = (before * rowLength)..<((before + mine) * rowLength)
            let gathers = counting.count
            let y = try host(module(place(tensor(Array(x[slice]), batch: mine))))
            let dx = try module.backward(place(tensor(Array(g[slice]), batch: mine))).map(host)
            if counting.count - gathers != expectedExchanges(step: step) {
                failures.append(
                    "\(self) step \(step): \(counting.count - gathers) all-gathers (expected \(expectedExchanges(step: step)))"
                )
            }
            let wholeY = try whole(tensor(x, batch: total))
            let wholeDx = try whole.backward(tensor(g, batch: total))
            check(y.scalars, Array(wholeY.scalars[slice]), "y", step: step)
            check(dx?.scalars ?? [], Array(wholeDx?.scalars[slice] ?? []), "dx", step: step)
            for (name, actual, expected) in try [
                ("running mean", module.mean, whole.mean),
                ("running var", module.var, whole.var),
                ("scaleGrad", module.scaleGrad, whole.scaleGrad),
                ("biasGrad", module.biasGrad, whole.biasGrad),
            ] {
                check(actual.scalars, expected.scalars, name, step: step)
            }
            if let saved = module.savedStatistics, let reference = whole.savedStatistics {
                for (name, actual, expected) in [
                    ("mean", saved.mean, reference.mean),
                    ("invstd", saved.invstd, reference.invstd),
                ] {
                    let error = zip(actual, expected).map { abs($0 - $1) / max(abs($1), 1e-300) }.max() ?? 0
                    if !(error <= Self.momentTolerance) {
                        failures.append(
                            "\(self) step \(step): batch \(name) relative error \(error) > \(Self.momentTolerance)")
                    }
                }
            }
            if module.numOfProps != whole.numOfProps {
                failures.append("\(self) step \(step): numOfProps \(module.numOfProps) != \(whole.numOfProps)")
            }
            // Bitwise across ranks: everything replicated, as Doubles (exact for Float).
            let replicated =
                try
                ([module.mean, module.var, module.scaleGrad, module.biasGrad]
                + [module.savemean, module.saveinvvar].compactMap { $0 })
                .flatMap { $0.scalars.map(Double.init) }
                + (module.savedStatistics.map { $0.mean + $0.invstd } ?? [])
            let everyone = try group.allGather(replicated)
            let first = everyone[0..<replicated.count]
            for rank in 1..<group.size
            where !zip(first, everyone[(rank * replicated.count)..<((rank + 1) * replicated.count)])
                .allSatisfy({ $0.bitPattern == $1.bitPattern })
            {
                failures.append("\(self) step \(step): rank \(rank) differs from rank 0 bitwise")
            }
        }
        return failures
    }

    private func make(group: (any ProcessGroup)?, backend: CPUBackend) throws -> BatchNormND {
        var generator = SeededGenerator(seed: seed)
        guard let family = BatchNormND.familyMember(forDataRank: 2 + spatial.count) else {
            throw BatchNormError.invalidArgument(name: "spatial", expected: "0 to 3 axes", actual: "\(spatial)")
        }
        return try family.init(
            maps: maps, sscale: 0.3, backend: backend, processGroup: group,
            using: &generator)
    }

    private func tensor(_ values: [Float], batch: Int) throws -> Tensor {
        try Tensor(values, shape: [batch, maps] + spatial, layout: layout)
    }

    /// Seeded values in logical order, per channel `offset + mean_c + sd_c·z` (Box–Muller-free:
    /// a sum of uniforms, enough for comparisons).
    private func values(count: Int, using generator: inout SeededGenerator, offset: Double) -> [Float] {
        (0..<count).map { _ in
            Float(offset + Double.random(in: -1...1, using: &generator) + Double.random(in: -1...1, using: &generator))
        }
    }

    private func rootMeanSquare(_ values: [Float]) -> Double {
        guard !values.isEmpty else { return 1e-30 }
        let meanSquare = values.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(values.count)
        return max(meanSquare.squareRoot(), 1e-30)
    }
}

extension SynchronizedComparison {
    /// The error paths, as rank `group.rank`: a rank with NaN input, a rank with the wrong
    /// maps, a rank whose gradient has the wrong shape, a global `M` below 2; every rank must
    /// throw (the failing rank its own error, the others
    /// `BatchNormError/peerFailed(rank:reason:)` naming it), every module must
    /// be unchanged, the group must stay usable, each failing call must have made the
    /// all-gathers of the groups up to the failing one (every rank stops at the same group),
    /// and evaluation mode must not communicate.
    ///
    /// With `channelsPerGroup` (2), the module (6 channels) runs the grouped schedule of 3
    /// groups after a first good step, and the NaN is in channel 3: the middle group.
    /// - Returns: The failures seen by this rank (empty when it passed).
    public static func errorChecks(group: any ProcessGroup, seed: UInt64 = 5, channelsPerGroup: Int? = nil) throws
        -> [String]
    {
        let counting = CountingProcessGroup(group)
        let rank = group.rank, last = group.size - 1
        let maps = channelsPerGroup == nil ? 2 : 6
        let groups = channelsPerGroup.map { (maps + $0 - 1) / $0 } ?? 1
        var generator = SeededGenerator(seed: seed)
        let module = try BatchNorm3D(
            maps: maps, sscale: 0.3, backend: SynchronizedComparison.backend(channelsPerGroup: channelsPerGroup),
            processGroup: counting, using: &generator)
        var failures = [String]()
        func good(_ batch: Int = 2) throws -> Tensor {
            try Tensor(
                (0..<(batch * maps * 12)).map { Float(($0 * 7 + rank * 3) % 11) - 5 }, shape: [batch, maps, 1, 3, 4])
        }
        func expectExchanges(_ what: String, _ expected: Int, _ body: () throws -> Void) rethrows {
            let before = counting.count
            try body()
            if counting.count - before != expected {
                failures.append(
                    "\(what): rank \(rank) made \(counting.count - before) all-gathers (expected \(expected))")
            }
        }
        /// Runs `body` on every rank; `failing` must throw `own`, the others `peerFailed(failing)`.
        func expectCollectiveError(
            _ what: String, failing: Int?, exchanges: Int, own: (any Error) -> Bool,
            _ body: () throws -> Void
        ) throws {
            let before = try module.state(), props = module.numOfProps
            let gradients = try [module.scaleGrad.scalars, module.biasGrad.scalars]
            try expectExchanges(what, exchanges) {
                do {
                    try body()
                    failures.append("\(what): rank \(rank) did not throw")
                } catch let error as BatchNormError {
                    if case .peerFailed(let peer, _) = error {
                        if peer != failing || rank == failing {
                            failures.append("\(what): rank \(rank) threw \(error)")
                        }
                    } else if !(failing == nil || rank == failing) || !own(error) {
                        failures.append("\(what): rank \(rank) threw \(error)")
                    }
                }
            }
            if try module.state() != before || module.numOfProps != props
                || [module.scaleGrad.scalars, module.biasGrad.scalars] != gradients
            {
                failures.append("\(what): rank \(rank)'s module changed")
            }
        }
        if channelsPerGroup != nil {
            // The first step agrees on the groups (one exchange), its backward runs them.
            try expectExchanges("first grouped forward", 1) { _ = try module(good()) }
            try expectExchanges("first grouped backward", groups) { _ = try module.backward(good()) }
        }
        // The NaN is in the middle group's channel (channel 3 of 6; channel 0 of 2).
        let nanChannel = channelsPerGroup == nil ? 0 : 3
        try expectCollectiveError(
            "NaN in channel \(nanChannel) on rank \(last)", failing: last, exchanges: channelsPerGroup == nil ? 1 : 2,
            own: {
                if case BatchNormError.nonFiniteStatistics(let channel, _, _) = $0 {
                    channel == nanChannel
                } else {
                    false
                }
            }
        ) {
            var values = try good().scalars
            if rank == last { values[nanChannel * 12 + 3] = .nan }
            _ = try module(Tensor(values, shape: [2, maps, 1, 3, 4]))
        }
        try expectCollectiveError(
            "wrong maps on rank 0", failing: 0, exchanges: 1,
            own: {
                if case BatchNormError.mapsMismatch = $0 { true } else { false }
            }
        ) {
            _ = try module(rank == 0 ? Tensor(zeros: [2, maps + 1, 1, 3, 4]) : good())
        }
        try expectCollectiveError(
            "global M < 2", failing: nil, exchanges: 1,
            own: {
                if case BatchNormError.tooFewValuesPerChannel = $0 { true } else { false }
            }
        ) {
            _ = try module(Tensor(zeros: [rank == 0 ? 1 : 0, maps, 1, 1, 1]))
        }
        // A good step, then a backward whose gradient has the wrong shape on the last rank.
        let x = try good()
        try expectExchanges("good forward", groups) { _ = try module(x) }
        try expectCollectiveError(
            "wrong grad shape on rank \(last)", failing: last, exchanges: 1,
            own: {
                if case BatchNormError.shapeMismatch = $0 { true } else { false }
            }
        ) {
            _ = try module.backward(rank == last ? good(3) : good())
        }
        try expectExchanges("good backward", groups) { _ = try module.backward(good()) }
        module.evalMode()
        try expectExchanges("evaluation", 0) {
            _ = try module(x)
            _ = try module.backward(good())
        }
        return failures
    }
}

/// A process group that counts the all-gathers made through it (to check that a
/// synchronized step makes exactly the collectives it promises).
public final class CountingProcessGroup: ProcessGroup, @unchecked Sendable {
    private let base: any ProcessGroup
    /// All-gathers made through this wrapper so far.
    public private(set) var count = 0
    /// The wrapped group's rank.
    public var rank: Int { base.rank }
    /// The wrapped group's size.
    public var size: Int { base.size }

    /// Wraps `base`; use the wrapper from one thread at a time.
    public init(_ base: any ProcessGroup) { self.base = base }

    /// The wrapped group's all-gather, counted.
    public func allGather(_ values: [Double]) throws -> [Double] {
        count += 1
        return try base.allGather(values)
    }
}
