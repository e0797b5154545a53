extension Tensor {
    /// A zero-filled tensor. Same as ``init(zeros:layout:dataType:)``.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func zeros(shape: [Int], layout: TensorLayout = .channelsFirst) throws -> Tensor {
        try Tensor(zeros: shape, layout: layout)
    }

    /// A tensor with every element equal to `value`.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func full(_ value: Float, shape: [Int], layout: TensorLayout = .channelsFirst) throws -> Tensor {
        let tensor = try Tensor(zeros: shape, layout: layout)
        tensor.storage.floats.update(repeating: value, count: tensor.elementCount)
        return tensor
    }

    /// A tensor of ones.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func ones(shape: [Int], layout: TensorLayout = .channelsFirst) throws -> Tensor {
        try full(1, shape: shape, layout: layout)
    }

    /// `0, 1, 2, ...` in logical row-major order, like `numpy.arange(count).reshape(shape)`.
    ///
    /// Values above 2²⁴ are rounded to the nearest `Float`.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func arange(shape: [Int], layout: TensorLayout = .channelsFirst) throws -> Tensor {
        let count = try elementCount(of: shape)
        return try Tensor((0..<count).map { Float($0) }, shape: shape, layout: layout)
    }

    /// Samples of `Normal(mean, standardDeviation)` drawn from `generator`, in logical
    /// row-major order, so a seeded generator gives the same logical tensor in both layouts.
    ///
    /// - Parameters:
    ///   - shape: Logical shape.
    ///   - mean: Mean of the distribution.
    ///   - standardDeviation: Standard deviation; 0 gives a constant tensor.
    ///   - layout: Storage order.
    ///   - generator: The random source, for example a ``SeededGenerator``.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func normal(
        shape: [Int], mean: Float = 0, standardDeviation: Float = 1,
        layout: TensorLayout = .channelsFirst,
        using generator: inout some RandomNumberGenerator
    ) throws -> Tensor {
        let count = try elementCount(of: shape)
        var values = [Float]()
        values.reserveCapacity(count)
        for _ in 0..<count {
            values.append(Float(Double(mean) + Double(standardDeviation) * generator.nextStandardNormal()))
        }
        return try Tensor(values, shape: shape, layout: layout)
    }

    /// Samples of `Normal(mean, standardDeviation)` from the system's random source.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative or overflowing shape.
    public static func normal(
        shape: [Int], mean: Float = 0, standardDeviation: Float = 1,
        layout: TensorLayout = .channelsFirst
    ) throws -> Tensor {
        var generator = SystemRandomNumberGenerator()
        return try normal(
            shape: shape, mean: mean, standardDeviation: standardDeviation,
            layout: layout, using: &generator)
    }
}
