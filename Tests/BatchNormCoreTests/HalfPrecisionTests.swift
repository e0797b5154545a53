import BatchNormReference
import BatchNormTestSupport
import Testing

@testable import BatchNormCore

/// float16 and bfloat16 data on the CPU: the conversions of every kernel level against
/// Swift's `Float16` and an independent bfloat16 rounding, every op in both layouts against
/// the `Double` reference computed on the half inputs, every level against every other and
/// every thread count against one, bitwise.
@Suite struct HalfPrecisionTests {
    static let halfTypes: [TensorDataType] = [.float16, .bfloat16]
    static let levels = CPUKernelDispatchTests.levels

    // MARK: Conversions

    /// Every float16 bit pattern widens exactly (NaN stays NaN), on every level, through the
    /// vector loop and the scalar tail alike (65536 = 4096 vectors; the same patterns one
    /// at a time).
    @Test func everyFloat16WidensExactly() {
        let patterns = (0...UInt16.max).map { $0 }
        for level in Self.levels {
            var vector = [Float](repeating: 0, count: patterns.count), scalar = vector
            Self.convert(patterns, from: .float16, to: &vector, .float32, level: level)
            for index in stride(from: 0, to: patterns.count, by: 1) where index % 97 == 0 || index < 40 {
                Self.convert(
                    Array(patterns[index...index]), from: .float16, to: &scalar[index...index], .float32,
                    level: level)
                #expect(scalar[index].bitPattern == vector[index].bitPattern, "\(level) scalar tail \(index)")
            }
            for (bits, value) in zip(patterns, vector) {
                let expected = Float(Float16(bitPattern: bits))
                if expected.isNaN {
                    #expect(value.isNaN)
                } else {
                    #expect(value.bitPattern == expected.bitPattern, "\(level) \(bits)")
                }
            }
        }
    }

    /// Floats spread over every binade that matters (float16 subnormals, normals, the
    /// overflow boundary at 65520, ties), plus specials.
    static let narrowingInputs: [Float] = {
        var generator = SeededGenerator(seed: 99)
        var values: [Float] = [
            0, -0, 1, -1, 65504, 65519.996, 65520, -65520, 1e9, .infinity, -.infinity, .nan,
            .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
            Float(bitPattern: 0x3380_0000), Float(bitPattern: 0x3300_0000), // 2⁻²⁴, 2⁻²⁵ (tie)
            Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), // bfloat16 ties
            Float(bitPattern: 0x7F7F_FFFF), Float(bitPattern: 0x0080_0000),
        ]
        for _ in 0..<40_000 {
            let bits = UInt32.random(in: 0...UInt32.max, using: &generator)
            // Exponents 2⁻³⁰ … 2³⁰ mostly, some anywhere.
            let exponent = bits % 4 == 0 ? (bits >> 23) & 0xFF : 97 + (bits >> 23) % 60
            values.append(Float(bitPattern: (bits & 0x807F_FFFF) | exponent << 23))
        }
        return values
    }()

    /// bfloat16 rounding written independently of the kernels: the two neighbours by
    /// truncation, the nearer by `Double` distance, ties to the even one; float subnormals
    /// to a signed zero; NaN quiet.
    static func referenceBFloat16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        if value.magnitude < .leastNormalMagnitude { return UInt16(bits >> 16) & 0x8000 }
        if value.isInfinite { return UInt16(bits >> 16) }
        // The neighbours toward zero (truncation) and away from it (one bfloat16 step
        // 2^(e − 7) further; ±2¹²⁸ past the largest finite value, whose pattern is ±inf).
        let low = bits & 0xFFFF_0000, high = low &+ 0x1_0000
        let exponent = Int((bits >> 23) & 0xFF) - 127
        let lowValue = Double(Float(bitPattern: low))
        let step = Double(sign: value.sign, exponent: exponent - 7, significand: 1)
        let lowDistance = abs(Double(value) - lowValue), highDistance = abs(lowValue + step - Double(value))
        if lowDistance != highDistance { return UInt16((lowDistance < highDistance ? low : high) >> 16) }
        return UInt16(((low >> 16) & 1) == 0 ? low >> 16 : high >> 16)
    }

    @Test func narrowingRoundsToNearestEvenOnEveryLevel() {
        let inputs = Self.narrowingInputs
        for level in Self.levels {
            var half = [UInt16](repeating: 0, count: inputs.count), bfloat = half
            Self.convert(inputs, from: .float32, to: &half, .float16, level: level)
            Self.convert(inputs, from: .float32, to: &bfloat, .bfloat16, level: level)
            for (index, value) in inputs.enumerated() {
                let expected = Float16(value)
                if expected.isNaN {
                    #expect(Float16(bitPattern: half[index]).isNaN)
                } else {
                    #expect(half[index] == expected.bitPattern, "\(level) float16 of \(value) (\(value.bitPattern))")
                }
                #expect(
                    bfloat[index] == Self.referenceBFloat16(value),
                    "\(level) bfloat16 of \(value) (\(value.bitPattern))")
            }
            // The scalar tail rounds as the vector loop does.
            var single: [UInt16] = [0]
            for index in stride(from: 0, to: inputs.count, by: 211) {
                Self.convert([inputs[index]], from: .float32, to: &single[0...0], .bfloat16, level: level)
                #expect(single[0] == bfloat[index])
                Self.convert([inputs[index]], from: .float32, to: &single[0...0], .float16, level: level)
                #expect(single[0] == half[index] || inputs[index].isNaN)
            }
        }
    }

    static func convert<Source, Destination>(
        _ source: [Source], from: TensorDataType,
        to destination: inout Destination, _ to: TensorDataType,
        level: KernelLevel
    )
    where Destination: MutableCollection, Destination: ContiguousMutableBytes {
        source.withUnsafeBytes { input in
            destination.withContiguousMutableBytes { output in
                ElementConversion.convert(
                    input.baseAddress!, from: from, to: output.baseAddress!, to,
                    count: source.count, level: level)
            }
        }
    }

    // MARK: Tensors

    @Test(arguments: TensorLayout.allCases)
    func tensorsOfEveryTypeConvertBothWays(layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 4)
        let shape = [3, 5, 2, 3, 7]
        let values = try Tensor.normal(shape: shape, mean: 2, standardDeviation: 30, using: &generator).scalars
        let bfloat = try Tensor(values, shape: shape, layout: layout, dataType: .bfloat16)
        #expect(bfloat.dataType == .bfloat16 && bfloat.storage.byteCount == 2 * values.count)
        #expect(bfloat.scalars == values.map { Float(bitPattern: UInt32(Self.referenceBFloat16($0)) << 16) })
        let half = try Tensor(values, shape: shape, layout: layout, dataType: .float16)
        #expect(half.scalars == values.map { Float(Float16($0)) })
        // Element access, in the logical index.
        #expect(bfloat[2, 4, 1, 2, 6] == Float(bitPattern: UInt32(Self.referenceBFloat16(values.last!)) << 16))
        bfloat[0, 1, 0, 0, 0] = 1.00390625 // 1 + 2⁻⁸: a tie, rounds to even (1.0)
        #expect(bfloat[0, 1, 0, 0, 0] == 1)
        try half.setValue(70000, at: [0, 0, 0, 0, 1])
        #expect(try half.value(at: [0, 0, 0, 0, 1]) == .infinity)
        // Between every pair of types and layouts, widening is exact and narrowing rounds once.
        for source in [half, bfloat] {
            for target in TensorLayout.allCases {
                let wide = source.converted(to: target, dataType: .float32)
                #expect(wide.layout == target && wide.scalars == source.scalars)
                #expect(wide.converted(to: layout, dataType: source.dataType).scalars == source.scalars)
                let other = source.converted(to: target, dataType: source.dataType == .float16 ? .bfloat16 : .float16)
                let expected = try Tensor(source.scalars, shape: shape, dataType: other.dataType)
                #expect(other.scalars == expected.scalars)
            }
        }
        #expect(bfloat.description.hasPrefix("Tensor(shape: [3, 5, 2, 3, 7], layout: \(layout), dataType: bfloat16)"))
        #expect(!(try Tensor.zeros(shape: [1])).description.contains("dataType"))
        #expect(TensorDataType.bfloat16.byteCount == 2 && TensorDataType.bfloat16.description == "bfloat16")
    }

    // MARK: Operations against the reference

    /// Whether `actual` is within one unit in the last place of `type` of `expected` rounded
    /// to `type`, or (for values much smaller than the tensor's, where the float32
    /// computation's cancellation is larger than a half-precision ulp) within one ulp of
    /// `type` at the tensor's root-mean-square magnitude `scale`.
    static func withinOneUnit(_ actual: Float, _ expected: Double, type: TensorDataType, scale: Double) -> Bool {
        let rounded = (try? Tensor([Float(expected)], shape: [1], dataType: type))?.scalars[0] ?? .nan
        let ulp = Double(rounded.magnitude.nextUp - rounded.magnitude) * (type == .float16 ? 8192 : 65536)
        let floor = scale * (type == .float16 ? 0x1p-10 : 0x1p-7)
        return abs(Double(actual) - Double(rounded)) <= max(ulp, floor) * (1 + 1e-9)
    }

    static func expectWithinOneUnit(
        _ actual: Tensor, _ expected: [Double], _ what: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let scale = CPUBackendKernelTests.spread(expected)
        let values = actual.scalars
        let bad = (0..<values.count).filter {
            !withinOneUnit(values[$0], expected[$0], type: actual.dataType, scale: scale)
        }
        let first = bad.first.map { "\(values[$0]) vs \(expected[$0]) at \($0)" } ?? ""
        #expect(
            bad.isEmpty, "\(what) \(actual.dataType): \(bad.count) elements off, first \(first)",
            sourceLocation: sourceLocation)
    }

    @Test(arguments: CPUBackendKernelTests.shapes, TensorLayout.allCases)
    func everyOperationMatchesTheReference(shape: [Int], layout: TensorLayout) throws {
        for type in Self.halfTypes {
            var generator = SeededGenerator(seed: UInt64(shape.reduce(5, +)))
            let x = try Tensor.normal(shape: shape, mean: 3, standardDeviation: 2, layout: layout, using: &generator)
                .converted(to: layout, dataType: type)
            let g = try Tensor.normal(shape: shape, mean: 0.25, standardDeviation: 1, layout: layout, using: &generator)
                .converted(to: layout, dataType: type)
            let maps = shape[1]
            let state = BatchNormState(
                scale: (0..<maps).map { 1 + Float($0 % 5) / 10 },
                bias: (0..<maps).map { Float($0 % 3) - 1 },
                mean: (0..<maps).map { 2 + Float($0 % 3) / 5 },
                var: (0..<maps).map { 3 + Float($0 % 2) }, numOfProps: 3)
            let xValues = x.scalars.map(Double.init), gValues = g.scalars.map(Double.init)

            // Statistics of the half input: to 1e-6 relative (they are accumulated in Double).
            let moments = try CPUBackend(threadCount: 2).collectStatistics(of: x)
            let expectedMoments = CPUKernelDispatchTests.reference(x: x.scalars, g: g.scalars, shape: shape)
            #expect(CPUKernelDispatchTests.relativeError(moments.map(\.mean), expectedMoments.mean, floor: 1) <= 1e-6)
            #expect(CPUKernelDispatchTests.relativeError(moments.map(\.m2), expectedMoments.m2, floor: 1e-300) <= 1e-6)

            // Training forward and backward.
            let bn = try CPUBackendKernelTests.module(rank: shape.count, maps: maps, threads: 2)
            try bn.load(state)
            var reference = ReferenceBatchNorm(state: state)
            let y = try bn(x)
            #expect(y.dataType == type && y.layout == layout)
            Self.expectWithinOneUnit(y, reference.trainingForward(xValues, shape: shape), "training y")
            #expect(ReferenceComparison.maximumRelativeError(try bn.mean.scalars, reference.mean, floor: 1e-3) <= 1e-6)
            #expect(
                ReferenceComparison.maximumRelativeError(try bn.var.scalars, reference.variance, floor: 1e-3) <= 1e-6)
            let dx = try #require(try bn.backward(g))
            #expect(dx.dataType == type && dx.layout == layout)
            Self.expectWithinOneUnit(dx, reference.backward(gValues, shape: shape, training: true), "training dx")
            #expect(
                ReferenceComparison.maximumRelativeError(
                    try bn.scaleGrad.scalars, reference.scaleGrad,
                    floor: CPUBackendKernelTests.spread(reference.scaleGrad)) <= 1e-5)
            #expect(
                ReferenceComparison.maximumRelativeError(
                    try bn.biasGrad.scalars, reference.biasGrad,
                    floor: CPUBackendKernelTests.spread(reference.biasGrad)) <= 1e-5)

            // Evaluation forward (also in place) and backward.
            let evaluation = ReferenceBatchNorm(state: state)
            let eval = try CPUBackendKernelTests.module(rank: shape.count, maps: maps, threads: 2)
            try eval.load(state)
            eval.evalMode()
            let yEval = try eval(x)
            Self.expectWithinOneUnit(yEval, evaluation.evaluationForward(xValues, shape: shape), "evaluation y")
            var evaluationBackward = evaluation
            Self.expectWithinOneUnit(
                try #require(try eval.backward(g)),
                evaluationBackward.backward(gValues, shape: shape, training: false), "evaluation dx")
            let inplace = try CPUBackendKernelTests.module(rank: shape.count, maps: maps, threads: 2, inplace: true)
            try inplace.load(state)
            inplace.evalMode()
            let copy = x.copy()
            let result = try inplace(copy)
            #expect(result.sharesStorage(with: copy) && result.dataType == type)
            #expect(copy.scalars == yEval.scalars)
        }
    }

    // MARK: Levels and threads

    /// Everything the backend computes on half data, by bit pattern.
    static func results(_ x: Tensor, _ g: Tensor, backend: CPUBackend) throws -> [String: [UInt64]] {
        let channels = x.shape[1]
        let moments = try backend.collectStatistics(of: x)
        let sums = try backend.reduceGradient(g, input: x, mean: moments.map(\.mean))
        let coefficients = ChannelCoefficients(
            gradientMultiplier: (0..<channels).map { 0.5 + Float($0 % 3) },
            inputMultiplier: (0..<channels).map { 1 + Float($0 % 5) / 8 },
            shift: (0..<channels).map { 3 + Float($0 % 4) / 16 }, offset: (0..<channels).map { Float($0 % 7) - 3 })
        let forward = ChannelCoefficients(
            inputMultiplier: coefficients.inputMultiplier, shift: coefficients.shift,
            offset: coefficients.offset)
        let y = try Tensor(zeros: x.shape, layout: x.layout, dataType: x.dataType)
        try backend.normalize(x, into: y, coefficients: forward)
        let dx = try Tensor(zeros: x.shape, layout: x.layout, dataType: x.dataType)
        try backend.applyGradient(g, input: x, into: dx, coefficients: coefficients)
        let bits = { (tensor: Tensor) in tensor.scalars.map { UInt64($0.bitPattern) } }
        return [
            "mean": moments.map(\.mean.bitPattern), "m2": moments.map(\.m2.bitPattern),
            "sumG": sums.map(\.gradient.bitPattern), "sumGX": sums.map(\.gradientTimesCentered.bitPattern),
            "y": bits(y), "dx": bits(dx),
        ]
    }

    @Test(arguments: CPUKernelDispatchTests.shapes, TensorLayout.allCases)
    func everyLevelAndThreadCountGivesTheSameBits(shape: [Int], layout: TensorLayout) throws {
        for type in Self.halfTypes {
            var generator = SeededGenerator(seed: 31)
            let x = try Tensor.normal(shape: shape, mean: -20, standardDeviation: 4, layout: layout, using: &generator)
                .converted(to: layout, dataType: type)
            let g = try Tensor.normal(shape: shape, layout: layout, using: &generator).converted(
                to: layout, dataType: type)
            let expected = try Self.results(x, g, backend: CPUBackend(threadCount: 1, kernelLevel: .generic))
            for level in Self.levels {
                for threads in [1, 2, 3] {
                    let actual = try Self.results(x, g, backend: CPUBackend(threadCount: threads, kernelLevel: level))
                    for key in expected.keys.sorted() {
                        #expect(actual[key] == expected[key], "\(type) \(level), \(threads) threads: \(key) differs")
                    }
                }
            }
        }
    }
}

/// The AVX-512 levels run only where the CPU has them; elsewhere (this project's CI machine,
/// an AMD Zen 3 with AVX2 and F16C) they are compiled but cannot run, and these tests say
/// so as skipped instead of passing.
@Suite struct AVX512LevelTests {
    @Test(
        .enabled(
            if: KernelLevel.avx512.isSupported,
            "SKIPPED: this CPU has no AVX-512 (F/DQ/VL/BW): those kernels are compiled only"))
    func avx512KernelsMatchTheBaseline() throws {
        try HalfPrecisionTests().everyLevelAndThreadCountGivesTheSameBits(
            shape: [2, 7, 3, 5, 11], layout: .channelsLast)
        #expect(HalfPrecisionTests.levels.contains(.avx512))
    }

    @Test(
        .enabled(
            if: KernelLevel.avx512BFloat16.isSupported,
            "SKIPPED: this CPU has no AVX512-BF16: the vcvtneps2bf16 path is compiled only"))
    func avx512BFloat16KernelsMatchTheBaseline() throws {
        try HalfPrecisionTests().everyLevelAndThreadCountGivesTheSameBits(
            shape: [2, 3, 5, 7, 11], layout: .channelsFirst)
        #expect(HalfPrecisionTests.levels.contains(.avx512BFloat16))
    }
}

/// The aarch64 levels run only on aarch64 (their float16 conversions by FCVTL / FCVTN on every
/// such CPU, bfloat16 by BFCVTN with FEAT_BF16); elsewhere these tests say so as skipped.
/// Tools/KernelCheck checks them bit for bit under qemu-aarch64 in CI.
@Suite struct AArch64LevelTests {
    @Test(.enabled(if: KernelLevel.neon.isSupported, "SKIPPED: not an aarch64 CPU: the NEON kernels are not built"))
    func neonKernelsMatchTheBaseline() throws {
        try HalfPrecisionTests().everyLevelAndThreadCountGivesTheSameBits(
            shape: [2, 7, 3, 5, 11], layout: .channelsLast)
        #expect(HalfPrecisionTests.levels.contains(.neon))
    }

    @Test(
        .enabled(
            if: KernelLevel.neonBFloat16.isSupported,
            "SKIPPED: not an aarch64 CPU with FEAT_BF16: the BFCVTN kernels do not run here"))
    func neonBFloat16KernelsMatchTheBaseline() throws {
        try HalfPrecisionTests().everyLevelAndThreadCountGivesTheSameBits(
            shape: [2, 3, 5, 7, 11], layout: .channelsFirst)
        #expect(HalfPrecisionTests.levels.contains(.neonBFloat16))
    }
}

/// Contiguous buffers whose bytes the conversion tests write.
protocol ContiguousMutableBytes {
    mutating func withContiguousMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R
}

extension Array: ContiguousMutableBytes {
    mutating func withContiguousMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        withUnsafeMutableBytes(body)
    }
}

extension ArraySlice: ContiguousMutableBytes {
    mutating func withContiguousMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        withUnsafeMutableBytes(body)
    }
}
