import CBatchNormKernels

/// How channels repeat along a channels-last run: the value at run offset `i` (runs start
/// at a row boundary) belongs to channel `i mod C`, and per-channel values replicated over
/// ``period`` positions line up with the run in whole chunks, so that the kernels process
/// a run with full vectors whatever C is.
struct ChannelPattern: Sendable {
    /// C.
    let channels: Int
    /// P: `lcm(C, 16)`, the shortest run of whole rows that is also whole vectors of 16
    /// values; or C when `lcm(C, 16)` exceeds ``maximumPeriod``.
    let period: Int
    /// Positions `0 ..< vectorPeriod` of a chunk are processed 16 at a time, the rest
    /// (`C mod 16` positions when `period == C`) one by one.
    let vectorPeriod: Int

    /// Periods longer than this fall back to `P = C` (vectors over whole 16-channel groups
    /// of each row, the last `C mod 16` channels scalar).
    static let maximumPeriod = 2048

    init(channels: Int) {
        self.channels = channels
        var a = channels, b = 16
        while b != 0 { (a, b) = (b, a % b) }
        let lcm = channels / a * 16
        if lcm <= ChannelPattern.maximumPeriod {
            period = lcm
            vectorPeriod = lcm
        } else {
            period = channels
            vectorPeriod = channels / 16 * 16
        }
    }

    /// Doubles of scratch per thread that a channels-last reduction with `arrays` per-position
    /// arrays needs: none when the kernels keep them on the stack (`P <= BNK_SHORT_PERIOD_MAX`).
    func scratchCount(arrays: Int) -> Int {
        period <= Int(BNK_SHORT_PERIOD_MAX) ? 0 : arrays * period
    }

    /// Runs `body` with the scratch of ``scratchCount(arrays:)``, 64-byte aligned (a cache
    /// line, one AVX-512 vector, so vector accesses never straddle two lines), or with `nil`.
    func withScratch<R>(arrays: Int, _ body: (UnsafeMutablePointer<Double>?) -> R) -> R {
        let count = scratchCount(arrays: arrays)
        guard count > 0 else { return body(nil) }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Double>.stride, alignment: 64)
        defer { raw.deallocate() }
        return body(raw.bindMemory(to: Double.self, capacity: count))
    }
}
