import CBatchNormKernels

extension TensorDataType {
    /// The storage-type code of the C kernels (`BNK_TYPE_*`).
    var kernelType: Int32 {
        switch self {
        case .float32: Int32(BNK_TYPE_FLOAT32)
        case .float16: Int32(BNK_TYPE_FLOAT16)
        case .bfloat16: Int32(BNK_TYPE_BFLOAT16)
        }
    }
}

/// Element conversions and permutations behind ``Tensor``'s constructors, element access
/// and ``Tensor/converted(to:dataType:)``: one place for the rounding rule, the SIMD
/// conversion of the C kernels (F16C or AVX-512 where the CPU has them, integer code
/// elsewhere; widening exact, narrowing to nearest even as described at
/// ``TensorDataType``).
enum ElementConversion {
    /// Converts `count` elements of type `from` at `source` to type `to` at `destination`
    /// (which must not overlap it), with the kernels of `level` (every level gives the same bits).
    static func convert(
        _ source: UnsafeRawPointer, from: TensorDataType, to destination: UnsafeMutableRawPointer,
        _ to: TensorDataType, count: Int, level: KernelLevel = .selected
    ) {
        guard count > 0 else { return }
        if from == to {
            destination.copyMemory(from: source, byteCount: count * from.byteCount)
        } else {
            bnk_convert(level.cValue, from.kernelType, source, to.kernelType, destination, count)
        }
    }

    /// The element at `offset` of a buffer of `type`, widened to `Float` (exact).
    static func load(_ base: UnsafeRawPointer, _ type: TensorDataType, at offset: Int) -> Float {
        if type == .float32 { return base.load(fromByteOffset: 4 * offset, as: Float.self) }
        var value: Float = 0
        convert(base + offset * type.byteCount, from: type, to: &value, .float32, count: 1)
        return value
    }

    /// Writes `value` rounded to `type` at element `offset` of a buffer of `type`.
    static func store(_ value: Float, _ base: UnsafeMutableRawPointer, _ type: TensorDataType, at offset: Int) {
        if type == .float32 { return base.storeBytes(of: value, toByteOffset: 4 * offset, as: Float.self) }
        withUnsafePointer(to: value) { convert($0, from: .float32, to: base + offset * type.byteCount, type, count: 1) }
    }

    /// Copies the elements of `geometry` (each `byteCount` bytes) from `source`, stored in
    /// `from` order, to `destination` in `to` order. The buffers must not overlap.
    static func permute(
        _ source: UnsafeRawPointer, from: TensorLayout, to destination: UnsafeMutableRawPointer,
        _ to: TensorLayout, geometry: ChannelGeometry, byteCount: Int
    ) {
        switch byteCount {
        case 2:
            permute(
                source.assumingMemoryBound(to: UInt16.self), from: from,
                to: destination.assumingMemoryBound(to: UInt16.self), to, geometry: geometry)
        default:
            permute(
                source.assumingMemoryBound(to: UInt32.self), from: from,
                to: destination.assumingMemoryBound(to: UInt32.self), to, geometry: geometry)
        }
    }

    private static func permute<T>(
        _ source: UnsafePointer<T>, from: TensorLayout, to destination: UnsafeMutablePointer<T>,
        _ to: TensorLayout, geometry: ChannelGeometry
    ) {
        let (batch, channels, spatial) = (geometry.batch, geometry.channels, geometry.spatial)
        guard from != to && channels > 1 && spatial > 1 else {
            destination.update(from: source, count: geometry.elementCount)
            return
        }
        // Element (n, c, s): channels-first (n·C + c)·S + s, channels-last (n·S + s)·C + c.
        let toLast = from == .channelsFirst
        for n in 0..<batch {
            let item = n * channels * spatial
            for c in 0..<channels {
                let plane = item + c * spatial
                if toLast {
                    for s in 0..<spatial { destination[item + s * channels + c] = source[plane + s] }
                } else {
                    for s in 0..<spatial { destination[plane + s] = source[item + s * channels + c] }
                }
            }
        }
    }
}
