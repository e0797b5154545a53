import BatchNormCore
import BatchNormReference
import BatchNormTestSupport
import Testing

/// Finite-difference checks of `backward` on the `Float` module itself (not the reference):
/// central differences of the scalar loss `L = Σ w·y`, `w` random, against `dx`,
/// `scaleGrad` and `biasGrad` from `backward(w)`.
///
/// Problems are small and well conditioned: `M` between 4 and 16 values per channel,
/// per-channel standard deviations in [0.5, 3], `ε = 1e-5`. The step `h = 2⁻⁷ ≈ 0.0078` is
/// a power of two, so `x ± h` is exact in `Float` for these magnitudes, and balances the
/// truncation error `O(h²·∂³y/∂x³)` of the nonlinear training forward against the
/// rounding error of `L` (`≈ 10⁻⁷·‖w‖·‖y‖`) divided by `2h`. `L` is accumulated in `Double`
/// from the `Float` outputs. Tolerance: `10⁻³` relative in training (observed worst case
/// 2·10⁻⁴, on `dx`), `10⁻⁴` in evaluation where `y` is linear in `x` and only rounding
/// remains (observed 1.3·10⁻⁵); floor the RMS of the numerical gradient. A missing term
/// of the training formula, such as the `x̂·Σ(g·x̂)` or `Σg` correction, is off by 10⁻¹ or
/// more (checked below).
@Suite("BatchNormND backward by finite differences")
struct BatchNormNDGradientCheckTests {
    static let step: Float = 1.0 / 128
    static let tolerance = 1e-3
    static let evaluationTolerance = 1e-4

    static func shape(for rank: Rank) -> [Int] {
        switch rank {
        case .batchNorm: [5, 3]
        case .batchNorm1D: [3, 2, 4]
        case .batchNorm2D: [2, 2, 3, 2]
        case .batchNorm3D: [2, 2, 2, 1, 2]
        }
    }

    /// A module with a non-trivial scale and bias, the data `x` and the loss weights `w`.
    static func problem(rank: Rank, layout: TensorLayout) throws -> (BatchNormND, Tensor, Tensor) {
        var generator = SeededGenerator(seed: UInt64(10 * rank.rawValue) + (layout == .channelsLast ? 1 : 0))
        let shape = shape(for: rank)
        let bn = try rank.makeModule(maps: shape[1], sscale: 0.4, using: &generator)
        var state = try bn.state()
        state.bias = (0..<shape[1]).map { _ in Float.random(in: -1...1, using: &generator) }
        state.mean = (0..<shape[1]).map { _ in Float.random(in: -1...1, using: &generator) }
        state.var = (0..<shape[1]).map { _ in Float.random(in: 0.5...2, using: &generator) }
        try bn.load(state)
        let x = try randomTensor(shape: shape, layout: layout, using: &generator)
        let w = try randomTensor(shape: shape, layout: layout, using: &generator)
        return (bn, x, w)
    }

    /// `L = Σ w·y` for the current mode, in `Double`.
    static func loss(_ bn: BatchNormND, _ x: Tensor, _ w: Tensor) throws -> Double {
        let y = try bn(x)
        return zip(y.scalars, w.scalars).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// `∂L/∂v` for each element of `values` (a tensor's storage, shared with `x` or a
    /// parameter of `bn`) by central differences.
    static func centralDifferences(of values: Tensor, _ bn: BatchNormND, _ x: Tensor, _ w: Tensor) throws -> [Double] {
        let storage = values.storage.floats
        return try (0..<values.elementCount).map { offset in
            let original = storage[offset]
            storage[offset] = original + step
            let plus = try loss(bn, x, w)
            let up = storage[offset]
            storage[offset] = original - step
            let minus = try loss(bn, x, w)
            let down = storage[offset]
            storage[offset] = original
            return (plus - minus) / (Double(up) - Double(down))
        }
    }

    /// Storage-order values in logical order.
    static func logicalOrder(_ derivatives: [Double], like tensor: Tensor) throws -> [Double] {
        let geometry = ChannelGeometry(shape: tensor.shape)
        return (0..<tensor.elementCount).map {
            derivatives[geometry.storageOffset(ofLogical: $0, layout: tensor.layout)]
        }
    }

    @Test(arguments: allRanksAndLayouts)
    func trainingBackward(rank: Rank, layout: TensorLayout) throws {
        let (bn, x, w) = try Self.problem(rank: rank, layout: layout)
        let numericDx = try Self.logicalOrder(Self.centralDifferences(of: x, bn, x, w), like: x)
        let numericScale = try Self.centralDifferences(of: bn.scale, bn, x, w)
        let numericBias = try Self.centralDifferences(of: bn.bias, bn, x, w)

        _ = try bn(x)
        try bn.zeroGradParams()
        let dx = try #require(try bn.backward(w))
        expectClose(dx.scalars, numericDx, tolerance: Self.tolerance, "training dx")
        expectClose(try bn.scaleGrad.scalars, numericScale, tolerance: Self.tolerance, "training dscale")
        expectClose(try bn.biasGrad.scalars, numericBias, tolerance: Self.tolerance, "training dbias")
        // The check has teeth: dropping the mean-subtraction terms (the evaluation formula
        // scale·invstd·g) is far outside the tolerance.
        let invstd = bn.saveinvvar!.scalars, scale = try bn.scale.scalars
        let spatial = ChannelGeometry(shape: x.shape).spatial, maps = x.shape[1]
        let naive = w.scalars.enumerated().map { i, g in
            Float(Double(g * scale[(i / spatial) % maps] * invstd[(i / spatial) % maps]))
        }
        #expect(ReferenceComparison.maximumRelativeError(naive, numericDx, floor: rootMeanSquare(numericDx)) > 0.05)
    }

    @Test(arguments: allRanksAndLayouts)
    func evaluationBackward(rank: Rank, layout: TensorLayout) throws {
        let (bn, x, w) = try Self.problem(rank: rank, layout: layout)
        bn.evalMode()
        let numericDx = try Self.logicalOrder(Self.centralDifferences(of: x, bn, x, w), like: x)
        _ = try bn(x)
        let dx = try #require(try bn.backward(w))
        expectClose(dx.scalars, numericDx, tolerance: Self.evaluationTolerance, "evaluation dx")
        #expect(
            try bn.scaleGrad.scalars.allSatisfy { $0 == 0 } && bn.biasGrad.scalars.allSatisfy { $0 == 0 },
            "evaluation backward accumulates no parameter gradients")
    }
}
