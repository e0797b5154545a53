// The merge step across a process group (<doc:SynchronizedStatistics>), shared by the host
// and device paths. Legend: R ranks (`processGroup.size`), C channels.
//
// Every rank sends one message of `1 + width·k` doubles per exchange: a status (0, or the
// code of the error its local step threw) and its values for k channels (zeros after a
// failure). One all-gather hands every rank all R messages; each rank then merges them in
// rank order, so every rank computes the same bits whatever the MPI library's algorithm.
// Unfused passes exchange all C channels at once; fused ones (SynchronizedSchedule) one
// group of channels at a time. The first synchronized training forward of a module also
// carries the agreement header (rank 0's fusion limits) before its values.

/// The status slot of a synchronized message: why a rank's local step failed, in a form
/// the other ranks can name (``BatchNormError/peerFailed(rank:reason:)``).
enum PeerFailure: Int, CaseIterable {
    case rank = 1
    case maps, dataType, shape, layout, emptyModule, backwardBeforeForward, inplaceInTraining
    case nonFiniteStatistics, other

    init(_ error: any Error) {
        switch error as? BatchNormError {
        case .rankMismatch: self = .rank
        case .mapsMismatch: self = .maps
        case .dataTypeMismatch: self = .dataType
        case .shapeMismatch: self = .shape
        case .layoutMismatch: self = .layout
        case .emptyModule: self = .emptyModule
        case .backwardBeforeForward: self = .backwardBeforeForward
        case .inplaceInTraining: self = .inplaceInTraining
        case .nonFiniteStatistics: self = .nonFiniteStatistics
        default: self = .other
        }
    }

    /// The reason as the other ranks report it.
    var reason: String {
        switch self {
        case .rank: "its tensor has the wrong rank"
        case .maps: "its tensor has the wrong number of maps"
        case .dataType: "its tensor has an unsupported data type"
        case .shape: "its gradient's shape differs from its forward input's"
        case .layout: "its gradient's layout differs from its forward input's"
        case .emptyModule: "its module is empty (no state loaded)"
        case .backwardBeforeForward: "it called backward before a forward pass"
        case .inplaceInTraining: "its module is inplace in training mode"
        case .nonFiniteStatistics: "its batch statistics are not finite (NaN or Inf in its input)"
        case .other: "its local computation threw an error"
        }
    }
}

/// The channel groups of a synchronized module's training passes, the same on every rank:
/// derived from rank 0's ``ChannelFusionLimits``, data-type size and layout, sent in the
/// module's first synchronized training forward, and from that forward's global `M` spread
/// evenly over the ranks (never from a rank's own caches). A pass is fused, in groups of
/// ``ChannelFusionLimits/channelsPerGroup(channelBytes:channels:)`` channels, where the
/// rule of ``ChannelFusionLimits/fuses(channelBytes:workingSetBytes:channels:)`` says a local
/// pass of that per-rank size would fuse; it then makes `⌈C/g⌉` exchanges instead of 1.
/// One group size serves both passes (the backward's, which reads two tensors), so a fused
/// step makes `2·⌈C/g⌉`. Later batches of other sizes keep the agreed schedule: it decides
/// only the order of the work, never the values.
package struct SynchronizedSchedule: Equatable, Sendable {
    /// Channels per group of a fused training forward, or `nil` (one exchange, unfused).
    package let forwardGroup: Int?
    /// Channels per group of a fused training backward that computes `dx`, or `nil`.
    package let backwardGroup: Int?

    /// A schedule from its group sizes.
    package init(forwardGroup: Int?, backwardGroup: Int?) {
        self.forwardGroup = forwardGroup
        self.backwardGroup = backwardGroup
    }

    /// The schedule from rank 0's `header` (``header(limits:byteCount:planar:)``) and the
    /// global `count` (`M`) over `ranks` ranks; no fused pass for a header of another length.
    package init(header: ArraySlice<Double>, count: Int, ranks: Int, channels: Int) {
        let values = Array(header)
        guard values.count == 7, values[6] == 1, channels > 0 else {
            (forwardGroup, backwardGroup) = (nil, nil)
            return
        }
        let limits = ChannelFusionLimits(encoded: values[0..<5])
        let byteCount = values[5].isFinite ? max(1, min(8, Int(values[5]))) : 4
        // Bytes of `channels` channels' values of one rank's share, saturating.
        let perRank = Double((count + ranks - 1) / max(1, ranks)) * Double(byteCount)
        func bytes(_ channels: Double) -> Int { Int(min(0x1p60, channels * perRank)) }
        let group = limits.channelsPerGroup(channelBytes: bytes(4), channels: channels)
        let total = Double(channels)
        forwardGroup =
            limits.fuses(channelBytes: bytes(2), workingSetBytes: bytes(2 * total), channels: channels) ? group : nil
        backwardGroup =
            limits.fuses(channelBytes: bytes(4), workingSetBytes: bytes(3 * total), channels: channels) ? group : nil
    }

    /// This rank's agreement header (7 values): `limits` (5), the element size of its training
    /// input and whether its layout can fuse (channels-first with `S > 1`).
    package static func header(limits: ChannelFusionLimits, byteCount: Int, planar: Bool) -> [Double] {
        limits.encoded + [Double(byteCount), planar ? 1 : 0]
    }

    /// All-gathers per training step that computes `dx`: one per group of a fused pass, one
    /// per unfused pass.
    package func exchangesPerStep(channels: Int) -> Int {
        [forwardGroup, backwardGroup].reduce(0) {
            $0 + ($1.map { ChannelGroups(channels: channels, perGroup: $0).count } ?? 1)
        }
    }
}

extension BatchNormND {
    /// The schedule agreed with `group`, or `nil` before the first synchronized training
    /// forward with it.
    package func schedule(for group: any ProcessGroup) -> SynchronizedSchedule? {
        guard let agreedSchedule, agreedSchedule.group === group else { return nil }
        return agreedSchedule.schedule
    }

    /// Collect → merge of a training forward: the local step `collect` (which validates the
    /// batch and returns its moments with whatever the caller needs later), then, with a
    /// ``processGroup``, one all-gather of `[status, header, count, mean, M2 × C]` and the
    /// merge of every rank's moments in rank order with ``ChannelMoments/merged(with:)``.
    /// `header` is this rank's agreement header when the module has no schedule yet (then
    /// the schedule agreed from rank 0's is returned), else empty.
    ///
    /// - Returns: The caller's context, the merged moments, `M` (global with a group) and the
    ///   schedule agreed in this exchange, if any.
    /// - Throws: Without a group, what `collect` throws. With one, on every rank: this
    ///   rank's own error (including ``BatchNormError/nonFiniteStatistics(channel:mean:variance:)``
    ///   for its local moments), else ``BatchNormError/peerFailed(rank:reason:)`` for the
    ///   lowest failing rank, or the group's ``ProcessGroupError``.
    package func mergeMoments<Context>(
        localCount: Int, header: [Double] = [], _ collect: () throws -> (Context, [ChannelMoments])
    ) throws
        -> (context: Context, moments: [ChannelMoments], count: Int, agreed: SynchronizedSchedule?)
    {
        guard let group = processGroup else {
            let (context, moments) = try collect()
            return (context, moments, localCount, nil)
        }
        let local = Result { try collect() }
        let (merged, count, headers) = try exchangeMoments(
            over: group, channels: 0..<maps, header: header, local: local.map(\.1))
        let agreed = headers.first.map {
            SynchronizedSchedule(header: $0, count: count, ranks: group.size, channels: maps)
        }
        return (try local.get().0, merged, count, agreed)
    }

    /// Reduce → merge of a training backward: the local step `reduce`, then, with a
    /// ``processGroup``, one all-gather of `[status, Σg, Σg·(x − μ)] × C` summed in rank order.
    /// - Throws: As ``mergeMoments(localCount:header:_:)``.
    package func mergeGradientSums<Context>(_ reduce: () throws -> (Context, [GradientSums])) throws
        -> (context: Context, sums: [GradientSums])
    {
        guard let group = processGroup else { return try reduce() }
        let local = Result { try reduce() }
        let sums = try exchangeGradientSums(over: group, channels: 0..<maps, local: local.map(\.1))
        return (try local.get().0, sums)
    }

    /// The exchange of `channels`' moments: this rank's `local` moments (checked finite; its
    /// error otherwise) after `header`, merged over the ranks in rank order.
    /// - Returns: The merged moments of `channels`, `M` (summed over the ranks) and every
    ///   rank's header (empty without one).
    /// - Throws: As ``mergeMoments(localCount:header:_:)``, after the exchange.
    func exchangeMoments(
        over group: any ProcessGroup, channels: Range<Int>, header: [Double] = [],
        local: Result<[ChannelMoments], any Error>
    ) throws -> (moments: [ChannelMoments], count: Int, headers: [ArraySlice<Double>]) {
        let checked = local.flatMap { moments in
            Result {
                for (offset, moment) in moments.enumerated() where !moment.mean.isFinite || !moment.m2.isFinite {
                    throw BatchNormError.nonFiniteStatistics(
                        channel: channels.lowerBound + offset, mean: moment.mean,
                        variance: moment.m2 / moment.count)
                }
                return header + moments.flatMap { [$0.count, $0.mean, $0.m2] }
            }
        }
        let messages = try exchange(over: group, length: header.count + 3 * channels.count, local: checked)
        var merged = [ChannelMoments](repeating: .empty, count: channels.count)
        for message in messages {
            let values = message.dropFirst(header.count)
            for j in merged.indices {
                let base = values.startIndex + 3 * j
                merged[j] = merged[j].merged(
                    with: ChannelMoments(count: values[base], mean: values[base + 1], m2: values[base + 2]))
            }
        }
        let count = channels.isEmpty ? 0 : messages.reduce(0) { $0 + Int($1[$1.startIndex + header.count]) }
        return (merged, count, header.isEmpty ? [] : messages.map { $0.prefix(header.count) })
    }

    /// The exchange of `channels`' gradient sums, summed over the ranks in rank order.
    /// - Throws: As ``mergeMoments(localCount:header:_:)``, after the exchange.
    func exchangeGradientSums(
        over group: any ProcessGroup, channels: Range<Int>, local: Result<[GradientSums], any Error>
    ) throws -> [GradientSums] {
        let messages = try exchange(
            over: group, length: 2 * channels.count,
            local: local.map { $0.flatMap { [$0.gradient, $0.gradientTimesCentered] } })
        var sums = [GradientSums](
            repeating: GradientSums(gradient: 0, gradientTimesCentered: 0), count: channels.count)
        for message in messages {
            for j in sums.indices {
                sums[j].gradient += message[message.startIndex + 2 * j]
                sums[j].gradientTimesCentered += message[message.startIndex + 2 * j + 1]
            }
        }
        return sums
    }

    /// One all-gather of a synchronized step: sends `[status] + values` (`length` values,
    /// zeros after a local failure) and returns every rank's values in rank order.
    /// Throws after the exchange, so a failing rank never leaves the others waiting: the
    /// local error first, else ``BatchNormError/peerFailed(rank:reason:)`` for the lowest
    /// failing rank.
    private func exchange(over group: any ProcessGroup, length: Int, local: Result<[Double], any Error>) throws
        -> [ArraySlice<Double>]
    {
        let message: [Double] =
            switch local {
            case .success(let values): [0] + values
            case .failure(let error): [Double(PeerFailure(error).rawValue)] + [Double](repeating: 0, count: length)
            }
        let gathered = try group.allGather(message)
        guard gathered.count == group.size * (length + 1) else {
            throw ProcessGroupError.lengthMismatch(
                rank: group.rank, expected: group.size * (length + 1),
                actual: gathered.count)
        }
        if case .failure(let error) = local { throw error }
        let messages = (0..<group.size).map { gathered[($0 * (length + 1))..<(($0 + 1) * (length + 1))] }
        for (rank, message) in messages.enumerated() where message[message.startIndex] != 0 {
            let failure = PeerFailure(rawValue: Int(message[message.startIndex])) ?? .other
            throw BatchNormError.peerFailed(rank: rank, reason: failure.reason)
        }
        return messages.map { $0.dropFirst() }
    }

    /// Runs a grouped synchronized pass so that every rank makes the same exchanges. `pass`
    /// runs the backend and wraps each group's exchange, and the checks every rank makes
    /// alike right after it, in ``GroupProgress/step(_:)``. A throw from a step happens on
    /// every rank at the same group: nothing more is exchanged. Any other throw of `pass`
    /// (a local validation or backend error) before the last group was exchanged makes this
    /// rank join the next group's exchange with its failure status (`joinWithFailure`), so
    /// that every rank stops at that group.
    func runGrouped<Output>(
        _ groups: ChannelGroups, joinWithFailure: (Range<Int>, any Error) -> Void,
        pass: (GroupProgress) throws -> Output
    ) throws -> Output {
        let progress = GroupProgress()
        do {
            return try pass(progress)
        } catch {
            if !progress.everyRankStopped, progress.exchanged < groups.count {
                joinWithFailure(Array(groups)[progress.exchanged], error)
            }
            throw error
        }
    }
}

/// How far a grouped synchronized pass got (see ``BatchNormND/runGrouped(_:joinWithFailure:pass:)``).
final class GroupProgress {
    /// Groups whose exchange was joined.
    private(set) var exchanged = 0
    /// Whether a step threw: every rank stopped at the same group.
    private(set) var everyRankStopped = false

    /// One group's exchange and the checks every rank makes alike on its result.
    func step<T>(_ body: () throws -> T) throws -> T {
        exchanged += 1
        do {
            return try body()
        } catch {
            everyRankStopped = true
            throw error
        }
    }
}
