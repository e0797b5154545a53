import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Dispatch
import Testing

/// The CPU backend's SIMD kernels against the `Double` reference: vector tails, blocks
/// with remainders, spatial size 1, channels-last with `C` not a multiple of the vector
/// width (including the fallback for periods too long to replicate), and bitwise equality
/// of everything across thread counts. (Module semantics are tested elsewhere; these tests
/// aim at the kernel paths.)
@Suite struct CPUBackendKernelTests {
    /// Shapes aimed at kernel paths (rank 2 to 5; BatchNorm to BatchNorm3D).
    static let shapes: [[Int]] = [
        [2, 3, 5, 7, 11], // odd extents: vector loops with scalar tails everywhere
        [3, 17, 1, 1, 1], // spatial size 1 (channels-first runs the row kernels)
        [7, 5], // rank 2 (N, C)
        [2, 3, 20000], // planes of several statistics blocks (4096) and gradient blocks (16384), with tails
        [1, 33, 3, 5, 7], // C = 33: pattern period lcm(33, 16) = 528
        [2, 100, 2, 3, 5], // C = 100: period 400
        [2, 257, 1, 2, 3], // C = 257: lcm too long, vectors over 16-channel groups, channel 256 scalar
        [4, 16, 2, 3, 3], // C = 16: vector width
        [2, 1, 3, 3, 3], // one channel
        [1, 4100, 1, 1, 2], // C = 4100: lcm too long (P = C), 15 rows per channels-last block
        [2, 65600], // C > channels-last block (65536 values): one row per block
        [5, 2, 3, 3, 3], // C = 2: base period 16 (4 register sets), a partial last chunk of 7 rows
        [3, 16, 1, 3, 5], // C = 16: 45 chunks, one left over after the sets of 4
        [3, 32, 1, 3, 5], // C = 32: base period 32 (2 register sets), one chunk left over
        [2, 7, 3, 5, 11], // C = 7: base period 112, apply coefficients in registers, reductions not
        [2, 128, 1, 3, 5], // C = 128: the longest base period applied from registers
    ]

    static func module(rank: Int, maps: Int, threads: Int, inplace: Bool = false) throws -> BatchNormND {
        var generator = SeededGenerator(seed: 11)
        let backend = CPUBackend(threadCount: threads)
        switch rank {
        case 2: return try BatchNorm(maps: maps, inplace: inplace, backend: backend, using: &generator)
        case 3: return try BatchNorm1D(maps: maps, inplace: inplace, backend: backend, using: &generator)
        case 4: return try BatchNorm2D(maps: maps, inplace: inplace, backend: backend, using: &generator)
        default: return try BatchNorm3D(maps: maps, inplace: inplace, backend: backend, using: &generator)
        }
    }

    /// Root mean square of `values`: the floor of relative errors for values near zero.
    static func spread(_ values: [Double]) -> Double {
        (values.reduce(0) { $0 + $1 * $1 } / Double(max(1, values.count))).squareRoot()
    }

    static func relativeError(_ actual: [Float], _ expected: [Double]) -> Double {
        ReferenceComparison.maximumRelativeError(actual, expected, floor: spread(expected))
    }

    @Test(arguments: shapes, TensorLayout.allCases)
    func trainingForwardAndBackwardMatchReference(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: UInt64(shape.reduce(0, +)))
        // A large offset relative to the spread checks the shift-centred apply.
        let x = try Tensor.normal(shape: shape, mean: 100, standardDeviation: 0.5, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, mean: 0.25, standardDeviation: 1, layout: layout, using: &generator)
        let bn = try Self.module(rank: shape.count, maps: shape[1], threads: 2)
        try bn.load(
            BatchNormState(
                scale: (0..<shape[1]).map { 1 + Float($0 % 5) / 10 },
                bias: (0..<shape[1]).map { Float($0 % 3) - 1 },
                mean: Array(repeating: 0.5, count: shape[1]),
                var: Array(repeating: 2, count: shape[1]), numOfProps: 3))
        var reference = ReferenceBatchNorm(state: try bn.state())
        let xValues = x.scalars.map(Double.init), gValues = g.scalars.map(Double.init)

        let y = try bn(x)
        let expectedY = reference.trainingForward(xValues, shape: shape)
        #expect(y.layout == layout)
        #expect(Self.relativeError(y.scalars, expectedY) <= 2e-6)
        #expect(ReferenceComparison.maximumRelativeError(try bn.mean.scalars, reference.mean, floor: 1e-3) <= 1e-6)
        #expect(ReferenceComparison.maximumRelativeError(try bn.var.scalars, reference.variance, floor: 1e-3) <= 1e-6)
        #expect(
            ReferenceComparison.maximumRelativeError(bn.saveinvvar!.scalars, reference.savedInvstd, floor: 0) <= 1e-6)

        let dx = try #require(try bn.backward(g))
        let expectedDX = reference.backward(gValues, shape: shape, training: true)
        #expect(dx.layout == layout)
        #expect(Self.relativeError(dx.scalars, expectedDX) <= 1e-5)
        #expect(
            ReferenceComparison.maximumRelativeError(
                try bn.scaleGrad.scalars, reference.scaleGrad,
                floor: Self.spread(reference.scaleGrad)) <= 1e-5)
        #expect(
            ReferenceComparison.maximumRelativeError(
                try bn.biasGrad.scalars, reference.biasGrad,
                floor: Self.spread(reference.biasGrad)) <= 1e-5)
    }

    @Test(arguments: shapes, TensorLayout.allCases)
    func evaluationForwardAndBackwardMatchReference(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: UInt64(shape.reduce(1, *)))
        let x = try Tensor.normal(shape: shape, mean: -3, standardDeviation: 2, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator)
        let state = BatchNormState(
            scale: (0..<shape[1]).map { 0.5 + Float($0 % 7) / 4 },
            bias: (0..<shape[1]).map { Float($0 % 4) / 2 },
            mean: (0..<shape[1]).map { -3 + Float($0 % 3) / 5 },
            var: (0..<shape[1]).map { 4 + Float($0 % 2) }, numOfProps: 10)
        let reference = ReferenceBatchNorm(state: state)
        let xValues = x.scalars.map(Double.init)
        let expectedY = reference.evaluationForward(xValues, shape: shape)

        let bn = try Self.module(rank: shape.count, maps: shape[1], threads: 2)
        try bn.load(state)
        bn.evalMode()
        let y = try bn(x)
        #expect(!y.sharesStorage(with: x))
        #expect(Self.relativeError(y.scalars, expectedY) <= 2e-6)
        var backwardReference = reference
        let dx = try #require(try bn.backward(g))
        #expect(
            Self.relativeError(
                dx.scalars,
                backwardReference.backward(
                    g.scalars.map(Double.init), shape: shape,
                    training: false)) <= 2e-6)

        // In place: the input's storage receives the same values.
        let inplace = try Self.module(rank: shape.count, maps: shape[1], threads: 2, inplace: true)
        try inplace.load(state)
        inplace.evalMode()
        let copy = x.copy()
        let result = try inplace(copy)
        #expect(result.sharesStorage(with: copy))
        #expect(copy.scalars == y.scalars)
    }

    /// Large enough to run on several threads (above the single-thread threshold), with
    /// blocks that do not divide the extents.
    static let parallelShapes: [[Int]] = [
        [2, 3, 40, 41, 7], // S = 11480: statistics blocks of 4096 with a tail
        [3, 17, 9, 11, 13], // C = 17 channels-last
        [5000, 13], // S = 1
        [2, 3, 40000], // several gradient blocks per plane
        [4, 64, 5, 7, 9], // C = 64
    ]

    @Test(arguments: parallelShapes, TensorLayout.allCases)
    func resultsAreBitwiseIdenticalForAnyThreadCount(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 5)
        let x = try Tensor.normal(shape: shape, mean: 7, standardDeviation: 3, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator)

        func run(threads: Int) throws -> (
            moments: [ChannelMoments], sums: [GradientSums], y: [Float], dx: [Float],
            mean: [Float], variance: [Float], scaleGrad: [Float]
        ) {
            let backend = CPUBackend(threadCount: threads)
            let moments = try backend.collectStatistics(of: x)
            let sums = try backend.reduceGradient(g, input: x, mean: moments.map(\.mean))
            let bn = try Self.module(rank: shape.count, maps: shape[1], threads: threads)
            let y = try bn(x)
            let dx = try #require(try bn.backward(g))
            return (
                moments, sums, y.scalars, dx.scalars, try bn.mean.scalars, try bn.var.scalars,
                try bn.scaleGrad.scalars
            )
        }
        let single = try run(threads: 1)
        for threads in [2, 3, 8] {
            let parallel = try run(threads: threads)
            #expect(parallel.moments == single.moments, "statistics with \(threads) threads")
            #expect(parallel.sums == single.sums, "gradient sums with \(threads) threads")
            #expect(parallel.y == single.y, "output with \(threads) threads")
            #expect(parallel.dx == single.dx, "input gradient with \(threads) threads")
            #expect(parallel.mean == single.mean && parallel.variance == single.variance)
            #expect(parallel.scaleGrad == single.scaleGrad)
        }
    }

    @Test(arguments: parallelShapes)
    func statisticsMatchFloat64InBothLayouts(shape: [Int]) throws {
        var generator = SeededGenerator(seed: 9)
        let first = try Tensor.normal(shape: shape, mean: 1000, standardDeviation: 0.1, using: &generator)
        let last = first.converted(to: .channelsLast)
        let channels = shape[1], spatial = shape.dropFirst(2).reduce(1, *)
        let values = first.scalars.map(Double.init)
        for tensor in [first, last] {
            let moments = try CPUBackend(threadCount: 2).collectStatistics(of: tensor)
            for c in 0..<channels {
                let channel = (0..<shape[0]).flatMap { n in
                    (0..<spatial).map { values[(n * channels + c) * spatial + $0] }
                }
                let mean = channel.reduce(0, +) / Double(channel.count)
                let m2 = channel.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
                #expect(moments[c].count == Double(channel.count))
                #expect(abs(moments[c].mean - mean) <= 1e-13 * abs(mean))
                #expect(abs(moments[c].m2 - m2) <= 1e-10 * m2, "channel \(c) of \(tensor.layout)")
            }
        }
    }

    @Test func concurrentCallersShareAPoolSafely() throws {
        var generator = SeededGenerator(seed: 3)
        let x = try Tensor.normal(shape: [2, 8, 16, 16, 16], layout: .channelsLast, using: &generator)
        let expected = try CPUBackend(threadCount: 2).collectStatistics(of: x)
        let results = ResultBox(count: 8)
        DispatchQueue.concurrentPerform(iterations: 8) { index in
            results.set(index, (try? CPUBackend(threadCount: 2).collectStatistics(of: x)) ?? [])
        }
        for index in 0..<8 { #expect(results.get(index) == expected) }
    }

    @Test func outputsHeldByTheCallerSurviveLaterPasses() throws {
        // Forward and backward release the module's previous output before allocating the
        // next (so its buffer can be recycled); a copy the caller still holds must not be
        // reused.
        var generator = SeededGenerator(seed: 21)
        let shape = [2, 4, 16, 16, 16] // 128 KiB: a recycled size
        let x1 = try Tensor.normal(shape: shape, using: &generator)
        let x2 = try Tensor.normal(shape: shape, mean: 5, using: &generator)
        let g = try Tensor.normal(shape: shape, using: &generator)
        let bn = try BatchNorm3D(maps: 4, backend: CPUBackend(threadCount: 2), using: &generator)
        let y1 = try bn(x1)
        let dx1 = try #require(try bn.backward(g))
        let (y1Values, dx1Values) = (y1.scalars, dx1.scalars)
        let y2 = try bn(x2)
        let dx2 = try #require(try bn.backward(g))
        #expect(!y2.sharesStorage(with: y1) && !dx2.sharesStorage(with: dx1))
        #expect(y1.scalars == y1Values && dx1.scalars == dx1Values)
        #expect(bn.data.map { $0.sharesStorage(with: y2) } == true)
        #expect(bn.grad.map { $0.sharesStorage(with: dx2) } == true)
    }

    @Test func recycledStorageIsZeroedWhenAskedFor() throws {
        let shape = [4, 4, 64, 64, 16] // 4 MiB: a recycled size
        do {
            let filled = try Tensor.full(7, shape: shape)
            #expect(filled[3, 3, 63, 63, 15] == 7)
        }
        let zeros = try Tensor(zeros: shape)
        #expect(zeros.scalars.allSatisfy { $0 == 0 })
    }
}

/// Slots written by concurrent test iterations.
final class ResultBox: @unchecked Sendable {
    private var values: [[ChannelMoments]]
    private let lock = DispatchSemaphore(value: 1)
    init(count: Int) { values = Array(repeating: [], count: count) }
    func set(_ index: Int, _ value: [ChannelMoments]) {
        lock.wait()
        values[index] = value
        lock.signal()
    }
    func get(_ index: Int) -> [ChannelMoments] {
        lock.wait()
        defer { lock.signal() }
        return values[index]
    }
}
