import BatchNormCore
import BatchNormTestSupport
import Testing

/// the NumericsAndDeterminism article (Sources/BatchNormCore/BatchNormCore.docc/NumericsAndDeterminism.md): results are bitwise identical whatever the number of threads.
///
/// Every tensor here has more than `CPUBackend.parallelThreshold` (65536) elements, so the
/// backends with 2, 3 and 7 threads do split the work; each result is compared by bit
/// pattern with the single-threaded one.
@Suite("CPUBackend thread-count independence")
struct CPUBackendThreadingTests {
    static let threadCounts = [2, 3, 7]

    /// Large shapes: several channels; a single item with few channels (fewer planes than
    /// threads); a 2-D batch (one-element planes).
    static let cases: [(Rank, [Int])] = [
        (.batchNorm3D, [2, 3, 10, 40, 30]),
        (.batchNorm3D, [1, 2, 6, 80, 80]),
        (.batchNorm2D, [3, 5, 70, 70]),
        (.batchNorm, [17000, 4]),
    ]

    /// Bit patterns of everything a short training and evaluation run produces.
    static func results(threads: Int?, rank: Rank, shape: [Int], layout: TensorLayout) throws -> [String: [UInt32]] {
        var generator = SeededGenerator(seed: 2024)
        let bn = try rank.makeModule(
            maps: shape[1], sscale: 0.2, backend: CPUBackend(threadCount: threads),
            using: &generator)
        var results = [String: [UInt32]]()
        for step in 1...2 {
            let x = try randomTensor(shape: shape, layout: layout, offset: 50, using: &generator)
            results["y\(step)"] = bits(try bn(x).scalars)
            results["mean\(step)"] = bits(try bn.mean.scalars)
            results["var\(step)"] = bits(try bn.var.scalars)
            results["savemean\(step)"] = bits(bn.savemean!.scalars)
            results["saveinvvar\(step)"] = bits(bn.saveinvvar!.scalars)
            let g = try randomTensor(shape: shape, layout: layout, using: &generator)
            results["dx\(step)"] = bits(try #require(try bn.backward(g, momentum: 0.5)).scalars)
            results["scaleGrad\(step)"] = bits(try bn.scaleGrad.scalars)
            results["biasGrad\(step)"] = bits(try bn.biasGrad.scalars)
            try bn.updateParams(learnRate: 0.01)
        }
        bn.evalMode()
        let x = try randomTensor(shape: shape, layout: layout, offset: 50, using: &generator)
        results["evaluation y"] = bits(try bn(x).scalars)
        let g = try randomTensor(shape: shape, layout: layout, using: &generator)
        results["evaluation dx"] = bits(try #require(try bn.backward(g)).scalars)
        return results
    }

    @Test(arguments: TensorLayout.allCases)
    func moduleResultsAreBitwiseIdentical(layout: TensorLayout) throws {
        for (rank, shape) in Self.cases {
            #expect(shape.reduce(1, *) > 65536)
            let single = try Self.results(threads: 1, rank: rank, shape: shape, layout: layout)
            #expect(single.count == 18)
            for threads in Self.threadCounts + [CPUBackend.onlineProcessorCount] {
                let parallel = try Self.results(threads: threads, rank: rank, shape: shape, layout: layout)
                for (key, expected) in single.sorted(by: { $0.key < $1.key }) {
                    #expect(parallel[key] == expected, "\(shape) \(layout), \(threads) threads: \(key) differs")
                }
            }
        }
    }

    /// The backend seam itself: `collectStatistics` and `reduceGradient` return identical
    /// `Double` partial results (compared with `==` on every field).
    @Test(arguments: TensorLayout.allCases)
    func backendReductionsAreBitwiseIdentical(layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 5)
        let shape = [3, 4, 5, 30, 40] // 72000 elements, 6000 per plane: two blocks each
        let x = try randomTensor(shape: shape, layout: layout, offset: 1e3, using: &generator)
        let g = try randomTensor(shape: shape, layout: layout, using: &generator)
        let single = CPUBackend(threadCount: 1)
        let moments = try single.collectStatistics(of: x)
        let mean = moments.map(\.mean)
        let sums = try single.reduceGradient(g, input: x, mean: mean)
        #expect(moments.count == 4 && moments.allSatisfy { $0.count == 18000 })
        for threads in Self.threadCounts {
            let backend = CPUBackend(threadCount: threads)
            #expect(try backend.collectStatistics(of: x) == moments, "\(threads) threads: moments")
            #expect(try backend.reduceGradient(g, input: x, mean: mean) == sums, "\(threads) threads: gradient sums")
        }
    }

    @Test func threadCountIsAtLeastOne() {
        #expect(CPUBackend(threadCount: 0).threadCount == 1)
        #expect(CPUBackend(threadCount: -3).threadCount == 1)
        #expect(CPUBackend(threadCount: 7).threadCount == 7)
        #expect(CPUBackend().threadCount == CPUBackend.onlineProcessorCount)
        #expect(
            CPUBackend(threadCount: 1).name == "cpu (1 thread)" && CPUBackend(threadCount: 3).name == "cpu (3 threads)")
    }
}
