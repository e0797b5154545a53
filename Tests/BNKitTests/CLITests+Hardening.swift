import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// bnkit on hostile input and interrupted runs: one `bnkit: error:` line and a non-zero
/// exit, never a trap; no temporary file left behind.
extension CLITests {
    /// Zero elements, but the other extents multiply past Int.max: refused where the header is
    /// read, by every command (it trapped in ChannelGeometry and the per-sample size before).
    @Test func shapesWhoseNonZeroExtentsOverflowAreRefused() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = StateFixtures.path(StateFixtures.torchStateName)
        for shape in ["(0, 3, 4294967296, 4294967296)", "(0, 3, 1048576, 1048576, 1048576)"] {
            let path = directory + "/zero.npy"
            try AtomicFileWriter.write(StateFixtures.npyHeader(shape: shape), to: path)
            for arguments in [
                ["calibrate", path, "-o", directory + "/o.safetensors"],
                ["normalize", path, "--state", state, "-o", directory + "/o.npy"],
                ["inspect", path],
            ] {
                Self.fails(try Self.bnkit(arguments), mentioning: "zero.npy: invalid .npy header: shape [0, 3, ")
                #expect(try Self.bnkit(arguments).standardError.contains("too large"))
            }
        }
    }

    /// Options are checked before any file is read or anything allocated, at parse time, with
    /// the option's name and no file name; a negative number after a space is a value.
    @Test func optionsAreValidatedAtParseTime() throws {
        let batch = StateFixtures.path("state_calibrate_batch0.npy")
        let state = StateFixtures.path(StateFixtures.torchStateName)
        let output = try StateFixtures.temporaryDirectory() + "/o.safetensors"
        for (arguments, message) in [
            (["calibrate", batch, "--min-factor", "2", "-o", output], "--min-factor must be in [0, 1], got 2.0"),
            (["calibrate", batch, "--init-factor", "nan", "-o", output], "--init-factor must be in [0, 1], got nan"),
            (["calibrate", batch, "--maps", "-3", "-o", output], "--maps must be >= 1, got -3"),
            (
                ["normalize", batch, "--state", state, "-o", output, "--chunk-mb", "-5"],
                "--chunk-mb must be > 0, got -5.0"
            ),
            (
                ["normalize", batch, "--state", state, "-o", output, "--epsilon", "-1"],
                "--epsilon must be a finite value > 0, got -1.0"
            ),
            (["inspect", batch, "--chunk-mb", "-5"], "--chunk-mb must be > 0, got -5.0"),
            (
                ["calibrate", "/nonexistent/batch.npy", "--min-factor", "-0.5", "-o", output],
                "--min-factor must be in [0, 1], got -0.5"
            ),
        ] {
            let run = try Self.bnkit(arguments)
            Self.fails(run, mentioning: message)
            #expect(run.status == 64, "\(arguments): usage errors exit 64")
            #expect(!run.standardError.contains(".npy:"), "no file name in \(run.standardError)")
        }
        // --maps far beyond the file: refused against the first batch's header, before the
        // 4 TB of initial statistics are allocated.
        Self.fails(
            try Self.bnkit(["calibrate", batch, "--maps", "1000000000000", "-o", output]),
            mentioning:
                "state_calibrate_batch0.npy: array of shape [2, 3, 3, 4, 5] has 3 channels, expected 1000000000000 (from --maps)"
        )
    }

    /// A state whose running variance is NaN or negative: the error names the file and the key.
    @Test func badStateValuesNameTheFile() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for value: Float in [.nan, -1] {
            var state = try BatchNormState(
                safeTensors: SafeTensorsFile(contentsOfFile: StateFixtures.path(StateFixtures.torchStateName)))
            state.var[1] = value
            try state.safeTensors().write(toFile: directory + "/bad.safetensors")
            let input = StateFixtures.path("state_torch_bn3d_c3_input.npy")
            Self.fails(
                try Self.bnkit([
                    "normalize", input, "--state", directory + "/bad.safetensors", "-o", directory + "/o.npy",
                ]),
                mentioning: "bad.safetensors: 'running_var'[1] is ")
            Self.fails(
                try Self.bnkit([
                    "calibrate", input, "--state", directory + "/bad.safetensors", "--continue",
                    "-o", directory + "/o.safetensors",
                ]),
                mentioning: "bad.safetensors: 'running_var'[1] is ")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["bad.safetensors"])
    }

    /// An empty or cut .npy is reported as a .npy, not as a safetensors file.
    @Test func inspectOfAnEmptyNumPyFileIsANumPyError() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try AtomicFileWriter.write([], to: directory + "/empty.npy")
        Self.fails(
            try Self.bnkit(["inspect", directory + "/empty.npy"]),
            mentioning: "empty.npy: .npy header is truncated: 0 bytes")
        try AtomicFileWriter.write([0x93, 0x4E, 0x55], to: directory + "/cut.bin")
        Self.fails(
            try Self.bnkit(["inspect", directory + "/cut.bin"]),
            mentioning: "cut.bin: .npy header is truncated: 3 bytes")
    }

    /// NaN inputs and a tiny epsilon on a constant channel keep their arithmetic (NaN, inf),
    /// the summary counts them, and --check-finite fails without writing the output.
    @Test func normalizeCountsNonFiniteOutputsAndCheckFiniteRefusesThem() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Channel 0 is constant (its running variance 0 below), channel 1 holds a NaN.
        var values = [Float](repeating: 2, count: 2 * 2 * 4)
        values[4 + 1] = .nan
        try Tensor(values, shape: [2, 2, 4]).writeNPY(toFile: directory + "/in.npy")
        let state = BatchNormState(scale: [1, 1], bias: [0, 0], mean: [2, 2], var: [0, 1], numOfProps: 1)
        try state.safeTensors().write(toFile: directory + "/bn.safetensors")
        // 0 / sqrt(0 + 1e-300) is 0, but 1e-300 underflows to 0 in Float: 0 · inf = NaN.
        let run = try Self.bnkit([
            "normalize", directory + "/in.npy", "--state", directory + "/bn.safetensors",
            "-o", directory + "/out.npy", "--epsilon", "1e-300",
        ])
        Self.succeeds(run)
        let output = try Tensor(contentsOfNPYFile: directory + "/out.npy").scalars
        let nonFinite = output.filter { !$0.isFinite }.count
        #expect(nonFinite >= 1)
        #expect(run.standardOutput.contains("non-finite outputs: \(nonFinite);"), "\(run.standardOutput)")
        let checked = try Self.bnkit([
            "normalize", directory + "/in.npy", "--state", directory + "/bn.safetensors",
            "-o", directory + "/checked.npy", "--epsilon", "1e-300", "--check-finite",
        ])
        Self.fails(checked, mentioning: "\(nonFinite) of 16 outputs are not finite")
        #expect(!FileManager.default.fileExists(atPath: directory + "/checked.npy"))
        Self.succeeds(
            try Self.bnkit([
                "normalize", StateFixtures.path("state_torch_bn3d_c3_input.npy"),
                "--state", StateFixtures.path(StateFixtures.torchStateName),
                "-o", directory + "/finite.npy", "--check-finite",
            ]))
    }

    /// A normalize big enough to be interrupted: 100,000 samples in chunks of one.
    static func startLongNormalize(in directory: String) throws -> Process {
        let count = 100_000 * 3 * 8
        try Tensor([Float](repeating: 1, count: count), shape: [100_000, 3, 2, 2, 2]).writeNPY(
            toFile: directory + "/in.npy")
        try AtomicFileWriter.write(Array("old contents".utf8), to: directory + "/out.npy")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(executable))
        process.arguments = [
            "normalize", directory + "/in.npy", "--state", StateFixtures.path(StateFixtures.torchStateName),
            "-o", directory + "/out.npy", "--chunk-mb", "0.00001", "--quiet",
        ]
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// The hidden temporary files in `directory`.
    static func temporaries(in directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(".out.npy.tmp-") }
    }

    /// SIGHUP, SIGINT, SIGQUIT and SIGTERM remove the temporary output and exit 128 + the
    /// signal; the previous output is untouched.
    @Test(arguments: [(SIGHUP, Int32(129)), (SIGINT, Int32(130)), (SIGQUIT, Int32(131)), (SIGTERM, Int32(143))])
    func interruptsRemoveTheTemporaryFile(signal: Int32, status: Int32) throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let process = try Self.startLongNormalize(in: directory)
        var started = false
        for _ in 0..<2000 where process.isRunning { // up to 20 s for the temporary file to appear
            if try !Self.temporaries(in: directory).isEmpty {
                started = true
                break
            }
            usleep(10_000)
        }
        #expect(started && process.isRunning, "normalize finished or never started its output")
        kill(process.processIdentifier, signal)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == status)
        #expect(try Self.temporaries(in: directory).isEmpty)
        #expect(try FileReader.readAll(path: directory + "/out.npy") == Array("old contents".utf8))
    }

    /// After SIGKILL the temporary file stays; the next writer in that directory removes it
    /// (its process is gone), and leaves the temporaries of live processes alone.
    @Test func staleTemporariesOfDeadProcessesAreRemoved() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let process = try Self.startLongNormalize(in: directory)
        for _ in 0..<2000 where try Self.temporaries(in: directory).isEmpty && process.isRunning { usleep(10_000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let stale = try Self.temporaries(in: directory)
        #expect(stale.count == 1, "SIGKILL leaves the temporary file")
        let live = ".out.npy.tmp-\(getpid())-live1"
        try AtomicFileWriter.write([1], to: directory + "/" + live)
        let unrelated = ".out.npy.tmp-notapid-x"
        try AtomicFileWriter.write([1], to: directory + "/" + unrelated)
        Self.succeeds(
            try Self.bnkit([
                "normalize", StateFixtures.path("state_torch_bn3d_c3_input.npy"), "--state",
                StateFixtures.path(StateFixtures.torchStateName), "-o", directory + "/out.npy", "--quiet",
            ]))
        #expect(try Self.temporaries(in: directory).sorted() == [live, unrelated].sorted())
    }
}
