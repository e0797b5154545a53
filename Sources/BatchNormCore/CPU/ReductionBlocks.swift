/// The fixed blocks of one per-channel reduction (statistics or gradient sums) of a shape
/// and layout. They depend only on the shape, the layout and the block length, never on
/// the thread count, so a reduction that stores each block's partial results in its own
/// slot and merges them in block order is bitwise identical for any thread count.
///
/// - Plane blocks (channels-first with `S > 1`): block `(n·C + c)·K + k` covers
///   `x[n, c, k·L ..< min((k+1)·L, S)]`, `K = ⌈S / L⌉` pieces per plane `(n, c)`; one
///   channel per block, so one partial result (``width`` 1).
/// - Row blocks (channels-last, and channels-first with `S = 1`, the same storage): block `k`
///   covers rows `k·R ..< min((k+1)·R, N·S)` of all items (row `n·S + s` holds
///   `x[n, s, 0 ..< C]`; rows of consecutive items are contiguous), `R = max(1, L' / C)` with
///   `L' = CPUBackend.rowBlockLength`; every channel per block (``width`` C).
struct ReductionBlocks: Sendable {
    enum Partition: Sendable {
        /// Plane blocks of `length` (L) values: `spatial` S and `perPlane` K.
        case planes(length: Int, spatial: Int, perPlane: Int)
        /// Row blocks of `rowsPerBlock` (R) rows out of `totalRows` (N·S), over `pattern`.
        case rows(rowsPerBlock: Int, totalRows: Int, pattern: ChannelPattern)
    }

    let partition: Partition
    /// C.
    let channels: Int
    /// Number of blocks.
    let count: Int

    /// - Parameter planeLength: L, the values per plane block.
    init(_ geometry: ChannelGeometry, layout: TensorLayout, planeLength: Int) {
        channels = geometry.channels
        if layout == .channelsFirst && geometry.spatial > 1 {
            let perPlane = (geometry.spatial + planeLength - 1) / planeLength
            partition = .planes(length: planeLength, spatial: geometry.spatial, perPlane: perPlane)
            count = geometry.batch * geometry.channels * perPlane
        } else {
            let rowsPerBlock = max(1, CPUBackend.rowBlockLength / geometry.channels)
            let totalRows = geometry.batch * geometry.spatial
            partition = .rows(
                rowsPerBlock: rowsPerBlock, totalRows: totalRows,
                pattern: ChannelPattern(channels: geometry.channels))
            count = (totalRows + rowsPerBlock - 1) / rowsPerBlock
        }
    }

    /// Partial results per block: 1 for plane blocks, C for row blocks.
    var width: Int {
        if case .planes = partition { return 1 }
        return channels
    }

    /// Block `index`: the storage offset of its first value, its length (plane block: values;
    /// row block: rows) and its channel (plane block; 0 for a row block, which holds all).
    @inline(__always)
    func block(_ index: Int) -> (start: Int, length: Int, channel: Int) {
        switch partition {
        case let .planes(length, spatial, perPlane):
            let plane = index / perPlane, piece = index % perPlane
            return (plane * spatial + piece * length, min(length, spatial - piece * length), plane % channels)
        case let .rows(rowsPerBlock, totalRows, _):
            let first = index * rowsPerBlock
            return (first * channels, min(rowsPerBlock, totalRows - first), 0)
        }
    }

    /// Plane blocks: how many blocks hold one channel (`N·K`), and the index of the `i`-th of
    /// channel `c`'s blocks in block order (`(n·C + c)·K + k` with `n = i / K`, `k = i mod K`).
    var planeBlocksPerChannel: Int { count / channels }

    @inline(__always)
    func planeBlock(ofChannel c: Int, _ i: Int) -> Int {
        guard case let .planes(_, _, perPlane) = partition else { return i }
        return ((i / perPlane) * channels + c) * perPlane + i % perPlane
    }

    /// Calls `body(slot, n)` for every block holding channel `c`, in block order: `slot` is
    /// where the block's partial result for `c` is stored (`index · width + c` for row
    /// blocks), `n` the block's number of values of `c`.
    @inline(__always)
    func forEachPartial(ofChannel c: Int, _ body: (_ slot: Int, _ values: Double) -> Void) {
        switch partition {
        case let .planes(_, _, perPlane):
            var plane = c
            while plane * perPlane < count {
                for index in plane * perPlane..<(plane + 1) * perPlane { body(index, Double(block(index).length)) }
                plane += channels
            }
        case .rows:
            for index in 0..<count { body(index * channels + c, Double(block(index).length)) }
        }
    }
}
