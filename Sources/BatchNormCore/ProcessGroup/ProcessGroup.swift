/// Members (ranks) that exchange per-channel statistics: the *merge* step of a module with
/// a ``BatchNormND/processGroup`` spans all of them (<doc:SynchronizedStatistics>).
///
/// A group is a rank `0 ..< size` and one collective, an all-gather of `Double`s. Every
/// member must call ``allGather(_:)`` the same number of times, in the same order, with
/// arrays of the same length; the modules of one group therefore see the same sequence of
/// training forward and backward calls (with the same `updGrad`/`updParamGrads` flags) and
/// have the same `maps`.
///
/// Implementations: ``MPIProcessGroup`` (processes under `mpirun`) and
/// ``LocalProcessGroup`` (threads of one process).
public protocol ProcessGroup: AnyObject, Sendable {
    /// This member's index, `0 ..< size`.
    var rank: Int { get }
    /// Number of members, at least 1.
    var size: Int { get }
    /// Every member's `values`, concatenated in rank order (`size · values.count` values).
    ///
    /// Blocks until every member has called it.
    /// - Throws: ``ProcessGroupError`` when the exchange fails (members passing different
    ///   lengths, a timeout, a broken group, an MPI error); the values are then undefined on
    ///   every member.
    func allGather(_ values: [Double]) throws -> [Double]
}
