import BatchNormCore
import BatchNormTestSupport
import Dispatch
import Testing

/// Modules used from many threads at once share the CPU thread pools and the buffer cache:
/// every result must be the one a lone module computes, bit for bit. `.ci/run` runs this
/// suite under ThreadSanitizer.
@Suite("Concurrency") struct ConcurrencyTests {
    /// What one module computes: training output, dx, running statistics, evaluation output.
    static func run(seed: UInt64) throws -> [[UInt32]] {
        var generator = SeededGenerator(seed: seed)
        // 2·4·16·16·16 floats = 128 KiB per tensor: sizes the buffer cache recycles.
        let x = try Tensor.normal(shape: [2, 4, 16, 16, 16], mean: 3, standardDeviation: 2, using: &generator)
        let g = try Tensor.normal(shape: x.shape, using: &generator)
        let bn = try BatchNorm3D(maps: 4, backend: CPUBackend(threadCount: 2), using: &generator)
        var results = [[UInt32]]()
        for _ in 0..<3 {
            results.append(try bn(x).scalars.map(\.bitPattern))
            results.append(try #require(try bn.backward(g)).scalars.map(\.bitPattern))
        }
        results.append(try bn.mean.scalars.map(\.bitPattern) + bn.var.scalars.map(\.bitPattern))
        bn.evalMode()
        results.append(try bn(x).scalars.map(\.bitPattern))
        return results
    }

    /// Nine modules on nine threads at once give the results of the same modules run alone.
    @Test func nineModulesOnNineThreadsAreBitwiseIdenticalToSequentialRuns() throws {
        let seeds: [UInt64] = (0..<9).map { UInt64($0 % 3) } // three modules of each seed
        let expected = try (0..<3).map { try Self.run(seed: UInt64($0)) }
        let results = Results(count: seeds.count)
        DispatchQueue.concurrentPerform(iterations: seeds.count) { index in
            results.set(index, (try? Self.run(seed: seeds[index])) ?? [])
        }
        for (index, seed) in seeds.enumerated() {
            #expect(results.get(index) == expected[Int(seed)], "module \(index) (seed \(seed))")
        }
    }
}

/// Per-thread results, written under a lock.
private final class Results: @unchecked Sendable {
    private var values: [[[UInt32]]]
    private let lock = DispatchSemaphore(value: 1)
    init(count: Int) { values = Array(repeating: [], count: count) }
    func set(_ index: Int, _ value: [[UInt32]]) {
        lock.wait()
        values[index] = value
        lock.signal()
    }
    func get(_ index: Int) -> [[UInt32]] {
        lock.wait()
        defer { lock.signal() }
        return values[index]
    }
}
