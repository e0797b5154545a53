import ArgumentParser
import BatchNormBenchmarkSupport
import BatchNormKit
import BatchNormReference
import Dispatch

extension BenchCommand {
    /// The per-rank shapes of `bench --mpi` (with 2 ranks of 1 thread on a small machine).
    static let mpiSuite: [[Int]] = [[2, 32, 32, 32, 32], [4, 64, 16, 56, 56]]

    /// `bnkit bench --mpi`, one process per rank under `mpirun`: per rank, the median time of
    /// a synchronized training forward + backward (the module's process group is the MPI
    /// world) against a plain local training forward + backward on the same per-rank shape,
    /// as it runs (channel-fused where the backend fuses) and without channel fusion, in
    /// rotating rounds that start together on every rank (a barrier before each); the
    /// all-gather latency for the messages of C = 64 and C = 1024 channels; the channels per
    /// group of the synchronized passes and the number of all-gathers per training step
    /// (`2·⌈C/g⌉` where both passes fuse) and per evaluation forward. Rank 0 prints.
    ///
    /// With `--local-members N`, the ranks are `N` threads of this process over a
    /// ``LocalProcessGroup`` instead (no MPI).
    func runMPI() throws {
        if let localMembers { return try runLocalMembers(localMembers) }
        let group: MPIProcessGroup
        do { group = try MPIProcessGroup.world() } catch { throw CommandFailure("--mpi: \(error)") }
        try runSynchronized(group: group, groupName: group.implementation)
    }

    /// `bench --mpi --local-members N`: member 0 on this thread (it prints), the others on
    /// threads of their own.
    func runLocalMembers(_ count: Int) throws {
        let members = try LocalProcessGroup.members(count: count, timeout: 600)
        let failures = LockedFailures()
        let done = DispatchGroup()
        for member in members.dropFirst() {
            done.enter()
            DispatchQueue(label: "bnkit bench member \(member.rank)").async {
                do { try runSynchronized(group: member, groupName: "LocalProcessGroup") } catch {
                    failures.append("member \(member.rank): \(error)")
                }
                done.leave()
            }
        }
        do { try runSynchronized(group: members[0], groupName: "LocalProcessGroup") } catch {
            failures.append("member 0: \(error)")
        }
        done.wait()
        if let message = failures.joined { throw CommandFailure("--mpi --local-members: \(message)") }
    }

    /// The measurement and report of `bench --mpi` over `group` (named `groupName`).
    func runSynchronized(group: any ProcessGroup, groupName: String) throws {
        let shapes = try shape.map { [try Self.parseShape($0)] } ?? Self.mpiSuite
        let layouts = layout.map { [$0] } ?? [TensorLayout.channelsFirst]
        let threadCount = threads ?? 1
        var lines = [String](), rows = [String]()
        for shape in shapes {
            for layout in layouts {
                let (times, counts, schedule) = try measureSynchronized(
                    shape: shape, layout: layout, threads: threadCount,
                    group: group)
                let all = try group.allGather([times.local, times.unfused, times.synchronized])
                for rank in 0..<group.size {
                    let (l, u, s) = (all[3 * rank] * 1e6, all[3 * rank + 1] * 1e6, all[3 * rank + 2] * 1e6)
                    lines.append(
                        Self.pad("\(rank)", 6) + Self.pad(layout.description, 8)
                            + Self.pad(shape.map(String.init).joined(separator: "x"), 20)
                            + Self.padLeft(Self.format(l, 1), 12) + Self.padLeft(Self.format(u, 1), 12)
                            + Self.padLeft(Self.format(s, 1), 12) + Self.padLeft(Self.format(s / l, 3), 9)
                            + Self.padLeft(Self.format(s / u, 3), 15))
                    rows.append(
                        "{\"rank\": \(rank), \"shape\": \(shape), \"layout\": \"\(layout)\", "
                            + "\"local_us\": \(Self.format(l, 2)), \"local_unfused_us\": \(Self.format(u, 2)), "
                            + "\"synchronized_us\": \(Self.format(s, 2)), \"ratio\": \(Self.format(s / l, 4)), "
                            + "\"ratio_unfused\": \(Self.format(s / u, 4)), "
                            + "\"forward_channels_per_group\": \(schedule.forward), "
                            + "\"backward_channels_per_group\": \(schedule.backward), "
                            + "\"allgathers_per_training_step\": \(counts.training), "
                            + "\"allgathers_per_evaluation_forward\": \(counts.evaluation)}")
                }
                lines.append(
                    "      channels per group: forward \(schedule.forward), backward \(schedule.backward) "
                        + "(C = \(shape[1])); all-gathers per training step: \(counts.training), "
                        + "per evaluation forward: \(counts.evaluation)")
            }
        }
        var latencies = [(channels: Int, microseconds: Double)]()
        for channels in [64, 1024] {
            latencies.append(
                (channels, try Self.allGatherLatency(group: group, count: 1 + 3 * channels, runs: runs) * 1e6))
        }
        guard group.rank == 0 else { return }
        let machine =
            "\(group.size) ranks (\(groupName)), \(threadCount) thread\(threadCount == 1 ? "" : "s") "
            + "each; cpu: \(Self.processorName()), \(CPUBackend.onlineProcessorCount) online processors, "
            + "kernel level \(CPUBackend(threadCount: threadCount).kernelLevel)"
        if json {
            let latencyJSON = latencies.map {
                "{\"channels\": \($0.channels), \"doubles\": \(1 + 3 * $0.channels), "
                    + "\"median_us\": \(Self.format($0.microseconds, 2))}"
            }
            print(
                "{\"mpi\": \"\(Self.escape(machine))\", \"runs\": \(runs), \"rows\": [\(rows.joined(separator: ", "))], "
                    + "\"allgather\": [\(latencyJSON.joined(separator: ", "))]}")
            return
        }
        print("bnkit bench --mpi: \(machine); median of \(runs) rotating rounds")
        print(
            "train forward + backward per rank (synchronized: one all-gather per pass, or per group of channels "
                + "where the pass fuses; local: as it runs, channel-fused where it fuses; unfused: the local module "
                + "without channel fusion)\n")
        print("rank  layout  shape                  local µs  unfused µs     sync µs    ratio  ratio/unfused")
        for line in lines { print(line) }
        print("")
        for latency in latencies {
            print(
                "all-gather of \(1 + 3 * latency.channels) doubles (C = \(latency.channels)): median "
                    + "\(Self.format(latency.microseconds, 2)) µs")
        }
    }

    /// Median seconds of one training forward + backward on this rank of a local module, of
    /// a local module without channel fusion and of a synchronized module, measured in
    /// rounds that rotate which comes first, the all-gathers a training step and an
    /// evaluation forward make, and the synchronized passes' channels per group (`C` for
    /// an unfused pass: one group).
    func measureSynchronized(shape: [Int], layout: TensorLayout, threads: Int, group: any ProcessGroup) throws
        -> (
            times: (local: Double, unfused: Double, synchronized: Double), counts: (training: Int, evaluation: Int),
            schedule: (forward: Int, backward: Int)
        )
    {
        var generator = SeededGenerator(seed: 42 &+ UInt64(group.rank))
        let x = try Tensor.normal(shape: shape, mean: 1, standardDeviation: 2, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator)
        let counting = CountingProcessGroup(group)
        let backend = CPUBackend(threadCount: threads)
        let synchronized = try BatchNorm3D(
            maps: shape[1], backend: backend, processGroup: counting,
            using: &generator)
        let modules = [
            try BatchNorm3D(maps: shape[1], backend: backend, using: &generator),
            try BatchNorm3D(maps: shape[1], backend: UnfusedCPUBackend(backend), using: &generator),
            synchronized,
        ]
        let repetitions = max(1, 20_000_000 / shape.reduce(1, *))
        func step(_ module: BatchNormND) throws {
            _ = try module(x)
            _ = try module.backward(g)
        }
        for _ in 0..<max(3, repetitions) {
            for module in modules { try step(module) }
        }
        var times = [[Double]](repeating: [], count: modules.count)
        for round in 0..<runs {
            // Rotate which comes first; start each timed block together on every rank.
            for turn in 0..<modules.count {
                let index = (round + turn) % modules.count
                _ = try group.allGather([0])
                let start = Self.now()
                for _ in 0..<repetitions { try step(modules[index]) }
                times[index].append((Self.now() - start) / Double(repetitions))
            }
        }
        let before = counting.count
        try step(synchronized)
        let training = counting.count - before
        synchronized.evalMode()
        _ = try synchronized(x)
        let evaluation = counting.count - before - training
        let schedule = synchronized.schedule(for: counting)
        return (
            (Self.median(times[0]), Self.median(times[1]), Self.median(times[2])), (training, evaluation),
            (schedule?.forwardGroup ?? shape[1], schedule?.backwardGroup ?? shape[1])
        )
    }

    /// Median over `runs` rounds of the mean time of 1000 all-gathers of `count` doubles.
    static func allGatherLatency(group: any ProcessGroup, count: Int, runs: Int) throws -> Double {
        let values = [Double](repeating: 1, count: count)
        for _ in 0..<100 { _ = try group.allGather(values) }
        var times = [Double]()
        for _ in 0..<runs {
            let start = now()
            for _ in 0..<1000 { _ = try group.allGather(values) }
            times.append((now() - start) / 1000)
        }
        return median(times)
    }
}

/// Error messages collected from the member threads of `bench --mpi --local-members`.
final class LockedFailures: @unchecked Sendable {
    private let queue = DispatchQueue(label: "bnkit bench failures")
    private var messages = [String]()

    func append(_ message: String) { queue.sync { messages.append(message) } }

    /// The messages joined, or `nil` when there are none.
    var joined: String? { queue.sync { messages.isEmpty ? nil : messages.joined(separator: "; ") } }
}
