import CBatchNormKernels

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Which instance of the C kernels of `CBatchNormKernels` the CPU backend runs: the one
/// compiled for the build's baseline (`generic`: SSE2 on x86-64 and NEON on aarch64 unless
/// the client passes flags; float16 and bfloat16 converted by integer code), or those
/// compiled through per-function target attributes and selected at run time: on x86-64
/// AVX2 with F16C, AVX-512, and AVX-512 with AVX512-BF16; on aarch64 NEON with the float16
/// conversions FCVTL / FCVTN, and that with FEAT_BF16 (BFCVTN). Every level runs the same
/// source, so the same blocks in the same order, and rounds the same way: every level gives
/// the same bits. The values are the C header's `BNK_LEVEL_*` constants (``cValue``).
package enum KernelLevel: Sendable, CaseIterable, CustomStringConvertible {
    case generic
    case avx2
    case avx512
    case avx512BFloat16
    case neon
    case neonBFloat16

    /// The level's constant in the C kernels' header, passed to every kernel call.
    package var cValue: Int32 {
        switch self {
        case .generic: Int32(BNK_LEVEL_GENERIC)
        case .avx2: Int32(BNK_LEVEL_AVX2)
        case .avx512: Int32(BNK_LEVEL_AVX512)
        case .avx512BFloat16: Int32(BNK_LEVEL_AVX512_BF16)
        case .neon: Int32(BNK_LEVEL_NEON)
        case .neonBFloat16: Int32(BNK_LEVEL_NEON_BF16)
        }
    }

    /// The level whose C constant is `cValue`, or `nil`.
    init?(cValue: Int32) {
        guard let level = KernelLevel.allCases.first(where: { $0.cValue == cValue }) else { return nil }
        self = level
    }

    /// The name `BNKIT_CPU_DISPATCH` accepts and `bnkit` prints: `generic`, `avx2`,
    /// `avx512`, `avx512-bf16`, `neon`, `neon-bf16`.
    package var description: String {
        switch self {
        case .generic: "generic"
        case .avx2: "avx2"
        case .avx512: "avx512"
        case .avx512BFloat16: "avx512-bf16"
        case .neon: "neon"
        case .neonBFloat16: "neon-bf16"
        }
    }

    /// The next level down on the same architecture (`nil` for `generic`).
    var lower: KernelLevel? {
        switch self {
        case .generic: nil
        case .avx2, .neon: .generic
        case .avx512: .avx2
        case .avx512BFloat16: .avx512
        case .neonBFloat16: .neon
        }
    }

    /// Whether the running CPU can run this level (`generic` always; a level of another
    /// architecture never).
    var isSupported: Bool { bnk_cpu_supports_level(cValue) != 0 }

    /// This level where the running CPU supports it, else the highest supported level below
    /// it on its architecture (``lower``, down to `generic`).
    var loweredToSupported: KernelLevel {
        var level = self
        while !level.isSupported, let next = level.lower { level = next }
        return level
    }

    /// The highest level the running CPU supports (`generic` off x86-64 and aarch64).
    package static let supported = KernelLevel(cValue: bnk_cpu_level()) ?? .generic

    /// What `CPUBackend(threadCount:)` uses: ``supported``, or the level named by the
    /// environment variable `BNKIT_CPU_DISPATCH` (a ``description``, or `baseline` / `none`
    /// for `generic`), lowered to what the CPU supports (``loweredToSupported``; read once per
    /// process; an unknown name leaves ``supported``).
    package static let selected: KernelLevel = {
        guard let value = getenv("BNKIT_CPU_DISPATCH").map({ String(cString: $0).lowercased() }) else {
            return supported
        }
        return level(named: value)?.loweredToSupported ?? supported
    }()

    /// The level with the name `name` (see ``description``; `baseline` and `none` name
    /// `generic`), or `nil`.
    static func level(named name: String) -> KernelLevel? {
        if name == "baseline" || name == "none" { return .generic }
        return allCases.first { $0.description == name }
    }
}
