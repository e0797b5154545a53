import BatchNormKit
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
}
