import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// PuzzleLib's documentation example: arange(15000) as 5x3x10x10x10.
@Suite struct SeedExampleTests {
    @Test func runningStatisticsMatchFloat64() throws {
        let data = try Tensor.arange(shape: [5, 3, 10, 10, 10])
        var generator = SeededGenerator(seed: 7)
        let bn = try BatchNorm3D(maps: 3, using: &generator)
        _ = try bn(data)
        let expectedMean = [6499.5, 7499.5, 8499.5]
        for c in 0..<3 {
            #expect(abs(Double(try bn.mean.scalars[c]) - expectedMean[c]) / expectedMean[c] <= 1e-6)
            #expect(abs(Double(try bn.var.scalars[c]) - 18086950.64) / 18086950.64 <= 1e-6)
            let invstd = 1 / (18083333.25 + 1e-5).squareRoot()
            #expect(abs(Double(bn.saveinvvar!.scalars[c]) - invstd) / invstd <= 1e-6)
        }
    }

    /// The demo in full, in both layouts: the training output against the reference, the
    /// exact batch means, then (as `bnkit demo` does) an `inplace` evaluation module loaded
    /// with the trained state overwrites the data with the normalized values.
    @Test(arguments: TensorLayout.allCases)
    func trainingThenInplaceEvaluation(layout: TensorLayout) throws {
        let shape = [5, 3, 10, 10, 10]
        let data = try Tensor.arange(shape: shape, layout: layout)
        let original = doubles(data)
        var generator = SeededGenerator(seed: 1)
        let bn = try BatchNorm3D(maps: 3, using: &generator)
        var reference = ReferenceBatchNorm(state: try bn.state())
        let y = try bn(data)
        expectClose(
            y.scalars, reference.trainingForward(original, shape: shape), tolerance: Tolerance.output,
            "training y")
        #expect(bn.savemean!.scalars == [6499.5, 7499.5, 8499.5] && bn.numOfProps == 1)
        #expect(try bn.mean.scalars == [6499.5, 7499.5, 8499.5], "factor 1 on the first pass: mean = μ")

        let evaluation = try BatchNorm3D(maps: 3, inplace: true)
        try evaluation.load(try bn.state())
        evaluation.evalMode()
        let output = try evaluation(data)
        #expect(output.sharesStorage(with: data) && evaluation.data?.sharesStorage(with: data) == true)
        let evaluationReference = ReferenceBatchNorm(state: try bn.state())
        let expected = evaluationReference.evaluationForward(original, shape: shape)
        expectClose(data.scalars, expected, tolerance: Tolerance.output, "data after inplace evaluation")
        #expect(
            abs(data[0, 0, 0, 0, 0] - Float(-6499.5 / (18086950.64 + 1e-5).squareRoot()) * (try bn.scale.scalars[0]))
                < 1e-5)
        #expect(try evaluation.state() == bn.state(), "evaluation leaves the state alone")
    }

    /// A constant gradient passes nothing back through the training forward (the batch mean
    /// absorbs it): `dx = 0` up to rounding, `dbias = M = 5000`, `dscale = Σx̂ = 0`.
    @Test func constantGradientVanishes() throws {
        let data = try Tensor.arange(shape: [5, 3, 10, 10, 10])
        var generator = SeededGenerator(seed: 1)
        let bn = try BatchNorm3D(maps: 3, using: &generator)
        _ = try bn(data)
        let dx = try #require(try bn.backward(try Tensor.ones(shape: data.shape)))
        let invstd = bn.saveinvvar!.scalars
        #expect(dx.scalars.allSatisfy { abs($0) <= 1e-6 * invstd[0] }, "max |dx| \(dx.scalars.map(abs).max()!)")
        #expect(try bn.biasGrad.scalars == [5000, 5000, 5000])
        #expect(try bn.scaleGrad.scalars.allSatisfy { abs($0) < 1e-6 })
    }
}
