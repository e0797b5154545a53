// The merge step across a process group (<doc:SynchronizedStatistics>), shared by the host
// and device paths. Legend: R ranks (`processGroup.size`), C channels.
//
// Every rank sends one message of `1 + width·C` doubles: a status (0, or the code of the
// error its local step threw) and its per-channel values (zeros after a failure). One
// all-gather hands every rank all R messages; each rank then merges them in rank order, so
// every rank computes the same bits whatever the MPI library's algorithm.

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

extension BatchNormND {
    /// Collect → merge of a training forward: the local step `collect` (which validates the
    /// batch and returns its moments with whatever the caller needs later), then, with a
    /// ``processGroup``, one all-gather of `[status, count, mean, M2] × C` and the merge of
    /// every rank's moments in rank order with ``ChannelMoments/merged(with:)``.
    ///
    /// - Returns: The caller's context and the merged moments, with `M` (global with a group).
    /// - Throws: Without a group, what `collect` throws. With one, on every rank: this
    ///   rank's own error (including ``BatchNormError/nonFiniteStatistics(channel:mean:variance:)``
    ///   for its local moments), else ``BatchNormError/peerFailed(rank:reason:)`` for the
    ///   lowest failing rank, or the group's ``ProcessGroupError``.
    package func mergeMoments<Context>(localCount: Int, _ collect: () throws -> (Context, [ChannelMoments])) throws
        -> (context: Context, moments: [ChannelMoments], count: Int)
    {
        guard let group = processGroup else {
            let (context, moments) = try collect()
            return (context, moments, localCount)
        }
        let local = Result { () throws -> (Context, [ChannelMoments]) in
            let (context, moments) = try collect()
            for (channel, moment) in moments.enumerated() where !moment.mean.isFinite || !moment.m2.isFinite {
                throw BatchNormError.nonFiniteStatistics(
                    channel: channel, mean: moment.mean,
                    variance: moment.m2 / moment.count)
            }
            return (context, moments)
        }
        let messages = try exchange(
            over: group, width: 3, local: local.map { $0.1.flatMap { [$0.count, $0.mean, $0.m2] } })
        let (context, _) = try local.get()
        var merged = [ChannelMoments](repeating: .empty, count: maps)
        for message in messages {
            for c in 0..<maps {
                let base = message.startIndex + 3 * c
                merged[c] = merged[c].merged(
                    with: ChannelMoments(
                        count: message[base], mean: message[base + 1],
                        m2: message[base + 2]))
            }
        }
        let count = messages.reduce(0) { $0 + Int($1[$1.startIndex]) }
        return (context, merged, count)
    }

    /// Reduce → merge of a training backward: the local step `reduce`, then, with a
    /// ``processGroup``, one all-gather of `[status, Σg, Σg·(x − μ)] × C` summed in rank order.
    /// - Throws: As ``mergeMoments(localCount:_:)``.
    package func mergeGradientSums<Context>(_ reduce: () throws -> (Context, [GradientSums])) throws
        -> (context: Context, sums: [GradientSums])
    {
        guard let group = processGroup else { return try reduce() }
        let local = Result { try reduce() }
        let messages = try exchange(
            over: group, width: 2,
            local: local.map { $0.1.flatMap { [$0.gradient, $0.gradientTimesCentered] } })
        let (context, _) = try local.get()
        var sums = [GradientSums](repeating: GradientSums(gradient: 0, gradientTimesCentered: 0), count: maps)
        for message in messages {
            for c in 0..<maps {
                sums[c].gradient += message[message.startIndex + 2 * c]
                sums[c].gradientTimesCentered += message[message.startIndex + 2 * c + 1]
            }
        }
        return (context, sums)
    }

    /// The one all-gather of a synchronized step: sends `[status] + values` (`width·C`
    /// values, zeros after a local failure) and returns every rank's values in rank order.
    /// Throws after the exchange, so a failing rank never leaves the others waiting: the
    /// local error first, else ``BatchNormError/peerFailed(rank:reason:)`` for the lowest
    /// failing rank.
    private func exchange(over group: any ProcessGroup, width: Int, local: Result<[Double], any Error>) throws
        -> [ArraySlice<Double>]
    {
        let length = width * maps
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
}
