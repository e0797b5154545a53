extension BatchNormND {
    /// The weight and bias of the convolution before this module with the module folded in:
    /// the convolution alone then computes what the convolution followed by this module's
    /// evaluation forward computes (see <doc:ConvolutionBlocks>).
    ///
    /// With the running statistics, per output channel `o`:
    ///
    ///     k[o]       = scale[o] / sqrt(var[o] + ε)
    ///     W'[o, ...] = k[o] · W[o, ...]
    ///     b'[o]      = k[o] · (b[o] − mean[o]) + bias[o]
    ///
    /// Every value is computed in `Double` from the stored values and rounded once to the
    /// result's element type, to nearest even. PyTorch's `fuse_conv_bn_weights` computes in
    /// `Float32` (and rounds twice for `Float16` weights), so its results may differ from these
    /// in the last bit.
    ///
    /// Shapes (`k...`: one to three kernel extents):
    /// - convolution: `weight` is `(Cout, Cin/groups, k...)`; output channel `o` is axis 0,
    ///   whatever `groups`.
    /// - transposed convolution: `weight` is `(Cin, Cout/groups, k...)`; output channel
    ///   `o = g·(Cout/groups) + j` of group `g` is `weight[g·(Cin/groups) + i, j, ...]` for every
    ///   `i` in `0..<Cin/groups`.
    ///
    /// The folded weight has the shape, layout and element type of `weight`. The folded bias
    /// has shape `[Cout]` and the element type of `bias`, or of `weight` when there is no bias
    /// (as PyTorch's `fuse_conv_bn_weights` keeps them). The module, `weight` and `bias` are
    /// not changed.
    ///
    /// ```swift
    /// bn.evalMode()
    /// let folded = try bn.foldedConvolution(weight: convolutionWeight, bias: convolutionBias)
    /// // conv(x, folded.weight, folded.bias) == bn(conv(x, convolutionWeight, convolutionBias))
    /// ```
    ///
    /// - Parameters:
    ///   - weight: The convolution's weight, rank 3 to 5 (1-D to 3-D convolutions), any
    ///     element type and layout.
    ///   - bias: The convolution's bias, shape `[Cout]`; `nil` (no bias) counts as zeros.
    ///   - transposed: Whether the convolution is transposed (PuzzleLib's `Deconv`, PyTorch's
    ///     `ConvTranspose`). Default `false`.
    ///   - groups: The convolution's groups, at least 1, dividing the channel counts. Default 1.
    /// - Returns: The folded weight and bias.
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before a state is loaded;
    ///   ``BatchNormError/invalidArgument(name:expected:actual:)`` in training mode (folding
    ///   uses the running statistics: call ``evalMode()`` first), for a weight of rank other
    ///   than 3 to 5, `groups` below 1 or not dividing the channel count of axis 0, output
    ///   channels other than ``maps``, a bias of shape other than `[Cout]`, or a folded value
    ///   that is not finite in its element type (a non-finite input, or an overflow such as a
    ///   `Float16` weight times a large `k`), naming the element.
    public func foldedConvolution(
        weight: Tensor, bias: Tensor? = nil, transposed: Bool = false, groups: Int = 1
    ) throws -> (weight: Tensor, bias: Tensor) {
        let parameters = try loadedParameters()
        guard !isTraining else {
            throw BatchNormError.invalidArgument(
                name: "mode", expected: "evaluation mode (folding uses the running statistics: call evalMode() first)",
                actual: "training mode")
        }
        let shape = weight.shape
        guard (3...5).contains(shape.count) else {
            throw BatchNormError.invalidArgument(
                name: "weight",
                expected: "a convolution weight of rank 3 to 5, (Cout, Cin/groups, k...) or, transposed, "
                    + "(Cin, Cout/groups, k...)",
                actual: "rank \(shape.count), shape \(shape)")
        }
        guard groups >= 1, shape[0] % groups == 0 else {
            let axis = transposed ? "input channels (axis 0 of a transposed convolution's weight)" : "output channels"
            throw BatchNormError.invalidArgument(
                name: "groups", expected: "a divisor (>= 1) of the weight's \(axis), \(shape[0])", actual: "\(groups)")
        }
        let outputChannels = transposed ? groups * shape[1] : shape[0]
        guard outputChannels == maps else {
            let what = transposed ? "groups × axis 1 = \(groups) × \(shape[1]) = \(outputChannels)" : "\(shape[0])"
            throw BatchNormError.invalidArgument(
                name: "weight's output channels", expected: "\(maps) (the module's maps)",
                actual: "\(what), shape \(shape)\(transposed ? " (transposed)" : "")")
        }
        if let bias, bias.shape != [maps] {
            throw BatchNormError.invalidArgument(
                name: "bias", expected: "shape [\(maps)] (one value per output channel)", actual: "shape \(bias.shape)")
        }

        let scale = parameters.scale.scalars, shift = parameters.bias.scalars
        let mean = parameters.mean.scalars, variance = parameters.variance.scalars
        let factors = (0..<maps).map { Double(scale[$0]) / (Double(variance[$0]) + epsilon).squareRoot() }

        // Logical row-major weight (A, B, K): A = shape[0], B = shape[1], K the kernel extents.
        // The output channel of row (a, b) is a, or, transposed, (a / (A/groups))·B + b.
        let values = weight.scalars
        let (rows, columns) = (shape[0], shape[1])
        let kernel = shape.dropFirst(2).reduce(1, *)
        let rowsPerGroup = rows / groups
        let weightRounding = Self.rounding(to: weight.dataType)
        var foldedWeight = [Float](repeating: 0, count: values.count)
        for a in 0..<rows {
            for b in 0..<columns {
                let factor = factors[transposed ? (a / rowsPerGroup) * columns + b : a]
                let start = (a * columns + b) * kernel
                for index in start..<(start + kernel) {
                    foldedWeight[index] = weightRounding(Double(values[index]) * factor)
                }
            }
        }
        let biasValues: [Float] = bias?.scalars ?? Array(repeating: 0, count: maps)
        let biasType = bias?.dataType ?? weight.dataType
        let biasRounding = Self.rounding(to: biasType)
        var foldedBias = [Float](repeating: 0, count: maps)
        for o in 0..<maps {
            let centered = Double(biasValues[o]) - Double(mean[o])
            foldedBias[o] = biasRounding(factors[o] * centered + Double(shift[o]))
        }

        let result = (
            weight: try Tensor(foldedWeight, shape: shape, layout: weight.layout, dataType: weight.dataType),
            bias: try Tensor(foldedBias, shape: [maps], dataType: biasType)
        )
        for (name, tensor) in [("weight", result.weight), ("bias", result.bias)] {
            if let index = tensor.scalars.firstIndex(where: { !$0.isFinite }) {
                throw BatchNormError.invalidArgument(
                    name: "folded \(name) element \(index) (logical order)",
                    expected: "a finite \(tensor.dataType) value (finite inputs, and a result within its range)",
                    actual: "\(tensor.scalars[index])")
            }
        }
        return result
    }

    /// How a `Double` becomes a `Float` that ``Tensor/init(_:shape:layout:dataType:)`` then
    /// rounds to `dataType` so that the two steps round once: to nearest for `Float32`; for
    /// the half types, to `Float` by rounding to odd (truncate, then set the last bit when
    /// inexact), which keeps enough information (24 bits ≥ 11 + 2) for the rounding to nearest
    /// even that follows to give the correctly rounded result of the `Double`.
    static func rounding(to dataType: TensorDataType) -> @Sendable (Double) -> Float {
        if dataType == .float32 { return { Float($0) } }
        return { value in
            var result = Float(value)
            guard result.isFinite, Double(result) != value else { return result }
            if abs(Double(result)) > abs(value) { result = result > 0 ? result.nextDown : result.nextUp }
            return Float(bitPattern: result.bitPattern | 1)
        }
    }
}
