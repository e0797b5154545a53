// The CPU backend's inner loops, on raw pointers.
//
// Shape legend: N batch, C channels, S spatial size (∏ D·H·W), M = N·S values per channel.
// A *run* is a stretch of contiguous storage:
// - channels-first (NCDHW): one channel's values, `x[n, c, s0 ..< s1]`, so every value of a
//   run shares one set of per-channel coefficients (a scalar broadcast to all lanes);
// - channels-last (NDHWC): whole rows `x[n, s, 0 ..< C]`, so value `i` of the run belongs to
//   channel `i mod C`. A ``ChannelPattern`` of period `P` (a multiple of C, and of the
//   vector width when that is cheap) replicates per-channel values so that the run is
//   processed `P` values at a time with full vectors whatever C is.
//
// Vectors are `SIMD16<Float>` (one AVX-512 register, two AVX2 or four SSE registers) and
// `SIMD8<Double>`; sums are accumulated in `Double`. Every value goes through the same
// IEEE operations in vector lanes and in scalar tails (no fused multiply-add), so the
// element results never depend on where a thread's range starts.
//
// These are the `generic` kernels (``KernelLevel``); on CPUs with AVX2 or AVX-512 the
// callers run the C kernels of CBatchNormKernels instead, which follow the same loop
// structure (see include/CBatchNormKernels.h).

import CBatchNormKernels

/// Sixteen `Float` lanes.
typealias FloatVector = SIMD16<Float>
/// Eight `Double` lanes: half a ``FloatVector`` widened.
typealias DoubleVector = SIMD8<Double>

extension UnsafePointer where Pointee == Float {
    /// Sixteen values starting at `self + offset` (no alignment needed).
    @inline(__always)
    func vector(at offset: Int) -> FloatVector {
        UnsafeRawPointer(self + offset).loadUnaligned(as: FloatVector.self)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    /// Stores sixteen values at `self + offset` (no alignment needed).
    @inline(__always)
    func store(_ value: FloatVector, at offset: Int) {
        UnsafeMutableRawPointer(self + offset).storeBytes(of: value, as: FloatVector.self)
    }
}

extension UnsafeMutablePointer where Pointee == Double {
    /// Eight values starting at `self + offset`.
    @inline(__always)
    func vector(at offset: Int) -> DoubleVector {
        UnsafeRawPointer(self + offset).loadUnaligned(as: DoubleVector.self)
    }

    /// Stores eight values at `self + offset`.
    @inline(__always)
    func store(_ value: DoubleVector, at offset: Int) {
        UnsafeMutableRawPointer(self + offset).storeBytes(of: value, as: DoubleVector.self)
    }
}

extension FloatVector {
    // Written lane by lane (LLVM folds this into one widening conversion): the generic
    // `SIMD8<Double>(_: SIMD8<Float>)` is not always inlined into large kernels, and an
    // out-of-line call per vector costs more than the arithmetic.

    /// Lanes 0..<8 widened to `Double`.
    @inline(__always) var lowDoubles: DoubleVector {
        DoubleVector(Double(self[0]), Double(self[1]), Double(self[2]), Double(self[3]),
                     Double(self[4]), Double(self[5]), Double(self[6]), Double(self[7]))
    }

    /// Lanes 8..<16 widened to `Double`.
    @inline(__always) var highDoubles: DoubleVector {
        DoubleVector(Double(self[8]), Double(self[9]), Double(self[10]), Double(self[11]),
                     Double(self[12]), Double(self[13]), Double(self[14]), Double(self[15]))
    }
}

/// How channels repeat along a channels-last run: the value at run offset `i` (runs start
/// at a row boundary) belongs to channel `i mod C`, and per-channel values replicated over
/// `period` positions line up with the run in whole chunks.
struct ChannelPattern: Sendable {
    /// C.
    let channels: Int
    /// The shortest period that is a multiple of both C and 16, `lcm(C, 16)`; or C when
    /// that is too long to replicate.
    let base: Int
    /// P = `base·k`, a multiple of C: `lcm(C, 16)·k` with `k` making it at least
    /// `minimumPeriod` values (longer chunks, fewer loop turns), or `C`.
    let period: Int
    /// Positions `0 ..< vectorPeriod` of a chunk are processed 16 at a time, the rest
    /// (`C mod 16` positions when `period == C`) one by one.
    let vectorPeriod: Int

    /// Periods longer than this fall back to `P = C` (vectors over whole 16-channel groups
    /// of each row, the last `C mod 16` channels scalar).
    static let maximumPeriod = 2048

    /// - Parameter minimumPeriod: Replicate `lcm(C, 16)` up to at least this many values
    ///   (longer chunks, fewer loop turns).
    init(channels: Int, minimumPeriod: Int) {
        self.channels = channels
        var a = channels, b = 16
        while b != 0 { (a, b) = (b, a % b) }
        let lcm = channels / a * 16
        if lcm <= ChannelPattern.maximumPeriod {
            base = lcm
            period = lcm * max(1, (minimumPeriod + lcm - 1) / lcm)
            vectorPeriod = period
        } else {
            base = channels
            period = channels
            vectorPeriod = channels / 16 * 16
        }
    }

    /// The pattern the kernels of `level` run over: `P = B` for the C kernels (whose short
    /// paths keep the positions of `B <= 128` in registers), `P >= 256` for the Swift ones.
    init(channels: Int, level: KernelLevel) {
        self.init(channels: channels, minimumPeriod: level.usesC ? 0 : 256)
    }

    /// Doubles of scratch per thread that a channels-last reduction with `arrays` per-position
    /// arrays needs at `level`: none when the C kernels keep them on the stack
    /// (`B <= BNK_SHORT_BASE_MAX`).
    func scratchCount(arrays: Int, level: KernelLevel) -> Int {
        level.usesC && base <= Int(BNK_SHORT_BASE_MAX) ? 0 : arrays * period
    }

    /// Writes `values[j mod C]` to `replicated[j]` for `j` in `0 ..< period`.
    @inline(__always)
    func replicate<T>(_ values: UnsafePointer<T>, into replicated: UnsafeMutablePointer<T>) {
        var c = 0
        for j in 0..<period {
            replicated[j] = values[c]
            c = c + 1 == channels ? 0 : c + 1
        }
    }

    /// `out[c] = Σ_{j ≡ c (mod C)} perPosition[j]` in a fixed order: first the `k` repeats
    /// of `base` are added position by position (whole vectors), then the `base / C`
    /// channel groups of the result. `perPosition` is overwritten.
    @inline(__always)
    func foldSums(_ perPosition: UnsafeMutablePointer<Double>, into out: UnsafeMutablePointer<Double>) {
        var repeatStart = base
        while repeatStart < period {
            // base is a multiple of 16 here (period > base only when base = lcm(C, 16)).
            var j = 0
            while j < base {
                perPosition.store(perPosition.vector(at: j) + perPosition.vector(at: repeatStart + j), at: j)
                j += 8
            }
            repeatStart += base
        }
        for c in 0..<channels {
            var sum = perPosition[c], j = c + channels
            while j < base {
                sum += perPosition[j]
                j += channels
            }
            out[c] = sum
        }
    }
}

enum Kernels {
    /// `count` values of scratch memory aligned to 64 bytes (a cache line, one AVX-512
    /// vector), so that vector loads and stores of replicated coefficients and per-position
    /// accumulators never straddle two cache lines. Free with ``deallocateAligned(_:)``.
    static func allocateAligned<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<T>.stride, alignment: 64)
            .bindMemory(to: T.self, capacity: count)
    }

    static func deallocateAligned<T>(_ pointer: UnsafeMutablePointer<T>) {
        UnsafeMutableRawPointer(pointer).deallocate()
    }

    /// Runs `body` with `count` doubles of aligned scratch, or with `nil` when `count` is 0.
    @inline(__always)
    static func withScratch<R>(count: Int, _ body: (UnsafeMutablePointer<Double>?) -> R) -> R {
        guard count > 0 else { return body(nil) }
        let scratch = allocateAligned(Double.self, count: count)
        defer { deallocateAligned(scratch) }
        return body(scratch)
    }

    // MARK: Statistics (collect)

    /// Moments of one contiguous run of `n >= 1` values of one channel, in `Double`, in one
    /// pass shifted by the run's first value `k = x[0]` (a value of the channel, so the
    /// shifted sums do not cancel badly): `d = x[i] − k`, `s1 = Σd`, `s2 = Σd²`, then
    /// `μ = k + s1 / n` and `M2 = max(0, s2 − s1·(s1 / n))`.
    @inline(__always)
    static func contiguousMoments(_ x: UnsafePointer<Float>, count n: Int) -> (mean: Double, m2: Double) {
        let k = Double(x[0]), kv = DoubleVector(repeating: k)
        // Four independent vector accumulators per sum.
        var a0 = DoubleVector(), a1 = DoubleVector(), a2 = DoubleVector(), a3 = DoubleVector()
        var b0 = DoubleVector(), b1 = DoubleVector(), b2 = DoubleVector(), b3 = DoubleVector()
        var i = 0
        while i + 32 <= n {
            let v = x.vector(at: i), w = x.vector(at: i + 16)
            let d0 = v.lowDoubles - kv, d1 = v.highDoubles - kv
            let d2 = w.lowDoubles - kv, d3 = w.highDoubles - kv
            a0 += d0
            a1 += d1
            a2 += d2
            a3 += d3
            b0 += d0 * d0
            b1 += d1 * d1
            b2 += d2 * d2
            b3 += d3 * d3
            i += 32
        }
        if i + 16 <= n {
            let v = x.vector(at: i)
            let d0 = v.lowDoubles - kv, d1 = v.highDoubles - kv
            a0 += d0
            a1 += d1
            b0 += d0 * d0
            b1 += d1 * d1
            i += 16
        }
        var s1 = ((a0 + a2) + (a1 + a3)).sum(), s2 = ((b0 + b2) + (b1 + b3)).sum()
        while i < n {
            let d = Double(x[i]) - k
            s1 += d
            s2 += d * d
            i += 1
        }
        let count = Double(n)
        return (k + s1 / count, max(0, s2 - s1 * (s1 / count)))
    }

    /// Moments of each channel over one channels-last block of `rows >= 1` whole rows, in
    /// `Double`, in one pass shifted by the block's first row `k[c] = x[0, c]` (a value of the
    /// channel, so the shifted sums do not cancel badly):
    /// `d = x[r, c] − k[c]`, `s1[c] = Σ_r d`, `s2[c] = Σ_r d²`, then
    /// `μ[c] = k[c] + s1[c] / rows` and `M2[c] = max(0, s2[c] − s1[c]·(s1[c] / rows))`.
    ///
    /// The sums run per pattern position `j < P` (`k` replicated). With `h = ⌊chunks / 2⌋`,
    /// whole chunks `q` and `h + q` go in pairs, `acc[j] = (acc[j] + d_q) + d_{h+q}` for
    /// `q < h` (two sequential streams), then the odd chunk and the partial one one at a
    /// time; the sums are folded into channels with ``ChannelPattern/foldSums(_:into:)``.
    /// The C kernel `bnk_interleaved_moments` has the same structure. `scratch` holds
    /// ``ChannelPattern/scratchCount(arrays:level:)`` for 3 arrays; results go to
    /// `mean[0 ..< C]` and `m2[0 ..< C]`.
    @inline(__always)
    static func interleavedMoments(_ x: UnsafePointer<Float>, rows: Int, pattern: ChannelPattern,
                                   level: KernelLevel, scratch: UnsafeMutablePointer<Double>?,
                                   mean: UnsafeMutablePointer<Double>, m2: UnsafeMutablePointer<Double>) {
        let (channels, period) = (pattern.channels, pattern.period)
        if level.usesC {
            bnk_interleaved_moments(level.rawValue, x, rows, channels, pattern.base, period, pattern.vectorPeriod,
                                    scratch, mean, m2)
            return
        }
        let k = scratch!, s1 = k + period, s2 = k + 2 * period
        for c in 0..<channels { k[c] = Double(x[c]) }
        pattern.replicate(UnsafePointer(k), into: k)
        s1.update(repeating: 0, count: 2 * period)
        let length = rows * channels
        // Pairs of whole chunks (q, h + q).
        let half = length / period / 2
        let second = x + half * period
        for q in 0..<half {
            let p = x + q * period, r = second + q * period
            var j = 0
            while j < pattern.vectorPeriod {
                let k0 = k.vector(at: j), k1 = k.vector(at: j + 8)
                let v = p.vector(at: j), w = r.vector(at: j)
                let a0 = v.lowDoubles - k0, b0 = v.highDoubles - k1
                let a1 = w.lowDoubles - k0, b1 = w.highDoubles - k1
                s1.store((s1.vector(at: j) + a0) + a1, at: j)
                s1.store((s1.vector(at: j + 8) + b0) + b1, at: j + 8)
                s2.store((s2.vector(at: j) + a0 * a0) + a1 * a1, at: j)
                s2.store((s2.vector(at: j + 8) + b0 * b0) + b1 * b1, at: j + 8)
                j += 16
            }
            while j < period {
                let d0 = Double(p[j]) - k[j], d1 = Double(r[j]) - k[j]
                s1[j] = (s1[j] + d0) + d1
                s2[j] = (s2[j] + d0 * d0) + d1 * d1
                j += 1
            }
        }
        // The last whole chunk when their number is odd, then the partial one.
        var start = 2 * half * period
        while start < length {
            let count = min(period, length - start)
            let v16 = min(count, pattern.vectorPeriod) & ~15
            var j = 0
            while j < v16 {
                let v = x.vector(at: start + j)
                let a = v.lowDoubles - k.vector(at: j), b = v.highDoubles - k.vector(at: j + 8)
                s1.store(s1.vector(at: j) + a, at: j)
                s1.store(s1.vector(at: j + 8) + b, at: j + 8)
                s2.store(s2.vector(at: j) + a * a, at: j)
                s2.store(s2.vector(at: j + 8) + b * b, at: j + 8)
                j += 16
            }
            while j < count {
                let d = Double(x[start + j]) - k[j]
                s1[j] += d
                s2[j] += d * d
                j += 1
            }
            start += period
        }
        pattern.foldSums(s1, into: mean)
        pattern.foldSums(s2, into: m2)
        let n = Double(rows)
        for c in 0..<channels {
            let sum = mean[c], centered = m2[c] - sum * (sum / n)
            mean[c] = Double(x[c]) + sum / n
            m2[c] = max(0, centered)
        }
    }

    // MARK: Gradient reduction

    /// One pass over a channel's contiguous run: `Σg` and `Σg·(x − μ)` in `Double`.
    @inline(__always)
    static func contiguousGradientSums(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count n: Int,
                                       mean: Double) -> (gradient: Double, gradientTimesCentered: Double) {
        let mu = DoubleVector(repeating: mean)
        var s0 = DoubleVector(), s1 = DoubleVector(), p0 = DoubleVector(), p1 = DoubleVector()
        var i = 0
        while i + 16 <= n {
            let gv = g.vector(at: i), xv = x.vector(at: i)
            let g0 = gv.lowDoubles, g1 = gv.highDoubles
            s0 += g0
            s1 += g1
            p0 += g0 * (xv.lowDoubles - mu)
            p1 += g1 * (xv.highDoubles - mu)
            i += 16
        }
        var sumG = (s0 + s1).sum(), sumGX = (p0 + p1).sum()
        while i < n {
            let gi = Double(g[i])
            sumG += gi
            sumGX += gi * (Double(x[i]) - mean)
            i += 1
        }
        return (sumG, sumGX)
    }

    /// One pass over `rows` rows of channels-last `g` and `x`: per channel `Σg` and
    /// `Σg·(x − μ[c])` in `Double`, into `sumG[0 ..< C]` and `sumGX[0 ..< C]`.
    /// `mean` holds `μ[0 ..< C]`; `scratch` holds ``ChannelPattern/scratchCount(arrays:level:)``
    /// for 3 arrays (`μ` replicated over the pattern, and the two per-position sums).
    /// Chunks one at a time in order: `g` and `x` are read as two sequential streams (measured
    /// faster than tiles of several chunks, which interleave more streams).
    @inline(__always)
    static func interleavedGradientSums(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int,
                                        pattern: ChannelPattern, level: KernelLevel, mean: UnsafePointer<Double>,
                                        scratch: UnsafeMutablePointer<Double>?,
                                        sumG: UnsafeMutablePointer<Double>, sumGX: UnsafeMutablePointer<Double>) {
        let period = pattern.period, length = rows * pattern.channels
        if level.usesC {
            bnk_interleaved_gradient_sums(level.rawValue, g, x, rows, pattern.channels, pattern.base, period,
                                          pattern.vectorPeriod, mean, scratch, sumG, sumGX)
            return
        }
        let replicatedMean = scratch!, accG = replicatedMean + period, accGX = accG + period
        pattern.replicate(mean, into: replicatedMean)
        accG.update(repeating: 0, count: 2 * period)
        var start = 0
        while start < length {
            let count = min(period, length - start)
            let v16 = min(count, pattern.vectorPeriod) & ~15
            var j = 0
            while j < v16 {
                let gv = g.vector(at: start + j), xv = x.vector(at: start + j)
                let gl = gv.lowDoubles, gh = gv.highDoubles
                accG.store(accG.vector(at: j) + gl, at: j)
                accG.store(accG.vector(at: j + 8) + gh, at: j + 8)
                accGX.store(accGX.vector(at: j) + gl * (xv.lowDoubles - replicatedMean.vector(at: j)), at: j)
                accGX.store(accGX.vector(at: j + 8) + gh * (xv.highDoubles - replicatedMean.vector(at: j + 8)), at: j + 8)
                j += 16
            }
            while j < count {
                let gi = Double(g[start + j])
                accG[j] += gi
                accGX[j] += gi * (Double(x[start + j]) - replicatedMean[j])
                j += 1
            }
            start += period
        }
        pattern.foldSums(accG, into: sumG)
        pattern.foldSums(accGX, into: sumGX)
    }

    // MARK: Apply

    /// `out[i] = F(g[i], x[i])` over a contiguous run of one channel, with the channel's
    /// coefficients broadcast to all lanes (see ``ApplyFormula`` for `F`). Pointers of
    /// terms that `F` leaves out are never read.
    @inline(__always)
    static func contiguousApply<F: ApplyFormula>(_: F.Type, g: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                                 out: UnsafeMutablePointer<Float>, count n: Int,
                                                 a: Float, b: Float, shift: Float, offset: Float) {
        let av = FloatVector(repeating: a), bv = FloatVector(repeating: b)
        let sv = FloatVector(repeating: shift), ov = FloatVector(repeating: offset)
        var i = 0
        while i + 16 <= n {
            out.store(F.vector(g, x, i, av, bv, sv, ov), at: i)
            i += 16
        }
        while i < n {
            out[i] = F.scalar(g, x, i, a, b, shift, offset)
            i += 1
        }
    }

    /// The same over rows of a channels-last run (`length` values from a row boundary), with
    /// coefficients replicated over the pattern: `coefficients` holds `P` values each of
    /// `a`, `b`, `shift`, `offset`, one after the other. Chunks one at a time, strictly
    /// sequential reads and writes (measured faster than tiles of 4 chunks on in-cache
    /// tensors; the coefficients are L1 hits).
    @inline(__always)
    static func interleavedApply<F: ApplyFormula>(_: F.Type, g: UnsafePointer<Float>, x: UnsafePointer<Float>,
                                                  out: UnsafeMutablePointer<Float>, length: Int,
                                                  pattern: ChannelPattern, coefficients: UnsafeMutablePointer<Float>) {
        let period = pattern.period
        let a = UnsafePointer(coefficients), b = a + period, shift = b + period, offset = shift + period
        var start = 0
        while start < length {
            let count = min(period, length - start)
            let v16 = min(count, pattern.vectorPeriod) & ~15
            var j = 0
            while j < v16 {
                let i = start + j
                out.store(F.vector(g, x, i, a.vector(at: j), b.vector(at: j), shift.vector(at: j), offset.vector(at: j)),
                          at: i)
                j += 16
            }
            while j < count {
                let i = start + j
                out[i] = F.scalar(g, x, i, a[j], b[j], shift[j], offset[j])
                j += 1
            }
            start += period
        }
    }
}

/// The per-element formula of an apply pass, chosen statically so that the inner loops
/// carry no optionals. Vector lanes and scalar tails use the same IEEE operations in the
/// same order (no fused multiply-add), so an element's result never depends on which
/// path computed it.
protocol ApplyFormula {
    static func vector(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: FloatVector,
                       _ b: FloatVector, _ shift: FloatVector, _ offset: FloatVector) -> FloatVector
    static func scalar(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: Float,
                       _ b: Float, _ shift: Float, _ offset: Float) -> Float
}

/// Forward: `y = b·(x − shift) + offset` (`g` not read).
enum ForwardFormula: ApplyFormula {
    @inline(__always)
    static func vector(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: FloatVector,
                       _ b: FloatVector, _ shift: FloatVector, _ offset: FloatVector) -> FloatVector {
        b * (x.vector(at: i) - shift) + offset
    }
    @inline(__always)
    static func scalar(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: Float,
                       _ b: Float, _ shift: Float, _ offset: Float) -> Float {
        b * (x[i] - shift) + offset
    }
}

/// Evaluation backward: `dx = a·g + offset` (`x` not read).
enum GradientFormula: ApplyFormula {
    @inline(__always)
    static func vector(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: FloatVector,
                       _ b: FloatVector, _ shift: FloatVector, _ offset: FloatVector) -> FloatVector {
        a * g.vector(at: i) + offset
    }
    @inline(__always)
    static func scalar(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: Float,
                       _ b: Float, _ shift: Float, _ offset: Float) -> Float {
        a * g[i] + offset
    }
}

/// Training backward: `dx = (a·g + b·(x − shift)) + offset`.
enum GradientAndInputFormula: ApplyFormula {
    @inline(__always)
    static func vector(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: FloatVector,
                       _ b: FloatVector, _ shift: FloatVector, _ offset: FloatVector) -> FloatVector {
        (a * g.vector(at: i) + b * (x.vector(at: i) - shift)) + offset
    }
    @inline(__always)
    static func scalar(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ i: Int, _ a: Float,
                       _ b: Float, _ shift: Float, _ offset: Float) -> Float {
        (a * g[i] + b * (x[i] - shift)) + offset
    }
}
