import SystemLibrary

/// A process group whose members are threads of this process: for tests, and for data
/// parallelism inside one process (one module per thread, statistics shared).
///
/// ```swift
/// let members = try LocalProcessGroup.members(count: 4)
/// // thread r: let bn = try BatchNorm3D(maps: 16, processGroup: members[r]); try bn(batch[r])
/// ```
///
/// Each member must be used by one thread at a time. An all-gather blocks until every member
/// has joined; with a `timeout`, a member that waits longer throws
/// ``ProcessGroupError/timedOut(rank:seconds:)`` and the group is broken from then on (every
/// later call throws ``ProcessGroupError/broken(rank:)``), so a missing member cannot hang
/// the others forever.
public final class LocalProcessGroup: ProcessGroup, @unchecked Sendable {
    /// This member's index, `0 ..< size`.
    public let rank: Int
    /// Number of members.
    public let size: Int
    /// Number of all-gathers this member has joined.
    public var allGatherCount: Int { rendezvous.condition.withLock { rendezvous.joined[rank] } }
    private let rendezvous: Rendezvous

    /// The shared state of one group: each round, members deposit their values; the last
    /// to arrive publishes the concatenation and starts the next round.
    private final class Rendezvous: @unchecked Sendable {
        let condition = Condition()
        let timeout: Double?
        var slots: [[Double]?]
        var joined: [Int]
        var arrived = 0
        var round = 0
        var published: Result<[Double], ProcessGroupError> = .success([])
        var broken = false

        init(size: Int, timeout: Double?) {
            self.timeout = timeout
            slots = Array(repeating: nil, count: size)
            joined = Array(repeating: 0, count: size)
        }
    }

    private init(rank: Int, rendezvous: Rendezvous) {
        self.rank = rank
        self.size = rendezvous.slots.count
        self.rendezvous = rendezvous
    }

    /// The `count` members of a new group, rank 0 first.
    /// - Parameters:
    ///   - count: The number of members (the group's size), at least 1.
    ///   - timeout: Seconds a member waits for the others before the group breaks;
    ///     `nil` (the default) waits forever.
    /// - Throws: ``ProcessGroupError/invalidArgument(name:expected:actual:)`` for `count < 1`
    ///   or a timeout that is not positive and finite.
    public static func members(count: Int, timeout: Double? = nil) throws -> [LocalProcessGroup] {
        guard count >= 1 else {
            throw ProcessGroupError.invalidArgument(name: "count", expected: ">= 1", actual: "\(count)")
        }
        if let timeout, !(timeout > 0 && timeout.isFinite) {
            throw ProcessGroupError.invalidArgument(
                name: "timeout", expected: "a finite value > 0", actual: "\(timeout)")
        }
        let rendezvous = Rendezvous(size: count, timeout: timeout)
        return (0..<count).map { LocalProcessGroup(rank: $0, rendezvous: rendezvous) }
    }

    /// Every member's `values` in rank order; see ``ProcessGroup/allGather(_:)``.
    /// - Throws: ``ProcessGroupError/lengthMismatch(rank:expected:actual:)`` on every member
    ///   when lengths differ, ``ProcessGroupError/timedOut(rank:seconds:)``,
    ///   ``ProcessGroupError/broken(rank:)``.
    public func allGather(_ values: [Double]) throws -> [Double] {
        let state = rendezvous
        return try state.condition.withLock {
            guard !state.broken else { throw ProcessGroupError.broken(rank: rank) }
            state.joined[rank] += 1
            state.slots[rank] = values
            state.arrived += 1
            if state.arrived == size {
                state.published = Self.concatenate(state.slots)
                state.slots = Array(repeating: nil, count: size)
                state.arrived = 0
                state.round += 1
                state.condition.broadcast()
                return try state.published.get()
            }
            let round = state.round
            let deadline = state.timeout.map { Condition.deadline(after: $0) }
            while state.round == round && !state.broken {
                if !state.condition.wait(until: deadline) && state.round == round {
                    state.broken = true
                    state.condition.broadcast()
                    throw ProcessGroupError.timedOut(rank: rank, seconds: state.timeout ?? 0)
                }
            }
            guard state.round != round else { throw ProcessGroupError.broken(rank: rank) }
            // The next round cannot complete before this member joins it, so `published`
            // still holds this round's result.
            return try state.published.get()
        }
    }

    /// The slots in rank order, or the length error every member reports.
    private static func concatenate(_ slots: [[Double]?]) -> Result<[Double], ProcessGroupError> {
        let expected = slots[0]?.count ?? 0
        for (rank, slot) in slots.enumerated() where (slot?.count ?? 0) != expected {
            return .failure(.lengthMismatch(rank: rank, expected: expected, actual: slot?.count ?? 0))
        }
        return .success(slots.flatMap { $0 ?? [] })
    }
}
