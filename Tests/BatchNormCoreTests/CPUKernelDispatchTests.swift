import BatchNormTestSupport
import CBatchNormKernels
import Testing

@testable import BatchNormCore

#if canImport(Glibc)
    import Glibc
#endif

/// The run-time kernel dispatch: every kernel level the machine supports (the C kernels
/// compiled for the baseline, `generic`, and for AVX2 and AVX-512) against a plain `Double`
/// reference, against each other, and bitwise across thread counts.
@Suite struct CPUKernelDispatchTests {
    /// Every level this CPU can run (`generic` always).
    static let levels = KernelLevel.allCases.filter(\.isSupported)

    /// Kernel-path shapes (tails, S = 1, C not a multiple of 16, periods too long to
    /// replicate) and shapes large enough to run on several threads.
    static let shapes: [[Int]] = CPUBackendKernelTests.shapes + CPUBackendKernelTests.parallelShapes

    /// Per channel, in `Double` from the logical values: `(mean, Σ(x − mean)²)`, and for
    /// `g`: `(Σg, Σg·(x − mean))`.
    static func reference(x: [Float], g: [Float], shape: [Int]) -> (
        mean: [Double], m2: [Double], sumG: [Double],
        sumGX: [Double]
    ) {
        let channels = shape[1], spatial = shape.dropFirst(2).reduce(1, *)
        let count = Double(x.count / channels)
        var mean = [Double](repeating: 0, count: channels), m2 = mean, sumG = mean, sumGX = mean
        for (i, v) in x.enumerated() { mean[(i / spatial) % channels] += Double(v) }
        for c in 0..<channels { mean[c] /= count }
        for (i, v) in x.enumerated() {
            let c = (i / spatial) % channels, d = Double(v) - mean[c]
            m2[c] += d * d
            sumG[c] += Double(g[i])
            sumGX[c] += Double(g[i]) * d
        }
        return (mean, m2, sumG, sumGX)
    }

    static func relativeError(_ actual: [Double], _ expected: [Double], floor: Double) -> Double {
        zip(actual, expected).map { abs($0 - $1) / max(abs($1), floor) }.max() ?? 0
    }

    /// On an x86-64 CPU that reports AVX-512 (F, DQ, VL, BW) and F16C, the AVX-512 kernels
    /// (with AVX512-BF16 where reported) are the default, and on aarch64 the NEON kernels
    /// (with FEAT_BF16 where reported), so the other tests of the CPU backend run them.
    @Test func defaultLevelIsTheBestSupported() throws {
        #if (arch(x86_64) || arch(arm64)) && os(Linux)
            let flags = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
            let words = Set(flags.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init))
        #endif
        #if arch(x86_64) && os(Linux)
            if ["avx512f", "avx512dq", "avx512vl", "avx512bw", "f16c"].allSatisfy(words.contains) {
                #expect(KernelLevel.supported == (words.contains("avx512_bf16") ? .avx512BFloat16 : .avx512))
            } else if ["avx2", "fma", "f16c"].allSatisfy(words.contains) {
                #expect(KernelLevel.supported == .avx2)
            }
        #elseif arch(arm64) && os(Linux)
            #expect(KernelLevel.supported == (words.contains("bf16") ? .neonBFloat16 : .neon))
        #elseif arch(arm64)
            #expect([.neon, .neonBFloat16].contains(KernelLevel.supported))
        #elseif !arch(x86_64)
            #expect(KernelLevel.supported == .generic)
        #endif
        if getenv("BNKIT_CPU_DISPATCH") == nil {
            #expect(KernelLevel.selected == KernelLevel.supported)
            #expect(CPUBackend(threadCount: 2).kernelLevel == KernelLevel.supported)
        }
        #expect(CPUBackend(threadCount: 1, kernelLevel: .generic).kernelLevel == .generic)
        #if arch(x86_64)
            #expect(CPUBackend(threadCount: 1, kernelLevel: .avx512BFloat16).kernelLevel == KernelLevel.supported)
            #expect(CPUBackend(threadCount: 1, kernelLevel: .neonBFloat16).kernelLevel == .generic)
        #elseif arch(arm64)
            #expect(CPUBackend(threadCount: 1, kernelLevel: .neonBFloat16).kernelLevel == KernelLevel.supported)
            #expect(CPUBackend(threadCount: 1, kernelLevel: .avx512BFloat16).kernelLevel == .generic)
        #endif
    }

    /// The levels are the C header's constants, named as `BNKIT_CPU_DISPATCH` spells them, and
    /// a level is lowered along its own architecture only.
    @Test func levelsAreTheHeadersConstants() {
        let constants: [KernelLevel: Int32] = [
            .generic: Int32(BNK_LEVEL_GENERIC), .avx2: Int32(BNK_LEVEL_AVX2), .avx512: Int32(BNK_LEVEL_AVX512),
            .avx512BFloat16: Int32(BNK_LEVEL_AVX512_BF16), .neon: Int32(BNK_LEVEL_NEON),
            .neonBFloat16: Int32(BNK_LEVEL_NEON_BF16),
        ]
        for level in KernelLevel.allCases {
            #expect(level.cValue == constants[level])
            #expect(KernelLevel(cValue: level.cValue) == level)
            #expect(KernelLevel.level(named: level.description) == level)
            #expect(level.isSupported == (bnk_cpu_supports_level(level.cValue) != 0))
            let lowered = level.loweredToSupported
            #expect(lowered.isSupported, "\(level) lowered to \(lowered)")
        }
        #expect(KernelLevel(cValue: 99) == nil)
        #expect(KernelLevel.level(named: "baseline") == .generic)
        #expect(KernelLevel.level(named: "sse9") == nil)
        #expect(KernelLevel.generic.isSupported)
        #expect(KernelLevel.supported.isSupported)
        #expect(KernelLevel.avx512BFloat16.lower == .avx512 && KernelLevel.avx512.lower == .avx2)
        #expect(KernelLevel.avx2.lower == .generic && KernelLevel.neonBFloat16.lower == .neon)
        #expect(KernelLevel.neon.lower == .generic && KernelLevel.generic.lower == nil)
        // No CPU runs both architectures' levels.
        #expect(!(KernelLevel.avx2.isSupported && KernelLevel.neon.isSupported))
    }

    @Test(arguments: shapes, TensorLayout.allCases)
    func everyLevelMatchesTheReference(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: UInt64(shape.reduce(3, +)))
        // A large offset relative to the spread: float32 cancellation would show in M2.
        let x = try Tensor.normal(shape: shape, mean: 100, standardDeviation: 0.5, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, mean: 0.25, standardDeviation: 1, layout: layout, using: &generator)
        let expected = Self.reference(x: x.scalars, g: g.scalars, shape: shape)
        let channels = shape[1]
        let coefficients = ChannelCoefficients(
            gradientMultiplier: (0..<channels).map { 0.5 + Float($0 % 3) },
            inputMultiplier: (0..<channels).map { 1 + Float($0 % 5) / 8 },
            shift: (0..<channels).map { 100 + Float($0 % 4) / 16 },
            offset: (0..<channels).map { Float($0 % 7) - 3 })
        let forward = ChannelCoefficients(
            inputMultiplier: coefficients.inputMultiplier, shift: coefficients.shift,
            offset: coefficients.offset)
        let evaluation = ChannelCoefficients(
            gradientMultiplier: coefficients.gradientMultiplier,
            inputMultiplier: Array(repeating: 0, count: channels),
            shift: Array(repeating: 0, count: channels), offset: coefficients.offset)

        var outputs = [KernelLevel: [[Float]]]()
        for level in Self.levels {
            for threads in [1, 2, 3] {
                let backend = CPUBackend(threadCount: threads, kernelLevel: level)
                let moments = try backend.collectStatistics(of: x)
                let mean = moments.map(\.mean)
                #expect(Self.relativeError(mean, expected.mean, floor: 1) <= 1e-13, "\(level) mean")
                #expect(Self.relativeError(moments.map(\.m2), expected.m2, floor: 1e-300) <= 1e-10, "\(level) M2")
                let sums = try backend.reduceGradient(g, input: x, mean: mean)
                let floor = Double(x.elementCount / channels).squareRoot()
                #expect(Self.relativeError(sums.map(\.gradient), expected.sumG, floor: floor) <= 1e-12, "\(level) Σg")
                #expect(
                    Self.relativeError(sums.map(\.gradientTimesCentered), expected.sumGX, floor: floor) <= 1e-10,
                    "\(level) Σg·(x − μ)")

                let y = try Tensor(zeros: shape, layout: layout)
                try backend.normalize(x, into: y, coefficients: forward)
                let dx = try Tensor(zeros: shape, layout: layout)
                try backend.applyGradient(g, input: x, into: dx, coefficients: coefficients)
                let dxEvaluation = try Tensor(zeros: shape, layout: layout)
                try backend.applyGradient(g, input: x, into: dxEvaluation, coefficients: evaluation)
                let results = [y.scalars, dx.scalars, dxEvaluation.scalars]
                if let first = outputs[level] {
                    #expect(first == results, "\(level): apply differs with \(threads) threads")
                } else {
                    outputs[level] = results
                }
            }
        }
        // Apply: the same float operations (no fused multiply-add) on every level.
        let generic = try #require(outputs[.generic])
        for level in Self.levels where level != .generic {
            #expect(outputs[level] == generic, "\(level) apply differs from the baseline kernels")
        }
        // Apply against the formulas evaluated in Float (the kernels' own precision).
        let xs = x.scalars, gs = g.scalars, spatial = shape.dropFirst(2).reduce(1, *)
        for i in stride(from: 0, to: xs.count, by: max(1, xs.count / 997)) {
            let c = (i / spatial) % channels
            let b = forward.inputMultiplier[c], shift = forward.shift[c], offset = forward.offset[c]
            #expect(generic[0][i] == b * (xs[i] - shift) + offset)
            #expect(generic[1][i] == (coefficients.gradientMultiplier[c] * gs[i] + b * (xs[i] - shift)) + offset)
            #expect(generic[2][i] == coefficients.gradientMultiplier[c] * gs[i] + offset)
        }
    }

    /// Statistics are shifted by a value of each block (channels-first: its first value;
    /// channels-last: its first row); an outlier there (10⁴ standard deviations from the
    /// mean) costs that block's M2 at most about ε·((x₀ − μ)/σ)² ≈ 1e-8 relative (measured:
    /// about 1e-12 over the whole tensor), far below what Float32 outputs can show.
    @Test(
        arguments: [[4, 3, 6, 10, 10], [2, 64, 4, 9, 9], [2, 256, 2, 6, 6], [1, 2, 3, 40, 40]],
        TensorLayout.allCases)
    func statisticsSurviveAnOutlierInTheShift(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 23)
        var values = try Tensor.normal(
            shape: shape, mean: 3, standardDeviation: 1, layout: layout,
            using: &generator
        ).scalars
        let channels = shape[1], spatial = shape.dropFirst(2).reduce(1, *)
        // x[0, c, 0, 0, 0] for every c: the first value of block 0 of plane (0, c)
        // channels-first, row 0 of the storage (the first row of block 0) channels-last.
        for c in 0..<channels { values[c * spatial] += 1e4 }
        let x = try Tensor(values, shape: shape, layout: layout)
        let expected = Self.reference(x: x.scalars, g: x.scalars, shape: shape)
        for level in Self.levels {
            let moments = try CPUBackend(threadCount: 2, kernelLevel: level).collectStatistics(of: x)
            #expect(Self.relativeError(moments.map(\.mean), expected.mean, floor: 1) <= 1e-12, "\(level) mean")
            #expect(Self.relativeError(moments.map(\.m2), expected.m2, floor: 1e-300) <= 1e-9, "\(level) M2")
        }
    }

    /// Every level gives the generic level's statistics and gradient sums, bitwise, for any
    /// thread count (the same operations in the same order; fused multiply-adds round once
    /// on every level).
    @Test(arguments: CPUBackendKernelTests.parallelShapes, TensorLayout.allCases)
    func everyLevelIsBitwiseIdenticalAcrossThreadCounts(shape: [Int], layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 17)
        let x = try Tensor.normal(shape: shape, mean: -20, standardDeviation: 4, layout: layout, using: &generator)
        let g = try Tensor.normal(shape: shape, layout: layout, using: &generator)
        let generic = CPUBackend(threadCount: 1, kernelLevel: .generic)
        let genericMoments = try generic.collectStatistics(of: x)
        let genericSums = try generic.reduceGradient(g, input: x, mean: genericMoments.map(\.mean))
        for level in Self.levels {
            let single = CPUBackend(threadCount: 1, kernelLevel: level)
            let moments = try single.collectStatistics(of: x)
            let sums = try single.reduceGradient(g, input: x, mean: moments.map(\.mean))
            #expect(moments == genericMoments, "\(level): statistics differ from the generic level")
            #expect(sums == genericSums, "\(level): gradient sums differ from the generic level")
            for threads in [2, 3, 8] {
                let backend = CPUBackend(threadCount: threads, kernelLevel: level)
                #expect(try backend.collectStatistics(of: x) == moments, "\(level), \(threads) threads")
                #expect(
                    try backend.reduceGradient(g, input: x, mean: moments.map(\.mean)) == sums,
                    "\(level), \(threads) threads")
            }
        }
    }
}
