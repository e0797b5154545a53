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

    @Test(arguments: [1, 2, 3, 4], [nil, 2])
    func failingRanksMakeEveryRankThrowAndLeaveModulesUnchanged(size: Int, channelsPerGroup: Int?) throws {
        let members = try LocalProcessGroup.members(count: size, timeout: 120)
        let results = onMembers(members) {
            try SynchronizedComparison.errorChecks(group: $0, channelsPerGroup: channelsPerGroup)
        }
        for (rank, result) in results.enumerated() {
            let failures = try result.get()
            #expect(failures.isEmpty, "rank \(rank): \(failures.joined(separator: "; "))")
        }
    }

    /// The grouped schedule alone (one member, several threads, groups of 3 of 8 channels
    /// with a partial last one) gives the local module's bits, and its exchanges: the first
    /// forward agrees (1), then 3 per fused pass.
    @Test(arguments: [1, 2])
    func groupedScheduleIsBitwiseTheLocalModule(threads: Int) throws {
        let group = try LocalProcessGroup.members(count: 1)[0]
        var first = SeededGenerator(seed: 3), second = SeededGenerator(seed: 3)
        let backend = CPUBackend(
            threadCount: threads,
            channelFusionLimits: ChannelFusionLimits(
                mode: .always, workingSetThreshold: 0, threadCacheBytes: 0, groupCacheBytes: 0, threads: 3))
        let synchronized = try BatchNorm2D(maps: 8, backend: backend, processGroup: group, using: &first)
        let local = try BatchNorm2D(maps: 8, backend: CPUBackend(threadCount: 1), using: &second)
        var generator = SeededGenerator(seed: 4)
        var exchanges = [Int]()
        for _ in 0..<3 {
            let x = try randomTensor(shape: [3, 8, 40, 50], layout: .channelsFirst, offset: 100, using: &generator)
            let g = try randomTensor(shape: [3, 8, 40, 50], layout: .channelsFirst, using: &generator)
            let before = group.allGatherCount
            #expect(bits(try synchronized(x).scalars) == bits(try local(x).scalars))
            #expect(bits(try synchronized.backward(g)!.scalars) == bits(try local.backward(g)!.scalars))
            exchanges.append(group.allGatherCount - before)
            #expect(try synchronized.state() == local.state())
            #expect(bits(try synchronized.scaleGrad.scalars) == bits(try local.scaleGrad.scalars))
        }
        #expect(exchanges == [1 + 3, 3 + 3, 3 + 3])
        #expect(synchronized.schedule(for: group) == SynchronizedSchedule(forwardGroup: 3, backwardGroup: 3))
    }

    /// Every rank follows rank 0's fusion limits, whatever its own: here rank 0 fuses in
    /// groups of 2 and the others never fuse; every rank (one of them empty) still makes the
    /// same exchanges and holds the same running statistics, bitwise.
    @Test func everyRankFollowsRankZerosLimits() throws {
        let members = try LocalProcessGroup.members(count: 3, timeout: 120)
        let results = onMembers(members) { member -> ([Int], [UInt32]) in
            var generator = SeededGenerator(seed: 9)
            let backend =
                member.rank == 0
                ? SynchronizedComparison.backend(channelsPerGroup: 2)
                : CPUBackend(threadCount: 1, channelFusionLimits: .never)
            let module = try BatchNorm1D(maps: 5, backend: backend, processGroup: member, using: &generator)
            var data = SeededGenerator(seed: 10 + UInt64(member.rank))
            var exchanges = [Int]()
            for _ in 0..<2 {
                let batch = [2, 0, 3][member.rank]
                let x = try randomTensor(shape: [batch, 5, 6], layout: .channelsFirst, offset: 1, using: &data)
                let before = member.allGatherCount
                _ = try module(x)
                _ = try module.backward(randomTensor(shape: [batch, 5, 6], layout: .channelsFirst, using: &data))
                exchanges.append(member.allGatherCount - before)
            }
            return (exchanges, bits(try module.mean.scalars + module.var.scalars + module.biasGrad.scalars))
        }
        let reference = try results[0].get().1
        for result in results {
            #expect(try result.get().0 == [1 + 3, 3 + 3])
            #expect(try result.get().1 == reference)
        }
    }

    /// The schedule comes from rank 0's limits and the global `M` only: on a 2-core machine
    /// with 1 MiB of L2 and 16 MiB of cache per core and 24 MiB from which tensors leave the
    /// cache, per-rank shapes over 2 ranks fuse as a local module of that shape would, in
    /// groups whose two consecutive groups fit in the L2 (at least one channel).
    @Test func scheduleFollowsTheLocalRuleForTheGlobalBatch() throws {
        let limits = ChannelFusionLimits(
            mode: .automatic, workingSetThreshold: 24 << 20, threadCacheBytes: 16 << 20, groupCacheBytes: 1 << 20,
            threads: 1)
        func schedule(count: Int, channels: Int, planar: Bool = true) -> SynchronizedSchedule {
            let header = SynchronizedSchedule.header(limits: limits, byteCount: 4, planar: planar)
            return SynchronizedSchedule(header: header[...], count: count, ranks: 2, channels: channels)
        }
        // 4x64x16x56x56 per rank: both passes fuse; 4 channels' values of a rank (3.2 MB) are
        // more than the L2: groups of 1, 64 groups per pass.
        let large = schedule(count: 2 * 4 * 16 * 56 * 56, channels: 64)
        #expect(large == SynchronizedSchedule(forwardGroup: 1, backwardGroup: 1))
        #expect(large.exchangesPerStep(channels: 64) == 128)
        // 8x256x8x14x14 per rank: 4 channels' values (196 KiB) fit 5 times in 1 MiB.
        let many = schedule(count: 2 * 8 * 8 * 14 * 14, channels: 256)
        #expect(many == SynchronizedSchedule(forwardGroup: 5, backwardGroup: 5))
        #expect(many.exchangesPerStep(channels: 256) == 2 * 52)
        // 2x32x32x32x32 per rank: x and y (16 MiB) stay in the cache, g, x and dx (24 MiB) do
        // not: only the backward fuses, in groups of 1 (1 MiB for 4 channels' values).
        let small = schedule(count: 2 * 2 * 32 * 32 * 32, channels: 32)
        #expect(small == SynchronizedSchedule(forwardGroup: nil, backwardGroup: 1))
        #expect(small.exchangesPerStep(channels: 32) == 1 + 32)
        // Rank 0's layout is not fusable (channels-last): one exchange per pass.
        #expect(schedule(count: 2 * 4 * 16 * 56 * 56, channels: 64, planar: false).exchangesPerStep(channels: 64) == 2)
        // Forced: groups of `threads` channels, even with no cache to count on.
        let forced = ChannelFusionLimits(
            mode: .always, workingSetThreshold: 0, threadCacheBytes: 0, groupCacheBytes: 0, threads: 4)
        #expect(forced.channelsPerGroup(channelBytes: 1 << 30, channels: 10) == 4)
        let roomy = ChannelFusionLimits(
            mode: .always, workingSetThreshold: 0, threadCacheBytes: 0, groupCacheBytes: 1 << 20, threads: 4)
        #expect(roomy.channelsPerGroup(channelBytes: 1 << 18, channels: 64) == 16)
        #expect(roomy.channelsPerGroup(channelBytes: 1, channels: 10) == 10)
        #expect(ChannelFusionLimits(encoded: forced.encoded[...]) == forced)
        #expect(ChannelFusionLimits(encoded: [7, 0, 0, 0, 1]) == .never)
        #expect(ChannelFusionLimits(encoded: [1, 0, 0, 1]) == .never)
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
        #expect(try SynchronizedComparison.errorChecks(group: group, channelsPerGroup: 2).isEmpty)
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
