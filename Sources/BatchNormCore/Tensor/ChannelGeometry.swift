/// A tensor shape `(N, C, S...)` seen as batch, channels and flattened spatial size.
///
/// Every batch-normalization kernel works on this three-axis view. Element `(n, c, s)`
/// lives at `(n·C + c)·S + s` in channels-first storage and at `(n·S + s)·C + c` in
/// channels-last storage. Rank 1 is `(N)` with `C = S = 1`; rank 0 is a scalar.
///
/// The products are not overflow-checked here: the shape must satisfy the shape rule that
/// every ``Tensor`` initializer, the `.npy` reader and the safetensors parser enforce (no
/// negative extent, and the non-zero extents' product in bytes fits in `Int`), under which
/// `S`, `N·S` and `N·C·S` always fit.
public struct ChannelGeometry: Equatable, Sendable {
    /// Batch size `N` (the first axis).
    public let batch: Int
    /// Channel count `C` (the second axis), 1 for rank < 2.
    public let channels: Int
    /// Product of the spatial axes `S` (axes 2...), 1 for rank <= 2.
    public let spatial: Int

    /// The view of a logical shape.
    public init(shape: [Int]) {
        batch = shape.first ?? 1
        channels = shape.count >= 2 ? shape[1] : 1
        spatial = shape.count > 2 ? shape[2...].reduce(1, *) : 1
    }

    /// Values per channel, `M = N · S`.
    public var valuesPerChannel: Int { batch * spatial }

    /// Total element count `N · C · S`.
    public var elementCount: Int { batch * channels * spatial }

    /// Storage offset of element `(n, c, s)` in `layout`.
    @inlinable
    public func offset(n: Int, c: Int, s: Int, layout: TensorLayout) -> Int {
        switch layout {
        case .channelsFirst: (n * channels + c) * spatial + s
        case .channelsLast: (n * spatial + s) * channels + c
        }
    }

    /// Storage offset of the element whose logical row-major position is `logical`.
    @inlinable
    public func storageOffset(ofLogical logical: Int, layout: TensorLayout) -> Int {
        switch layout {
        case .channelsFirst: return logical
        case .channelsLast:
            let s = logical % spatial, c = (logical / spatial) % channels, n = logical / (spatial * channels)
            return (n * spatial + s) * channels + c
        }
    }
}
