import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The processes of an MPI job (`MPI_COMM_WORLD`), with MPI opened at run time: nothing MPI
/// is needed to build the package.
///
/// ```sh
/// mpirun -np 4 .build/release/bnkit selftest --mpi
/// ```
///
/// ```swift
/// let group = try MPIProcessGroup.world()           // rank and size of this process
/// let bn = try BatchNorm3D(maps: 32, processGroup: group)
/// ```
///
/// The library is Open MPI (`libmpi.so.40`) or an MPICH-ABI implementation (MPICH
/// `libmpich.so.12` / `libmpi.so.12`, Intel MPI), tried in that order;
/// `BNKIT_MPI_LIBRARY` (a path or a file name) replaces the search. The implementation is
/// told apart by its handles: Open MPI exports `MPI_COMM_WORLD` and `MPI_DOUBLE` as global
/// objects (`ompi_mpi_comm_world`, `ompi_mpi_double`) whose addresses are the handles;
/// MPICH uses integer constants.
///
/// MPI is initialized once per process (`MPI_Init_thread` asking for
/// `MPI_THREAD_SERIALIZED`; calls are serialized by a lock) unless the program already did
/// so, and finalized at exit when this type initialized it. Started without `mpirun`, the
/// process is an MPI singleton: a group of size 1. Errors are returned, not fatal
/// (`MPI_ERRORS_RETURN`), and thrown as ``ProcessGroupError/mpiFailed(function:code:message:)``.
public final class MPIProcessGroup: ProcessGroup, @unchecked Sendable {
    /// This process's rank in `MPI_COMM_WORLD`.
    public let rank: Int
    /// Number of processes in the job (1 without `mpirun`).
    public let size: Int
    /// The library that was loaded (the path or name that succeeded).
    public let libraryPath: String
    /// `"Open MPI"` or `"MPICH"` (the handle convention detected).
    public let implementation: String
    /// The environment variable that overrides the library search.
    public static let libraryVariable = "BNKIT_MPI_LIBRARY"

    private let mpi: MPILibrary
    private let lock = Lock()
    private var gathers = 0

    /// Number of all-gathers this process has made through this group.
    public var allGatherCount: Int { lock.withLock { gathers } }

    private init(mpi: MPILibrary, rank: Int, size: Int) {
        self.mpi = mpi
        self.rank = rank
        self.size = size
        libraryPath = mpi.library.path
        implementation = mpi.isOpenMPI ? "Open MPI" : "MPICH"
    }

    private nonisolated(unsafe) static var worldResult: Result<MPIProcessGroup, ProcessGroupError>?
    private static let worldLock = Lock()

    /// The group of every process of the job, initializing MPI on the first call.
    /// The library search prefers the implementation whose launcher started the process
    /// (Open MPI's `mpirun` sets `OMPI_COMM_WORLD_SIZE`, MPICH's Hydra `PMI_SIZE`).
    ///
    /// - Throws: ``ProcessGroupError/mpiUnavailable(environmentVariable:searched:)`` naming
    ///   every library tried; ``ProcessGroupError/mpiFailed(function:code:message:)``;
    ///   ``ProcessGroupError/launcherMismatch(launcherSize:variable:library:environmentVariable:)``
    ///   when the launcher started several ranks but the loaded library's world has one
    ///   (a launcher of another implementation). The
    ///   outcome of the first call is kept: later calls return the same group or error.
    public static func world() throws -> MPIProcessGroup {
        try worldLock.withLock {
            if let worldResult { return try worldResult.get() }
            let result: Result<MPIProcessGroup, ProcessGroupError>
            do throws(ProcessGroupError) { result = .success(try makeWorld()) } catch { result = .failure(error) }
            worldResult = result
            return try result.get()
        }
    }

    private static func makeWorld() throws(ProcessGroupError) -> MPIProcessGroup {
        let mpi = try MPILibrary.load()
        var initialized: Int32 = 0
        try mpi.check(mpi.initialized(&initialized), "MPI_Initialized")
        if initialized == 0 {
            var provided: Int32 = 0
            try mpi.check(mpi.initThread(nil, nil, MPILibrary.threadSerialized, &provided), "MPI_Init_thread")
            MPILibrary.finalizeAtExit = mpi
            atexit { MPILibrary.finalizeIfNeeded() }
        }
        try mpi.check(mpi.commSetErrhandler(mpi.commWorld, mpi.errorsReturn), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try mpi.check(mpi.commRank(mpi.commWorld, &rank), "MPI_Comm_rank")
        try mpi.check(mpi.commSize(mpi.commWorld, &size), "MPI_Comm_size")
        try Launcher.checkWorld(
            size: Int(size), library: "\(mpi.isOpenMPI ? "Open MPI" : "MPICH") (\(mpi.library.path))",
            environment: MPILibrary.currentEnvironment())
        return MPIProcessGroup(mpi: mpi, rank: Int(rank), size: Int(size))
    }

    /// `MPI_Allgather` of `values` over `MPI_COMM_WORLD`.
    /// - Throws: ``ProcessGroupError/mpiFailed(function:code:message:)``;
    ///   ``ProcessGroupError/invalidArgument(name:expected:actual:)`` beyond `Int32.max` values.
    public func allGather(_ values: [Double]) throws -> [Double] {
        guard values.count <= Int(Int32.max) / size else {
            throw ProcessGroupError.invalidArgument(
                name: "values", expected: "at most \(Int(Int32.max) / size) values",
                actual: "\(values.count)")
        }
        var gathered = [Double](repeating: 0, count: values.count * size)
        try lock.withLock {
            gathers += 1
            let code = values.withUnsafeBytes { send in
                gathered.withUnsafeMutableBytes { receive in
                    mpi.allgather(
                        send.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(values.count), mpi.double,
                        receive.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 1), Int32(values.count),
                        mpi.double, mpi.commWorld)
                }
            }
            try mpi.check(code, "MPI_Allgather")
        }
        return gathered
    }
}

/// The launcher that started this process, as its environment tells: the number of ranks it
/// started, and the implementation it belongs to. A library of another implementation does
/// not see the launcher and makes each process a singleton, which must not pass for a
/// working job.
package struct Launcher: Equatable, Sendable {
    /// The variable that gave the size.
    package let variable: String
    /// The number of processes the launcher started.
    package let size: Int
    /// `"Open MPI"` or `"MPICH"`: whose launcher sets `variable`.
    package let implementation: String

    /// The variables that carry a launcher's job size, in the order they are read:
    /// Open MPI's `mpirun` (`OMPI_COMM_WORLD_SIZE`, and PMIx's `PMIX_SIZE` where set) and
    /// MPICH's Hydra `mpiexec` (`PMI_SIZE`, and `MPI_LOCALNRANKS` for the ranks on this node).
    package static let variables: [(name: String, implementation: String)] = [
        ("OMPI_COMM_WORLD_SIZE", "Open MPI"), ("PMIX_SIZE", "Open MPI"), ("PMI_SIZE", "MPICH"),
        ("MPI_LOCALNRANKS", "MPICH"),
    ]

    /// The first of ``variables`` set to an integer in `environment`, or `nil`.
    package static func detect(environment: [String: String]) -> Launcher? {
        for (name, implementation) in variables {
            if let size = environment[name].flatMap({ Int($0.filter { !$0.isWhitespace }) }) {
                return Launcher(variable: name, size: size, implementation: implementation)
            }
        }
        return nil
    }

    /// Throws ``ProcessGroupError/launcherMismatch(launcherSize:variable:library:environmentVariable:)``
    /// when the environment says the process is one of several ranks but the MPI world of
    /// `library` has `size` 1 (the library does not belong to the launcher).
    package static func checkWorld(size: Int, library: String, environment: [String: String])
        throws(ProcessGroupError)
    {
        guard size == 1, let launcher = detect(environment: environment), launcher.size > 1 else { return }
        throw .launcherMismatch(
            launcherSize: launcher.size, variable: launcher.variable, library: library,
            environmentVariable: MPIProcessGroup.libraryVariable)
    }
}

/// The MPI functions and handles the group uses, from a library opened with `dlopen`.
///
/// Handles (`MPI_Comm`, `MPI_Datatype`, `MPI_Errhandler`) are passed as pointer-sized
/// values: Open MPI's are pointers; MPICH's are `int` constants, which the C calling
/// conventions of the supported platforms (x86-64, AArch64) read from the low 32 bits of
/// the pointer-sized register or stack slot they are passed in.
package final class MPILibrary: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer?
    let library: DynamicLibrary
    let isOpenMPI: Bool
    let commWorld: Handle, double: Handle, errorsReturn: Handle

    let initialized: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let finalized: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let initThread:
        @convention(c) (
            UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
            Int32, UnsafeMutablePointer<Int32>
        ) -> Int32
    let finalize: @convention(c) () -> Int32
    let commRank: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    let commSize: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    let commSetErrhandler: @convention(c) (Handle, Handle) -> Int32
    let allgather:
        @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle) -> Int32
    let errorString: @convention(c) (Int32, UnsafeMutablePointer<CChar>, UnsafeMutablePointer<Int32>) -> Int32

    /// `MPI_THREAD_SERIALIZED` (2 in both Open MPI and MPICH).
    static let threadSerialized: Int32 = 2

    /// The library whose `MPI_Finalize` runs at exit (set when this process initialized MPI).
    nonisolated(unsafe) static var finalizeAtExit: MPILibrary?

    /// Finalizes MPI unless it already is.
    static func finalizeIfNeeded() {
        guard let mpi = finalizeAtExit else { return }
        var done: Int32 = 0
        if mpi.finalized(&done) == 0 && done == 0 { _ = mpi.finalize() }
    }

    private init(library: DynamicLibrary) throws {
        self.library = library
        if let world = library.address(of: "ompi_mpi_comm_world") {
            isOpenMPI = true
            commWorld = world
            double = try Self.address(of: "ompi_mpi_double", in: library)
            errorsReturn = try Self.address(of: "ompi_mpi_errors_return", in: library)
        } else {
            // MPICH's mpi.h: MPI_COMM_WORLD 0x44000000, MPI_DOUBLE 0x4c00080b, MPI_ERRORS_RETURN 0x54000001.
            isOpenMPI = false
            commWorld = UnsafeMutableRawPointer(bitPattern: 0x4400_0000)
            double = UnsafeMutableRawPointer(bitPattern: 0x4c00_080b)
            errorsReturn = UnsafeMutableRawPointer(bitPattern: 0x5400_0001)
        }
        initialized = try library.function("MPI_Initialized")
        finalized = try library.function("MPI_Finalized")
        initThread = try library.function("MPI_Init_thread")
        finalize = try library.function("MPI_Finalize")
        commRank = try library.function("MPI_Comm_rank")
        commSize = try library.function("MPI_Comm_size")
        commSetErrhandler = try library.function("MPI_Comm_set_errhandler")
        allgather = try library.function("MPI_Allgather")
        errorString = try library.function("MPI_Error_string")
    }

    private static func address(of symbol: String, in library: DynamicLibrary) throws -> Handle {
        guard let address = library.address(of: symbol) else {
            throw DynamicLibraryError.missingSymbol(library: "\(library.library) (\(library.path))", symbol: symbol)
        }
        return address
    }

    /// The candidates: `BNKIT_MPI_LIBRARY` alone when set, else the names of the
    /// implementation whose launcher started the process (``Launcher/detect(environment:)``)
    /// first, then the other's; Open MPI first when no launcher is detected.
    package static func candidates(environment: [String: String]) -> [String] {
        if let path = environment[MPIProcessGroup.libraryVariable], !path.isEmpty { return [path] }
        let openMPI = ["libmpi.so.40"], mpich = ["libmpich.so.12", "libmpi.so.12"]
        return Launcher.detect(environment: environment)?.implementation == "MPICH" ? mpich + openMPI : openMPI + mpich
    }

    /// Opens the first of `candidates` that is an MPI library of a known ABI. Loaded with
    /// `RTLD_GLOBAL`: Open MPI's plug-ins resolve its symbols from the global scope.
    package static func load(candidates: [String] = candidates(environment: currentEnvironment()))
        throws(ProcessGroupError) -> MPILibrary
    {
        var bindings: MPILibrary?
        do {
            let library = try DynamicLibrary.open(
                "libmpi", candidates: candidates,
                environmentVariable: MPIProcessGroup.libraryVariable, global: true
            ) { library in
                guard library.address(of: "MPI_Init_thread") != nil else {
                    return "no MPI_Init_thread: not an MPI library"
                }
                do {
                    bindings = try MPILibrary(library: library)
                    return nil
                } catch {
                    return "\(error)"
                }
            }
            if let bindings, bindings.library === library { return bindings }
            throw DynamicLibraryError.notFound(
                library: "libmpi", environmentVariable: MPIProcessGroup.libraryVariable,
                searched: [library.path])
        } catch let DynamicLibraryError.notFound(_, variable, searched) {
            throw .mpiUnavailable(environmentVariable: variable, searched: searched)
        } catch {
            throw .mpiUnavailable(environmentVariable: MPIProcessGroup.libraryVariable, searched: ["\(error)"])
        }
    }

    /// `BNKIT_MPI_LIBRARY` and the launchers' variables (``Launcher/variables``) from the
    /// process environment, those that are set.
    package static func currentEnvironment() -> [String: String] {
        var environment = [String: String]()
        for name in [MPIProcessGroup.libraryVariable] + Launcher.variables.map(\.name) {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }

    /// Throws for an MPI error code, with `MPI_Error_string`'s message.
    func check(_ code: Int32, _ function: String) throws(ProcessGroupError) {
        guard code != 0 else { return }
        var buffer = [CChar](repeating: 0, count: 1024)
        var length: Int32 = 0
        let message =
            errorString(code, &buffer, &length) == 0
            ? String(
                decoding: buffer.prefix(Int(max(0, min(length, 1023)))).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            : "unknown error"
        throw .mpiFailed(function: function, code: Int(code), message: message)
    }
}
