import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Outputs that are inputs, files that are not regular, a counter at its limit, long names,
/// permission bits and unsupported dtypes: the right result or one clear error line.
extension CLITests {
    /// An output that is the same file as an input (by name, hard link or symbolic link) is
    /// refused before anything is read; `normalize`'s own data file may be its output.
    @Test func anOutputThatIsAnInputIsRefused() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = directory + "/s.safetensors", batch = directory + "/x.npy", data = directory + "/y.npy"
        try FileManager.default.copyItem(atPath: StateFixtures.path(StateFixtures.torchStateName), toPath: state)
        try FileManager.default.copyItem(atPath: StateFixtures.path("state_calibrate_batch0.npy"), toPath: batch)
        try FileManager.default.copyItem(atPath: StateFixtures.path("state_torch_bn3d_c3_input.npy"), toPath: data)
        #expect(link(state, directory + "/hard.safetensors") == 0)
        #expect(symlink(batch, directory + "/soft.npy") == 0)
        let stateBytes = try FileReader.readAll(path: state), batchBytes = try FileReader.readAll(path: batch)
        for (arguments, fragment) in [
            (["normalize", data, "--state", state, "-o", state], "is the same file as the state"),
            (
                ["normalize", data, "--state", state, "-o", directory + "/hard.safetensors"],
                "the same file as the state"
            ),
            (["calibrate", batch, "-o", batch], "is the same file as the batch"),
            (["calibrate", batch, "-o", directory + "/soft.npy"], "is the same file as the batch"),
            (["calibrate", batch, "--state", state, "-o", state], "is the same file as the state"),
            (["convert", state, state], "is the same file as the input"),
        ] {
            let run = try Self.bnkit(arguments)
            Self.fails(run, mentioning: fragment)
            #expect(run.status == 1)
        }
        #expect(try FileReader.readAll(path: state) == stateBytes)
        #expect(try FileReader.readAll(path: batch) == batchBytes)
        // normalize in place: the file becomes the expected output.
        Self.succeeds(try Self.bnkit(["normalize", data, "--state", state, "-o", data, "--quiet"]))
        let expected = try Tensor(contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_output.npy"))
        let actual = try Tensor(contentsOfNPYFile: data)
        #expect(StateFixtures.maximumRelativeError(actual.scalars, expected.scalars) < 1e-5)
    }

    /// A named pipe is refused at once by every command that reads a file (it blocked forever).
    @Test func aNamedPipeIsRefusedWithoutBlocking() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pipe = directory + "/p"
        #expect(mkfifo(pipe, 0o600) == 0)
        let state = StateFixtures.path(StateFixtures.torchStateName)
        let batch = StateFixtures.path("state_calibrate_batch0.npy")
        for arguments in [
            ["inspect", pipe], ["convert", pipe, directory + "/o.hdf"],
            ["normalize", pipe, "--state", state, "-o", directory + "/o.npy"],
            ["normalize", batch, "--state", pipe, "-o", directory + "/o.npy"],
            ["calibrate", pipe, "-o", directory + "/o.safetensors"],
            ["calibrate", batch, "--state", pipe, "-o", directory + "/o.safetensors"],
        ] {
            Self.fails(try Self.bnkit(arguments), mentioning: "not a regular file (a named pipe)")
        }
    }

    /// A counter at Int64.max (PyTorch's num_batches_tracked) saturates instead of trapping.
    @Test func aCounterAtItsLimitSaturates() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = BatchNormState(
            scale: [1, 1, 1], bias: [0, 0, 0], mean: [0, 0, 0], var: [1, 1, 1], numOfProps: .max)
        try AtomicFileWriter.write(state.safeTensors().serialized(), to: directory + "/max.safetensors")
        let run = try Self.bnkit([
            "calibrate", StateFixtures.path("state_calibrate_batch0.npy"), "--state", directory + "/max.safetensors",
            "--continue", "--min-factor", "0.1", "-o", directory + "/o.safetensors",
        ])
        #expect(run.status == 0, "\(run.standardError)")
        let saved = try StateFile(contentsOfFile: directory + "/o.safetensors").module("").state
        #expect(saved.numOfProps == .max)
        #expect(saved.mean != state.mean)
    }

    /// The longest name the file system accepts works as an output (the temporary name is cut
    /// to fit), and a replaced output keeps its permission bits.
    @Test func longOutputNamesAndPermissionBits() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = directory + "/" + String(repeating: "n", count: 255 - ".safetensors".count) + ".safetensors"
        let arguments = ["convert", StateFixtures.path(StateFixtures.torchStateName), output]
        #expect(try Self.bnkit(arguments).status == 0)
        #expect(chmod(output, 0o600) == 0)
        #expect(try Self.bnkit(arguments).status == 0)
        var info = stat()
        #expect(stat(output, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: directory) == [
                String(output.split(separator: "/").last!)
            ])
    }

    /// A structured dtype is named in the error.
    @Test func aStructuredDtypeIsNamed() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/s.npy"
        // What NumPy writes for np.zeros(2, dtype=[('a', '<f4'), ('b', '<i4')]).
        let dict = Array("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (2,), }".utf8)
        let total = (10 + dict.count + 1 + 63) / 64 * 64
        let text = dict + Array(repeating: 0x20, count: total - 10 - dict.count - 1) + [0x0A]
        let header: [UInt8] = [
            0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8),
        ]
        try AtomicFileWriter.write(header + text + Array(repeating: 0, count: 16), to: path)
        Self.fails(try Self.bnkit(["inspect", path]), mentioning: "[('a', '<f4'), ('b', '<i4')] (a structured dtype)")
    }
}
