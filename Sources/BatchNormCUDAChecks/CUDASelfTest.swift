import BatchNormCUDA
import BatchNormCore
import BatchNormReference
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// One comparison case of ``CUDASelfTest``: a shape, a layout, a data type and the GPU path.
public struct CUDASelfTestCase: Sendable, CustomStringConvertible {
    /// How the GPU is driven.
    public enum Path: String, Sendable, CaseIterable {
        /// ``BatchNormCUDA/CUDABackend`` with host tensors (copies in and out per call).
        case hostBackend = "backend"
        /// ``BatchNormCUDA/DeviceTensor`` through the module (`bn(x)` / `bn.backward(g)`) on the device.
        case deviceTensors = "device"
    }

    /// Logical shape `(N, C, S...)`, rank 2 to 5 (``BatchNorm`` … ``BatchNorm3D``).
    public var shape: [Int]
    /// Storage order of the data and gradient.
    public var layout: TensorLayout
    /// Element type of the data and gradient (parameters and statistics are always `Float32`).
    public var dataType: TensorDataType
    /// GPU path under test.
    public var path: Path
    /// `arange` data (the seed example) instead of random normal data.
    public var arange: Bool
    /// Seed of the data, gradient and module state.
    public var seed: UInt64

    /// Creates a case.
    public init(
        shape: [Int], layout: TensorLayout, dataType: TensorDataType, path: Path, arange: Bool = false,
        seed: UInt64 = 1
    ) {
        self.shape = shape
        self.layout = layout
        self.dataType = dataType
        self.path = path
        self.arange = arange
        self.seed = seed
    }

    /// `"[5, 3, 10, 10, 10] ncdhw float32 backend"`.
    public var description: String {
        "\(shape) \(layout) \(dataType) \(path.rawValue)\(arange ? " arange" : "")"
    }
}

/// The outcome of one case.
public struct CUDASelfTestResult: Sendable {
    /// The case that ran.
    public var testCase: CUDASelfTestCase
    /// `true` when every comparison was within tolerance and nothing threw.
    public var passed: Bool
    /// One entry per comparison: `"train.y 3.1e-07/2.0e-05"` (error/tolerance), failures marked `FAIL`.
    public var comparisons: [String]

    /// `"PASS  [5, 3, 10, 10, 10] ncdhw float32 backend: train.y 1e-07/2e-05, …"`.
    public var line: String {
        "\(passed ? "PASS" : "FAIL")  \(testCase): " + comparisons.joined(separator: ", ")
    }
}

/// Compares every GPU operation with the CPU backend and the `Double` reference
/// (``BatchNormReference/ReferenceBatchNorm``): training forward (output, running
/// statistics, saved mean and invstd), training backward (input and parameter gradients),
/// evaluation forward (copying and in place), evaluation backward, and run-to-run bitwise
/// reproducibility of the statistics. Used by `bnkit selftest --device cuda` and the tests.
///
/// Tolerances are relative errors against the reference, element by element, with a floor
/// (1% of the largest expected magnitude for data, of the largest `scale·invstd·g` term for
/// the training `dx`, 0.1% for statistics): `2·10⁻⁵` for `float32` data and statistics,
/// `4·10⁻³` for `float16` data and `1.6·10⁻²` for `bfloat16` data (the output's rounding,
/// within two units in the last place of each format; statistics are still compared at
/// `2·10⁻⁵` since the reference sees the same rounded inputs). A data type the device does not
/// support (``BatchNormCUDA/CUDADevice/supportedDataTypes``) must be refused with
/// `BatchNormError/dataTypeMismatch(argument:expected:actual:)`, the module
/// unchanged.
public enum CUDASelfTest {
    /// Tolerance for `float32` results and every statistic.
    public static let float32Tolerance = 2e-5
    /// Tolerance for `float16` data results.
    public static let float16Tolerance = 4e-3
    /// Tolerance for `bfloat16` data results.
    public static let bfloat16Tolerance = 1.6e-2

    /// The tolerance for data results of `dataType`.
    public static func tolerance(for dataType: TensorDataType) -> Double {
        switch dataType {
        case .float32: float32Tolerance
        case .float16: float16Tolerance
        case .bfloat16: bfloat16Tolerance
        }
    }

    /// The fixed shapes: the seed example, odd sizes, `C = 1`, huge spatial, many channels,
    /// `S = 1` and minimal `M = 2`, every rank.
    public static let fixedShapes: [[Int]] = [
        [5, 3, 10, 10, 10], [3, 5, 7, 9, 11], [2, 1, 17, 33, 65], [1, 2, 96, 96, 96], [4, 256, 3, 5, 7],
        [2, 1000, 1, 1, 1], [1, 3, 1, 1, 2], [2, 4, 1, 1, 16384 + 3], [64, 33], [4, 5, 129], [3, 7, 13, 17],
    ]

    /// Every case: ``fixedShapes`` (the first also as `arange` data) and `randomCount`
    /// random rank-5 shapes, each in both layouts, every data type and both paths.
    public static func cases(randomCount: Int = 6, seed: UInt64 = 2024, small: Bool = false) -> [CUDASelfTestCase] {
        var generator = SeededGenerator(seed: seed)
        var shapes: [(shape: [Int], arange: Bool)] = [([5, 3, 10, 10, 10], true)]
        shapes += fixedShapes.filter { !small || $0.reduce(1, *) <= 200_000 }.map { ($0, false) }
        for _ in 0..<randomCount {
            let shape = [
                Int.random(in: 1...4, using: &generator), Int.random(in: 1...70, using: &generator),
                Int.random(in: 1...24, using: &generator), Int.random(in: 1...33, using: &generator),
                Int.random(in: 1...40, using: &generator),
            ]
            shapes.append((shape, false))
        }
        return cases(shapes, seed: seed)
    }

    /// The cases of the given shapes (`arange`: the seed example's data instead of random data),
    /// each in both layouts, every data type and both paths.
    public static func cases(_ shapes: [(shape: [Int], arange: Bool)], seed: UInt64 = 2024) -> [CUDASelfTestCase] {
        var result = [CUDASelfTestCase]()
        for (index, entry) in shapes.enumerated() {
            for path in CUDASelfTestCase.Path.allCases {
                for dataType in TensorDataType.allCases {
                    for layout in TensorLayout.allCases {
                        result.append(
                            CUDASelfTestCase(
                                shape: entry.shape, layout: layout, dataType: dataType, path: path,
                                arange: entry.arange, seed: seed &+ UInt64(index)))
                    }
                }
            }
        }
        return result
    }

    /// The synchronized device-tensor comparisons: two ranks of a `LocalProcessGroup`
    /// (threads sharing `device`) with uneven batches, in both layouts, against one host module on
    /// the concatenated batch (`SynchronizedComparison`).
    public static let synchronizedCases: [SynchronizedComparison] = TensorLayout.allCases.enumerated().map {
        SynchronizedComparison(layout: $0.element, maps: 3, spatial: [3, 4, 5], batches: [3, 1], steps: 3, seed: 40)
    }

    /// Runs one synchronized comparison on `device`, each member on its own thread: `"PASS  sync
    /// NCDHW ... on cuda"`, or the failures of every rank.
    public static func runSynchronized(_ comparison: SynchronizedComparison, on device: CUDADevice) -> String {
        let failures: [String]
        do {
            let members = try LocalProcessGroup.members(count: comparison.batches.count, timeout: 600)
            let results = Results(count: members.count)
            var threads = [Thread]()
            for member in members {
                threads.append(
                    Thread {
                        results.set(
                            member.rank,
                            Result {
                                try comparison.run(
                                    group: member, place: { try DeviceTensor($0, on: device) },
                                    host: { try $0.toHost() })
                            })
                    })
            }
            threads.forEach { $0.start() }
            failures = results.wait().flatMap { result in
                switch result {
                case .success(let failures): failures
                case .failure(let error): ["\(comparison): \(error)"]
                }
            }
        } catch {
            failures = ["\(comparison): \(error)"]
        }
        return failures.isEmpty ? "PASS  \(comparison) on cuda" : "FAIL  " + failures.joined(separator: "; ")
    }

    /// Runs one case on `device`; errors become a failed result naming them.
    public static func run(_ testCase: CUDASelfTestCase, on device: CUDADevice) -> CUDASelfTestResult {
        execute(testCase) { try Runner(testCase: testCase, backend: CUDABackend(device: device), device: device) }
    }

    /// Checks the harness itself where there is no GPU: the same comparisons with
    /// `CPUBackend` standing in for the GPU. Only `float32` cases on the
    /// ``CUDASelfTestCase/Path/hostBackend`` path can run this way (the CPU has no `float16`
    /// and no device tensors); other cases fail with an explanation.
    public static func runWithCPUStandIn(_ testCase: CUDASelfTestCase) -> CUDASelfTestResult {
        execute(testCase) {
            guard testCase.dataType == .float32, testCase.path == .hostBackend else {
                throw CUDAError.invalidArgument(
                    name: "case", expected: "float32 on the backend path", actual: "\(testCase)")
            }
            return Runner(testCase: testCase, backend: CPUBackend(), device: nil)
        }
    }

    private static func execute(_ testCase: CUDASelfTestCase, _ makeRunner: () throws -> Runner) -> CUDASelfTestResult {
        var comparisons = [String]()
        var passed = true
        do {
            try makeRunner().run { name, error, tolerance in
                let ok = error <= tolerance
                passed = passed && ok
                comparisons.append("\(name) \(format(error))/\(format(tolerance))\(ok ? "" : " FAIL")")
            }
        } catch {
            passed = false
            comparisons.append("ERROR \(error)")
        }
        return CUDASelfTestResult(testCase: testCase, passed: passed, comparisons: comparisons)
    }

    static func format(_ value: Double) -> String {
        if value == 0 { return "0" }
        guard value.isFinite else { return "\(value)" }
        var exponent = 0
        var mantissa = value
        while mantissa >= 10 {
            mantissa /= 10
            exponent += 1
        }
        while mantissa < 1 {
            mantissa *= 10
            exponent -= 1
        }
        return "\(Double(Int(mantissa * 10)) / 10)e\(exponent)"
    }

    /// Element-wise relative error `|a − e| / (|e| + floor)`; the floor is `floorFraction` of
    /// `scale` (default: the largest expected magnitude), so that values cancelling to
    /// nearly zero are judged against the magnitude of the terms that produced them.
    public static func relativeError(
        _ actual: [Float], _ expected: [Double], floorFraction: Double = 1e-3,
        scale: Double? = nil
    ) -> Double {
        guard actual.count == expected.count else { return .infinity }
        let largest = scale ?? expected.reduce(0) { max($0, abs($1)) }
        return ReferenceComparison.maximumRelativeError(actual, expected, floor: max(largest * floorFraction, 1e-30))
    }

    /// ``relativeError(_:_:floorFraction:scale:)`` for data outputs: floor 1% of the scale.
    public static func dataError(_ actual: [Float], _ expected: [Double], scale: Double? = nil) -> Double {
        relativeError(actual, expected, floorFraction: 1e-2, scale: scale)
    }
}

/// Executes one ``CUDASelfTestCase``.
private struct Runner {
    let testCase: CUDASelfTestCase
    /// The backend under test (``CUDABackend``, or ``CPUBackend`` to check the harness).
    let backend: any BatchNormBackend<Tensor>
    /// The GPU, for the device-tensor path.
    let device: CUDADevice?

    func requireDevice() throws -> CUDADevice {
        guard let device else { throw CUDAError.noDevice(reason: "the device-tensor path needs a GPU") }
        return device
    }

    typealias Report = (String, Double, Double) -> Void

    func makeModule(maps: Int, inplace: Bool = false, backend: any BatchNormBackend<Tensor>) throws -> BatchNormND {
        switch testCase.shape.count {
        case 2: try BatchNorm(maps: maps, inplace: inplace, backend: backend)
        case 3: try BatchNorm1D(maps: maps, inplace: inplace, backend: backend)
        case 4: try BatchNorm2D(maps: maps, inplace: inplace, backend: backend)
        default: try BatchNorm3D(maps: maps, inplace: inplace, backend: backend)
        }
    }

    func run(report: Report) throws {
        let shape = testCase.shape, maps = shape[1]
        let count = shape.reduce(1, *)
        var generator = SeededGenerator(seed: testCase.seed)
        let half = testCase.dataType != .float32
        // Data: large offset for float32 (exercises the shifted statistics), moderate for float16.
        let (offset, spread): (Double, Double) = half ? (10, 2) : (1000, 3)
        let rawX: [Float] =
            testCase.arange
            ? (0..<count).map { Float($0) }
            : (0..<count).map { _ in Float(offset + spread * normal(&generator)) }
        let rawG: [Float] = (0..<count).map { _ in Float(normal(&generator)) }
        let x = try Tensor(rawX, shape: shape, layout: testCase.layout, dataType: testCase.dataType)
        let g = try Tensor(rawG, shape: shape, layout: testCase.layout, dataType: testCase.dataType)
        // The reference sees exactly the (rounded) values the GPU sees.
        let xValues = x.scalars.map(Double.init), gValues = g.scalars.map(Double.init)
        let state = BatchNormState(
            scale: (0..<maps).map { _ in Float(1 + 0.2 * normal(&generator)) },
            bias: (0..<maps).map { _ in Float(0.5 * normal(&generator)) },
            mean: (0..<maps).map { _ in Float(normal(&generator)) },
            var: (0..<maps).map { _ in Float(1 + 0.5 * Double.random(in: 0..<1, using: &generator)) },
            numOfProps: 2)
        let dataTolerance = CUDASelfTest.tolerance(for: testCase.dataType)
        let statisticsTolerance = CUDASelfTest.float32Tolerance

        var reference = ReferenceBatchNorm(state: state)
        let cpu = try makeModule(maps: maps, backend: CPUBackend())
        try cpu.load(state)
        let xFloat = x.converted(to: x.layout, dataType: .float32),
            gFloat = g.converted(to: g.layout, dataType: .float32)
        let gpu = try makeModule(maps: maps, backend: backend)
        try gpu.load(state)
        guard backend.supports(testCase.dataType) else {
            // Refused before anything is copied or launched, the module unchanged.
            var refused = false
            do {
                switch testCase.path {
                case .hostBackend: _ = try gpu(x)
                case .deviceTensors: _ = try gpu(DeviceTensor(x, on: requireDevice()))
                }
            } catch BatchNormError.dataTypeMismatch(_, _, let actual) {
                refused = actual == testCase.dataType.rawValue
            }
            let unchanged = try gpu.state() == state
            report("unsupported.refused", refused && unchanged ? 0 : 1, 0)
            return
        }

        // Training forward.
        let expectedY = reference.trainingForward(xValues, shape: shape)
        let cpuY = try cpu(xFloat).scalars
        let gpuY: [Float]
        switch testCase.path {
        case .hostBackend: gpuY = try gpu(x).scalars
        case .deviceTensors: gpuY = try gpu(DeviceTensor(x, on: requireDevice())).toHost().scalars
        }
        report("train.y", CUDASelfTest.dataError(gpuY, expectedY), dataTolerance)
        report("train.y~cpu", CUDASelfTest.dataError(gpuY, cpuY.map(Double.init)), dataTolerance)
        report("running.mean", CUDASelfTest.relativeError(try gpu.mean.scalars, reference.mean), statisticsTolerance)
        report("running.var", CUDASelfTest.relativeError(try gpu.var.scalars, reference.variance), statisticsTolerance)
        report(
            "savemean", CUDASelfTest.relativeError(gpu.savemean?.scalars ?? [], reference.savedMean),
            statisticsTolerance)
        report(
            "saveinvvar", CUDASelfTest.relativeError(gpu.saveinvvar?.scalars ?? [], reference.savedInvstd),
            statisticsTolerance)
        report(
            "running~cpu",
            CUDASelfTest.relativeError(
                try gpu.var.scalars + gpu.mean.scalars,
                try (cpu.var.scalars + cpu.mean.scalars).map(Double.init)),
            statisticsTolerance)
        if testCase.arange {
            // The seed example: float64 statistics to 1e-6 relative.
            report("arange.mean~f64", CUDASelfTest.relativeError(try gpu.mean.scalars, reference.mean), 1e-6)
        }

        // Training backward.
        let expectedDX = reference.backward(gValues, shape: shape, training: true)
        let cpuDX = try cpu.backward(gFloat)!.scalars
        let gpuDX: [Float]
        switch testCase.path {
        case .hostBackend: gpuDX = try gpu.backward(g)!.scalars
        case .deviceTensors: gpuDX = try gpu.backward(DeviceTensor(g, on: requireDevice()))!.toHost().scalars
        }
        // Floor: 1% of the largest term scale·invstd·g (dx cancels to nearly 0 when M = 2).
        let spatial = shape.dropFirst(2).reduce(1, *)
        var termScale = 0.0
        for (index, value) in gValues.enumerated() {
            let channel = (index / spatial) % maps
            termScale = max(termScale, abs(Double(state.scale[channel]) * reference.savedInvstd[channel] * value))
        }
        report("train.dx", CUDASelfTest.dataError(gpuDX, expectedDX, scale: termScale), dataTolerance)
        report("train.dx~cpu", CUDASelfTest.dataError(gpuDX, cpuDX.map(Double.init), scale: termScale), dataTolerance)
        report(
            "scaleGrad", CUDASelfTest.relativeError(try gpu.scaleGrad.scalars, reference.scaleGrad), statisticsTolerance
        )
        report(
            "biasGrad", CUDASelfTest.relativeError(try gpu.biasGrad.scalars, reference.biasGrad), statisticsTolerance)

        // Reproducibility: the same statistics bit for bit on a second run.
        let first = try backend.collectStatistics(of: x), second = try backend.collectStatistics(of: x)
        report("stats.bitwise", first == second ? 0 : 1, 0)

        // Evaluation forward and backward with the running statistics just computed.
        gpu.evalMode()
        let expectedEvalY = reference.evaluationForward(xValues, shape: shape)
        let expectedEvalDX = reference.backward(gValues, shape: shape, training: false)
        let evalY: [Float], evalDX: [Float]
        switch testCase.path {
        case .hostBackend:
            evalY = try gpu(x).scalars
            evalDX = try gpu.backward(g)!.scalars
        case .deviceTensors:
            evalY = try gpu(DeviceTensor(x, on: requireDevice())).toHost().scalars
            evalDX = try gpu.backward(DeviceTensor(g, on: requireDevice()))!.toHost().scalars
        }
        report("eval.y", CUDASelfTest.dataError(evalY, expectedEvalY), dataTolerance)
        report("eval.dx", CUDASelfTest.dataError(evalDX, expectedEvalDX), dataTolerance)

        // In-place evaluation: the output is the input's storage.
        let inplace = try makeModule(maps: maps, inplace: true, backend: backend)
        try inplace.load(try gpu.state())
        inplace.evalMode()
        let target = x.copy()
        switch testCase.path {
        case .hostBackend:
            let output = try inplace(target)
            report("eval.inplace.shares", output.sharesStorage(with: target) ? 0 : 1, 0)
            report("eval.inplace.y", CUDASelfTest.dataError(target.scalars, expectedEvalY), dataTolerance)
        case .deviceTensors:
            let deviceTarget = try DeviceTensor(target, on: requireDevice())
            let output = try inplace(deviceTarget)
            report("eval.inplace.shares", output.sharesBuffer(with: deviceTarget) ? 0 : 1, 0)
            report(
                "eval.inplace.y", CUDASelfTest.dataError(try deviceTarget.toHost().scalars, expectedEvalY),
                dataTolerance)
        }
    }

    /// Box–Muller standard normal.
    func normal(_ generator: inout SeededGenerator) -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &generator)
        let u2 = Double.random(in: 0..<1, using: &generator)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// Compiles the kernel source with NVRTC for each architecture: the check that needs no GPU.
public enum CUDAKernelCompilation {
    /// One compilation's outcome.
    public struct Outcome: Sendable {
        /// `compute_XY` or `sm_XY`.
        public var architecture: String
        /// `XY`, the compute capability `architecture` names (`major · 10 + minor`).
        public var computeCapability: Int
        /// Size of the PTX or CUBIN image.
        public var byteCount: Int
        /// Whether the image is CUBIN (assembled by ptxas) rather than PTX.
        public var isCUBIN: Bool
        /// Entry points found in the PTX: those of
        /// ``BatchNormCUDA/CUDAKernelSource/entryPoints(computeCapability:)`` when it compiled
        /// (empty for CUBIN, whose names are not read).
        public var entryPoints: [String]
        /// NVRTC's log (empty when there were no warnings).
        public var log: String
    }

    /// Compiles ``BatchNormCUDA/CUDAKernelSource/source`` for each of `architectures`
    /// (`compute_XY` → PTX, whose `.entry` names are checked; `sm_XY` → CUBIN, which also
    /// runs ptxas). Throws the first compilation error.
    public static func compile(architectures: [String], nvrtc: NVRTC) throws -> [Outcome] {
        try architectures.map { architecture in
            let image = try nvrtc.compile(
                CUDAKernelSource.source, architecture: architecture,
                options: CUDAKernelSource.compileOptions)
            var entries = [String]()
            if let ptx = image.ptx {
                for line in ptx.split(separator: "\n") where line.hasPrefix(".visible .entry ") {
                    let name = line.dropFirst(".visible .entry ".count).prefix { $0 != "(" }
                    entries.append(String(name))
                }
            }
            let capability = Int(architecture.drop { !$0.isNumber }.prefix { $0.isNumber }) ?? 0
            return Outcome(
                architecture: architecture, computeCapability: capability, byteCount: image.bytes.count,
                isCUBIN: image.isCUBIN,
                entryPoints: entries, log: image.log)
        }
    }
}

/// Each member's outcome, filled from its thread; ``wait()`` returns once every one is set.
private final class Results: @unchecked Sendable {
    private let condition = NSCondition()
    private var outcomes: [Result<[String], any Error>?]

    init(count: Int) { outcomes = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ outcome: Result<[String], any Error>) {
        condition.lock()
        outcomes[index] = outcome
        condition.broadcast()
        condition.unlock()
    }

    func wait() -> [Result<[String], any Error>] {
        condition.lock()
        defer { condition.unlock() }
        while outcomes.contains(where: { $0 == nil }) { condition.wait() }
        return outcomes.compactMap { $0 }
    }
}
