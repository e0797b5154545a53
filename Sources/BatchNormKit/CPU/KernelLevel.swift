import CBatchNormKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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
    /// variable `BNKIT_CPU_DISPATCH` is `generic` or `avx2` (read once per process;
    /// `avx512` or anything else leaves ``supported``).
    static let selected: KernelLevel = {
        guard let value = getenv("BNKIT_CPU_DISPATCH").map({ String(cString: $0).lowercased() }) else {
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
