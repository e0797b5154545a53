import CBatchNormKernels
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU implementation of ``BatchNormBackend``: all cores, statistics in `Double`.
///
/// Work is cut into blocks whose boundaries depend only on the tensor's shape and layout,
/// never on ``threadCount``; each block's partial statistics are stored in its own slot and
/// merged in a fixed order. Results are therefore bitwise identical for any thread count.
/// Tensors too small to amortize waking threads run on the calling thread.
public struct CPUBackend: BatchNormBackend {
    /// Threads used for large tensors (at least 1).
    public let threadCount: Int

    /// The instruction set of the reduction and apply loops, chosen at run time.
    let kernelLevel: KernelLevel

    /// Values per channels-first statistics block: each block is reduced in `Double` (one
    /// pass shifted by its first value) and blocks are merged in a fixed order (the k-way
    /// form of ``ChannelMoments/merged(with:)``).
    static let blockLength = 4096

    /// Values per channels-last statistics and gradient-reduction block: rows of all
    /// channels, reduced in one pass (so the block need not stay in cache); long blocks
    /// spread the per-block cost of folding pattern positions into channels.
    static let rowBlockLength = 65536

    /// Values per channels-first gradient-reduction block (one pass, so blocks need not fit
    /// in cache; longer blocks mean fewer partial sums to store and add).
    static let gradientBlockLength = 16384

    /// Below this many elements everything runs on the calling thread: waking the pool's
    /// workers costs more than the work.
    static let parallelThreshold = 1 << 15

    /// Creates a CPU backend.
    /// - Parameter threadCount: Number of threads; `nil` (the default) uses every online
    ///   processor. Values below 1 are treated as 1.
    public init(threadCount: Int? = nil) {
        self.init(threadCount: threadCount, kernelLevel: .selected)
    }

    /// A backend with the given kernels (`level` is lowered to what the CPU supports).
    init(threadCount: Int?, kernelLevel level: KernelLevel) {
        self.threadCount = max(1, threadCount ?? CPUBackend.onlineProcessorCount)
        self.kernelLevel = min(level, .supported)
    }

    /// Number of online processors.
    public static var onlineProcessorCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// `true` for ``TensorDataType/float32`` only.
    public func supports(_ dataType: TensorDataType) -> Bool { dataType == .float32 }

    public var name: String { "cpu (\(threadCount) thread\(threadCount == 1 ? "" : "s"))" }

    /// Runs `body` over `0..<count` split into contiguous ranges, one per thread, or on the
    /// calling thread when `elements` is small. Callers must make each index's effect
    /// independent of how the ranges are cut.
    func parallelFor(_ count: Int, elements: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let threads = elements < CPUBackend.parallelThreshold ? 1 : min(threadCount, count)
        if threads <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        #if canImport(Glibc) || canImport(Musl)
        WorkerPool.shared(width: threads).run { thread in
            body((count * thread / threads)..<(count * (thread + 1) / threads))
        }
        #else
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            body((count * thread / threads)..<(count * (thread + 1) / threads))
        }
        #endif
    }
}

/// A pointer that may cross into `parallelFor` bodies; each thread writes disjoint slots.
struct SharedPointer<Pointee>: @unchecked Sendable {
    let base: UnsafeMutablePointer<Pointee>
    init(_ base: UnsafeMutablePointer<Pointee>) { self.base = base }
    init(_ base: UnsafePointer<Pointee>) { self.base = UnsafeMutablePointer(mutating: base) }
}

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

/// Which kernels the CPU backend runs: the Swift ones (`generic`, compiled for whatever
/// the build targets: SSE2 on x86-64 unless the client passes flags), or the C ones of
/// `CBatchNormKernels` compiled for AVX2 or AVX-512 and selected at run time.
enum KernelLevel: Int32, Comparable, Sendable, CaseIterable {
    case generic = 0   // BNK_LEVEL_GENERIC
    case avx2 = 1      // BNK_LEVEL_AVX2
    case avx512 = 2    // BNK_LEVEL_AVX512

    static func < (lhs: KernelLevel, rhs: KernelLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The highest level the running CPU supports (`generic` off x86-64).
    static let supported = KernelLevel(rawValue: bnk_cpu_level()) ?? .generic

    /// What `CPUBackend(threadCount:)` uses: ``supported``, or lower when the environment
    /// variable `BATCHNORMKIT_CPU_DISPATCH` is `generic` or `avx2` (read once per process;
    /// `avx512` or anything else leaves ``supported``).
    static let selected: KernelLevel = {
        guard let value = getenv("BATCHNORMKIT_CPU_DISPATCH").map({ String(cString: $0).lowercased() }) else {
            return supported
        }
        switch value {
        case "generic", "swift", "none": return .generic
        case "avx2": return min(.avx2, supported)
        default: return supported
        }
    }()

    /// The C kernels are called (not the Swift ones).
    var usesC: Bool { self != .generic }
}
