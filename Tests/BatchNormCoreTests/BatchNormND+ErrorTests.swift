import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// A module after two training steps and one backward, so that running statistics,
/// `numOfProps`, saved tensors and parameter gradients all hold non-trivial values that a
/// throwing call could disturb.
func trainedModule(
    rank: Rank, layout: TensorLayout = .channelsFirst, maps: Int = 3, name: String? = "bn",
    inplace: Bool = false
) throws -> (module: BatchNormND, shape: [Int]) {
    var generator = SeededGenerator(seed: 42)
    let bn = try rank.makeModule(maps: maps, name: name, inplace: inplace, using: &generator)
    let shape = [2, maps] + Array([3, 2, 2].prefix(rank.rawValue - 2))
    if inplace { return (bn, shape) }
    for _ in 0..<2 {
        _ = try bn(try randomTensor(shape: shape, layout: layout, using: &generator))
        try bn.backward(try randomTensor(shape: shape, layout: layout, using: &generator))
    }
    return (bn, shape)
}

/// Every check of the ReferenceSemantics article (Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md): the thrown `BatchNormError` case, a description
/// naming the expected and actual values, and the module unchanged afterwards (state,
/// `numOfProps`, mode, gradients, saved statistics and tensors: see `ModuleSnapshot`).
@Suite("BatchNormND errors")
struct BatchNormNDErrorTests {
    @Test(arguments: allRanksAndLayouts)
    func wrongRank(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        let r = rank.rawValue
        for wrong in [shape + [2], Array(shape.dropLast()), [6]] where wrong.count != r {
            let data = try Tensor(zeros: wrong, layout: layout)
            expectError(
                .rankMismatch(argument: "data", expected: r, actual: wrong.count, shape: wrong),
                mentioning: ["data", "\(r)-d", "\(wrong.count)-d", "\(wrong)"], module: bn
            ) { _ = try bn(data) }
            expectError(
                .rankMismatch(argument: "grad", expected: r, actual: wrong.count, shape: wrong),
                mentioning: ["grad", "\(r)-d", "\(wrong.count)-d", "\(wrong)"], module: bn
            ) { try bn.backward(data) }
        }
        bn.evalMode()
        let data = try Tensor(zeros: shape + [1], layout: layout)
        expectError(
            .rankMismatch(argument: "data", expected: r, actual: r + 1, shape: shape + [1]),
            mentioning: ["\(r)-d", "\(r + 1)-d"], module: bn
        ) { _ = try bn(data) }
    }

    @Test(arguments: allRanksAndLayouts)
    func wrongMaps(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        for maps in [1, 4] {
            var wrong = shape
            wrong[1] = maps
            let data = try Tensor(zeros: wrong, layout: layout)
            expectError(
                .mapsMismatch(argument: "data", expected: 3, actual: maps),
                mentioning: ["data", "\(maps) maps", "expected: 3"], module: bn
            ) { _ = try bn(data) }
            expectError(
                .mapsMismatch(argument: "grad", expected: 3, actual: maps),
                mentioning: ["grad", "\(maps) maps", "expected: 3"], module: bn
            ) { try bn.backward(data) }
        }
    }

    @Test(arguments: allRanksAndLayouts)
    func gradientShapeDiffersFromData(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        var shapes = [[shape[0] + 1] + shape.dropFirst()]
        if shape.count > 2 {
            var other = shape
            other[other.count - 1] += 2
            shapes.append(other)
        }
        for wrong in shapes {
            let grad = try Tensor(zeros: wrong, layout: layout)
            expectError(
                .shapeMismatch(argument: "grad", expected: shape, actual: wrong),
                mentioning: ["grad", "\(wrong)", "expected: \(shape)"], module: bn
            ) { try bn.backward(grad) }
            expectError(.shapeMismatch(argument: "grad", expected: shape, actual: wrong), mentioning: [], module: bn) {
                try bn.backward(grad, updParamGrads: true, updGrad: false)
            }
        }
        // In evaluation mode the gradient must match the evaluation input.
        bn.evalMode()
        _ = try bn(try Tensor.ones(shape: shape, layout: layout))
        let grad = try Tensor(zeros: shapes[0], layout: layout)
        expectError(
            .shapeMismatch(argument: "grad", expected: shape, actual: shapes[0]), mentioning: ["\(shapes[0])"],
            module: bn
        ) { try bn.backward(grad) }
    }

    /// All ranks: for rank 2 both layouts store the same bytes, but the gradient must still
    /// declare the layout of the forward input.
    @Test(arguments: allRanksAndLayouts)
    func gradientLayoutDiffersFromData(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        let other: TensorLayout = layout == .channelsFirst ? .channelsLast : .channelsFirst
        let grad = try Tensor.ones(shape: shape, layout: other)
        expectError(
            .layoutMismatch(argument: "grad", expected: layout, actual: other),
            mentioning: ["grad", "layout \(other)", "expected: \(layout)"], module: bn
        ) { try bn.backward(grad) }
    }

    /// The CPU backend takes every data type, but a gradient must have the forward input's.
    @Test(arguments: allRanksAndLayouts)
    func gradientDataTypeDiffersFromData(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        for type in [TensorDataType.float16, .bfloat16] {
            let half = try Tensor(zeros: shape, layout: layout, dataType: type)
            expectError(
                .dataTypeMismatch(argument: "grad", expected: "float32", actual: type.rawValue),
                mentioning: ["grad", type.rawValue, "float32"], module: bn
            ) { try bn.backward(half) }
        }
    }

    @Test(arguments: Rank.allCases)
    func emptyModuleThrowsUntilLoaded(rank: Rank) throws {
        var generator = SeededGenerator(seed: 1)
        let bn = try rank.makeModule(maps: 2, name: "volume", empty: true, using: &generator)
        let shape = [3, 2] + Array(repeating: 2, count: rank.rawValue - 2)
        let x = try Tensor.arange(shape: shape)
        let error = BatchNormError.emptyModule(name: "volume")
        let fragments = ["volume", "empty", "load"]
        #expect(bn.numOfParams == 0 && bn.paramSize == 0)
        expectError(error, mentioning: fragments, module: bn) { _ = try bn(x) }
        expectError(error, mentioning: fragments, module: bn) { try bn.backward(x) }
        expectError(error, mentioning: fragments, module: bn) { try bn.zeroGradParams() }
        expectError(error, mentioning: fragments, module: bn) { try bn.updateParams(learnRate: 0.1) }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.state() }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.scale }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.bias }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.mean }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.var }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.scaleGrad }
        expectError(error, mentioning: fragments, module: bn) { _ = try bn.biasGrad }
        bn.evalMode()
        expectError(error, mentioning: fragments, module: bn) { _ = try bn(x) }

        let unnamed = try rank.makeModule(maps: 2, empty: true, using: &generator)
        expectError(.emptyModule(name: nil), mentioning: ["<unnamed>", "empty"], module: unnamed) { _ = try unnamed(x) }
    }

    /// `empty: true` then `load(state)`: the module behaves exactly like one created with that state.
    @Test(arguments: allRanksAndLayouts)
    func emptyModuleBecomesUsableAfterLoad(rank: Rank, layout: TensorLayout) throws {
        let (trained, shape) = try trainedModule(rank: rank, layout: layout)
        let state = try trained.state()
        var generator = SeededGenerator(seed: 5)
        let empty = try rank.makeModule(maps: 3, empty: true, using: &generator)
        try empty.load(state)
        #expect(try empty.state() == state && empty.numOfProps == 2 && empty.numOfParams == 6 && empty.paramSize == 24)
        #expect(try empty.scaleGrad.scalars == [0, 0, 0], "load zeroes parameter gradients")
        #expect(try empty.scale.shape == [1, 3] + Array(repeating: 1, count: rank.rawValue - 2))

        let x = try randomTensor(shape: shape, layout: layout, using: &generator)
        let g = try randomTensor(shape: shape, layout: layout, using: &generator)
        try trained.load(state) // same starting point, gradients zeroed
        let y = try empty(x), expectedY = try trained(x)
        #expect(bits(y.scalars) == bits(expectedY.scalars))
        #expect(try empty.state() == trained.state() && empty.numOfProps == 3)
        let dx = try #require(try empty.backward(g)), expectedDx = try #require(try trained.backward(g))
        #expect(bits(dx.scalars) == bits(expectedDx.scalars))
        #expect(try bits(empty.scaleGrad.scalars) == bits(trained.scaleGrad.scalars))

        // The reference, started from the loaded state, resumes the factor schedule at n = 3.
        var reference = ReferenceBatchNorm(state: state)
        let expected = reference.trainingForward(doubles(x), shape: shape)
        expectClose(y.scalars, expected, tolerance: Tolerance.output, "y after load")
        expectClose(try empty.mean.scalars, reference.mean, tolerance: Tolerance.runningStatistics, "mean after load")
    }

    @Test(arguments: allRanksAndLayouts)
    func backwardBeforeForward(rank: Rank, layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 9)
        let fresh = try rank.makeModule(maps: 3, name: "fresh", using: &generator)
        let shape = [2, 3] + Array(repeating: 3, count: rank.rawValue - 2)
        let g = try Tensor.ones(shape: shape, layout: layout)
        let fragments = ["backward", "before a forward"]
        expectError(.backwardBeforeForward(name: "fresh"), mentioning: fragments + ["fresh"], module: fresh) {
            try fresh.backward(g)
        }
        fresh.evalMode()
        expectError(.backwardBeforeForward(name: "fresh"), mentioning: fragments, module: fresh) {
            try fresh.backward(g)
        }

        // trainMode() and evalMode() drop the saved tensors: backward needs a new forward.
        let (bn, trainedShape) = try trainedModule(rank: rank, layout: layout)
        let grad = try Tensor.ones(shape: trainedShape, layout: layout)
        #expect(bn.inData != nil && bn.savemean != nil)
        bn.trainMode()
        #expect(bn.inData == nil && bn.data == nil && bn.grad == nil && bn.savemean == nil && bn.saveinvvar == nil)
        expectError(.backwardBeforeForward(name: "bn"), mentioning: fragments, module: bn) { try bn.backward(grad) }
        _ = try bn(try Tensor.arange(shape: trainedShape, layout: layout))
        try bn.backward(grad)
        bn.evalMode()
        expectError(.backwardBeforeForward(name: "bn"), mentioning: fragments, module: bn) { try bn.backward(grad) }
        _ = try bn(try Tensor.arange(shape: trainedShape, layout: layout))
        try bn.backward(grad)
        bn.evalMode()
        expectError(.backwardBeforeForward(name: "bn"), mentioning: fragments, module: bn) { try bn.backward(grad) }
        bn.trainMode()
        expectError(.backwardBeforeForward(name: "bn"), mentioning: fragments, module: bn) {
            try bn.backward(grad, updGrad: false)
        }
    }

    /// `M = N·∏S == 1`: the unbiased variance is undefined; `M == 0`: an empty batch.
    @Test(arguments: allRanksAndLayouts)
    func tooFewValuesPerChannel(rank: Rank, layout: TensorLayout) throws {
        let (bn, _) = try trainedModule(rank: rank, layout: layout)
        let k = rank.rawValue - 2
        var shapes: [(shape: [Int], m: Int)] = [
            ([1, 3] + Array(repeating: 1, count: k), 1), ([0, 3] + Array(repeating: 2, count: k), 0),
        ]
        if k > 0 { shapes.append(([2, 3] + [0] + Array(repeating: 4, count: k - 1), 0)) }
        for (shape, m) in shapes {
            let x = try Tensor.ones(shape: shape, layout: layout)
            expectError(
                .tooFewValuesPerChannel(expected: "at least 2", actual: m, shape: shape),
                mentioning: ["at least 2", "got \(m)", "\(shape)"], module: bn
            ) { _ = try bn(x) }
        }
        // One value per channel is fine in evaluation mode: no batch statistics are needed.
        let state = try bn.state()
        bn.evalMode()
        var generator = SeededGenerator(seed: 1234)
        let single = try randomTensor(shape: shapes[0].shape, layout: layout, using: &generator)
        let y = try bn(single)
        let reference = ReferenceBatchNorm(state: state)
        expectClose(
            y.scalars, reference.evaluationForward(doubles(single), shape: single.shape),
            tolerance: Tolerance.output, "evaluation with M = 1")
    }

    /// NaN, +Inf or −Inf in one channel: `nonFiniteStatistics` names that channel, and the
    /// running statistics, `numOfProps` and the saved tensors stay as they were.
    @Test(arguments: allRanksAndLayouts)
    func nonFiniteBatch(rank: Rank, layout: TensorLayout) throws {
        let (bn, shape) = try trainedModule(rank: rank, layout: layout)
        for bad in [Float.nan, .infinity, -.infinity] {
            for position in [0, 1] {
                var generator = SeededGenerator(seed: 77)
                let x = try randomTensor(shape: shape, layout: layout, using: &generator)
                var index = Array(repeating: 0, count: shape.count)
                index[1] = 1
                if position == 1 {
                    index[0] = shape[0] - 1
                    if shape.count > 2 { index[shape.count - 1] = shape.last! - 1 }
                }
                try x.setValue(bad, at: index)
                let before = ModuleSnapshot(bn)
                do {
                    _ = try bn(x)
                    Issue.record("a batch holding \(bad) must throw")
                } catch let error as BatchNormError {
                    guard case .nonFiniteStatistics(let channel, let mean, let variance) = error else {
                        Issue.record("expected nonFiniteStatistics, got \(error)")
                        continue
                    }
                    #expect(channel == 1)
                    #expect(!mean.isFinite || !variance.isFinite)
                    let text = error.description
                    #expect(text.contains("channel 1") && text.contains("not finite"), "\(text)")
                    #expect(text.contains("nan") || text.contains("inf"), "\(text) names no non-finite value")
                }
                #expect(ModuleSnapshot(bn) == before, "module changed by a non-finite batch of \(bad)")
            }
        }
        // The module still trains normally afterwards.
        var generator = SeededGenerator(seed: 78)
        _ = try bn(try randomTensor(shape: shape, layout: layout, using: &generator))
        #expect(bn.numOfProps == 3)
    }

    /// Finite input whose statistics overflow the `Float` running statistics (σ² ≈ 10⁴⁰):
    /// one such batch must not silently turn the running variance into +Inf.
    @Test func statisticsBeyondFloatRangeThrow() throws {
        let (bn, shape) = try trainedModule(rank: .batchNorm3D)
        let count = shape.reduce(1, *)
        let values = (0..<count).map { Float($0 % 2 == 0 ? 1e20 : -1e20) }
        let x = try Tensor(values, shape: shape)
        let before = ModuleSnapshot(bn)
        let error = #expect(throws: BatchNormError.self) { _ = try bn(x) }
        if case .nonFiniteStatistics(let channel, let mean, let variance)? = error {
            #expect(channel == 0 && mean == 0 && variance > 1e39, "\(error!)")
        } else {
            Issue.record("expected nonFiniteStatistics, got \(String(describing: error))")
        }
        #expect(ModuleSnapshot(bn) == before)
        #expect(try bn.var.scalars.allSatisfy(\.isFinite))
    }

    @Test(arguments: Rank.allCases)
    func inplaceInTraining(rank: Rank) throws {
        let (bn, shape) = try trainedModule(rank: rank, name: "inplaceBN", inplace: true)
        var generator = SeededGenerator(seed: 3)
        let x = try randomTensor(shape: shape, layout: .channelsLast, using: &generator)
        let original = bits(x.scalars)
        expectError(
            .inplaceInTraining(name: "inplaceBN"), mentioning: ["inplaceBN", "inplace", "train mode", "evaluation"],
            module: bn
        ) { _ = try bn(x) }
        #expect(bits(x.scalars) == original, "the input must be untouched")
        #expect(bn.numOfProps == 0)
        bn.evalMode()
        let y = try bn(x)
        #expect(y.sharesStorage(with: x) && bits(x.scalars) != original)
        bn.trainMode()
        expectError(.inplaceInTraining(name: "inplaceBN"), mentioning: ["inplaceBN"], module: bn) { _ = try bn(x) }
    }

    @Test func invalidInitArguments() throws {
        func expectInvalid(
            _ name: String, _ expected: String, _ actual: String,
            sourceLocation: SourceLocation = #_sourceLocation, _ make: () throws -> BatchNormND
        ) {
            expectError(
                .invalidArgument(name: name, expected: expected, actual: actual),
                mentioning: [name, expected, actual], sourceLocation: sourceLocation
            ) { _ = try make() }
        }
        let finite = "a finite value >= 0"
        expectInvalid("maps", ">= 1", "0") { try BatchNorm3D(maps: 0) }
        expectInvalid("maps", ">= 1", "-2") { try BatchNorm(maps: -2) }
        let positive = "a finite value > 0", unit = "in [0, 1]"
        expectInvalid("epsilon", positive, "-1e-05") { try BatchNorm3D(maps: 3, epsilon: -1e-5) }
        expectInvalid("epsilon", positive, "0.0") { try BatchNorm3D(maps: 3, epsilon: 0) }
        expectInvalid("epsilon", positive, "nan") { try BatchNorm2D(maps: 3, epsilon: .nan) }
        expectInvalid("epsilon", positive, "inf") { try BatchNorm1D(maps: 3, epsilon: .infinity) }
        expectInvalid("initFactor", unit, "-1.0") { try BatchNorm3D(maps: 3, initFactor: -1) }
        expectInvalid("initFactor", unit, "2.0") { try BatchNorm3D(maps: 3, initFactor: 2) }
        expectInvalid("minFactor", unit, "-0.1") { try BatchNorm3D(maps: 3, minFactor: -0.1) }
        expectInvalid("minFactor", unit, "1.5") { try BatchNorm3D(maps: 3, minFactor: 1.5) }
        expectInvalid("sscale", finite, "-0.01") { try BatchNorm3D(maps: 3, sscale: -0.01) }
        expectError(
            .invalidArgument(
                name: "class", expected: "BatchNorm, BatchNorm1D, BatchNorm2D or BatchNorm3D",
                actual: "BatchNormND"), mentioning: ["BatchNormND", "BatchNorm3D"]
        ) {
            _ = try BatchNormND(maps: 3)
        }
        // The boundaries are valid: the smallest positive epsilon, factors 0 and 1, sscale 0
        // (scale exactly 1).
        var generator = SeededGenerator(seed: 1)
        let edge = try BatchNorm3D(
            maps: 1, epsilon: .leastNonzeroMagnitude, initFactor: 0, minFactor: 1, sscale: 0,
            using: &generator)
        #expect(try edge.scale.scalars == [1])
    }

    @Test(arguments: Rank.allCases)
    func loadWithWrongCounts(rank: Rank) throws {
        let (bn, _) = try trainedModule(rank: rank)
        let good = try bn.state()
        for (label, count) in [("scale", 2), ("bias", 4), ("mean", 0), ("var", 1)] {
            var state = good
            switch label {
            case "scale": state.scale = Array(repeating: 1, count: count)
            case "bias": state.bias = Array(repeating: 0, count: count)
            case "mean": state.mean = Array(repeating: 0, count: count)
            default: state.var = Array(repeating: 1, count: count)
            }
            expectError(
                .parameterCountMismatch(parameter: label, expected: 3, actual: count),
                mentioning: [label, "\(count) values", "expected: 3"], module: bn
            ) { try bn.load(state) }
        }
        var negative = good
        negative.numOfProps = -1
        expectError(
            .invalidArgument(name: "numOfProps", expected: ">= 0", actual: "-1"),
            mentioning: ["numOfProps", ">= 0", "-1"], module: bn
        ) { try bn.load(negative) }
        var negativeVariance = good
        negativeVariance.var[1] = -0.5
        expectError(
            .invalidArgument(name: "var[1]", expected: "a finite value >= 0", actual: "-0.5"),
            mentioning: ["var[1]", ">= 0", "-0.5"], module: bn
        ) { try bn.load(negativeVariance) }
        var notFinite = good
        notFinite.scale[2] = .nan
        expectError(
            .invalidArgument(name: "scale[2]", expected: "a finite value", actual: "nan"),
            mentioning: ["scale[2]", "finite", "nan"], module: bn
        ) { try bn.load(notFinite) }

        // A failed load leaves an empty module empty.
        var generator = SeededGenerator(seed: 1)
        let empty = try rank.makeModule(maps: 2, empty: true, using: &generator)
        expectError(
            .parameterCountMismatch(parameter: "scale", expected: 2, actual: 3), mentioning: ["scale"],
            module: empty
        ) { try empty.load(good) }
        #expect(throws: BatchNormError.emptyModule(name: nil)) { _ = try empty.state() }
    }
}
