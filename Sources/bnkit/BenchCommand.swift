import ArgumentParser
import BatchNormKit
import Dispatch

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// `bnkit bench`: times BatchNorm3D's training forward, evaluation forward and training
/// backward through the public API, beside the memory-to-memory copy bandwidth measured in
/// the same run and, on the CPU, beside each row's roofline: the time of the fewest read and
/// read-and-write passes the operation needs, measured with plain C loops at the tensor's size
/// and thread count (`BenchCommand+Roofline.swift`; the definitions are in the Benchmarks
/// article of the BatchNormKit documentation).
///
/// Effective bandwidth counts the minimal traffic per element: 12 bytes for the training
/// forward (read x for the statistics, read x and write y to apply), 8 for the evaluation
/// forward, 20 for backward (read g and x to reduce, read both and write dx to apply).
/// The copy bandwidth counts read and write bytes, `2·bytes/time`, as torch_bn3d.py does.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract:
            "Benchmark BatchNorm3D (train forward, eval forward, backward) against copy bandwidth and a same-run roofline.",
        discussion: """
            Default suite, CPU: 5x3x10x10x10, 8x256x8x14x14, 2x32x32x32x32, \
            8x64x16x56x56; CUDA: 5x3x10x10x10, 8x256x8x14x14, 2x32x64x64x64, 8x64x16x56x56, \
            2x16x128x128x128; in both layouts. Each figure is the median of --runs timed runs after \
            warm-up; on the CPU a run repeats the operation enough times to last about 20 ms, on the \
            GPU a run is 50 calls between two CUDA events on the stream. Effective bytes per \
            element: 3, 2 and 5 elements' worth for train, eval and backward (12, 8, 20 in float32, \
            6, 4, 10 in float16 and bfloat16). --dtype float16 and bfloat16 store the data in that \
            type (parameters and statistics stay float32), as PyTorch's mixed-type batch norm.

            CPU roofline, per shape and layout, on buffers of the tensor's size and the backend's \
            thread count: T_read is the median time of one streaming read of the tensor's bytes, \
            T_rw of one pass reading them and writing as many (y = 2x + 1, the faster of \
            non-temporal and ordinary stores: the best a kernel with that traffic can do at that \
            size). roofline µs = r·T_read + T_rw, where r is the op's read passes beyond one \
            read-and-write pass: eval 0; train 1, or 0 when the backend fuses the statistics and \
            the apply per channel; backward 3, or 1 when fused. "of roofline" is roofline µs / \
            median µs.
            """)

    @Option(help: "Device to benchmark: cpu or cuda.")
    var device: ComputeDevice = .cpu

    @Option(
        help:
            "One shape of rank 2 to 5 instead of the suite: N,C (BatchNorm), N,C,L, N,C,H,W or N,C,D,H,W (BatchNorm3D)."
    )
    var shape: String?

    @Option(
        help: "The layout to time (ncdhw, ndhwc or another of the library's names); both when omitted.",
        transform: parseLayout)
    var layout: TensorLayout?

    @Option(parsing: .unconditional, help: "CPU threads (default: every online processor).")
    var threads: Int?

    @Option(
        help: "Data type: float32, float16, or bfloat16 (on a GPU from sm_80); parameters and statistics stay float32.")
    var dtype: TensorDataType = .float32

    @Option(parsing: .unconditional, help: "Timed runs per figure (the median is reported), at least 5.")
    var runs: Int = 7

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Flag(help: "Detail lines under an error (such as every path searched for the CUDA libraries).")
    var verbose = false

    @Flag(
        help:
            "Under mpirun: synchronized against local training forward + backward per rank (local as it runs and without channel fusion; default shapes 2x32x32x32x32 and 4x64x16x56x56, 1 thread, ncdhw), and the all-gather latency."
    )
    var mpi = false

    @Option(
        help:
            "With --mpi: run the ranks as N threads of this process over a LocalProcessGroup instead of MPI processes (at least 1)."
    )
    var localMembers: Int?

    static let suite: [[Int]] = [[5, 3, 10, 10, 10], [8, 256, 8, 14, 14], [2, 32, 32, 32, 32], [8, 64, 16, 56, 56]]
    /// The GPU suite of the Benchmarks article.
    static let gpuSuite: [[Int]] = [
        [5, 3, 10, 10, 10], [8, 256, 8, 14, 14], [2, 32, 64, 64, 64], [8, 64, 16, 56, 56],
        [2, 16, 128, 128, 128],
    ]

    /// The operations timed per shape and layout.
    enum Operation: String {
        case train, eval, backward
    }

    struct Row {
        let shape: [Int]
        let layout: TensorLayout
        var dataType: TensorDataType = .float32
        let op: Operation
        let medianMicroseconds: Double
        let gigabytesPerSecond: Double
        /// The same-run roofline (CPU only).
        var roofline: RooflineFigures? = nil
    }

    /// A row's roofline and the two bandwidths it comes from (see `withRoofline`).
    struct RooflineFigures {
        let microseconds: Double
        let readGigabytesPerSecond: Double
        let readWriteGigabytesPerSecond: Double
    }

    func validate() throws {
        guard runs >= 5 else { throw ValidationError("--runs must be at least 5") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let localMembers {
            guard mpi else { throw ValidationError("--local-members needs --mpi") }
            guard localMembers >= 1 else { throw ValidationError("--local-members must be at least 1") }
        }
        if let shape { _ = try Self.parseShape(shape) }
        if device == .cuda && dtype == .bfloat16 {
            throw ValidationError("--dtype bfloat16 needs --device cpu (the CUDA backend stores float32 and float16)")
        }
    }

    static func parseShape(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: " ")) }
        guard (2...5).contains(parts.count), let dims = parts as? [Int], dims.allSatisfy({ $0 >= 1 }),
            (try? Tensor.zeros(shape: [0] + dims)) != nil
        else {
            throw ValidationError(
                "--shape must be 2 to 5 positive integers N,C[,D[,H[,W]]] whose product fits in memory, not '\(text)'")
        }
        return dims
    }

    func run() throws {
        if mpi { return try runMPI() }
        let shapes = try shape.map { [try Self.parseShape($0)] } ?? (device == .cpu ? Self.suite : Self.gpuSuite)
        let layouts = layout.map { [$0] } ?? [.channelsFirst, .channelsLast]
        let report =
            device == .cpu
            ? try benchCPU(shapes: shapes, layouts: layouts)
            : try benchCUDA(shapes: shapes, layouts: layouts)
        json ? printJSON(report) : printTable(report)
    }

    /// What one `bench` run measured.
    struct Report {
        var deviceName: String
        /// The CPU backend's kernel level (`nil` on the GPU).
        var kernelLevel: String? = nil
        var threads: Int
        var copyGigabytesPerSecond: Double
        var copyDescription: String
        var rows: [Row]
        var notes: [String]
    }

    /// The CPU suite: every shape and layout, then the memcpy bandwidth.
    func benchCPU(shapes: [[Int]], layouts: [TensorLayout]) throws -> Report {
        let threadCount = threads ?? CPUBackend.onlineProcessorCount
        let backend = CPUBackend(threadCount: threadCount)
        var rows = [Row]()
        var rooflineNotes = [Self.rooflineLegend]
        for shape in shapes {
            for layout in layouts {
                // The roofline's two tensor-sized buffers are allocated after the operation's
                // tensors are released, not beside them.
                let measured = withRoofline(
                    try measure(shape: shape, layout: layout, backend: backend),
                    shape: shape, layout: layout, backend: backend)
                rows += measured.rows
                rooflineNotes.append(measured.note)
            }
        }
        let peak = Self.peakResidentBytes()
        // The copy runs last so that its 512 MiB of buffers stay out of the peak memory.
        let copySeconds = Self.copySamples(threads: threadCount, runs: runs)
        return Report(
            deviceName:
                "cpu: \(Self.processorName()), \(CPUBackend.onlineProcessorCount) online processors, "
                + "kernel level \(backend.kernelLevel)",
            kernelLevel: "\(backend.kernelLevel)", threads: threadCount,
            copyGigabytesPerSecond: 2 * Double(Self.copyByteCount) / Self.median(copySeconds) / 1e9,
            copyDescription: "memcpy of 256 MiB on \(threadCount) threads, 2·bytes/time", rows: rows,
            notes: [
                rooflineNotes.joined(separator: "\n"),
                "peak memory (maxrss, copy buffers excluded): \(Self.format(Double(peak) / 1_048_576, 1)) MiB",
            ])
    }

    func printTable(_ report: Report) {
        print(
            "bnkit bench: \(report.deviceName); \(report.threads) thread\(report.threads == 1 ? "" : "s"); median of \(runs) runs"
        )
        print("copy bandwidth (\(report.copyDescription)): \(Self.format(report.copyGigabytesPerSecond, 1)) GB/s\n")
        // The roofline columns only where rows have one (the CPU).
        let hasRoofline = report.rows.contains { $0.roofline != nil }
        print(
            "op        layout  dtype    shape               median µs      GB/s   of copy"
                + (hasRoofline ? "  roofline µs  of roofline" : ""))
        for row in report.rows {
            var line =
                Self.pad(row.op.rawValue, 10) + Self.pad(row.layout.description, 8) + Self.pad(row.dataType.rawValue, 9)
                + Self.pad(row.shape.map(String.init).joined(separator: "x"), 18)
                + Self.padLeft(Self.format(row.medianMicroseconds, 1), 12)
                + Self.padLeft(Self.format(row.gigabytesPerSecond, 1), 10)
                + Self.padLeft(Self.format(100 * row.gigabytesPerSecond / report.copyGigabytesPerSecond, 0) + " %", 10)
            if let roofline = row.roofline {
                line +=
                    Self.padLeft(Self.format(roofline.microseconds, 1), 13)
                    + Self.padLeft(Self.format(100 * roofline.microseconds / row.medianMicroseconds, 0) + " %", 13)
            }
            print(line)
        }
        for note in report.notes { print("\n" + note) }
    }

    func printJSON(_ report: Report) {
        let items = report.rows.map { row in
            "{\"shape\": [\(row.shape.map(String.init).joined(separator: ", "))], \"layout\": \"\(row.layout)\", "
                + "\"dtype\": \"\(row.dataType)\", \"op\": \"\(row.op.rawValue)\", \"median_us\": \(Self.format(row.medianMicroseconds, 3)), "
                + "\"GBps\": \(Self.format(row.gigabytesPerSecond, 3))"
                + (row.roofline.map { roofline in
                    ", \"roofline_us\": \(Self.format(roofline.microseconds, 3)), "
                        + "\"read_GBps\": \(Self.format(roofline.readGigabytesPerSecond, 3)), "
                        + "\"read_write_GBps\": \(Self.format(roofline.readWriteGigabytesPerSecond, 3))"
                } ?? "") + "}"
        }
        print(
            "{\"device\": \"\(Self.escape(report.deviceName))\", \"threads\": \(report.threads), "
                + (report.kernelLevel.map { "\"kernel_level\": \"\($0)\", " } ?? "")
                + "\"copy_GBps\": \(Self.format(report.copyGigabytesPerSecond, 3)), \"rows\": [\n  "
                + items.joined(separator: ",\n  ") + "\n]}")
    }

    /// Train forward, eval forward and backward of one shape and layout.
    func measure(shape: [Int], layout: TensorLayout, backend: CPUBackend) throws -> [Row] {
        let elements = shape.reduce(1, *)
        var generator = SeededGenerator(seed: 42)
        let x = try Tensor.normal(shape: shape, mean: 1, standardDeviation: 2, layout: layout, using: &generator)
            .converted(to: layout, dataType: dtype)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator).converted(
            to: layout, dataType: dtype)
        let bn = try Self.module(for: shape, backend: backend, using: &generator)
        let repetitions = Self.repetitions(elements: elements)
        // GB/s counts 3, 2 and 5 elements of traffic per element (12, 8, 20 bytes in float32).
        func row(_ op: Operation, elementsOfTraffic: Int, _ body: () throws -> Void) rethrows -> Row {
            let median = try Self.medianSeconds(runs: runs, repetitions: repetitions, body)
            return Row(
                shape: shape, layout: layout, dataType: dtype, op: op, medianMicroseconds: median * 1e6,
                gigabytesPerSecond: Double(elementsOfTraffic * dtype.byteCount * elements) / median / 1e9)
        }
        bn.trainMode()
        let train = try row(.train, elementsOfTraffic: 3) { _ = try bn(x) }
        bn.evalMode()
        let eval = try row(.eval, elementsOfTraffic: 2) { _ = try bn(x) }
        bn.trainMode()
        _ = try bn(x)
        let backward = try row(.backward, elementsOfTraffic: 5) { _ = try bn.backward(g) }
        return [train, eval, backward]
    }

    /// The family member for `shape`'s rank (BatchNorm ... BatchNorm3D) with PuzzleLib's defaults.
    static func module(for shape: [Int], backend: any BatchNormBackend<Tensor>, using generator: inout SeededGenerator)
        throws
        -> BatchNormND
    {
        guard let family = BatchNormND.familyMember(forDataRank: shape.count) else {
            throw ValidationError("--shape must have rank 2 to 5, got \(shape)")
        }
        return try family.init(maps: shape[1], backend: backend, using: &generator)
    }

    /// Calls per timed CPU run of a tensor of `elements` values: about 20 ms per run (as
    /// torch_bn3d.py: 2e7 / elements repetitions).
    static func repetitions(elements: Int) -> Int { max(1, 20_000_000 / elements) }

    /// Median over `runs` of the mean time of `repetitions` calls, after warm-up calls.
    static func medianSeconds(runs: Int, repetitions: Int, _ body: () throws -> Void) rethrows -> Double {
        try medianSeconds(runs: runs, repetitions: repetitions, variants: 1) { _ in try body() }[0]
    }

    /// For each of `variants` loops (`body(variant)`), the median over `runs` of the mean time
    /// of `repetitions` calls, after warm-up calls; each run times every variant in turn, so
    /// that a slow phase of a shared machine weighs on all of them alike. With several
    /// variants, each timed run follows one untimed call of the same variant, so that it starts
    /// from its own cache state, not the one the previous variant left.
    static func medianSeconds(
        runs: Int, repetitions: Int, variants: Int,
        _ body: (_ variant: Int) throws -> Void
    ) rethrows -> [Double] {
        for variant in 0..<variants {
            for _ in 0..<max(3, repetitions) { try body(variant) }
        }
        var times = [[Double]](repeating: [], count: variants)
        for _ in 0..<runs {
            for variant in 0..<variants {
                if variants > 1 { try body(variant) }
                let start = now()
                for _ in 0..<repetitions { try body(variant) }
                times[variant].append((now() - start) / Double(repetitions))
            }
        }
        return times.map(median)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2]
            : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Seconds per 256 MiB memcpy split over `threads` threads: `runs` samples (each the
    /// mean of 3 copies) after a warm-up. The buffers are freed afterwards, so they do not
    /// count in the peak memory.
    static func copySamples(threads: Int, runs: Int) -> [Double] {
        let byteCount = copyByteCount
        let source = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        memset(source, 1, byteCount)
        memset(destination, 0, byteCount)
        let pointers = CopyPointers(source: source, destination: destination)
        var samples = [Double]()
        for _ in 0...runs {
            let start = now()
            for _ in 0..<3 {
                forEachRange(byteCount: byteCount, threads: threads) { start, end in
                    memcpy(pointers.destination + start, pointers.source + start, end - start)
                }
            }
            samples.append((now() - start) / 3)
        }
        return Array(samples.dropFirst())
    }

    static let copyByteCount = 256 << 20

    /// Runs `body(start, end)` on `threads` threads at once, over `0..<byteCount` cut into one
    /// contiguous range per thread whose boundaries are multiples of 64 bytes (the last range
    /// ends at `byteCount`).
    static func forEachRange(byteCount: Int, threads: Int, _ body: @Sendable (_ start: Int, _ end: Int) -> Void) {
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            let start = byteCount * thread / threads & ~63
            let end = thread == threads - 1 ? byteCount : byteCount * (thread + 1) / threads & ~63
            body(start, end)
        }
    }

    struct CopyPointers: @unchecked Sendable {
        let source: UnsafeMutableRawPointer
        let destination: UnsafeMutableRawPointer
    }

    /// Monotonic seconds.
    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Peak resident set size in bytes (`getrusage`; Linux reports KiB).
    static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if canImport(Glibc)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        #if os(Linux)
            return Int(usage.ru_maxrss) * 1024
        #else
            return Int(usage.ru_maxrss)
        #endif
    }

    /// The CPU model from /proc/cpuinfo, or "unknown CPU".
    static func processorName() -> String {
        guard let file = fopen("/proc/cpuinfo", "r") else { return "unknown CPU" }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.hasPrefix("model name"), let colon = text.firstIndex(of: ":") {
                return text[text.index(after: colon)...].trimmingCharacters(in: " \t\n")
            }
        }
        return "unknown CPU"
    }

    static func format(_ value: Double, _ decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var text = decimals == 0 ? String(Int(rounded)) : String(rounded)
        if decimals > 0, let dot = text.firstIndex(of: "."), !text.contains("e") {
            let fraction = text.distance(from: dot, to: text.endIndex) - 1
            if fraction < decimals { text += String(repeating: "0", count: decimals - fraction) }
        }
        return text
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(1, width - text.count))
    }

    static func padLeft(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(1, width - text.count)) + text
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var text = Substring(self)
        while let first = text.first, set.contains(first) { text.removeFirst() }
        while let last = text.last, set.contains(last) { text.removeLast() }
        return String(text)
    }

    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}
