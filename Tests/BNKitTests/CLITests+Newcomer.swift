import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// bnkit as a new user meets it: the version, options inferred from the files, the NumPy
/// files people have, the library's layout names, short output.
extension CLITests {
    /// `--version` prints the package version, which the README's dependency line names.
    @Test func versionIsThePackageVersion() throws {
        let run = try Self.bnkit(["--version"])
        Self.succeeds(run)
        #expect(run.standardOutput == BatchNormKitVersion.current + "\n")
        let readme = String(decoding: try FileReader.readAll(path: Self.repositoryRoot + "/README.md"), as: UTF8.self)
        #expect(
            readme.contains(
                #".package(url: "https://github.com/batchnormkit/BatchNormKit", from: "\#(BatchNormKitVersion.current)")"#
            ))
    }

    /// The source tree's root (for the README).
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    /// Without --maps, calibrate takes the channel count from the first batch (or the state)
    /// and gives the file --maps 3 gives; every batch is checked, naming the file.
    @Test func calibrateInfersMapsAndNamesTheFileOfEveryError() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let batches = (0..<3).map { StateFixtures.path("state_calibrate_batch\($0).npy") }
        let inferred = try Self.bnkit(["calibrate"] + batches + ["-o", directory + "/inferred.safetensors"])
        Self.succeeds(inferred)
        #expect(inferred.standardOutput.hasPrefix("calibrated 3 maps over 3 batches"))
        Self.succeeds(
            try Self.bnkit(
                ["calibrate"] + batches + ["--maps", "3", "-o", directory + "/given.safetensors", "--quiet"]))
        #expect(
            try FileReader.readAll(path: directory + "/inferred.safetensors")
                == FileReader.readAll(path: directory + "/given.safetensors"))
        let fromState = try Self.bnkit([
            "calibrate", batches[0], "--state", StateFixtures.path(StateFixtures.torchStateName),
            "-o", directory + "/s.safetensors", "--quiet",
        ])
        Self.succeeds(fromState)
        #expect(fromState.standardOutput.isEmpty)

        // A later batch with other channels or another rank, a scalar: the file is named.
        try Tensor.zeros(shape: [2, 4, 3, 4, 5]).writeNPY(toFile: directory + "/four.npy")
        Self.fails(
            try Self.bnkit(["calibrate", batches[0], directory + "/four.npy", "-o", directory + "/x.safetensors"]),
            mentioning: "four.npy: array of shape [2, 4, 3, 4, 5] has 4 channels, expected 3 (from the first batch)")
        try Tensor.zeros(shape: [2, 3, 5]).writeNPY(toFile: directory + "/rank3.npy")
        Self.fails(
            try Self.bnkit(["calibrate", batches[0], directory + "/rank3.npy", "-o", directory + "/x.safetensors"]),
            mentioning: "rank3.npy: data of rank 3 (shape [2, 3, 5]), expected rank 5 as the first batch")
        try Tensor.zeros(shape: []).writeNPY(toFile: directory + "/scalar.npy")
        Self.fails(
            try Self.bnkit(["calibrate", directory + "/scalar.npy", "-o", directory + "/x.safetensors"]),
            mentioning: "scalar.npy: data of rank 0 (shape []) is not supported")
        Self.fails(
            try Self.bnkit([
                "calibrate", batches[0], "--state", StateFixtures.path("state_swift_golden.safetensors"),
                "-o", directory + "/x.safetensors",
            ]),
            mentioning:
                "state_calibrate_batch0.npy: array of shape [2, 3, 3, 4, 5] has 3 channels, expected 4 (from the state)"
        )
        // The usage line shows the files as required.
        let missing = try Self.bnkit(["calibrate", "-o", directory + "/x.safetensors"])
        Self.fails(missing, mentioning: "Missing expected argument '<files> ...'")
        let help = try Self.bnkit(["calibrate", "--help"])
        #expect(help.standardOutput.contains("USAGE: bnkit calibrate <files> ..."), "\(help.standardOutput)")
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                == [
                    "four.npy", "given.safetensors", "inferred.safetensors", "rank3.npy", "s.safetensors", "scalar.npy",
                ])
    }

    /// float64 .npy (NumPy's default) is read as float32 with one note on stderr and written
    /// as float32; a big-endian float32 file gives the little-endian file's result.
    @Test func normalizeReadsFloat64AndBigEndianFiles() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = StateFixtures.path(StateFixtures.torchStateName)
        // (2, 3, 4): three channels, as the state.
        let wide = try Self.bnkit([
            "normalize", StateFixtures.path("state_npy_f8.npy"), "--state", state, "-o", directory + "/wide.npy",
        ])
        #expect(wide.status == 0)
        #expect(
            wide.standardError
                == "bnkit: note: \(StateFixtures.path("state_npy_f8.npy")) is float64 ('<f8'); read as float32 (rounded to nearest)\n"
        )
        Self.succeeds(
            try Self.bnkit([
                "normalize", StateFixtures.path("state_npy_f4_v1.npy"), "--state", state, "-o",
                directory + "/single.npy",
            ]))
        Self.succeeds(
            try Self.bnkit([
                "normalize", StateFixtures.path("state_npy_f4_bigendian.npy"), "--state", state,
                "-o", directory + "/big.npy", "--quiet",
            ]))
        let single = try FileReader.readAll(path: directory + "/single.npy")
        #expect(try FileReader.readAll(path: directory + "/wide.npy") == single)
        #expect(try FileReader.readAll(path: directory + "/big.npy") == single)
        let quiet = try Self.bnkit([
            "normalize", StateFixtures.path("state_npy_f8.npy"), "--state", state, "-o", directory + "/q.npy",
            "--quiet",
        ])
        Self.succeeds(quiet)
        #expect(quiet.standardOutput.isEmpty)
        let inspect = try Self.bnkit(["inspect", StateFixtures.path("state_npy_f8.npy")])
        Self.succeeds(inspect)
        #expect(inspect.standardOutput.contains("dtype float32 ('<f8', read as float32)"))
    }

    /// normalize prints one summary line (elements, chunks, time, GB/s), as calibrate does.
    @Test func normalizePrintsASummaryLine() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = try Self.bnkit([
            "normalize", StateFixtures.path("state_torch_bn3d_c3_input.npy"), "--state",
            StateFixtures.path(StateFixtures.torchStateName), "-o", directory + "/o.npy", "--chunk-mb", "0.001",
        ])
        Self.succeeds(run)
        let lines = run.standardOutput.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(
            run.standardOutput.hasPrefix("normalized 720 elements ([2, 3, 4, 5, 6], float32) in 2 chunks in "),
            "\(run.standardOutput)")
        #expect(run.standardOutput.contains(" GB/s read and written); non-finite outputs: 0; wrote "))
    }

    /// --layout takes the library's names (nchw, nhwc, channels_last, ...) in every command.
    @Test(arguments: [
        ("ndhwc", "_ndhwc"), ("channels_last", "_ndhwc"), ("NHWC", "_ndhwc"), ("channels_first", ""), ("nchw", ""),
    ])
    func layoutTakesTheLibrarysNames(name: String, suffix: String) throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = StateFixtures.path("state_torch_bn3d_c3_input\(suffix).npy")
        let state = StateFixtures.path(StateFixtures.torchStateName)
        Self.succeeds(
            try Self.bnkit([
                "normalize", input, "--state", state, "-o", directory + "/o.npy", "--layout", name, "--quiet",
            ]))
        #expect(
            try FileReader.readAll(path: directory + "/o.npy")
                == FileReader.readAll(path: StateFixtures.path("state_torch_bn3d_c3_output\(suffix).npy"))
                || StateFixtures.maximumRelativeError(
                    try Tensor(contentsOfNPYFile: directory + "/o.npy").scalars,
                    try Tensor(contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_output\(suffix).npy")).scalars
                ) <= 1e-5)
        Self.succeeds(try Self.bnkit(["inspect", input, "--layout", name]))
        Self.succeeds(
            try Self.bnkit(["calibrate", input, "--layout", name, "-o", directory + "/c.safetensors", "--quiet"]))
    }

    /// Closed option sets are enums (the usage error lists the values); bench --shape takes
    /// ranks 2 to 5.
    @Test func closedOptionSetsAreEnumsAndBenchShapesHaveRanksTwoToFive() throws {
        Self.fails(try Self.bnkit(["selftest", "--device", "cpu"]), mentioning: "--device")
        Self.fails(
            try Self.bnkit(["normalize", "x.npy", "--state", "s", "-o", "o", "--layout", "ncwh"]), mentioning: "ncwh")
        Self.fails(try Self.bnkit(["bench", "--shape", "8"]), mentioning: "--shape must be 2 to 5 positive integers")
        Self.fails(
            try Self.bnkit(["bench", "--shape", "1,2,3,4,5,6"]), mentioning: "--shape must be 2 to 5 positive integers")
        Self.fails(
            try Self.bnkit(["bench", "--shape", "4611686018427387904,4"]),
            mentioning: "--shape must be 2 to 5 positive integers")
        Self.fails(try Self.bnkit(["bench", "--runs", "-1"]), mentioning: "--runs must be at least 5")
        let help = try Self.bnkit(["bench", "--help"])
        #expect(help.standardOutput.contains("One shape of rank 2 to 5"))
    }

    /// inspect prints integer tensors as integers, and no line ends with a space.
    @Test func inspectPrintsIntegersAsIntegersWithoutTrailingSpaces() throws {
        for file in [
            "state_torch_model_prefixed.safetensors", StateFixtures.torchStateName, "state_torch_bn3d_c3_input.npy",
        ] {
            let run = try Self.bnkit(["inspect", StateFixtures.path(file)])
            Self.succeeds(run)
            for line in run.standardOutput.split(separator: "\n") {
                #expect(!line.hasSuffix(" "), "trailing space: '\(line)'")
            }
            if file.hasSuffix(".safetensors") {
                let counter = try #require(
                    run.standardOutput.split(separator: "\n").first {
                        $0.contains("num_batches_tracked") && $0.contains("I64")
                    })
                // "  num_batches_tracked  I64  []  value 4", not "value 4.0".
                #expect(counter.split(separator: " ").suffix(2).first == "value", "\(counter)")
                #expect(Int(counter.split(separator: " ").last ?? "") != nil, "\(counter)")
            }
        }
    }

    /// Without a GPU, selftest prints one line per suite and one reason line (exit 77);
    /// --verbose lists every case and every path searched.
    @Test func selftestWithoutAGPUIsShort() throws {
        let run = try Self.bnkit(["selftest", "--small"])
        guard run.status == 77 else {
            // A GPU is present: the self-test ran (and must pass).
            #expect(run.status == 0, "\(run.standardOutput)")
            return
        }
        let lines = run.standardOutput.split(separator: "\n")
        #expect(lines.count <= 8, "\(run.standardOutput)")
        #expect(lines.filter { $0.hasPrefix("reason: ") }.count == 1)
        #expect(lines.allSatisfy { $0.count <= 200 }, "\(run.standardOutput)")
        #expect(lines.filter { $0.hasPrefix("SKIPPED") }.count >= 2)
        let verbose = try Self.bnkit(["selftest", "--small", "--verbose"])
        #expect(verbose.status == 77)
        #expect(verbose.standardOutput.split(separator: "\n").count > lines.count)
    }

    /// A CUDA-missing error is one short line; --verbose adds the paths tried on their own lines.
    @Test func missingCUDAIsOneShortLine() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let arguments = [
            "normalize", StateFixtures.path("state_torch_bn3d_c3_input.npy"), "--state",
            StateFixtures.path(StateFixtures.torchStateName), "-o", directory + "/o.npy", "--device", "cuda",
        ]
        let run = try Self.bnkit(arguments)
        // A GPU is present (compared with the CPU in errorsExitNonZeroWithOneLine)
        guard run.status != 0 else { return }
        Self.fails(run, mentioning: "CUDA unavailable")
        #expect(run.standardError.count <= 200, "\(run.standardError)")
        let verbose = try Self.bnkit(arguments + ["--verbose"])
        #expect(verbose.status == 1)
        let lines = verbose.standardError.split(separator: "\n")
        #expect(
            lines.count >= 2 && lines.dropFirst().allSatisfy { $0.hasPrefix("  tried ") }, "\(verbose.standardError)")
    }
}
