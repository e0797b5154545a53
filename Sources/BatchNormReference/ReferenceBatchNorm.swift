import BatchNormCore

/// The plain `Double` implementation of the ReferenceSemantics article (Sources/BatchNormCore/BatchNormCore.docc/ReferenceSemantics.md) that every kernel is checked
/// against. Deliberately naive: two passes per channel over logical row-major values,
/// every formula written as in the specification, nothing shared with the kernels.
///
/// Values are `(N, C, S...)` in logical row-major order (`Tensor.scalars`).
public struct ReferenceBatchNorm: Sendable {
    public var scale: [Double]
    public var bias: [Double]
    public var mean: [Double]
    public var variance: [Double]
    public var scaleGrad: [Double]
    public var biasGrad: [Double]
    public var numOfProps: Int
    public let epsilon: Double
    public let initFactor: Double
    public let minFactor: Double
    public let affine: Bool
    /// `μ` and `invstd` of the last training forward, and its input.
    public private(set) var savedMean: [Double] = []
    public private(set) var savedInvstd: [Double] = []
    private var savedInput: [Double] = []

    /// A reference that starts from `state`.
    public init(
        state: BatchNormState, epsilon: Double = 1e-5, initFactor: Double = 1, minFactor: Double = 0.1,
        affine: Bool = true
    ) {
        scale = state.scale.map(Double.init)
        bias = state.bias.map(Double.init)
        mean = state.mean.map(Double.init)
        variance = state.var.map(Double.init)
        scaleGrad = Array(repeating: 0, count: state.maps)
        biasGrad = Array(repeating: 0, count: state.maps)
        numOfProps = state.numOfProps
        self.epsilon = epsilon
        self.initFactor = initFactor
        self.minFactor = minFactor
        self.affine = affine
    }

    /// Indices of channel `c`'s values in logical order.
    static func indices(channel c: Int, shape: [Int]) -> [Int] {
        let channels = shape.count > 1 ? shape[1] : 1
        let spatial = shape.count > 2 ? shape[2...].reduce(1, *) : 1
        return (0..<shape[0]).flatMap { n in (0..<spatial).map { s in (n * channels + c) * spatial + s } }
    }

    /// Training forward: batch statistics, output, running-statistic update.
    public mutating func trainingForward(_ x: [Double], shape: [Int]) -> [Double] {
        numOfProps += 1
        let factor = max(initFactor / Double(numOfProps), minFactor)
        var y = [Double](repeating: 0, count: x.count)
        savedMean = []
        savedInvstd = []
        for c in 0..<scale.count {
            let index = Self.indices(channel: c, shape: shape)
            let m = Double(index.count)
            let mu = index.reduce(0) { $0 + x[$1] } / m
            let sigma2 = index.reduce(0) { $0 + (x[$1] - mu) * (x[$1] - mu) } / m
            let invstd = 1 / (sigma2 + epsilon).squareRoot()
            for i in index { y[i] = scale[c] * (x[i] - mu) * invstd + bias[c] }
            mean[c] = (1 - factor) * mean[c] + factor * mu
            variance[c] = (1 - factor) * variance[c] + factor * sigma2 * m / (m - 1)
            savedMean.append(mu)
            savedInvstd.append(invstd)
        }
        savedInput = x
        return y
    }

    /// Evaluation forward with the running statistics.
    public func evaluationForward(_ x: [Double], shape: [Int]) -> [Double] {
        var y = [Double](repeating: 0, count: x.count)
        for c in 0..<scale.count {
            for i in Self.indices(channel: c, shape: shape) {
                y[i] = scale[c] * (x[i] - mean[c]) / (variance[c] + epsilon).squareRoot() + bias[c]
            }
        }
        return y
    }

    /// Backward of the last training forward (`training: true`) or of the evaluation
    /// forward; accumulates parameter gradients as PuzzleLib's `accGradParams` in training.
    public mutating func backward(
        _ g: [Double], shape: [Int], training: Bool, updParamGrads: Bool = true,
        scale gradientScale: Double = 1, momentum: Double = 0
    ) -> [Double] {
        var dx = [Double](repeating: 0, count: g.count)
        for c in 0..<scale.count {
            let index = Self.indices(channel: c, shape: shape)
            if !training {
                for i in index { dx[i] = g[i] * scale[c] / (variance[c] + epsilon).squareRoot() }
                continue
            }
            let m = Double(index.count)
            let (input, mu, invstd) = (savedInput, savedMean[c], savedInvstd[c])
            let xhat = { (i: Int) in (input[i] - mu) * invstd }
            let sumG = index.reduce(0) { $0 + g[$1] }
            let sumGXhat = index.reduce(0) { $0 + g[$1] * xhat($1) }
            for i in index {
                dx[i] = scale[c] * savedInvstd[c] / m * (m * g[i] - sumG - xhat(i) * sumGXhat)
            }
            if updParamGrads && affine {
                scaleGrad[c] = gradientScale * sumGXhat + momentum * scaleGrad[c]
                biasGrad[c] = gradientScale * sumG + momentum * biasGrad[c]
            }
        }
        return dx
    }
}

extension ReferenceBatchNorm {
    /// The convolution weight and bias with the evaluation forward folded in, in `Double`:
    /// `k[o] = scale[o] / sqrt(var[o] + ε)`, `W'[o, ...] = k[o]·W[o, ...]`,
    /// `b'[o] = k[o]·(b[o] − mean[o]) + bias[o]`. Channel by channel: the elements of output
    /// channel `o` are row `o` of a `(Cout, Cin/groups, k...)` weight, or, transposed, column
    /// `j = o mod (Cout/groups)` of the rows of group `g = o div (Cout/groups)` of a
    /// `(Cin, Cout/groups, k...)` weight. `weight` is in logical row-major order; `bias` `nil`
    /// counts as zeros.
    public func foldedConvolution(
        weight: [Double], shape: [Int], bias: [Double]?, transposed: Bool = false, groups: Int = 1
    ) -> (weight: [Double], bias: [Double]) {
        let outputChannels = scale.count
        let kernel = shape[2...].reduce(1, *)
        var foldedWeight = [Double](repeating: .nan, count: weight.count)
        var foldedBias = [Double](repeating: .nan, count: outputChannels)
        for o in 0..<outputChannels {
            let k = scale[o] / (variance[o] + epsilon).squareRoot()
            let rows: [(row: Int, column: Int)]
            if transposed {
                let perGroup = outputChannels / groups, rowsPerGroup = shape[0] / groups
                let (g, j) = (o / perGroup, o % perGroup)
                rows = (g * rowsPerGroup..<(g + 1) * rowsPerGroup).map { ($0, j) }
            } else {
                rows = (0..<shape[1]).map { (o, $0) }
            }
            for (row, column) in rows {
                for s in 0..<kernel {
                    let index = (row * shape[1] + column) * kernel + s
                    foldedWeight[index] = weight[index] * k
                }
            }
            foldedBias[o] = k * ((bias?[o] ?? 0) - mean[o]) + self.bias[o]
        }
        return (foldedWeight, foldedBias)
    }
}

/// Element-wise relative error against the reference.
public enum ReferenceComparison {
    /// `max |actual − expected| / (|expected| + floor)`: relative error, with `floor`
    /// (stated by each test, typically the spread of the expected values) keeping values
    /// that are exactly zero in the reference from dividing by zero.
    public static func maximumRelativeError(_ actual: [Float], _ expected: [Double], floor: Double) -> Double {
        precondition(actual.count == expected.count, "compared arrays differ in length")
        var worst = 0.0
        for (a, e) in zip(actual, expected) {
            let error = abs(Double(a) - e) / (abs(e) + floor)
            if !(error <= worst) { worst = error.isNaN ? .infinity : error }
        }
        return worst
    }
}
