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
    package let kernelLevel: KernelLevel

    /// When stores stream and training passes fuse, from the cache sizes read at run time.
    let tuning: MemoryTuning

    /// Fusion limits that replace the tuning's (``channelFusionLimits``), or `nil`.
    let fusionLimits: ChannelFusionLimits?

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
    package static let parallelThreshold = 1 << 15

    /// Creates a CPU backend.
    /// - Parameter threadCount: Number of threads; `nil` (the default) uses every online
    ///   processor. Values below 1 are treated as 1.
    public init(threadCount: Int? = nil) {
        self.init(threadCount: threadCount, kernelLevel: .selected)
    }

    /// A backend with the given kernels (`level` is lowered to what the CPU supports) and
    /// tuning (the environment's by default).
    init(
        threadCount: Int?, kernelLevel level: KernelLevel, tuning: MemoryTuning = .selected,
        fusionLimits: ChannelFusionLimits? = nil
    ) {
        self.threadCount = max(1, threadCount ?? CPUBackend.onlineProcessorCount)
        self.kernelLevel = level.loweredToSupported
        self.tuning = tuning
        self.fusionLimits = fusionLimits
    }

    /// A backend whose channel fusion follows `limits` instead of the running CPU's caches
    /// (for checks of the fused schedules on small tensors: `mode: .always, threads: g`
    /// makes a synchronized module's groups `g` channels long).
    package init(threadCount: Int?, channelFusionLimits limits: ChannelFusionLimits) {
        self.init(threadCount: threadCount, kernelLevel: .selected, fusionLimits: limits)
    }

    /// Number of online processors.
    public static var onlineProcessorCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Every type: ``TensorDataType/float32``, ``TensorDataType/float16`` and
    /// ``TensorDataType/bfloat16`` data (with `Float32` parameters and statistics), converted
    /// inside the kernels.
    public var supportedDataTypes: [TensorDataType] { TensorDataType.allCases }

    /// `true`: the CPU apply loops cannot fail once the tensors are validated.
    public var applyNeverFails: Bool { true }

    public var name: String { "cpu (\(threadCount) thread\(threadCount == 1 ? "" : "s"))" }

    /// The number of threads ``parallelFor(_:elements:_:)`` uses for `count` items over `elements` values.
    func threadWidth(_ count: Int, elements: Int) -> Int {
        elements < CPUBackend.parallelThreshold ? 1 : max(1, min(threadCount, count))
    }

    /// Runs `body` over `0..<count` split into contiguous ranges, one per thread, or on the
    /// calling thread when `elements` is small. Callers must make each index's effect
    /// independent of how the ranges are cut. Every thread ends its range with a store
    /// fence (`bnk_store_fence`), so that the non-temporal stores of the kernels it ran are
    /// ordered before the hand-over: the one place streaming apply passes are fenced.
    func parallelFor(_ count: Int, elements: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let threads = threadWidth(count, elements: elements)
        if threads <= 1 {
            if count > 0 {
                body(0..<count)
                bnk_store_fence()
            }
            return
        }
        let range: @Sendable (Int) -> Void = { thread in
            body((count * thread / threads)..<(count * (thread + 1) / threads))
            bnk_store_fence()
        }
        #if canImport(Glibc) || canImport(Musl)
            WorkerPool.shared(width: threads).run(range)
        #else
            DispatchQueue.concurrentPerform(iterations: threads, execute: range)
        #endif
    }
}
