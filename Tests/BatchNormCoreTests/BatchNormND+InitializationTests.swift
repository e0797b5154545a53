import BatchNormCore
import BatchNormTestSupport
import Testing

/// the ReferenceSemantics article (Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md), construction: parameters of shape `(1, C, 1, ...)`,
/// `scale ~ Normal(1, sscale)` from a seedable generator (exactly 1 without `affine`),
/// `bias = 0`, running `mean = 0`, `var = 1`, `numOfProps = 0`, training mode.
@Suite("BatchNormND initialization")
struct BatchNormNDInitializationTests {
    @Test(arguments: Rank.allCases)
    func initialState(rank: Rank) throws {
        var generator = SeededGenerator(seed: 8)
        let bn = try rank.makeModule(maps: 4, using: &generator)
        let shape = [1, 4] + Array(repeating: 1, count: rank.rawValue - 2)
        for tensor in [try bn.scale, try bn.bias, try bn.mean, try bn.var, try bn.scaleGrad, try bn.biasGrad] {
            #expect(tensor.shape == shape && tensor.layout == .channelsFirst && tensor.dataType == .float32)
        }
        #expect(
            try bn.bias.scalars == [0, 0, 0, 0] && bn.mean.scalars == [0, 0, 0, 0] && bn.var.scalars == [1, 1, 1, 1])
        #expect(try bn.scaleGrad.scalars == [0, 0, 0, 0] && bn.biasGrad.scalars == [0, 0, 0, 0])
        #expect(bn.isTraining && bn.numOfProps == 0 && bn.inData == nil && bn.data == nil && bn.grad == nil)
        #expect(bn.savemean == nil && bn.saveinvvar == nil)
        #expect(bn.epsilon == 1e-5 && bn.initFactor == 1 && bn.minFactor == 0.1 && bn.sscale == 0.01)
        #expect(bn.affine && !bn.inplace && bn.name == nil && bn.dataRank == rank.rawValue)
        #expect(bn.numOfParams == 8 && bn.paramSize == 32)
        #expect(try bn.scale.scalars.allSatisfy { abs($0 - 1) < 0.06 }, "Normal(1, 0.01): within 6 standard deviations")
        #expect(try Set(bn.scale.scalars).count > 1, "the scales are drawn, not constant")
    }

    @Test func seededScaleIsReproducibleAndNormal() throws {
        var a = SeededGenerator(seed: 77), b = SeededGenerator(seed: 77), c = SeededGenerator(seed: 78)
        let first = try BatchNorm3D(maps: 2000, sscale: 0.1, using: &a)
        let second = try BatchNorm3D(maps: 2000, sscale: 0.1, using: &b)
        let third = try BatchNorm3D(maps: 2000, sscale: 0.1, using: &c)
        let scale = try first.scale.scalars.map(Double.init)
        #expect(try first.scale.scalars == second.scale.scalars)
        #expect(try first.scale.scalars != third.scale.scalars)
        let mean = scale.reduce(0, +) / 2000
        let deviation = (scale.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 1999).squareRoot()
        #expect(abs(mean - 1) < 5 * 0.1 / 2000.0.squareRoot(), "mean \(mean)")
        #expect(abs(deviation - 0.1) < 0.01, "standard deviation \(deviation)")
        #expect(try BatchNorm(maps: 3, sscale: 0.5, affine: false, using: &a).scale.scalars == [1, 1, 1])
        #expect(try BatchNorm(maps: 3, sscale: 0, using: &a).scale.scalars == [1, 1, 1])
    }
}
