import BatchNormKit
import CBenchmarkKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The same-run roofline of `bnkit bench` on the CPU: how fast a kernel with an operation's
/// memory traffic can possibly run on this machine, at the operation's own size and thread
/// count, measured with two plain C loops (`bnk_bandwidth_read`, `bnk_bandwidth_read_write`).
///
/// For a tensor of `b` bytes (elements × the dtype's size): `T_read` is the median time of one
/// streaming read of `b` bytes, and `T_rw` of one pass that reads `b` bytes and writes `b`
/// other bytes (y = 2·x + 1), the faster of the non-temporal-store and the ordinary-store
/// variants: the best a kernel with that traffic can do at that size (non-temporal stores win
/// on large tensors, ordinary stores on tensors that stay in cache). An operation that needs
/// `r` pure-read passes beyond one read-and-write pass has the roofline `r·T_read + T_rw`.
extension BenchCommand {
    /// The two bandwidth loops' median times for one tensor size.
    struct Bandwidth {
        /// Bytes per pass (one tensor).
        let byteCount: Int
        /// Threads the loops ran on (those the backend uses for a tensor of this size).
        let threads: Int
        /// `T_read`: seconds per streaming read of ``byteCount`` bytes.
        let readSeconds: Double
        /// `T_rw`: seconds per read-and-write pass over ``byteCount`` bytes (the faster store kind).
        let readWriteSeconds: Double
        /// Whether the non-temporal stores gave ``readWriteSeconds``.
        let streamingIsFaster: Bool

        /// Read bandwidth, `bytes / T_read`.
        var readGigabytesPerSecond: Double { Double(byteCount) / readSeconds / 1e9 }
        /// Read-and-write bandwidth, counting both, `2·bytes / T_rw` (as the copy figure).
        var readWriteGigabytesPerSecond: Double { 2 * Double(byteCount) / readWriteSeconds / 1e9 }

        /// `readPasses·T_read + T_rw`, in microseconds.
        func rooflineMicroseconds(readPasses: Int) -> Double {
            (Double(readPasses) * readSeconds + readWriteSeconds) * 1e6
        }
    }

    /// Pure-read passes over a tensor that `operation` needs beyond one read-and-write pass
    /// on the CPU backend: evaluation forward 0 (read x, write y); training forward 0 when the
    /// backend fuses the statistics and the apply per channel (x read from memory once), else
    /// 1 (the statistics read x); backward 1 when fused (g and x read once, dx written), else
    /// 3 (the reduction reads g and x, the apply reads g and x and writes dx).
    static func rooflineReadPasses(
        _ operation: Operation, shape: [Int], layout: TensorLayout,
        dataType: TensorDataType, backend: CPUBackend
    ) -> Int {
        switch operation {
        case .eval: return 0
        case .train:
            return backend.fusesChannels(shape: shape, layout: layout, dataType: dataType, backward: false) ? 0 : 1
        case .backward:
            return backend.fusesChannels(shape: shape, layout: layout, dataType: dataType, backward: true) ? 1 : 3
        }
    }

    /// `rows` (one shape and layout, timed on `backend`) with their roofline, and the note
    /// line that states the bandwidths it comes from.
    func withRoofline(_ rows: [Row], shape: [Int], layout: TensorLayout, backend: CPUBackend) -> (
        rows: [Row], note: String
    ) {
        let elements = shape.reduce(1, *)
        let bandwidth = Self.measureBandwidth(
            byteCount: elements * dtype.byteCount,
            threads: elements < CPUBackend.parallelThreshold ? 1 : backend.threadCount,
            // The machine's limit: the best loops the CPU runs, whatever level the backend uses.
            runs: runs, repetitions: Self.repetitions(elements: elements), level: .supported)
        var passes = [String]()
        let rows = rows.map { row in
            var row = row
            let readPasses = Self.rooflineReadPasses(
                row.op, shape: shape, layout: layout, dataType: dtype, backend: backend)
            row.roofline = RooflineFigures(
                microseconds: bandwidth.rooflineMicroseconds(readPasses: readPasses),
                readGigabytesPerSecond: bandwidth.readGigabytesPerSecond,
                readWriteGigabytesPerSecond: bandwidth.readWriteGigabytesPerSecond)
            passes.append("\(row.op) \(readPasses)")
            return row
        }
        let size =
            bandwidth.byteCount < 1_000_000
            ? Self.format(Double(bandwidth.byteCount) / 1e3, 1) + " kB"
            : Self.format(Double(bandwidth.byteCount) / 1e6, 1) + " MB"
        let note =
            "  "
            + Self.pad(
                shape.map(String.init).joined(separator: "x") + " " + layout.description + " " + dtype.rawValue, 30)
            + "\(size), \(bandwidth.threads) thread\(bandwidth.threads == 1 ? "" : "s"): "
            + "read \(Self.format(bandwidth.readGigabytesPerSecond, 1)) GB/s, "
            + "read+write \(Self.format(bandwidth.readWriteGigabytesPerSecond, 1)) GB/s "
            + "(\(bandwidth.streamingIsFaster ? "non-temporal" : "ordinary") stores); r: "
            + passes.joined(separator: ", ")
        return (rows, note)
    }

    /// What the roofline columns mean, printed above the per-shape bandwidth lines.
    static let rooflineLegend = """
        roofline µs = r·T_read + T_rw, measured per shape at the tensor's size and thread count (T_read: one \
        streaming read of the tensor; T_rw: one pass reading it and writing as many bytes, the faster of \
        non-temporal and ordinary stores; r: the op's read passes beyond that one):
        """

    /// Median `T_read` and `T_rw` of `byteCount`-byte buffers (64-byte aligned, written before
    /// timing so that no page fault is timed), each run the mean of `repetitions` passes after
    /// a warm-up, the three loops in turn within each run, split over `threads` threads in
    /// contiguous 64-byte aligned ranges (each thread makes its `repetitions` passes over its
    /// own range). The loops are those of kernel level `level`.
    static func measureBandwidth(
        byteCount: Int, threads: Int, runs: Int, repetitions: Int, level: KernelLevel
    ) -> Bandwidth {
        let source = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        memset(source, 0x3F, byteCount) // floats of about 0.75
        memset(destination, 0, byteCount)
        let pointers = CopyPointers(source: source, destination: destination)
        let cLevel = level.cValue
        // Variants, timed in turn within each run: 0 the read, 1 the read-write with
        // non-temporal stores, 2 with ordinary stores. Each thread repeats the pass over its
        // own range, so waking the threads (tens of microseconds on a virtual machine) is paid
        // once per run, not once per pass: the roofline is what the loops can do.
        let seconds = medianSeconds(runs: runs, repetitions: 1, variants: 3) { variant in
            forEachRange(byteCount: byteCount, threads: threads) { start, end in
                for _ in 0..<repetitions {
                    if variant == 0 {
                        _ = bnk_bandwidth_read(cLevel, pointers.source + start, end - start)
                    } else {
                        bnk_bandwidth_read_write(
                            cLevel, pointers.source + start, pointers.destination + start,
                            end - start, variant == 1 ? 1 : 0)
                    }
                }
            }
        }.map { $0 / Double(repetitions) }
        let streaming = seconds[1], ordinary = seconds[2]
        return Bandwidth(
            byteCount: byteCount, threads: threads, readSeconds: seconds[0],
            readWriteSeconds: min(streaming, ordinary), streamingIsFaster: streaming < ordinary)
    }
}
