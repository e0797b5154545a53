import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// `backward`'s flags: `updGrad` (compute `dx`) and `updParamGrads` (accumulate the
/// parameter gradients) act independently, and `updParamGrads` has no effect in evaluation
/// mode or without `affine`.
@Suite("BatchNormND backward options")
struct BatchNormNDBackwardOptionTests {
    /// Two identical modules after one identical training forward.
    static func twins(rank: Rank, layout: TensorLayout, affine: Bool = true) throws -> (
        BatchNormND, BatchNormND, Tensor
    ) {
        var generator = SeededGenerator(seed: 31)
        let shape = [3, 2] + Array([3, 2, 2].prefix(rank.rawValue - 2))
        let a = try rank.makeModule(maps: 2, sscale: 0.5, affine: affine, using: &generator)
        let b = try rank.makeModule(maps: 2, affine: affine, using: &generator)
        try b.load(try a.state())
        let x = try randomTensor(shape: shape, layout: layout, using: &generator)
        _ = try a(x)
        _ = try b(x)
        return (a, b, try randomTensor(shape: shape, layout: layout, using: &generator))
    }

    @Test(arguments: allRanksAndLayouts)
    func updGradFalseStillAccumulatesParameterGradients(rank: Rank, layout: TensorLayout) throws {
        let (full, partial, g) = try Self.twins(rank: rank, layout: layout)
        let dx = try full.backward(g, scale: 0.5, momentum: 0)
        #expect(dx != nil && full.grad != nil)
        #expect(try partial.backward(g, updGrad: false, scale: 0.5, momentum: 0) == nil)
        #expect(partial.grad == nil)
        #expect(try bits(partial.scaleGrad.scalars) == bits(full.scaleGrad.scalars))
        #expect(try bits(partial.biasGrad.scalars) == bits(full.biasGrad.scalars))
        #expect(try partial.scaleGrad.scalars.allSatisfy { $0 != 0 }, "gradients were accumulated")
    }

    @Test(arguments: allRanksAndLayouts)
    func updParamGradsFalseLeavesParameterGradientsAlone(rank: Rank, layout: TensorLayout) throws {
        let (full, partial, g) = try Self.twins(rank: rank, layout: layout)
        let dx = try #require(try full.backward(g))
        let partialDx = try #require(try partial.backward(g, updParamGrads: false))
        #expect(bits(partialDx.scalars) == bits(dx.scalars))
        #expect(try partial.scaleGrad.scalars == [0, 0] && partial.biasGrad.scalars == [0, 0])
        // Neither output nor gradients: nothing to do, nothing changes.
        let before = ModuleSnapshot(partial)
        #expect(try partial.backward(g, updParamGrads: false, updGrad: false) == nil)
        #expect(partial.grad == nil)
        var after = ModuleSnapshot(partial)
        after.grad = before.grad
        #expect(after == before)
    }

    /// `scaleGrad ← scale·dscale + momentum·scaleGrad` over three calls on the same forward,
    /// against the closed form from the first call's gradients.
    @Test(arguments: TensorLayout.allCases)
    func accumulationOverRepeatedCalls(layout: TensorLayout) throws {
        let (bn, _, g) = try Self.twins(rank: .batchNorm3D, layout: layout)
        try bn.backward(g)
        let dscale = try bn.scaleGrad.scalars.map(Double.init), dbias = try bn.biasGrad.scalars.map(Double.init)
        try bn.backward(g, scale: 2, momentum: 0.5) // 2d + 0.5d = 2.5d
        try bn.backward(g, scale: -1, momentum: 3) // −d + 7.5d = 6.5d
        expectClose(try bn.scaleGrad.scalars, dscale.map { 6.5 * $0 }, tolerance: 1e-6, "scaleGrad")
        expectClose(try bn.biasGrad.scalars, dbias.map { 6.5 * $0 }, tolerance: 1e-6, "biasGrad")
        try bn.zeroGradParams()
        #expect(try bn.scaleGrad.scalars == [0, 0] && bn.biasGrad.scalars == [0, 0])
        let scale = try bn.scale.scalars
        try bn.updateParams(learnRate: 0.5)
        #expect(try bn.scale.scalars == scale, "zero gradients: updateParams changes nothing")
    }

    @Test(arguments: TensorLayout.allCases)
    func withoutAffineNoParameterGradients(layout: TensorLayout) throws {
        let (bn, _, g) = try Self.twins(rank: .batchNorm2D, layout: layout, affine: false)
        #expect(bn.numOfParams == 4 && bn.paramSize == 16, "registered even without affine, as in PuzzleLib")
        #expect(try bn.backward(g, updGrad: false) == nil)
        #expect(try bn.backward(g, scale: 2, momentum: 1) != nil)
        #expect(try bn.scaleGrad.scalars == [0, 0] && bn.biasGrad.scalars == [0, 0])
        try bn.updateParams(learnRate: 1)
        #expect(try bn.scale.scalars == [1, 1] && bn.bias.scalars == [0, 0])
    }

    @Test func moduleDescription() throws {
        #expect(try BatchNorm3D(maps: 2, name: "bn1").description == "Module BatchNorm3D (name: bn1)")
        #expect(try BatchNorm(maps: 2).description == "Module BatchNorm (name: None)")
        #expect(try BatchNorm1D(maps: 2).dataRank == 3 && BatchNorm2D(maps: 2).dataRank == 4)
    }
}
