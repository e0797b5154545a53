/// Why a process group could not be made or could not exchange values.
public enum ProcessGroupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No MPI library loaded: `searched` lists every candidate with the reason it was refused,
    /// `environmentVariable` names the variable that overrides the search.
    case mpiUnavailable(environmentVariable: String, searched: [String])
    /// The launcher started `launcherSize` processes (its `variable` says so) but the MPI
    /// `library` that was loaded sees a world of one: the library does not belong to the
    /// launcher, and each process would run alone. `environmentVariable` selects the library.
    case launcherMismatch(launcherSize: Int, variable: String, library: String, environmentVariable: String)
    /// An MPI call returned an error code.
    case mpiFailed(function: String, code: Int, message: String)
    /// Members passed arrays of different lengths to one all-gather.
    case lengthMismatch(rank: Int, expected: Int, actual: Int)
    /// A member waited longer than the group's timeout for the others.
    case timedOut(rank: Int, seconds: Double)
    /// An earlier exchange of this group failed; the group cannot be used any more.
    case broken(rank: Int)
    /// An argument outside its domain, such as a group of size 0.
    case invalidArgument(name: String, expected: String, actual: String)

    /// The error as one sentence naming the expected and the actual values.
    public var description: String {
        switch self {
        case .mpiUnavailable(let variable, let searched):
            "no usable MPI library (Open MPI libmpi.so.40 or MPICH libmpich.so.12 / libmpi.so.12; set \(variable) "
                + "to a path to choose one); tried: \(searched.joined(separator: "; "))"
        case .launcherMismatch(let launcherSize, let variable, let library, let environmentVariable):
            "the MPI launcher started \(launcherSize) ranks (\(variable)=\(launcherSize)) but the loaded library "
                + "\(library) sees a world of 1 (expected: \(launcherSize)); the launcher belongs to another MPI "
                + "implementation: set \(environmentVariable) to the library of the launcher's implementation"
        case .mpiFailed(let function, let code, let message):
            "\(function) failed with MPI error \(code): \(message)"
        case .lengthMismatch(let rank, let expected, let actual):
            "all-gather: rank \(rank) passed \(actual) values (expected: \(expected), the length rank 0 passed)"
        case .timedOut(let rank, let seconds):
            "all-gather: rank \(rank) waited \(seconds) s for the other members (expected: every member to join)"
        case .broken(let rank):
            "rank \(rank): an earlier all-gather of this group failed; expected a working group (make a new one)"
        case .invalidArgument(let name, let expected, let actual):
            "\(name) must be \(expected), got \(actual)"
        }
    }
}
