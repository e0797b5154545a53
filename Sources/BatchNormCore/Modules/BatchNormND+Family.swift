/// Batch normalization of `(N, C)` data (PuzzleLib's `BatchNorm`, PyTorch's `BatchNorm1d`
/// on 2-D input). All behaviour, parameters and errors are ``BatchNormND``'s.
public final class BatchNorm: BatchNormND {
    /// 0: statistics over the batch axis only.
    public override class var spatialDimensions: Int? { 0 }
}

/// Batch normalization of `(N, C, L)` data (PuzzleLib's `BatchNorm1D`). All behaviour,
/// parameters and errors are ``BatchNormND``'s.
public final class BatchNorm1D: BatchNormND {
    /// 1: statistics over the batch and length axes.
    public override class var spatialDimensions: Int? { 1 }
}

/// Batch normalization of `(N, C, H, W)` data (PuzzleLib's `BatchNorm2D`, PyTorch's
/// `BatchNorm2d`). All behaviour, parameters and errors are ``BatchNormND``'s.
public final class BatchNorm2D: BatchNormND {
    /// 2: statistics over the batch, height and width axes.
    public override class var spatialDimensions: Int? { 2 }
}

/// Batch normalization of `(N, C, D, H, W)` data after 3-D convolutions (PuzzleLib's
/// `BatchNorm3D`, PyTorch's `BatchNorm3d`), in NCDHW or channels-last NDHWC layout.
/// All behaviour, parameters and errors are ``BatchNormND``'s.
///
/// ```swift
/// let bn = try BatchNorm3D(maps: 3)
/// let x = try Tensor.arange(shape: [5, 3, 10, 10, 10])
/// let y = try bn(x)                    // training forward
/// try bn.mean                          // [6499.5, 7499.5, 8499.5]
/// bn.evalMode()
/// ```
public final class BatchNorm3D: BatchNormND {
    /// 3: statistics over the batch, depth, height and width axes.
    public override class var spatialDimensions: Int? { 3 }
}

extension BatchNormND {
    /// The family member that accepts data of `rank`: ``BatchNorm`` for 2, ``BatchNorm1D``
    /// for 3, ``BatchNorm2D`` for 4, ``BatchNorm3D`` for 5; `nil` for any other rank.
    ///
    /// ```swift
    /// let module = try BatchNormND.familyMember(forDataRank: x.rank)?.init(maps: x.shape[1], using: &generator)
    /// ```
    public static func familyMember(forDataRank rank: Int) -> BatchNormND.Type? {
        switch rank {
        case 2: BatchNorm.self
        case 3: BatchNorm1D.self
        case 4: BatchNorm2D.self
        case 5: BatchNorm3D.self
        default: nil
        }
    }
}
