import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// `foldedConvolution` against the `Double` reference (`ReferenceBatchNorm.foldedConvolution`,
/// which walks the weight channel by channel while the library walks it element by element):
/// every folded value must be the reference rounded once to the element type, bit for bit.
/// PyTorch's own results are compared in the formats tests (`FoldingFixtureTests`).
@Suite("BatchNormND folding")
struct BatchNormNDFoldingTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var dimensions: Int, transposed: Bool, groups: Int, hasBias: Bool
        var testDescription: String {
            "conv\(transposed ? "_transpose" : "")\(dimensions)d groups \(groups)\(hasBias ? "" : " no bias")"
        }
    }

    static let cases: [Case] = [1, 2, 3].flatMap { dimensions in
        [false, true].flatMap { transposed in
            [1, 2, 3].flatMap { groups in
                [true, false].map { Case(dimensions: dimensions, transposed: transposed, groups: groups, hasBias: $0) }
            }
        }
    }

    /// An evaluation-mode module of `maps` channels with varied scale, bias and statistics.
    static func evaluationModule(maps: Int, epsilon: Double = 1e-3, seed: UInt64 = 9) throws -> BatchNormND {
        var generator = SeededGenerator(seed: seed)
        let bn = try BatchNorm3D(maps: maps, epsilon: epsilon, name: "bn", using: &generator)
        let values = { (low: Double, high: Double) in
            (0..<maps).map { _ in Float(Double.random(in: low...high, using: &generator)) }
        }
        try bn.load(
            BatchNormState(
                scale: values(-2, 2), bias: values(-1, 1), mean: values(-3, 3), var: values(0.05, 4), numOfProps: 5))
        bn.evalMode()
        return bn
    }

    /// `value` rounded once to `dataType`: Swift's own conversions for `Float32` and `Float16`,
    /// and for bfloat16 the nearer of the two neighbours by `Double` distance (ties to even;
    /// below `Float`'s normal range a signed zero, the library's bfloat16 rule).
    static func roundedOnce(_ value: Double, to dataType: TensorDataType) -> Float {
        switch dataType {
        case .float32: return Float(value)
        case .float16: return Float(Float16(value))
        case .bfloat16:
            if value.magnitude < Double(Float.leastNormalMagnitude) { return value.sign == .minus ? -0.0 : 0 }
            var truncated = Float(value)
            if abs(Double(truncated)) > abs(value) {
                truncated = truncated > 0 ? truncated.nextDown : truncated.nextUp
            }
            let low = truncated.bitPattern & 0xFFFF_0000, high = low &+ 0x1_0000
            let lowDistance = abs(value - Double(Float(bitPattern: low)))
            let highDistance = abs(Double(Float(bitPattern: high)) - value)
            if lowDistance != highDistance { return Float(bitPattern: lowDistance < highDistance ? low : high) }
            return Float(bitPattern: (low >> 16) & 1 == 0 ? low : high)
        }
    }

    @Test(arguments: cases)
    func matchesTheReferenceRoundedOnce(_ testCase: Case) throws {
        let (maps, inputChannels) = (6, 12)
        let kernel = Array([3, 2, 2].prefix(testCase.dimensions))
        let shape =
            testCase.transposed
            ? [inputChannels, maps / testCase.groups] + kernel : [maps, inputChannels / testCase.groups] + kernel
        let bn = try Self.evaluationModule(maps: maps)
        let reference = ReferenceBatchNorm(state: try bn.state(), epsilon: bn.epsilon)
        var generator = SeededGenerator(seed: UInt64(shape.reduce(7, *)))
        for dataType in TensorDataType.allCases {
            for layout in TensorLayout.allCases {
                let weightValues = try Tensor.normal(shape: shape, using: &generator).scalars
                let weight = try Tensor(weightValues, shape: shape, layout: layout, dataType: dataType)
                // The bias keeps its own type (another than the weight's here).
                let biasType: TensorDataType = dataType == .float32 ? .float16 : .float32
                let biasValues = try Tensor.normal(shape: [maps], using: &generator)
                let bias = testCase.hasBias ? biasValues.converted(to: .channelsFirst, dataType: biasType) : nil
                let folded = try bn.foldedConvolution(
                    weight: weight, bias: bias, transposed: testCase.transposed, groups: testCase.groups)
                let expected = reference.foldedConvolution(
                    weight: doubles(weight), shape: shape, bias: bias.map(doubles), transposed: testCase.transposed,
                    groups: testCase.groups)
                #expect(folded.weight.shape == shape && folded.weight.layout == layout)
                #expect(folded.weight.dataType == dataType)
                #expect(folded.bias.shape == [maps] && folded.bias.dataType == (bias?.dataType ?? dataType))
                #expect(
                    bits(folded.weight.scalars) == bits(expected.weight.map { Self.roundedOnce($0, to: dataType) }),
                    "\(testCase.testDescription) \(dataType) \(layout): weight")
                #expect(
                    bits(folded.bias.scalars)
                        == bits(expected.bias.map { Self.roundedOnce($0, to: folded.bias.dataType) }),
                    "\(testCase.testDescription) \(dataType) \(layout): bias")
            }
        }
    }

    @Test func theReferenceFoldsEveryElementOnce() {
        // Transposed, 2 groups: W (4, 3, 1) holds output channels 0-2 in rows 0-1 and 3-5 in rows 2-3.
        let state = BatchNormState(
            scale: [1, 2, 3, 4, 5, 6], bias: [0, 0, 0, 0, 0, 100], mean: [0, 0, 0, 0, 0, 1],
            var: Array(repeating: 0.75, count: 6), numOfProps: 0)
        let reference = ReferenceBatchNorm(state: state, epsilon: 0.25)
        let folded = reference.foldedConvolution(
            weight: Array(repeating: 1, count: 12), shape: [4, 3, 1], bias: nil, transposed: true, groups: 2)
        #expect(folded.weight == [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6])
        #expect(folded.bias == [0, 0, 0, 0, 0, 94])
    }

    @Test func halfResultsAreRoundedOnceFromDouble() throws {
        // var + ε = 1, so k = scale = 1 and b' = 0 − mean + bias = 1 + 2⁻¹¹ + 2⁻⁴⁰ exactly in
        // Double: just above the midpoint of the Float16 neighbours 1 and 1 + 2⁻¹⁰, so the
        // correct result is 1 + 2⁻¹⁰; rounding to Float first gives the midpoint 1 + 2⁻¹¹,
        // which then rounds to even, 1.
        let bn = try BatchNorm1D(maps: 1, epsilon: 0.25, empty: true)
        try bn.load(BatchNormState(scale: [1], bias: [1 + 0x1p-11], mean: [-0x1p-40], var: [0.75], numOfProps: 0))
        bn.evalMode()
        let weight = try Tensor([1, 2, -3], shape: [1, 1, 3], dataType: .float16)
        let folded = try bn.foldedConvolution(weight: weight, bias: nil)
        #expect(folded.bias.dataType == .float16)
        #expect(folded.bias.scalars == [1 + 0x1p-10])
        #expect(folded.weight.scalars == [1, 2, -3])
    }

    @Test func leavesTheModuleAndTheInputsUnchanged() throws {
        let bn = try Self.evaluationModule(maps: 4)
        let before = ModuleSnapshot(bn)
        let weight = try Tensor.arange(shape: [4, 2, 3, 3, 3])
        let bias = try Tensor([1, 2, 3, 4], shape: [4])
        let (weightBits, biasBits) = (bits(weight.scalars), bits(bias.scalars))
        let folded = try bn.foldedConvolution(weight: weight, bias: bias)
        #expect(!folded.weight.sharesStorage(with: weight) && !folded.bias.sharesStorage(with: bias))
        #expect(bits(weight.scalars) == weightBits && bits(bias.scalars) == biasBits)
        #expect(ModuleSnapshot(bn) == before)
    }

    /// Expects `body` to throw `BatchNormError.invalidArgument` for `name`, with a description
    /// mentioning every fragment, and the module unchanged.
    func expectInvalid(
        _ name: String, mentioning fragments: [String], module: BatchNormND,
        sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
    ) {
        let before = ModuleSnapshot(module)
        do {
            try body()
            Issue.record("expected an error for \(name), nothing was thrown", sourceLocation: sourceLocation)
        } catch let error as BatchNormError {
            guard case .invalidArgument(let thrownName, _, _) = error else {
                Issue.record("expected invalidArgument(\(name)), got \(error)", sourceLocation: sourceLocation)
                return
            }
            #expect(thrownName == name, sourceLocation: sourceLocation)
            for fragment in fragments {
                #expect(
                    error.description.contains(fragment), "\"\(error.description)\" does not mention \"\(fragment)\"",
                    sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("expected invalidArgument(\(name)), got \(error)", sourceLocation: sourceLocation)
        }
        #expect(ModuleSnapshot(module) == before, "module changed by a throwing call", sourceLocation: sourceLocation)
    }

    @Test func rejectsBadArguments() throws {
        let bn = try Self.evaluationModule(maps: 4)
        let weight = try Tensor(zeros: [4, 6, 3, 3])
        for shape in [[4, 6], [4, 6, 1, 1, 1, 1]] {
            expectInvalid("weight", mentioning: ["rank 3 to 5", "rank \(shape.count)", "\(shape)"], module: bn) {
                _ = try bn.foldedConvolution(weight: try Tensor(zeros: shape))
            }
        }
        for groups in [0, -1, 3] {
            expectInvalid("groups", mentioning: ["divisor", "output channels, 4", "\(groups)"], module: bn) {
                _ = try bn.foldedConvolution(weight: weight, groups: groups)
            }
        }
        expectInvalid("groups", mentioning: ["input channels", "transposed", ", 6", "got 4"], module: bn) {
            _ = try bn.foldedConvolution(weight: try Tensor(zeros: [6, 1, 3]), transposed: true, groups: 4)
        }
        expectInvalid(
            "weight's output channels", mentioning: ["4 (the module's maps)", "got 5", "[5, 6, 3]"], module: bn
        ) { _ = try bn.foldedConvolution(weight: try Tensor(zeros: [5, 6, 3])) }
        // Transposed: the output channels are groups × axis 1 (8 here), not axis 0 (4).
        expectInvalid("weight's output channels", mentioning: ["2 × 4 = 8", "[4, 4, 3]", "transposed"], module: bn) {
            _ = try bn.foldedConvolution(weight: try Tensor(zeros: [4, 4, 3]), transposed: true, groups: 2)
        }
        for shape in [[3], [1, 4], [4, 1]] {
            expectInvalid("bias", mentioning: ["shape [4]", "shape \(shape)"], module: bn) {
                _ = try bn.foldedConvolution(weight: weight, bias: try Tensor(zeros: shape))
            }
        }
    }

    @Test func rejectsNonFiniteResults() throws {
        // k = 256/sqrt(0.75 + 0.25) = 256: a Float16 weight of 300 becomes 76800 > 65504.
        let bn = try BatchNorm2D(maps: 2, epsilon: 0.25, empty: true)
        try bn.load(BatchNormState(scale: [1, 256], bias: [0, 0], mean: [0, 0], var: [0.75, 0.75], numOfProps: 0))
        bn.evalMode()
        let large = try Tensor([1, 1, 300, 1], shape: [2, 1, 2, 1], dataType: .float16)
        expectInvalid("folded weight element 2 (logical order)", mentioning: ["finite float16", "inf"], module: bn) {
            _ = try bn.foldedConvolution(weight: large)
        }
        // The same weight in Float32 folds.
        let folded = try bn.foldedConvolution(weight: large.converted(to: .channelsFirst, dataType: .float32))
        #expect(folded.weight.scalars == [1, 1, 76800, 256])
        let nan = try Tensor([1, 1, 1, .nan], shape: [2, 1, 2, 1])
        expectInvalid("folded weight element 3 (logical order)", mentioning: ["nan"], module: bn) {
            _ = try bn.foldedConvolution(weight: nan)
        }
        expectInvalid("folded bias element 1 (logical order)", mentioning: ["finite float32"], module: bn) {
            _ = try bn.foldedConvolution(
                weight: try Tensor(zeros: [2, 1, 1, 1]), bias: try Tensor([0, .infinity], shape: [2]))
        }
    }

    @Test func needsEvaluationModeAndAState() throws {
        var generator = SeededGenerator(seed: 1)
        let training = try BatchNorm3D(maps: 2, using: &generator)
        let weight = try Tensor(zeros: [2, 1, 1, 1, 1])
        expectInvalid("mode", mentioning: ["evaluation mode", "evalMode()", "training mode"], module: training) {
            _ = try training.foldedConvolution(weight: weight)
        }
        let empty = try BatchNorm3D(maps: 2, name: "bn0", empty: true)
        empty.evalMode()
        expectError(.emptyModule(name: "bn0"), mentioning: ["bn0", "load"], module: empty) {
            _ = try empty.foldedConvolution(weight: weight)
        }
    }
}
