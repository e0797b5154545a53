import ArgumentParser
import BatchNormCUDA
import BatchNormCUDAChecks
import BatchNormKit

/// `bnkit selftest --device cuda`: every GPU operation against the CPU backend and the
/// `Double` reference, over the seed example, odd sizes, `C = 1`, huge spatial sizes, many
/// channels and random shapes, in both layouts, both data types, through both the
/// `CUDABackend` (host tensors) and the `DeviceTensor` API.
///
/// Exit status: 0 when every case passed, 1 when one failed, 77 when no CUDA driver, GPU or
/// NVRTC was found (then one SKIPPED line per suite, the GPU path and data type, and one
/// reason line are printed; `--verbose` lists every case and every path searched; skipped
/// cases are never counted as passed).
struct SelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Compare the GPU kernels with the CPU backend and the Double reference.",
        discussion: """
            Exit status: 0 all passed, 1 a case failed, \(SelfTestCommand.skippedExitCode) skipped \
            (no CUDA driver, GPU or NVRTC; set BNKIT_CUDA_DRIVER_PATH / BNKIT_NVRTC_PATH to override the search).
            """)

    /// Exit status when nothing could run (no CUDA): distinct from success and failure.
    static let skippedExitCode: Int32 = 77

    /// The devices `selftest` compares with the CPU (the CPU backend itself is covered by `swift test`).
    enum Device: String, ExpressibleByArgument, CaseIterable {
        case cuda
    }

    @Option(help: "Device to test.")
    var device: Device = .cuda

    @Option(parsing: .unconditional, help: "Number of random rank-5 shapes added to the fixed ones.")
    var random: Int = 6

    @Option(parsing: .unconditional, help: "Seed of the random shapes and data.")
    var seed: UInt64 = 2024

    @Flag(help: "Skip the fixed shapes above 200,000 elements.")
    var small = false

    @Option(
        parsing: .singleValue,
        help:
            "Only this shape (N,C[,D[,H[,W]]], repeatable) instead of the fixed and random ones, every layout, type and path."
    )
    var shape: [String] = []

    @Flag(help: "Only compile the kernels with NVRTC (no driver or GPU needed) and list their entry points.")
    var compileOnly = false

    @Option(name: .customLong("arch"), help: "Architectures for --compile-only (repeatable).")
    var architectures: [String] = ["compute_90", "sm_90"]

    @Flag(help: "Without a GPU, one SKIPPED line per case and every path searched, instead of one line per suite.")
    var verbose = false

    @Flag(
        help:
            "Under mpirun: synchronized statistics across the ranks against one module on the concatenated batch (exit 77 without MPI)."
    )
    var mpi = false

    func validate() throws {
        guard random >= 0 else { throw ValidationError("--random must be >= 0, got \(random)") }
        for text in shape { _ = try BenchCommand.parseShape(text) }
    }

    func run() throws {
        if mpi { return try runMPI() }
        if compileOnly { return try compileKernels() }
        let cases =
            shape.isEmpty
            ? CUDASelfTest.cases(randomCount: random, seed: seed, small: small)
            : CUDASelfTest.cases(try shape.map { (try BenchCommand.parseShape($0), false) }, seed: seed)
        let gpu: CUDADevice
        do {
            gpu = try CUDADevice.shared()
            try gpu.prepareKernels()
        } catch {
            printSkipped(cases, reason: error)
            throw ExitCode(Self.skippedExitCode)
        }
        print("device: \(gpu.summary), kernels: \(try gpu.prepareKernels())")
        print("cpu backend: kernel level \(CPUBackend(threadCount: 1).kernelLevel)")
        var passed = 0, failed = 0
        for testCase in cases {
            let result = CUDASelfTest.run(testCase, on: gpu)
            print(result.line)
            if result.passed { passed += 1 } else { failed += 1 }
        }
        for comparison in CUDASelfTest.synchronizedCases {
            let line = CUDASelfTest.runSynchronized(comparison, on: gpu)
            print(line)
            if line.hasPrefix("PASS") { passed += 1 } else { failed += 1 }
        }
        print("device allocations (cuMemAlloc calls): \(gpu.allocationCount)")
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }

    /// Without CUDA: one line per suite (GPU path and data type) and one reason line, or with
    /// `--verbose` one line per case and the reason's details (every path searched).
    private func printSkipped(_ cases: [CUDASelfTestCase], reason error: any Error) {
        let reason = (error as? CUDAError).map { CommandFailure(cuda: $0) } ?? CommandFailure("\(error)")
        if verbose {
            for testCase in cases { print("SKIPPED  \(testCase): no CUDA") }
        } else {
            var suites: [(name: String, count: Int)] = []
            for testCase in cases {
                let name = "\(testCase.path.rawValue) \(testCase.dataType)"
                if let index = suites.firstIndex(where: { $0.name == name }) {
                    suites[index].count += 1
                } else {
                    suites.append((name, 1))
                }
            }
            for suite in suites { print("SKIPPED  \(suite.name): \(suite.count) cases, no CUDA") }
        }
        print("reason: \(reason.description)")
        if verbose { for line in reason.details { print("  \(line)") } }
        print("0 passed, 0 failed, \(cases.count) skipped (no CUDA driver/GPU/NVRTC: nothing was compared)")
    }

    private func compileKernels() throws {
        let nvrtc: NVRTC
        do {
            nvrtc = try NVRTC()
        } catch {
            print("SKIPPED  kernel compilation: \(error)")
            print("0 passed, 0 failed, \(architectures.count) skipped")
            throw ExitCode(Self.skippedExitCode)
        }
        print("NVRTC \(nvrtc.version.major).\(nvrtc.version.minor) from \(nvrtc.path)")
        var passed = 0, failed = 0
        for architecture in architectures {
            do {
                let outcome = try CUDAKernelCompilation.compile(architectures: [architecture], nvrtc: nvrtc)[0]
                let expected = CUDAKernelSource.entryPoints(computeCapability: outcome.computeCapability)
                let missing = outcome.isCUBIN ? [] : expected.filter { !outcome.entryPoints.contains($0) }
                let unexpected = outcome.entryPoints.filter { !expected.contains($0) }
                let ok = missing.isEmpty && unexpected.isEmpty
                print(
                    "\(ok ? "PASS" : "FAIL")  \(architecture): \(outcome.byteCount) bytes of "
                        + "\(outcome.isCUBIN ? "CUBIN" : "PTX, \(outcome.entryPoints.count) entry points")"
                        + (missing.isEmpty ? "" : ", missing \(missing)")
                        + (unexpected.isEmpty ? "" : ", unexpected \(unexpected)")
                        + (outcome.log.isEmpty ? "" : "\n\(outcome.log)"))
                if ok { passed += 1 } else { failed += 1 }
            } catch {
                print("FAIL  \(architecture): \(error)")
                failed += 1
            }
        }
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
