import CBatchNormKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Which instance of the C kernels of `CBatchNormKernels` the CPU backend runs: the one
/// compiled for the build's baseline (`generic`: SSE2 on x86-64 unless the client passes
/// flags; float16 and bfloat16 converted by integer code), or those compiled through
/// per-function target attributes for AVX2 with F16C, AVX-512, and AVX-512 with
/// AVX512-BF16, selected at run time. Every level runs the same source, so the same blocks
/// in the same order, and rounds the same way: every level gives the same bits.
enum KernelLevel: Int32, Comparable, Sendable, CaseIterable {
    case generic = 0 // BNK_LEVEL_GENERIC
    case avx2 = 1 // BNK_LEVEL_AVX2
    case avx512 = 2 // BNK_LEVEL_AVX512
    case avx512BFloat16 = 3 // BNK_LEVEL_AVX512_BF16

    static func < (lhs: KernelLevel, rhs: KernelLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The highest level the running CPU supports (`generic` off x86-64).
    static let supported = KernelLevel(rawValue: bnk_cpu_level()) ?? .generic

    /// What `CPUBackend(threadCount:)` uses: ``supported``, or lower when the environment
    /// variable `BNKIT_CPU_DISPATCH` is `generic`, `avx2` or `avx512` (read once per process;
    /// anything else leaves ``supported``).
    static let selected: KernelLevel = {
        guard let value = getenv("BNKIT_CPU_DISPATCH").map({ String(cString: $0).lowercased() }) else {
            return supported
        }
        switch value {
        case "generic", "baseline", "none": return .generic
        case "avx2": return min(.avx2, supported)
        case "avx512": return min(.avx512, supported)
        default: return supported
        }
    }()
}
