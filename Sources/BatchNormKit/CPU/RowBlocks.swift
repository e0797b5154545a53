/// The channels-last reduction blocks of a shape (also channels-first with `S = 1`): block
/// `k` covers rows `k·R ..< min((k+1)·R, N·S)` of all items (row `n·S + s` holds
/// `x[n, s, 0 ..< C]`), `R = max(1, L' / C)` with `L' = CPUBackend.rowBlockLength`. They depend
/// only on the shape, never on the thread count.
struct RowBlocks: Sendable {
    /// R, rows per block (the last block may have fewer).
    let rowsPerBlock: Int
    /// N·S.
    let totalRows: Int
    /// Number of blocks.
    let count: Int

    init(_ geometry: ChannelGeometry) {
        rowsPerBlock = max(1, CPUBackend.rowBlockLength / geometry.channels)
        totalRows = geometry.batch * geometry.spatial
        count = (totalRows + rowsPerBlock - 1) / rowsPerBlock
    }

    /// The first row of `block`.
    @inline(__always) func firstRow(_ block: Int) -> Int { block * rowsPerBlock }

    /// The rows of `block`.
    @inline(__always) func rows(_ block: Int) -> Int { min(rowsPerBlock, totalRows - block * rowsPerBlock) }
}
