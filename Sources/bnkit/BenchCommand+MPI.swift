import ArgumentParser
import BatchNormKit
import BatchNormReference

extension BenchCommand {
    /// The per-rank shapes of `bench --mpi` (with 2 ranks of 1 thread on a small machine).
    static let mpiSuite: [[Int]] = [[2, 32, 32, 32, 32], [4, 64, 16, 56, 56]]

    /// `bnkit bench --mpi`, one process per rank under `mpirun`: per rank, the median time of
    /// a synchronized training forward + backward (the module's process group is the MPI
    /// world) against a plain local training forward + backward on the same per-rank shape,
    /// in alternating rounds that start together on every rank (a barrier before each); the
    /// all-gather latency for the messages of C = 64 and C = 1024 channels; and the
    /// number of all-gathers per training step and per evaluation forward. Rank 0 prints.
    func runMPI() throws {
        let group: MPIProcessGroup
        do { group = try MPIProcessGroup.world() } catch { throw CommandFailure("--mpi: \(error)") }
        let shapes = try shape.map { [try Self.parseShape($0)] } ?? Self.mpiSuite
        let layouts = layout.map { [$0] } ?? [TensorLayout.channelsFirst]
        let threadCount = threads ?? 1
        var lines = [String](), rows = [String]()
        for shape in shapes {
            for layout in layouts {
                let (local, synchronized, counts) = try measureSynchronized(shape: shape, layout: layout,
                                                                             threads: threadCount, group: group)
                let all = try group.allGather([local, synchronized])
                for rank in 0..<group.size {
                    let (l, s) = (all[2 * rank] * 1e6, all[2 * rank + 1] * 1e6)
                    lines.append(Self.pad("\(rank)", 6) + Self.pad(layout.description, 8)
                                 + Self.pad(shape.map(String.init).joined(separator: "x"), 20)
                                 + Self.padLeft(Self.format(l, 1), 12) + Self.padLeft(Self.format(s, 1), 12)
                                 + Self.padLeft(Self.format(s / l, 3), 9))
                    rows.append("{\"rank\": \(rank), \"shape\": \(shape), \"layout\": \"\(layout)\", "
                                + "\"local_us\": \(Self.format(l, 2)), \"synchronized_us\": \(Self.format(s, 2)), "
                                + "\"ratio\": \(Self.format(s / l, 4)), \"allgathers_per_training_step\": \(counts.training), "
                                + "\"allgathers_per_evaluation_forward\": \(counts.evaluation)}")
                }
                lines.append("      all-gathers per training step: \(counts.training), per evaluation forward: "
                             + "\(counts.evaluation)")
            }
        }
        var latencies = [(channels: Int, microseconds: Double)]()
        for channels in [64, 1024] {
            latencies.append((channels, try Self.allGatherLatency(group: group, count: 1 + 3 * channels, runs: runs) * 1e6))
        }
        guard group.rank == 0 else { return }
        let machine = "\(group.size) ranks (\(group.implementation)), \(threadCount) thread\(threadCount == 1 ? "" : "s") "
            + "each; cpu: \(Self.processorName()), \(CPUBackend.onlineProcessorCount) online processors"
        if json {
            let latencyJSON = latencies.map { "{\"channels\": \($0.channels), \"doubles\": \(1 + 3 * $0.channels), "
                + "\"median_us\": \(Self.format($0.microseconds, 2))}" }
            print("{\"mpi\": \"\(Self.escape(machine))\", \"runs\": \(runs), \"rows\": [\(rows.joined(separator: ", "))], "
                  + "\"allgather\": [\(latencyJSON.joined(separator: ", "))]}")
            return
        }
        print("bnkit bench --mpi: \(machine); median of \(runs) alternating rounds")
        print("train forward + backward per rank (synchronized: one all-gather each)\n")
        print("rank  layout  shape                  local µs     sync µs    ratio")
        for line in lines { print(line) }
        print("")
        for latency in latencies {
            print("all-gather of \(1 + 3 * latency.channels) doubles (C = \(latency.channels)): median "
                  + "\(Self.format(latency.microseconds, 2)) µs")
        }
    }

    /// Median seconds of one local and one synchronized training forward + backward on this
    /// rank, measured in alternating rounds, and the all-gathers a training step and an
    /// evaluation forward make.
    func measureSynchronized(shape: [Int], layout: TensorLayout, threads: Int, group: any ProcessGroup) throws
        -> (local: Double, synchronized: Double, counts: (training: Int, evaluation: Int)) {
        var generator = SeededGenerator(seed: 42 &+ UInt64(group.rank))
        let x = try Tensor.normal(shape: shape, mean: 1, standardDeviation: 2, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator)
        let counting = CountingProcessGroup(group)
        let local = try BatchNorm3D(maps: shape[1], backend: CPUBackend(threadCount: threads), using: &generator)
        let synchronized = try BatchNorm3D(maps: shape[1], backend: CPUBackend(threadCount: threads),
                                           processGroup: counting, using: &generator)
        let repetitions = max(1, 20_000_000 / shape.reduce(1, *))
        func step(_ module: BatchNormND) throws {
            _ = try module(x)
            _ = try module.backward(g)
        }
        for _ in 0..<max(3, repetitions) {
            try step(local)
            try step(synchronized)
        }
        var localTimes = [Double](), synchronizedTimes = [Double]()
        for round in 0..<runs {
            // Alternate which comes first; start each timed block together on every rank.
            for module in round % 2 == 0 ? [local, synchronized] : [synchronized, local] {
                _ = try group.allGather([0])
                let start = Self.now()
                for _ in 0..<repetitions { try step(module) }
                let seconds = (Self.now() - start) / Double(repetitions)
                if module === local { localTimes.append(seconds) } else { synchronizedTimes.append(seconds) }
            }
        }
        let before = counting.count
        try step(synchronized)
        let training = counting.count - before
        synchronized.evalMode()
        _ = try synchronized(x)
        let evaluation = counting.count - before - training
        return (Self.median(localTimes), Self.median(synchronizedTimes), (training, evaluation))
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
