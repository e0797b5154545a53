import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// Relative tolerances against the `Double` reference (the NumericsAndDeterminism article (Sources/BatchNormCore/BatchNormCore.docc/NumericsAndDeterminism.md)), element by
/// element: `max |a − e| / (|e| + floor)` with the floor of ``comparisonFloor(_:)`` (the
/// RMS of the expected values) unless stated otherwise.
///
/// The module computes in `Float` with `Double` statistics, so one result is within a few
/// `Float` ulps (`2⁻²⁴ ≈ 6·10⁻⁸` each); the reference keeps parameters and running
/// statistics in `Double` while the module stores them as `Float` after every one of the
/// 12 steps, so errors grow slowly along a run. Observed worst cases over the whole suite
/// were about 3·10⁻⁷ (y), 2·10⁻⁷ (running mean), 6·10⁻⁷ (dx, parameters); the bounds are
/// about ten times that. A wrong factor, a biased/unbiased mix-up (`M/(M−1)`), a dropped
/// term or a channel mix-up is off by 10⁻³ or more on these shapes.
enum Tolerance {
    /// Training and evaluation output `y`.
    static let output = 4e-6
    /// Running mean and variance, after up to 12 steps of `Float` storage.
    static let runningStatistics = 2e-6
    /// `savemean` (`Float(μ)`) and `saveinvvar` (`Float(invstd)`): one rounding, 2 ulps.
    static let savedStatistics = 1.2e-7
    /// Input gradient `dx` (floor: RMS of `scale·invstd·g`, see `inputGradientFloor`).
    static let inputGradient = 5e-6
    /// Accumulated `scaleGrad`, `biasGrad` and parameters after `updateParams`.
    static let parameterGradient = 5e-6
}

/// One training run compared step by step with ``ReferenceBatchNorm``.
struct TrainingScenario: CustomTestStringConvertible, Sendable {
    var rank: Rank
    var shape: [Int]
    var layout: TensorLayout
    var steps = 12
    var initFactor = 1.0
    var minFactor = 0.1
    var epsilon = 1e-5
    var affine = true
    /// Added to every input value (data far from zero, such as CT intensities).
    var offset = 0.0
    var seed: UInt64 = 1

    var testDescription: String {
        "\(rank.testDescription) \(shape) \(layout) steps \(steps) factor \(initFactor)/\(minFactor)"
            + (epsilon == 1e-5 ? "" : " epsilon \(epsilon)") + (affine ? "" : " affine: false")
            + (offset == 0 ? "" : " offset \(offset)")
    }

    /// `(scale, momentum)` handed to `backward` at step `k`: plain, accumulating, scaled.
    static func backwardArguments(step: Int) -> (scale: Float, momentum: Float) {
        [(1, 0), (0.5, 0.9), (2, 0.5)][step % 3]
    }

    /// Runs `steps` training steps (forward, backward, sometimes `zeroGradParams` and
    /// `updateParams`), then evaluation forward (plain and in place) and evaluation backward,
    /// checking every output, statistic and gradient against the reference.
    func run() throws {
        var generator = SeededGenerator(seed: seed)
        let maps = shape[1]
        let bn = try rank.makeModule(
            maps: maps, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor,
            sscale: 0.3, affine: affine, using: &generator)
        let initial = try bn.state()
        #expect(initial.mean == Array(repeating: 0, count: maps))
        #expect(initial.var == Array(repeating: 1, count: maps))
        #expect(initial.bias == Array(repeating: 0, count: maps))
        if !affine { #expect(initial.scale == Array(repeating: 1, count: maps)) }
        #expect(try bn.scale.shape == [1, maps] + Array(repeating: 1, count: rank.rawValue - 2))
        var reference = ReferenceBatchNorm(
            state: initial, epsilon: bn.epsilon, initFactor: initFactor,
            minFactor: minFactor, affine: affine)
        let learnRate: Float = 0.05

        for step in 1...steps {
            let label = "\(testDescription), step \(step)"
            let x = try randomTensor(shape: shape, layout: layout, offset: offset, using: &generator)
            let y = try bn(x)
            let expectedY = reference.trainingForward(doubles(x), shape: shape)
            #expect(y.shape == shape && y.layout == layout && !y.sharesStorage(with: x), "\(label)")
            expectClose(y.scalars, expectedY, tolerance: Tolerance.output, "\(label): y")
            try expectRunningStatistics(of: bn, match: reference, label)
            #expect(bn.numOfProps == step && reference.numOfProps == step, "\(label): numOfProps")
            let savemean = try #require(bn.savemean), saveinvvar = try #require(bn.saveinvvar)
            #expect(savemean.shape == (try bn.mean.shape) && saveinvvar.shape == savemean.shape)
            expectClose(
                savemean.scalars, reference.savedMean, tolerance: Tolerance.savedStatistics,
                "\(label): savemean")
            expectClose(
                saveinvvar.scalars, reference.savedInvstd, tolerance: Tolerance.savedStatistics,
                "\(label): saveinvvar")
            #expect(bn.inData?.sharesStorage(with: x) == true && bn.data?.sharesStorage(with: y) == true)

            let g = try randomTensor(shape: shape, layout: layout, using: &generator)
            let (gradientScale, momentum) = Self.backwardArguments(step: step)
            let dx = try #require(try bn.backward(g, scale: gradientScale, momentum: momentum))
            let expectedDx = reference.backward(
                doubles(g), shape: shape, training: true,
                scale: Double(gradientScale), momentum: Double(momentum))
            #expect(dx.shape == shape && dx.layout == layout && bn.grad?.sharesStorage(with: dx) == true)
            expectClose(
                dx.scalars, expectedDx, tolerance: Tolerance.inputGradient,
                floor: inputGradientFloor(g, reference: reference), "\(label): dx")
            try expectParameters(of: bn, match: reference, label)

            if step % 4 == 0 {
                try bn.zeroGradParams()
                #expect(try bn.scaleGrad.scalars.allSatisfy { $0 == 0 } && bn.biasGrad.scalars.allSatisfy { $0 == 0 })
                reference.scaleGrad = Array(repeating: 0, count: maps)
                reference.biasGrad = Array(repeating: 0, count: maps)
            } else if step % 3 == 0 {
                try bn.updateParams(learnRate: learnRate)
                for c in 0..<maps {
                    reference.scale[c] += Double(learnRate) * reference.scaleGrad[c]
                    reference.bias[c] += Double(learnRate) * reference.biasGrad[c]
                }
                try expectParameters(of: bn, match: reference, "\(label) after updateParams")
            }
        }

        try checkEvaluation(of: bn, reference: &reference, using: &generator)
    }

    /// The floor for training `dx`: the RMS of `scale[c]·invstd[c]·g`, the size of the terms
    /// whose difference `dx` is. With `M = 2` (or whenever `g` is nearly affine in `x̂`) `dx`
    /// is 0 up to `ε` and its own RMS would only measure rounding noise.
    func inputGradientFloor(_ g: Tensor, reference: ReferenceBatchNorm) -> Double {
        let spatial = ChannelGeometry(shape: shape).spatial
        let terms = g.scalars.enumerated().map { index, value in
            let c = (index / spatial) % shape[1]
            return reference.scale[c] * reference.savedInvstd[c] * Double(value)
        }
        return rootMeanSquare(terms)
    }

    /// Running mean and variance against the reference.
    func expectRunningStatistics(of bn: BatchNormND, match reference: ReferenceBatchNorm, _ label: String) throws {
        expectClose(try bn.mean.scalars, reference.mean, tolerance: Tolerance.runningStatistics, "\(label): mean")
        expectClose(try bn.var.scalars, reference.variance, tolerance: Tolerance.runningStatistics, "\(label): var")
    }

    /// Scale, bias and their gradients against the reference; exactly 1, 0, 0, 0 without `affine`.
    func expectParameters(of bn: BatchNormND, match reference: ReferenceBatchNorm, _ label: String) throws {
        if affine {
            expectClose(
                try bn.scale.scalars, reference.scale, tolerance: Tolerance.parameterGradient, "\(label): scale")
            expectClose(try bn.bias.scalars, reference.bias, tolerance: Tolerance.parameterGradient, "\(label): bias")
            expectClose(
                try bn.scaleGrad.scalars, reference.scaleGrad, tolerance: Tolerance.parameterGradient,
                "\(label): scaleGrad")
            expectClose(
                try bn.biasGrad.scalars, reference.biasGrad, tolerance: Tolerance.parameterGradient,
                "\(label): biasGrad")
        } else {
            #expect(try bn.scale.scalars.allSatisfy { $0 == 1 }, "\(label): scale must stay exactly 1")
            #expect(try bn.bias.scalars.allSatisfy { $0 == 0 }, "\(label): bias must stay exactly 0")
            #expect(try bn.scaleGrad.scalars.allSatisfy { $0 == 0 }, "\(label): scaleGrad must stay 0")
            #expect(try bn.biasGrad.scalars.allSatisfy { $0 == 0 }, "\(label): biasGrad must stay 0")
        }
    }

    /// Evaluation forward (plain and `inplace`) and backward after training.
    ///
    /// The reference is first synchronized with the module's `Float` state: the running
    /// statistics were already checked above, and `x − mean` amplifies their last-bit
    /// rounding by `|mean| / σ` (10⁴ for offset data), which would hide the formula under test.
    func checkEvaluation(
        of bn: BatchNormND, reference: inout ReferenceBatchNorm,
        using generator: inout SeededGenerator
    ) throws {
        let label = "\(testDescription), evaluation"
        let trained = try bn.state()
        reference.scale = trained.scale.map(Double.init)
        reference.bias = trained.bias.map(Double.init)
        reference.mean = trained.mean.map(Double.init)
        reference.variance = trained.var.map(Double.init)
        let gradientsBefore = (bits(try bn.scaleGrad.scalars), bits(try bn.biasGrad.scalars))

        bn.evalMode()
        #expect(
            !bn.isTraining && bn.inData == nil && bn.data == nil && bn.grad == nil && bn.savemean == nil
                && bn.saveinvvar == nil, "\(label): evalMode must drop saved tensors")
        let x = try randomTensor(shape: shape, layout: layout, offset: offset, using: &generator)
        let original = doubles(x)
        let y = try bn(x)
        expectClose(
            y.scalars, reference.evaluationForward(original, shape: shape), tolerance: Tolerance.output,
            "\(label): y")
        #expect(!y.sharesStorage(with: x) && doubles(x) == original, "\(label): input must be left alone")
        #expect(try bn.state() == trained, "\(label): evaluation must not touch the state")

        // In place: a second module with the same state writes y into x's storage.
        var unused = SeededGenerator(seed: 0)
        let inplaceModule = try rank.makeModule(
            maps: shape[1], epsilon: epsilon, initFactor: initFactor,
            minFactor: minFactor, affine: affine, inplace: true, using: &unused)
        try inplaceModule.load(trained)
        inplaceModule.evalMode()
        let shared = x.copy()
        let alias = shared // a copy of the struct: the same storage
        let inplaceY = try inplaceModule(shared)
        #expect(inplaceY.sharesStorage(with: shared) && alias.sharesStorage(with: inplaceY), "\(label): inplace")
        #expect(bits(shared.scalars) == bits(y.scalars), "\(label): inplace input must now hold y")
        #expect(bits(alias.scalars) == bits(y.scalars), "\(label): every alias of the input must see y")

        // Evaluation backward: dx = g·scale/sqrt(var + ε), parameter gradients untouched.
        let g = try randomTensor(shape: shape, layout: layout, using: &generator)
        let dx = try #require(try bn.backward(g))
        expectClose(
            dx.scalars, reference.backward(doubles(g), shape: shape, training: false),
            tolerance: Tolerance.inputGradient, "\(label): dx")
        #expect(
            (bits(try bn.scaleGrad.scalars), bits(try bn.biasGrad.scalars)) == gradientsBefore,
            "\(label): evaluation backward must not change parameter gradients")
        let inplaceDx = try #require(try inplaceModule.backward(g, scale: 3, momentum: 0.5))
        #expect(bits(inplaceDx.scalars) == bits(dx.scalars), "\(label): inplace evaluation backward")
        #expect(try inplaceModule.scaleGrad.scalars.allSatisfy { $0 == 0 })
        try bn.updateParams(learnRate: 0.1)
        if !affine { #expect(try bn.state() == trained, "\(label): updateParams without affine") }
        #expect(bn.numOfProps == steps)
    }
}

/// Shapes for one rank: the required special cases, then seeded random ones.
func testShapes(for rank: Rank, randomCount: Int, seed: UInt64) -> [[Int]] {
    let k = rank.rawValue - 2
    let odd = [7, 3, 5]
    var shapes: [[Int]] = [
        [3, 1] + Array(odd.prefix(k)), // C = 1
        [4, 3] + Array(repeating: 1, count: k), // spatial = 1, N > 1
        [3, 5] + Array(odd.reversed().prefix(k)), // odd sizes
        [2, 2] + Array(repeating: 1, count: k), // M = 2, the smallest valid batch
    ]
    if k > 0 { shapes.append([1, 3] + [9] + Array(odd.prefix(k - 1))) } // N = 1, spatial > 1
    var generator = SeededGenerator(seed: seed)
    while shapes.count < 5 + randomCount {
        let shape =
            [Int.random(in: 1...4, using: &generator), Int.random(in: 1...5, using: &generator)]
            + (0..<k).map { _ in Int.random(in: 1...6, using: &generator) }
        if ChannelGeometry(shape: shape).valuesPerChannel >= 2 { shapes.append(shape) }
    }
    return shapes
}

@Suite("BatchNormND against the Double reference")
struct BatchNormNDReferenceTests {
    /// Every formula of the ReferenceSemantics article (Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md) over 12 steps (the default factor schedule
    /// reaches minFactor at step 10), for special and random shapes.
    @Test(arguments: allRanksAndLayouts)
    func trainingAndEvaluationOverRandomShapes(rank: Rank, layout: TensorLayout) throws {
        for (index, shape) in testShapes(for: rank, randomCount: 4, seed: UInt64(rank.rawValue)).enumerated() {
            try TrainingScenario(rank: rank, shape: shape, layout: layout, seed: UInt64(100 + index)).run()
        }
    }

    /// A non-default schedule: factor = max(0.8/n, 0.15) crosses its floor after step 5.
    @Test(arguments: allRanksAndLayouts)
    func nonDefaultFactorSchedule(rank: Rank, layout: TensorLayout) throws {
        let shape = [3, 4] + Array([5, 2, 3].prefix(rank.rawValue - 2))
        try TrainingScenario(
            rank: rank, shape: rank == .batchNorm ? [9, 4] : shape, layout: layout,
            initFactor: 0.8, minFactor: 0.15, seed: 7
        ).run()
    }

    /// `affine: false`: scale exactly 1, bias 0, gradients stay zero, updateParams changes nothing.
    @Test(arguments: allRanksAndLayouts)
    func withoutAffineParameters(rank: Rank, layout: TensorLayout) throws {
        let shape = [4, 3] + Array([3, 4, 2].prefix(rank.rawValue - 2))
        try TrainingScenario(
            rank: rank, shape: rank == .batchNorm ? [10, 3] : shape, layout: layout,
            affine: false, seed: 11
        ).run()
    }

    /// `ε = 0.5`, comparable to the variances (0.25 to 9): a misplaced or missing `ε` in
    /// `invstd`, the evaluation forward or the evaluation backward is off by 10⁻² or more
    /// (with the default 1e-5 it would hide below the tolerances).
    @Test(arguments: allRanksAndLayouts)
    func largeEpsilon(rank: Rank, layout: TensorLayout) throws {
        let shape = [3, 2] + Array([4, 3, 2].prefix(rank.rawValue - 2))
        try TrainingScenario(
            rank: rank, shape: rank == .batchNorm ? [12, 2] : shape, layout: layout, steps: 4,
            epsilon: 0.5, seed: 23
        ).run()
    }

    /// Data far from zero, `10⁴ + mean[c] + sd[c]·z`: statistics in `Double` and the
    /// shift-centered apply keep the same tight tolerances (a naive `E[x²] − E[x]²` in
    /// `Float` or `α·x + β` would lose about four digits).
    @Test(arguments: allRanksAndLayouts)
    func largeOffsetKeepsFullAccuracy(rank: Rank, layout: TensorLayout) throws {
        let shape = [3, 3] + Array([4, 5, 3].prefix(rank.rawValue - 2))
        try TrainingScenario(
            rank: rank, shape: rank == .batchNorm ? [40, 3] : shape, layout: layout,
            steps: 12, offset: 1e4, seed: 13
        ).run()
    }

    /// Planes longer than `CPUBackend.blockLength` (4096), so several statistics blocks merge per
    /// (n, c) in channels-first and several row blocks per item in channels-last.
    @Test(arguments: allRanksAndLayouts)
    func severalBlocksPerPlane(rank: Rank, layout: TensorLayout) throws {
        let shape: [Int] =
            switch rank {
            case .batchNorm: [9000, 2]
            case .batchNorm1D: [2, 2, 4999]
            case .batchNorm2D: [1, 3, 67, 65]
            case .batchNorm3D: [2, 2, 9, 23, 21]
            }
        try TrainingScenario(rank: rank, shape: shape, layout: layout, steps: 3, offset: 100, seed: 17).run()
    }

    /// More channels than `CPUBackend.blockLength`: a channels-last block is a single row.
    @Test(arguments: TensorLayout.allCases)
    func moreChannelsThanABlock(layout: TensorLayout) throws {
        try TrainingScenario(rank: .batchNorm, shape: [3, 5000], layout: layout, steps: 2, seed: 29).run()
        try TrainingScenario(rank: .batchNorm1D, shape: [2, 4500, 3], layout: layout, steps: 2, seed: 31).run()
    }

    /// A constant channel: `σ² = 0`, `invstd = 1/sqrt(ε)`, so `y = bias` exactly (the input
    /// term vanishes), the running variance takes the unbiased 0, and `dx` is
    /// `scale·invstd·(g − mean(g))`.
    @Test(arguments: TensorLayout.allCases)
    func constantChannels(layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 37)
        let shape = [2, 3, 2, 3, 2]
        let bn = try BatchNorm3D(maps: 3, using: &generator)
        var state = try bn.state()
        state.bias = [0.5, -1, 2]
        try bn.load(state)
        var reference = ReferenceBatchNorm(state: state)
        let constants: [Float] = [1e4 + 0.25, -3, 0]
        let values = (0..<shape.reduce(1, *)).map { constants[($0 / 12) % 3] }
        let x = try Tensor(values, shape: shape, layout: layout)
        let y = try bn(x)
        #expect(y.scalars == (0..<values.count).map { state.bias[($0 / 12) % 3] })
        _ = reference.trainingForward(doubles(x), shape: shape)
        #expect(try bn.mean.scalars == constants && bn.var.scalars == [0, 0, 0])
        #expect(bn.saveinvvar!.scalars == Array(repeating: Float(1 / 1e-5.squareRoot()), count: 3))
        let g = try randomTensor(shape: shape, layout: layout, using: &generator)
        let dx = try #require(try bn.backward(g))
        let expected = reference.backward(doubles(g), shape: shape, training: true)
        expectClose(dx.scalars, expected, tolerance: Tolerance.inputGradient, "dx of constant channels")
        expectClose(
            try bn.scaleGrad.scalars, reference.scaleGrad, tolerance: Tolerance.parameterGradient, floor: 1,
            "scaleGrad (0: x̂ = 0)")
        expectClose(try bn.biasGrad.scalars, reference.biasGrad, tolerance: Tolerance.parameterGradient, "biasGrad")
    }

    /// More than `CPUBackend.parallelThreshold` (65536) elements: threads engage.
    @Test(arguments: allRanksAndLayouts)
    func aboveTheParallelThreshold(rank: Rank, layout: TensorLayout) throws {
        let shape: [Int] =
            switch rank {
            case .batchNorm: [16500, 4]
            case .batchNorm1D: [3, 5, 4400]
            case .batchNorm2D: [2, 3, 110, 101]
            case .batchNorm3D: [2, 3, 9, 40, 31]
            }
        try TrainingScenario(rank: rank, shape: shape, layout: layout, steps: 2, seed: 19).run()
    }
}

@Suite("Running-average factor schedule")
struct FactorScheduleTests {
    /// Batch `k` holds `k·(c + 1) ± 1` in channel `c` (half each), so `μ = k·(c + 1)` and
    /// `σ² = 1` exactly. With the defaults the running mean is the cumulative average of the
    /// first 10 batch means (the factor 1/n weights the *new* batch: the first batch
    /// replaces the initial 0), then an exponential average with weight 0.1. Checked against
    /// closed forms, independently of the reference.
    @Test(arguments: TensorLayout.allCases)
    func cumulativeThenExponentialAverage(layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 3)
        let bn = try BatchNorm3D(maps: 2, using: &generator)
        let shape = [2, 2, 1, 2, 3] // M = 12 values per channel
        var expectedMean = [0.0, 0.0]
        for k in 1...13 {
            var values = [Float]()
            for _ in 0..<2 {
                for c in 0..<2 { for s in 0..<6 { values.append(Float(k * (c + 1)) + (s % 2 == 0 ? 1 : -1)) } }
            }
            _ = try bn(try Tensor(values, shape: shape, layout: layout))
            for c in 0..<2 {
                let mu = Double(k * (c + 1))
                expectedMean[c] = k <= 10 ? Double((k + 1) * (c + 1)) / 2 : 0.9 * expectedMean[c] + 0.1 * mu
            }
            expectClose(try bn.mean.scalars, expectedMean, tolerance: 1e-6, floor: 0, "step \(k): mean")
            // Every batch has σ² = 1: the unbiased running variance is M/(M−1) from the first step on.
            expectClose(try bn.var.scalars, [12.0 / 11, 12.0 / 11], tolerance: 1e-6, floor: 0, "step \(k): var")
            expectClose(
                bn.saveinvvar!.scalars, Array(repeating: 1 / (1 + 1e-5).squareRoot(), count: 2),
                tolerance: 1e-7, floor: 0, "step \(k): saveinvvar")
            #expect(bn.numOfProps == k)
        }
        // 5.5 after 10 cumulative steps, then 6.05, 6.645 and 7.2805.
        #expect(abs(try bn.mean.scalars[0] - 7.2805) < 1e-5)
    }

    /// `factor = max(initFactor/n, minFactor)` with `initFactor = 0.5`, `minFactor = 0.2`:
    /// factors 0.5, 0.25, 0.2, 0.2 on constant batches of mean 8 starting from mean 0.
    @Test func nonDefaultFactors() throws {
        var generator = SeededGenerator(seed: 3)
        let bn = try BatchNorm(maps: 1, initFactor: 0.5, minFactor: 0.2, using: &generator)
        var expected = 0.0
        for factor in [0.5, 0.25, 0.2, 0.2] {
            _ = try bn(try Tensor([7, 9, 7, 9], shape: [4, 1]))
            expected = (1 - factor) * expected + factor * 8
            expectClose(try bn.mean.scalars, [expected], tolerance: 1e-7, floor: 0, "mean with factor \(factor)")
        }
    }
}
