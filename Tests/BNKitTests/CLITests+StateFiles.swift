import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// bnkit with PuzzleLib HDF5 files: normalize and calibrate read them as --state, inspect
/// lists their modules, convert goes both ways.
extension CLITests {
    /// A PuzzleLib file written by h5py loads through `bnkit normalize --state`; the output
    /// is numpy's evaluation formula.
    @Test func normalizeWithAPuzzleLibState() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = directory + "/out.npy"
        Self.succeeds(
            try Self.bnkit([
                "normalize", StateFixtures.path("puzzlelib_unnamed_input.npy"),
                "--state", StateFixtures.path("puzzlelib_unnamed.hdf"), "--prefix", "", "-o", output,
            ]))
        let expected = try Tensor(contentsOfNPYFile: StateFixtures.path("puzzlelib_unnamed_output.npy"))
        #expect(
            StateFixtures.maximumRelativeError(try Tensor(contentsOfNPYFile: output).scalars, expected.scalars) <= 1e-6)
        // The module name of a container, and a name the file does not hold.
        var generator = SeededGenerator(seed: 5)
        try Tensor.normal(shape: [2, 4, 2, 2, 3], using: &generator).writeNPY(toFile: directory + "/in.npy")
        Self.succeeds(
            try Self.bnkit([
                "normalize", directory + "/in.npy", "--state", StateFixtures.path("puzzlelib_container.hdf"),
                "--prefix", "seq.bn1", "-o", output,
            ]))
        Self.fails(
            try Self.bnkit([
                "normalize", directory + "/in.npy", "--state", StateFixtures.path("puzzlelib_container.hdf"),
                "--prefix", "bn1", "-o", output,
            ]),
            mentioning:
                "no BatchNorm module 'bn1' (modules in the file: 'seq.bn0d', 'seq.bn1', 'seq.bn1d', 'seq.bn2d', 'seq.fixed')"
        )
        Self.fails(
            try Self.bnkit([
                "normalize", directory + "/in.npy", "--state", StateFixtures.path("puzzlelib_container.hdf"),
                "--prefix", "seq.bn2d", "-o", output,
            ]),
            mentioning: "'attrs/seq.bn2d.mean' has rank 4 (expected: 5, the module's data rank)")
        Self.fails(
            try Self.bnkit(["normalize", directory + "/in.npy", "--state", directory + "/in.npy", "-o", output]),
            mentioning: "in.npy: not a state file: it holds a NumPy array (.npy)")
    }

    /// convert: PuzzleLib HDF5 -> safetensors -> HDF5 keeps every value; HDF5 -> HDF5 writes
    /// the committed file that h5py reads back (the script's verify mode).
    @Test func convertBetweenPuzzleLibAndSafeTensors() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = StateFixtures.path("puzzlelib_container.hdf")
        let toSafeTensors = try Self.bnkit(["convert", source, directory + "/model.safetensors"])
        #expect(toSafeTensors.status == 0, "\(toSafeTensors.standardError)")
        #expect(
            toSafeTensors.standardError.hasPrefix(
                "note: left out 9 tensors of no BatchNorm module: blueprint, links/seq.conv1.W"))
        #expect(toSafeTensors.standardError.split(separator: "\n").count == 1)
        let converted = try SafeTensorsFile(contentsOfFile: directory + "/model.safetensors")
        #expect(converted.tensors["seq.bn1.num_batches_tracked"]?.integerValues() == [0]) // PuzzleLib does not save it
        let modules = try StateFile(contentsOfFile: source).modules()
        for module in modules {
            #expect(try BatchNormState(safeTensors: converted, prefix: module.name) == module.state)
        }
        Self.succeeds(
            try Self.bnkit(["convert", directory + "/model.safetensors", directory + "/back.hdf", "--rank", "3"]))
        let back = try StateFile(contentsOfFile: directory + "/back.hdf").modules()
        #expect(back.map(\.state) == modules.map(\.state))
        #expect(back.allSatisfy { $0.rank == 3 })
        Self.succeeds(try Self.bnkit(["convert", source, directory + "/copy.h5", "--prefix", "seq.bn1"]).withoutOutput)
        #expect(try StateFile(contentsOfFile: directory + "/copy.h5").moduleNames == ["seq.bn1"])
        let written = try Self.bnkit(["convert", source, directory + "/written.hdf"])
        #expect(written.status == 0)
        #expect(
            try FileReader.readAll(path: directory + "/written.hdf")
                == (try StateFixtures.bytes("puzzlelib_swift_written.hdf")))
        Self.fails(
            try Self.bnkit(["convert", source, directory + "/x.hdf", "--rank", "7"]),
            mentioning: "--rank must be 2 to 5")
        Self.fails(
            try Self.bnkit(["convert", StateFixtures.path("puzzlelib_unnamed_input.npy"), directory + "/x.hdf"]),
            mentioning: "not a state file: it holds a NumPy array (.npy)")
    }

    @Test func inspectListsThePuzzleLibModulesAndTheOtherDatasets() throws {
        let run = try Self.bnkit(["inspect", StateFixtures.path("puzzlelib_container.hdf")])
        Self.succeeds(run)
        let text = run.standardOutput
        #expect(text.contains("PuzzleLib HDF5, 5 BatchNorm modules, 39 datasets"))
        #expect(text.contains("BatchNorm module 'seq.bn1': rank 5 (BatchNorm3D), 4 maps"))
        #expect(text.contains("BatchNorm module 'seq.bn0d': rank 2 (BatchNorm), 6 maps"))
        #expect(text.contains("  channel       scale         bias          mean          var"))
        #expect(text.contains("blueprint") && text.contains("params/0") && text.contains("[4, 2, 3, 3, 3]"))
        #expect(!text.split(separator: "\n").contains { $0.hasSuffix(" ") })
        #expect(text.contains("numOfProps is not saved in PuzzleLib files"))
    }
}

extension CLITests.Run {
    /// The run with its standard output dropped (for commands that print a summary).
    var withoutOutput: CLITests.Run { CLITests.Run(status: status, standardOutput: "", standardError: standardError) }
}
