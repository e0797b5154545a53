import BatchNormKit
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

/// Runs the built `bnkit` executable on real files.
///
/// `swift test` builds every product, so `bnkit` lies in the same build-products folder as
/// the test bundle; BNKIT_EXECUTABLE overrides the search.
@Suite(.serialized) struct CLITests {
    /// The result of one run.
    struct Run {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// The `bnkit` executable next to the test products, or `nil`.
    static let executable: String? = {
        var candidates: [String] = []
        if let path = ProcessInfo.processInfo.environment["BNKIT_EXECUTABLE"] { candidates.append(path) }
        var url = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? Bundle.main.executablePath ?? CommandLine.arguments[0])
        for _ in 0..<4 { // macOS: .../debug/X.xctest/Contents/MacOS/X
            url.deleteLastPathComponent()
            candidates.append(url.appendingPathComponent("bnkit").path)
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates += ["debug", "release"].map { root.appendingPathComponent(".build/\($0)/bnkit").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    /// Runs bnkit with `arguments`.
    static func bnkit(_ arguments: [String], environment: [String: String] = [:]) throws -> Run {
        guard let executable else {
            throw CocoaError(
                .fileNoSuchFile,
                userInfo: [
                    NSLocalizedDescriptionKey:
                        "bnkit executable not found next to the test products; build it or set BNKIT_EXECUTABLE"
                ])
        }
        // Output goes to files, not pipes: no deadlock whatever its size.
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outputPath = directory + "/stdout", errorPath = directory + "/stderr"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let error = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = output
        process.standardError = error
        try process.run()
        process.waitUntilExit()
        try output.close()
        try error.close()
        return Run(
            status: process.terminationStatus,
            standardOutput: String(decoding: try FileReader.readAll(path: outputPath), as: UTF8.self),
            standardError: String(decoding: try FileReader.readAll(path: errorPath), as: UTF8.self))
    }

    /// Expects exit status 0 and an empty stderr.
    static func succeeds(_ run: Run) {
        #expect(run.status == 0, "\(run.standardError)")
        #expect(run.standardError.isEmpty, "\(run.standardError)")
    }

    /// Expects a non-zero exit and exactly one `bnkit: error: ...` line containing `fragment`.
    static func fails(_ run: Run, mentioning fragment: String) {
        #expect(run.status != 0)
        let lines = run.standardError.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 2 && lines[1].isEmpty, "stderr: \(run.standardError)")
        #expect(run.standardError.hasPrefix("bnkit: error: "), "stderr: \(run.standardError)")
        #expect(run.standardError.contains(fragment), "stderr: \(run.standardError)")
    }

    @Test func executableIsFound() {
        #expect(Self.executable != nil, "bnkit not found next to the test products")
    }

    /// normalize in chunks of one sample equals the library's evaluation forward on the whole
    /// batch, and PyTorch's output.
    @Test(arguments: [("", TensorLayout.channelsFirst), ("_ndhwc", .channelsLast)])
    func normalizeMatchesTheLibraryAndPyTorch(suffix: String, layout: TensorLayout) throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = StateFixtures.path("state_torch_bn3d_c3_input\(suffix).npy")
        let output = directory + "/out.npy"
        let run = try Self.bnkit([
            "normalize", input, "--state", StateFixtures.path(StateFixtures.torchStateName), "-o", output,
            "--layout", layout == .channelsFirst ? "ncdhw" : "ndhwc", "--chunk-mb", "0.001",
        ])
        Self.succeeds(run)
        let result = try Tensor(contentsOfNPYFile: output, fileLayout: layout)
        let bn = try BatchNorm3D(maps: 3, empty: true)
        try bn.loadState(fromFile: StateFixtures.path(StateFixtures.torchStateName))
        bn.evalMode()
        let expected = try bn(try Tensor(contentsOfNPYFile: input, fileLayout: layout))
        #expect(result.shape == expected.shape)
        #expect(StateFixtures.maximumRelativeError(result.scalars, expected.scalars) <= 1e-6)
        let torch = try Tensor(
            contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_output\(suffix).npy"), fileLayout: layout)
        #expect(StateFixtures.maximumRelativeError(result.scalars, torch.scalars) <= 1e-5)
        // Same physical shape and header as the input file.
        let header = try NumPyArrayHeader(parsing: FileReader.readAll(path: output))
        #expect(header == (try NumPyArrayHeader(parsing: FileReader.readAll(path: input))))
    }

    @Test func normalizeFloat16WithPrefixedStateAndManyChunks() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var generator = SeededGenerator(seed: 8)
        let data = try Tensor.normal(shape: [7, 3, 2, 3, 5], mean: 3, standardDeviation: 2, using: &generator)
            .converted(to: .channelsFirst, dataType: .float16)
        try data.writeNPY(toFile: directory + "/in.npy")
        let run = try Self.bnkit([
            "normalize", directory + "/in.npy", "--state", StateFixtures.path("state_torch_model_prefixed.safetensors"),
            "--prefix", "layer1.bn", "--output", directory + "/out.npy", "--chunk-mb", "0.0003",
        ])
        Self.succeeds(run)
        let result = try Tensor(contentsOfNPYFile: directory + "/out.npy")
        #expect(result.dataType == .float16 && result.shape == [7, 3, 2, 3, 5])
        let bn = try BatchNorm3D(maps: 3, name: "layer1.bn", empty: true)
        try bn.loadState(fromFile: StateFixtures.path("state_torch_model_prefixed.safetensors"))
        bn.evalMode()
        let expected = try bn(data.converted(to: .channelsFirst, dataType: .float32)).converted(
            to: .channelsFirst, dataType: .float16)
        #expect(StateFixtures.maximumRelativeError(result.scalars, expected.scalars, floor: 1e-2) <= 1e-3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["in.npy", "out.npy"])
    }

    /// calibrate resets the statistics, keeps scale and bias, and averages the batches as
    /// PyTorch's momentum=None does; --continue keeps the counter going.
    @Test func calibrateMatchesPyTorchCumulativeAverage() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let batches = (0..<3).map { StateFixtures.path("state_calibrate_batch\($0).npy") }
        let run = try Self.bnkit(
            ["calibrate"] + batches + [
                "--maps", "3", "--state", StateFixtures.path(StateFixtures.torchStateName),
                "-o", directory + "/calibrated.safetensors",
            ])
        Self.succeeds(run)
        #expect(run.standardOutput.contains("num_batches_tracked 3"))
        let state = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: directory + "/calibrated.safetensors"))
        let expected = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: StateFixtures.path("state_calibrate_expected.safetensors")))
        #expect(state.numOfProps == 3)
        #expect(state.scale == expected.scale && state.bias == expected.bias)
        #expect(StateFixtures.maximumRelativeError(state.mean, expected.mean) <= 1e-6)
        #expect(StateFixtures.maximumRelativeError(state.var, expected.var) <= 1e-6)

        // The library, step by step, gives the same file.
        let bn = try BatchNorm3D(maps: 3, minFactor: 0, empty: true)
        var initial = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: StateFixtures.path(StateFixtures.torchStateName)))
        initial.mean = [0, 0, 0]
        initial.var = [1, 1, 1]
        initial.numOfProps = 0
        try bn.load(initial)
        for batch in batches { _ = try bn(try Tensor(contentsOfNPYFile: batch)) }
        #expect(try bn.state() == state)

        let continued = try Self.bnkit([
            "calibrate", batches[0], "--maps", "3", "--state", directory + "/calibrated.safetensors",
            "--continue", "-o", directory + "/continued.safetensors",
        ])
        Self.succeeds(continued)
        let next = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: directory + "/continued.safetensors"))
        #expect(next.numOfProps == 4)
        _ = try bn(try Tensor(contentsOfNPYFile: batches[0]))
        #expect(next == (try bn.state()))
    }

    @Test func inspectShowsKeysShapesDtypesAndChannels() throws {
        let state = try Self.bnkit(["inspect", StateFixtures.path("state_torch_model_prefixed.safetensors")])
        Self.succeeds(state)
        for fragment in [
            "layer1.bn.running_var", "conv.weight", "[3, 1, 3, 3, 3]", "I64", "F32", "metadata format = pt",
            "BatchNorm state 'layer1.bn': 3 maps, num_batches_tracked 4", "running_mean",
        ] {
            #expect(state.standardOutput.contains(fragment), "\(fragment) in \(state.standardOutput)")
        }
        let array = try Self.bnkit([
            "inspect", StateFixtures.path("state_torch_bn3d_c3_input_ndhwc.npy"), "--layout", "ndhwc",
        ])
        Self.succeeds(array)
        #expect(array.standardOutput.contains("shape [2, 4, 5, 6, 3], dtype float32"))
        // Per-channel mean and std over every axis but the channel axis.
        let tensor = try Tensor(contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_input.npy"))
        let values = tensor.scalars
        let rows = array.standardOutput.split(separator: "\n").filter {
            $0.hasPrefix("  ") && $0.dropFirst(2).first?.isNumber == true
        }
        #expect(rows.count == 3)
        for (c, row) in rows.enumerated() {
            var channel: [Double] = []
            for n in 0..<2 {
                let start = (n * 3 + c) * 120
                channel += values[start..<(start + 120)].map { Double($0) }
            }
            let mean: Double = channel.reduce(0, +) / 240
            var sumOfSquares = 0.0
            for value in channel { sumOfSquares += (value - mean) * (value - mean) }
            let std = (sumOfSquares / 240).squareRoot()
            let fields = row.split(separator: " ").compactMap { Double($0) }
            #expect(fields.count == 6 && fields[1] == 240)
            #expect(abs(fields[2] - mean) <= 1e-5 * max(1, abs(mean)) && abs(fields[3] - std) <= 1e-5 * std, "\(row)")
        }
    }

    @Test func errorsExitNonZeroWithOneLine() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = StateFixtures.path("state_torch_bn3d_c3_input.npy")
        let state = StateFixtures.path(StateFixtures.torchStateName)
        let output = directory + "/out.npy"
        Self.fails(
            try Self.bnkit(["normalize", directory + "/missing.npy", "--state", state, "-o", output]),
            mentioning: "missing.npy")
        // Without a GPU, --device cuda fails with one line naming what was missing; with one it
        // must agree with the CPU (checked here so the test means something on both machines).
        let cuda = try Self.bnkit(["normalize", input, "--state", state, "-o", output, "--device", "cuda"])
        if cuda.status == 0 {
            let cpuOutput = directory + "/cpu.npy"
            Self.succeeds(try Self.bnkit(["normalize", input, "--state", state, "-o", cpuOutput]))
            let (gpu, cpu) = (try Tensor(contentsOfNPYFile: output), try Tensor(contentsOfNPYFile: cpuOutput))
            #expect(
                ReferenceComparison.maximumRelativeError(gpu.scalars, cpu.scalars.map(Double.init), floor: 1e-3) < 1e-5)
        } else {
            Self.fails(cuda, mentioning: "CUDA unavailable")
        }
        let truncated = directory + "/truncated.safetensors"
        try AtomicFileWriter.write(
            Array(try StateFixtures.bytes(StateFixtures.torchStateName).dropLast(5)), to: truncated)
        Self.fails(
            try Self.bnkit(["normalize", input, "--state", truncated, "-o", output]),
            mentioning: "truncated.safetensors")
        Self.fails(
            try Self.bnkit([
                "normalize", input, "--state", StateFixtures.path("state_swift_golden.safetensors"), "-o", output,
            ]),
            mentioning: "has 3 channels, the state has 4 maps")
        Self.fails(
            try Self.bnkit(["normalize", StateFixtures.path("state_npy_int32.npy"), "--state", state, "-o", output]),
            mentioning: "'<i4'")
        Self.fails(try Self.bnkit(["normalize", input, "--state", state]), mentioning: "--output")
        Self.fails(
            try Self.bnkit(["calibrate", input, "--maps", "4", "-o", directory + "/x.safetensors"]), mentioning: "maps")
        Self.fails(try Self.bnkit(["inspect", StateFixtures.path("state_npy_fortran.npy")]), mentioning: "Fortran")
        Self.fails(try Self.bnkit(["inspect", directory]), mentioning: "not a regular file")
        // Nothing written
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["truncated.safetensors"])
    }

    @Test(arguments: ["normalize", "calibrate", "inspect"])
    func helpExitsZero(command: String) throws {
        let run = try Self.bnkit([command, "--help"])
        #expect(run.status == 0)
        #expect(run.standardOutput.contains("USAGE: bnkit \(command)"))
    }
}
