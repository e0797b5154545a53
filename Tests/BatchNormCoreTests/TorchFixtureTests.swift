import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

// Replays fixtures recorded from PyTorch's `nn.BatchNorm3d` (float64 and float32) through
// `BatchNorm3D`, in both layouts, and through the `Double` reference. The fixtures and the
// script that made them: `Fixtures/torch_bn3d_*.json`, `scripts/make_torch_fixtures.py`
// (its docstring says what is recorded and how to regenerate). No PyTorch needed here.
//
// Error metric, element by element against PyTorch's float64 run:
//
//     error = |actual − expected| / (|expected| + floor),   floor = rms(expected)
//
// where rms is taken over the compared array (one step's output, gradient or per-channel
// statistic), so values that happen to be near zero are judged against the array's scale.
// Tolerances (float32 machine epsilon is 1.2e-7):
// - `BatchNorm3D` (Float32 data and state): `libraryTolerance` = 2e-6 (about 16 ulp) for every
//   recorded quantity: y, running mean and variance after each step, dx, scaleGrad, biasGrad,
//   and the evaluation y and dx. Evaluation y is compared with PyTorch float64 after allowing
//   the part propagated exactly from the Float32 running statistics' rounding (significant
//   only with a large offset, see the comment there), and is also checked against the exact
//   evaluation with the module's own statistics, without allowance;
// - the `Double` reference: `referenceTolerance` = 1e-11.
// PyTorch's own float32 run is measured with the same metric and printed, not asserted.

/// One fixture file written by `scripts/make_torch_fixtures.py`.
struct TorchFixture: Decodable {
    struct Initial: Decodable {
        let weight, bias, runningMean, runningVar: [Float]
    }
    /// PyTorch's results of one step in one precision; training-only fields are nil in eval.
    struct Results<Scalar: Decodable & BinaryFloatingPoint>: Decodable {
        let y, gradInput: [Scalar]
        let runningMean, runningVar, weightGrad, biasGrad: [Scalar]?
    }
    struct Step: Decodable {
        let step: Int?
        let momentum: Double?
        let x, gradOutput: [Float]
        let float64: Results<Double>
        let float32: Results<Float>
    }

    let format: Int
    let name: String
    let shape: [Int]
    let memoryFormat: String
    let epsilon: Double
    let initFactor: Double
    let minFactor: Double
    let initial: Initial
    let trainSteps: [Step]
    let eval: Step

    /// Names of the committed cases (`torch_bn3d_<name>.json`); `fixtureFolderHoldsExactlyTheListedCases`
    /// keeps this list and the folder in step.
    static let caseNames = [
        "basic_2x3x4x5x6", "n1_1x2x3x3x3", "c1_4x1x2x2x2", "spatial1_3x4x1x1x1",
        "channels_last_2x3x2x3x4", "offset1000_2x2x3x4x4", "factors_2x2x2x3x3",
    ]

    static func load(_ name: String) throws -> TorchFixture {
        let url = URL(fileURLWithPath: StateFixtures.path("torch_bn3d_\(name).json"))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(TorchFixture.self, from: Data(contentsOf: url))
    }

    var initialState: BatchNormState {
        BatchNormState(
            scale: initial.weight, bias: initial.bias, mean: initial.runningMean,
            var: initial.runningVar, numOfProps: 0)
    }
}

/// `max |a − e| / (|e| + rms(e))` over the array; `.infinity` for a NaN or a length mismatch.
/// With `allowance`, `max(0, |a − e| − allowance)` replaces `|a − e|` element by element: the
/// part of the difference explained by something checked separately.
func torchRelativeError<A: BinaryFloatingPoint>(_ actual: [A], _ expected: [Double], allowance: [Double]? = nil)
    -> Double
{
    guard actual.count == expected.count, !expected.isEmpty, allowance.map({ $0.count == expected.count }) ?? true
    else {
        return .infinity
    }
    let floor = max(
        (expected.reduce(0) { $0 + $1 * $1 } / Double(expected.count)).squareRoot(),
        Double.leastNormalMagnitude)
    var worst = 0.0
    for (i, (a, e)) in zip(actual, expected).enumerated() {
        let error = max(0, abs(Double(a) - e) - (allowance?[i] ?? 0)) / (abs(e) + floor)
        if !(error <= worst) { worst = error.isNaN ? .infinity : error }
    }
    return worst
}

/// Largest error seen per quantity, for the printed summary and the assertions.
struct ErrorTally {
    private(set) var worst: [String: Double] = [:]
    private(set) var order: [String] = []

    mutating func record(_ quantity: String, _ error: Double) {
        if worst[quantity] == nil { order.append(quantity) }
        worst[quantity] = max(worst[quantity] ?? 0, error.isNaN ? .infinity : error)
    }

    var maximum: Double { worst.values.max() ?? .infinity }

    var summary: String {
        order.map { "\($0) \(String(format: "%.1e", worst[$0]!))" }.joined(separator: ", ")
    }
}

@Suite struct TorchFixtureTests {
    static let libraryTolerance = 2e-6
    static let referenceTolerance = 1e-11

    /// Every PyTorch JSON fixture in the folder is replayed, and every listed case exists.
    @Test func fixtureFolderHoldsExactlyTheListedCases() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: StateFixtures.directory)
        let names = Set(
            files.filter { $0.hasPrefix("torch_bn3d_") && $0.hasSuffix(".json") }
                .map { String($0.dropLast(".json".count)) })
        #expect(names == Set(TorchFixture.caseNames.map { "torch_bn3d_\($0)" }))
    }

    /// The fixture is what the script promises: the factor schedule, ≥ 12 steps, sizes.
    @Test(arguments: TorchFixture.caseNames)
    func fixtureIsWellFormed(_ name: String) throws {
        let fixture = try TorchFixture.load(name)
        #expect(fixture.format == 1)
        #expect(fixture.name == name)
        #expect(fixture.shape.count == 5)
        #expect(["contiguous", "channels_last_3d"].contains(fixture.memoryFormat))
        #expect(fixture.trainSteps.count >= 12)
        let count = fixture.shape.reduce(1, *), maps = fixture.shape[1]
        for (index, step) in fixture.trainSteps.enumerated() {
            #expect(step.step == index + 1)
            #expect(step.momentum == max(fixture.initFactor / Double(index + 1), fixture.minFactor))
            #expect(step.x.count == count && step.gradOutput.count == count)
            #expect(step.float64.y.count == count && step.float64.gradInput.count == count)
            #expect(step.float64.runningMean?.count == maps && step.float64.weightGrad?.count == maps)
        }
        #expect(fixture.eval.x.count == count && fixture.eval.float64.y.count == count)
    }

    /// `BatchNorm3D` against PyTorch's float64 run, the input in `layout`.
    @Test(arguments: TorchFixture.caseNames, TensorLayout.allCases)
    func batchNorm3DMatchesTorchFloat64(_ name: String, layout: TensorLayout) throws {
        let fixture = try TorchFixture.load(name)
        let shape = fixture.shape
        var generator = SeededGenerator(seed: 1)
        let bn = try BatchNorm3D(
            maps: shape[1], epsilon: fixture.epsilon, initFactor: fixture.initFactor,
            minFactor: fixture.minFactor, using: &generator)
        try bn.load(fixture.initialState)
        func tensor(_ values: [Float]) throws -> Tensor {
            try Tensor(values, shape: shape, layout: .channelsFirst).converted(to: layout)
        }

        var ours = ErrorTally(), torch32 = ErrorTally()
        for step in fixture.trainSteps {
            let stepNumber = try #require(step.step)
            try bn.zeroGradParams()
            let y = try bn(tensor(step.x))
            #expect(y.layout == layout && y.shape == shape)
            #expect(bn.numOfProps == stepNumber)
            let dx = try #require(try bn.backward(tensor(step.gradOutput)))
            #expect(dx.layout == layout && dx.shape == shape)

            let expected = step.float64
            let pairs: [(String, [Float], [Double]?, [Float]?)] = [
                ("y", y.scalars, expected.y, step.float32.y),
                ("mean", try bn.mean.scalars, expected.runningMean, step.float32.runningMean),
                ("var", try bn.var.scalars, expected.runningVar, step.float32.runningVar),
                ("dx", dx.scalars, expected.gradInput, step.float32.gradInput),
                ("scaleGrad", try bn.scaleGrad.scalars, expected.weightGrad, step.float32.weightGrad),
                ("biasGrad", try bn.biasGrad.scalars, expected.biasGrad, step.float32.biasGrad),
            ]
            for (quantity, actual, reference, torchFloat32) in pairs {
                let reference = try #require(reference, "\(name) step \(stepNumber): no \(quantity) in fixture")
                let error = torchRelativeError(actual, reference)
                ours.record(quantity, error)
                torch32.record(quantity, torchRelativeError(try #require(torchFloat32), reference))
                #expect(
                    error <= Self.libraryTolerance,
                    "\(name) [\(layout)] step \(stepNumber): \(quantity) relative error \(error)")
            }
        }

        // Evaluation: running statistics, consistent dx = g·scale/sqrt(var + ε); no parameter
        // gradients and no change to the running statistics.
        bn.evalMode()
        let stateBefore = try bn.state()
        let scaleGradBefore = try bn.scaleGrad.scalars, biasGradBefore = try bn.biasGrad.scalars
        let y = try bn(tensor(fixture.eval.x))
        let dx = try #require(try bn.backward(tensor(fixture.eval.gradOutput)))
        #expect(y.layout == layout && dx.layout == layout)
        #expect(try bn.state() == stateBefore)
        #expect(try bn.scaleGrad.scalars == scaleGradBefore && bn.biasGrad.scalars == biasGradBefore)
        // Against PyTorch's float64 run. The running statistics are Float32 (the ReferenceSemantics article, Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md),
        // PyTorch's float64 run keeps them in float64: their difference (already checked above
        // as "mean" and "var", a few 1e-8 relative) reaches y through (x − mean), which is
        // small against mean when the data have a large offset. With offset 1000 a half-ulp
        // of the mean (3e-5) is ~3e-5 of y. That propagated part, computed exactly from the two
        // states, is allowed on top of the tolerance, and the raw error is reported.
        let torchMean = try #require(fixture.trainSteps.last?.float64.runningMean)
        let torchVariance = try #require(fixture.trainSteps.last?.float64.runningVar)
        let state = try bn.state()
        let spatialCount = shape[2...].reduce(1, *), epsilon = fixture.epsilon
        var yOwnState = [Double](), dxOwnState = [Double](), yAllowance = [Double]()
        for (i, (x, g)) in zip(fixture.eval.x, fixture.eval.gradOutput).enumerated() {
            let c = (i / spatialCount) % shape[1]
            let (x, g) = (Double(x), Double(g))
            let (scale, bias) = (Double(state.scale[c]), Double(state.bias[c]))
            let (mean, variance) = (Double(state.mean[c]), Double(state.var[c]))
            yOwnState.append(scale * (x - mean) / (variance + epsilon).squareRoot() + bias)
            dxOwnState.append(g * scale / (variance + epsilon).squareRoot())
            // |∂y/∂mean|·|Δmean| + |∂y/∂var|·|Δvar|, first order (the second is ~1e-16 here).
            let torchStd = (torchVariance[c] + epsilon).squareRoot()
            yAllowance.append(
                abs(scale) / torchStd
                    * (abs(mean - torchMean[c])
                        + abs(x - torchMean[c]) * abs(variance - torchVariance[c]) / (2 * (torchVariance[c] + epsilon)))
            )
        }
        let evalChecks: [(String, [Float], [Double], [Double]?)] = [
            // The module's arithmetic: exact evaluation with its own Float32 statistics.
            ("eval y|own state", y.scalars, yOwnState, nil),
            ("eval dx|own state", dx.scalars, dxOwnState, nil),
            // PyTorch float64, less the part propagated from the statistics' rounding.
            ("eval y", y.scalars, fixture.eval.float64.y, yAllowance),
            ("eval dx", dx.scalars, fixture.eval.float64.gradInput, nil),
        ]
        for (quantity, actual, reference, allowance) in evalChecks {
            let error = torchRelativeError(actual, reference, allowance: allowance)
            ours.record(quantity, torchRelativeError(actual, reference))
            if allowance != nil { ours.record(quantity + " beyond state rounding", error) }
            #expect(error <= Self.libraryTolerance, "\(name) [\(layout)] \(quantity) relative error \(error)")
        }
        torch32.record("eval y", torchRelativeError(fixture.eval.float32.y, fixture.eval.float64.y))
        torch32.record("eval dx", torchRelativeError(fixture.eval.float32.gradInput, fixture.eval.float64.gradInput))

        print(
            "TorchFixture \(name) [\(layout)] BatchNorm3D vs torch float64: max \(String(format: "%.1e", ours.maximum)) "
                + "(\(ours.summary)); torch float32 vs float64: max \(String(format: "%.1e", torch32.maximum)) "
                + "(\(torch32.summary))")
    }

    /// The `Double` reference against PyTorch's float64 run: both compute the same formulas
    /// in double precision, so they agree to rounding.
    @Test(arguments: TorchFixture.caseNames)
    func referenceMatchesTorchFloat64(_ name: String) throws {
        let fixture = try TorchFixture.load(name)
        let shape = fixture.shape
        var reference = ReferenceBatchNorm(
            state: fixture.initialState, epsilon: fixture.epsilon,
            initFactor: fixture.initFactor, minFactor: fixture.minFactor)
        var tally = ErrorTally()
        for step in fixture.trainSteps {
            let y = reference.trainingForward(step.x.map(Double.init), shape: shape)
            let dx = reference.backward(step.gradOutput.map(Double.init), shape: shape, training: true)
            let expected = step.float64
            tally.record("y", torchRelativeError(y, expected.y))
            tally.record("mean", torchRelativeError(reference.mean, try #require(expected.runningMean)))
            tally.record("var", torchRelativeError(reference.variance, try #require(expected.runningVar)))
            tally.record("dx", torchRelativeError(dx, expected.gradInput))
            tally.record("scaleGrad", torchRelativeError(reference.scaleGrad, try #require(expected.weightGrad)))
            tally.record("biasGrad", torchRelativeError(reference.biasGrad, try #require(expected.biasGrad)))
        }
        let y = reference.evaluationForward(fixture.eval.x.map(Double.init), shape: shape)
        let dx = reference.backward(fixture.eval.gradOutput.map(Double.init), shape: shape, training: false)
        tally.record("eval y", torchRelativeError(y, fixture.eval.float64.y))
        tally.record("eval dx", torchRelativeError(dx, fixture.eval.float64.gradInput))
        #expect(tally.maximum <= Self.referenceTolerance, "\(name): \(tally.summary)")
        print(
            "TorchFixture \(name) Double reference vs torch float64: max \(String(format: "%.1e", tally.maximum)) (\(tally.summary))"
        )
    }
}
