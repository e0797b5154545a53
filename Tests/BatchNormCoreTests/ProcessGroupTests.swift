import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

/// Runs `body` once per member, each on its own thread (members block in all-gathers, so
/// they must not share a bounded pool), and returns the results in rank order.
func onMembers<T: Sendable>(
    _ members: [LocalProcessGroup],
    _ body: @escaping @Sendable (LocalProcessGroup) throws -> T
) -> [Result<T, any Error>] {
    let results = MemberResults<T>(count: members.count)
    let done = DispatchGroup()
    for member in members {
        done.enter()
        let thread = Thread {
            let result = Result { try body(member) }
            results.lock.withLock { results.values[member.rank] = result }
            done.leave()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    done.wait()
    return results.values.map { $0 ?? .failure(ProcessGroupError.broken(rank: -1)) }
}

/// Per-member results written by the member threads.
final class MemberResults<T: Sendable>: @unchecked Sendable {
    let lock = NSLock()
    var values: [Result<T, any Error>?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
}

/// Synchronized statistics over ``LocalProcessGroup`` members against one module on the
/// concatenated batch, and the groups themselves.
@Suite struct ProcessGroupTests {
    @Test(arguments: [2, 3, 4])
    func synchronizedModulesMatchOneModuleOnTheConcatenatedBatch(size: Int) throws {
        for comparison in SynchronizedComparison.standardCases(size: size) {
            let members = try LocalProcessGroup.members(count: size, timeout: 120)
            for (rank, result) in onMembers(members, { try comparison.run(group: $0) }).enumerated() {
                let failures = try result.get()
                #expect(failures.isEmpty, "rank \(rank): \(failures.joined(separator: "; "))")
            }
        }
    }

    @Test(arguments: [1, 2, 3, 4])
    func failingRanksMakeEveryRankThrowAndLeaveModulesUnchanged(size: Int) throws {
        let members = try LocalProcessGroup.members(count: size, timeout: 120)
        for (rank, result) in onMembers(members, { try SynchronizedComparison.errorChecks(group: $0) }).enumerated() {
            let failures = try result.get()
            #expect(failures.isEmpty, "rank \(rank): \(failures.joined(separator: "; "))")
        }
    }

    @Test func oneMemberGroupIsBitwiseTheLocalModule() throws {
        let group = try LocalProcessGroup.members(count: 1)[0]
        var first = SeededGenerator(seed: 3), second = SeededGenerator(seed: 3)
        let synchronized = try BatchNorm2D(maps: 4, processGroup: group, using: &first)
        let local = try BatchNorm2D(maps: 4, using: &second)
        var generator = SeededGenerator(seed: 4)
        for _ in 0..<3 {
            let x = try randomTensor(shape: [3, 4, 5, 6], layout: .channelsLast, offset: 100, using: &generator)
            let g = try randomTensor(shape: [3, 4, 5, 6], layout: .channelsLast, using: &generator)
            #expect(bits(try synchronized(x).scalars) == bits(try local(x).scalars))
            #expect(bits(try synchronized.backward(g)!.scalars) == bits(try local.backward(g)!.scalars))
            #expect(try synchronized.state() == local.state())
            #expect(bits(try synchronized.scaleGrad.scalars) == bits(try local.scaleGrad.scalars))
        }
        #expect(group.allGatherCount == 6)
    }

    @Test func emptyBatchAloneStillThrowsTooFewValues() throws {
        let bn = try BatchNorm3D(maps: 2)
        let before = ModuleSnapshot(bn)
        #expect(
            throws: BatchNormError.tooFewValuesPerChannel(expected: "at least 2", actual: 0, shape: [0, 2, 1, 1, 3])
        ) {
            try bn(Tensor(zeros: [0, 2, 1, 1, 3]))
        }
        #expect(ModuleSnapshot(bn) == before)
        bn.evalMode()
        #expect(try bn(Tensor(zeros: [0, 2, 1, 1, 3])).shape == [0, 2, 1, 1, 3])
    }

    @Test func allGatherConcatenatesInRankOrderAndRejectsUnequalLengths() throws {
        let members = try LocalProcessGroup.members(count: 3, timeout: 60)
        let gathered = onMembers(members) { try $0.allGather([Double($0.rank), -Double($0.rank)]) }
        for result in gathered { #expect(try result.get() == [0, -0, 1, -1, 2, -2]) }
        let unequal = onMembers(members) { try $0.allGather(Array(repeating: 1, count: $0.rank == 2 ? 3 : 2)) }
        for result in unequal {
            #expect(throws: ProcessGroupError.lengthMismatch(rank: 2, expected: 2, actual: 3)) { try result.get() }
        }
        #expect(members.allSatisfy { $0.allGatherCount == 2 })
    }

    @Test func aMissingMemberTimesOutAndBreaksTheGroup() throws {
        let members = try LocalProcessGroup.members(count: 2, timeout: 0.2)
        #expect(throws: ProcessGroupError.timedOut(rank: 0, seconds: 0.2)) { try members[0].allGather([1]) }
        #expect(throws: ProcessGroupError.broken(rank: 1)) { try members[1].allGather([1]) }
        #expect(throws: ProcessGroupError.self) { try LocalProcessGroup.members(count: 0) }
        #expect(throws: ProcessGroupError.self) { try LocalProcessGroup.members(count: 2, timeout: -1) }
    }
}

/// ``MPIProcessGroup`` in this process: a singleton group (size 1) when an MPI library is
/// installed, reported as skipped otherwise. Multi-process runs are `bnkit selftest --mpi`
/// under `mpirun` (see `.ci/run`).
@Suite struct MPIProcessGroupTests {
    static let mpi = Result { try MPIProcessGroup.world() }
    static var available: Bool { (try? mpi.get()) != nil }

    @Test(.enabled(if: available, "SKIPPED: no MPI library (install openmpi-bin or set BNKIT_MPI_LIBRARY)"))
    func singletonWorldIsOneRankAndMatchesTheLocalModule() throws {
        let group = try Self.mpi.get()
        #expect(group.rank == 0 && group.size == 1)
        #expect(try group.allGather([1.5, -2]) == [1.5, -2])
        for comparison in SynchronizedComparison.standardCases(size: 1) {
            let failures = try comparison.run(group: group)
            #expect(failures.isEmpty, "\(failures.joined(separator: "; "))")
        }
        #expect(try SynchronizedComparison.errorChecks(group: group).isEmpty)
    }

    /// The launcher's variables (faked): the search prefers its implementation, and a world of
    /// one under a launcher of several ranks throws one error naming the launcher's size, the
    /// library and `BNKIT_MPI_LIBRARY`.
    @Test func launcherOfAnotherImplementationIsRefused() throws {
        let openMPIFirst = ["libmpi.so.40", "libmpich.so.12", "libmpi.so.12"]
        let mpichFirst = ["libmpich.so.12", "libmpi.so.12", "libmpi.so.40"]
        #expect(MPILibrary.candidates(environment: ["PMI_SIZE": "2"]) == mpichFirst)
        #expect(MPILibrary.candidates(environment: ["MPI_LOCALNRANKS": "4"]) == mpichFirst)
        #expect(MPILibrary.candidates(environment: ["OMPI_COMM_WORLD_SIZE": "2", "PMI_SIZE": "2"]) == openMPIFirst)
        #expect(MPILibrary.candidates(environment: ["PMI_SIZE": "2", "BNKIT_MPI_LIBRARY": "/x/l.so"]) == ["/x/l.so"])

        let library = "Open MPI (libmpi.so.40)"
        #expect(
            throws: ProcessGroupError.launcherMismatch(
                launcherSize: 2, variable: "PMI_SIZE", library: library, environmentVariable: "BNKIT_MPI_LIBRARY")
        ) {
            try Launcher.checkWorld(size: 1, library: library, environment: ["PMI_SIZE": "2"])
        }
        do {
            try Launcher.checkWorld(size: 1, library: library, environment: ["MPI_LOCALNRANKS": " 4 "])
            Issue.record("a world of 1 under a launcher of 4 ranks passed")
        } catch {
            let message = "\(error)"
            #expect(["4 ranks", library, "BNKIT_MPI_LIBRARY"].allSatisfy(message.contains), "\(message)")
        }
        // Consistent sizes, a launcher of one, no launcher: accepted.
        try Launcher.checkWorld(size: 2, library: library, environment: ["OMPI_COMM_WORLD_SIZE": "2"])
        try Launcher.checkWorld(size: 1, library: library, environment: ["PMI_SIZE": "1"])
        try Launcher.checkWorld(size: 1, library: library, environment: [:])
        let launcher = Launcher.detect(environment: ["PMIX_SIZE": "3"])
        #expect(launcher?.size == 3 && launcher?.implementation == "Open MPI" && launcher?.variable == "PMIX_SIZE")
    }

    @Test func missingLibraryNamesEveryPathTried() throws {
        let paths = ["/nonexistent/libmpi.so.40", "libnot-an-mpi.so.1"]
        #expect(MPILibrary.candidates(environment: ["BNKIT_MPI_LIBRARY": "/x/libmpi.so"]) == ["/x/libmpi.so"])
        #expect(MPILibrary.candidates(environment: [:]) == ["libmpi.so.40", "libmpich.so.12", "libmpi.so.12"])
        do {
            _ = try MPILibrary.load(candidates: paths)
            Issue.record("loading \(paths) succeeded")
        } catch {
            let message = "\(error)"
            #expect(paths.allSatisfy(message.contains) && message.contains("BNKIT_MPI_LIBRARY"), "\(message)")
        }
    }
}
