/// The channels-first blocks of a shape with `S > 1`: block `(n·C + c)·K + k` covers
/// `x[n, c, k·L ..< min((k+1)·L, S)]`, with `K = ⌈S / L⌉` pieces per plane `(n, c)`. They
/// depend only on the shape and `L`, never on the thread count.
struct PlaneBlocks: Sendable {
    /// L, values per block (the last piece of a plane may have fewer).
    let length: Int
    /// S.
    let spatial: Int
    /// K, blocks per plane.
    let perPlane: Int
    /// Number of blocks, `N·C·K`.
    let count: Int

    init(_ geometry: ChannelGeometry, length: Int) {
        self.length = length
        spatial = geometry.spatial
        perPlane = (spatial + length - 1) / length
        count = geometry.batch * geometry.channels * perPlane
    }

    /// The plane `n·C + c` of `block`.
    @inline(__always) func plane(_ block: Int) -> Int { block / perPlane }

    /// The storage offset of `block`'s first value.
    @inline(__always) func start(_ block: Int) -> Int { plane(block) * spatial + (block % perPlane) * length }

    /// The values of `block`: `min(L, S − k·L)` for its piece `k`.
    @inline(__always) func values(_ block: Int) -> Int { min(length, spatial - (block % perPlane) * length) }
}
