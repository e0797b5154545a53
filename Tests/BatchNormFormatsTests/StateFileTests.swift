import BatchNormKit
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

/// Loading and saving states through the one entry point, in both formats: PuzzleLib files
/// written by h5py (scripts/make_puzzlelib_fixtures.py), our own HDF5 files, the errors of
/// files that are not state files or hold another module, and the non-affine rule.
@Suite struct StateFileTests {
    static let fixtures = HDF5FileTests.fixtures

    /// Every module of every PuzzleLib fixture loads into its family member with exactly the
    /// file's values, and numOfProps 0.
    @Test(arguments: fixtures) func loadsEveryPuzzleLibModule(_ fixture: String) throws {
        let path = StateFixtures.path(fixture + ".hdf")
        let expected = try HDF5FileTests.expected(fixture + ".json")
        #expect(try StateFile(contentsOfFile: path).moduleNames == expected.map(\.name).sorted())
        for module in expected {
            let family = try #require(BatchNormND.familyMember(forDataRank: module.rank))
            var generator = SeededGenerator(seed: 1)
            let bn = try family.init(maps: module.mean.count, name: module.name, empty: true, using: &generator)
            try bn.loadState(fromFile: path)
            let state = try bn.state()
            #expect(bits(state.scale) == bits(module.scale) && bits(state.bias) == bits(module.bias), "\(module.name)")
            #expect(bits(state.mean) == bits(module.mean) && bits(state.var) == bits(module.variance), "\(module.name)")
            #expect(state.numOfProps == 0)
        }
    }

    /// PuzzleLib file -> BatchNorm3D -> evaluation output: numpy's formula in float64 (written
    /// by the fixture script), and the Double reference, to float32 accuracy.
    @Test func evaluationOfAPuzzleLibModuleMatchesNumPy() throws {
        let bn = try BatchNorm3D(maps: 3, empty: true)
        try bn.loadState(fromFile: StateFixtures.path("puzzlelib_unnamed.hdf")) // unnamed: links ".scale", ".bias"
        bn.evalMode()
        let input = try Tensor(contentsOfNPYFile: StateFixtures.path("puzzlelib_unnamed_input.npy"))
        let expected = try Tensor(contentsOfNPYFile: StateFixtures.path("puzzlelib_unnamed_output.npy"))
        let output = try bn(input)
        #expect(StateFixtures.maximumRelativeError(output.scalars, expected.scalars) <= 1e-6)
    }

    @Test func aMissingModuleListsTheModulesOfTheFile() throws {
        let path = StateFixtures.path("puzzlelib_container.hdf")
        let bn = try BatchNorm3D(maps: 4, name: "seq.bn9", empty: true)
        let modules = ["seq.bn0d", "seq.bn1", "seq.bn1d", "seq.bn2d", "seq.fixed"]
        #expect(throws: StateFileError(file: path, .missingModule(name: "seq.bn9", modules: modules))) {
            try bn.loadState(fromFile: path)
        }
        #expect(
            "\(StateFileError(file: path, .missingModule(name: "seq.bn9", modules: modules)))".contains("'seq.bn1d'"))
        let prefixed = StateFixtures.path("state_torch_model_prefixed.safetensors")
        #expect(throws: StateFileError(file: prefixed, .missingModule(name: "", modules: ["layer1.bn"]))) {
            try BatchNorm3D(maps: 3).loadState(fromFile: prefixed)
        }
    }

    @Test func aModuleOfAnotherRankOrWidthIsRejected() throws {
        let path = StateFixtures.path("puzzlelib_container.hdf")
        let before = try BatchNorm2D(maps: 4)
        let state = try before.state()
        #expect(throws: StateFileError(file: path, .rankMismatch(key: "attrs/seq.bn1.mean", expected: 4, actual: 5))) {
            try before.loadState(fromFile: path, prefix: "seq.bn1")
        }
        #expect(try before.state() == state)
        #expect(throws: StateFileError(file: path, .mapsMismatch(key: "attrs/seq.bn1.mean", expected: 3, actual: 4))) {
            try BatchNorm3D(maps: 3).loadState(fromFile: path, prefix: "seq.bn1")
        }
    }

    /// A file that is not a state file says what it is, from its first bytes.
    @Test func aFileThatIsNotAStateFileSaysWhatItIs() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cases: [(name: String, bytes: [UInt8], contents: String)] = [
            ("a.npy", try StateFixtures.bytes("state_npy_f4_v1.npy"), "a NumPy array (.npy)"),
            ("a.json", Array("  {\"weight\": [1, 2]}".utf8), "JSON text"),
            ("a.safetensors", [], "nothing (an empty file)"),
            (
                "a.pt", Array("PK".utf8) + [3, 4, 0, 0, 0, 0, 0, 0],
                "a ZIP archive (a PyTorch .pt/.pth checkpoint is one: convert it with safetensors.torch.save_file)"
            ),
            ("a.bin", [1, 2, 3], "unknown bytes (3 bytes starting 01 02 03)"),
        ]
        for item in cases {
            let path = directory + "/" + item.name
            try AtomicFileWriter.write(item.bytes, to: path)
            #expect(throws: StateFileError(file: path, .notAStateFile(contents: item.contents))) {
                try BatchNorm3D(maps: 3).loadState(fromFile: path)
            }
        }
    }

    /// The header is validated before any data is read: a 400 MB .npy given as a state, or
    /// a safetensors header that does not account for the file's 400 MB, fails after reading
    /// a few bytes (sparse files: nothing is written to disk, and a whole read would take
    /// 400 MB of memory and seconds).
    @Test func largeFilesAreRejectedFromTheirHeader() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let size: off_t = 400 << 20
        let npy = directory + "/volume.npy"
        try AtomicFileWriter.write(try StateFixtures.bytes("state_npy_f4_v1.npy"), to: npy)
        #expect(truncate(npy, size) == 0)
        #expect(throws: StateFileError(file: npy, .notAStateFile(contents: "a NumPy array (.npy)"))) {
            try BatchNorm3D(maps: 3).loadState(fromFile: npy)
        }
        let safeTensors = directory + "/big.safetensors"
        let original = try StateFixtures.bytes(StateFixtures.torchStateName)
        try AtomicFileWriter.write(original, to: safeTensors)
        let headerLength = Int(original[0]) | Int(original[1]) << 8
        #expect(truncate(safeTensors, size) == 0)
        #expect(
            throws: SafeTensorsError.bufferSizeMismatch(
                expected: original.count - 8 - headerLength, actual: Int(size) - 8 - headerLength)
        ) {
            try BatchNorm3D(maps: 3).loadState(fromFile: safeTensors)
        }
    }

    @Test func theFormatComesFromTheExtensionWhenSaving() {
        #expect(StateFileFormat(forPath: "model.hdf") == .puzzleLibHDF5)
        #expect(StateFileFormat(forPath: "dir.v2/model.H5") == .puzzleLibHDF5)
        #expect(StateFileFormat(forPath: "model.hdf5") == .puzzleLibHDF5)
        #expect(StateFileFormat(forPath: "model.safetensors") == .safeTensors)
        #expect(StateFileFormat(forPath: "dir.hdf/model") == .safeTensors)
    }

    /// A save followed by a load is the identity, for every family member, both values of
    /// `affine`, named and unnamed modules, and both formats (numOfProps: kept in
    /// safetensors, 0 after PuzzleLib HDF5, which does not store it).
    @Test func saveThenLoadIsTheIdentityForEveryFlagCombination() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var generator = SeededGenerator(seed: 77)
        for rank in 2...5 {
            let family = try #require(BatchNormND.familyMember(forDataRank: rank))
            for affine in [true, false] {
                for name in [nil, "net.bn"] as [String?] {
                    for format in StateFileFormat.allCases {
                        let bn = try family.init(maps: 3, sscale: 0.5, affine: affine, name: name, using: &generator)
                        let shape = [4, 3] + Array(repeating: 2, count: rank - 2)
                        for _ in 0..<2 {
                            _ = try bn(
                                try Tensor.normal(shape: shape, mean: 3, standardDeviation: 2, using: &generator))
                        }
                        let path =
                            directory + "/state-\(rank)-\(affine)-\(name ?? "")."
                            + (format == .puzzleLibHDF5 ? "hdf" : "safetensors")
                        try bn.saveState(toFile: path)
                        #expect(try StateFile(contentsOfFile: path).format == format)
                        let restored = try family.init(
                            maps: 3, affine: affine, name: name, empty: true, using: &generator)
                        try restored.loadState(fromFile: path)
                        var expected = try bn.state()
                        if format == .puzzleLibHDF5 { expected.numOfProps = 0 }
                        #expect(
                            try restored.state() == expected,
                            "rank \(rank), affine \(affine), name \(name ?? "nil"), \(format)")
                        bn.evalMode()
                        restored.evalMode()
                        let batch = try Tensor.normal(shape: shape, using: &generator)
                        #expect(bits(try restored(batch).scalars) == bits(try bn(batch).scalars))
                    }
                }
            }
        }
    }

    /// A non-affine module takes no scale or bias other than 1 and 0, from any file or state:
    /// it would apply them before a save and not after.
    @Test func aNonAffineModuleRejectsScaleAndBiasOtherThanOneAndZero() throws {
        let bn = try BatchNorm3D(maps: 3, affine: false)
        let before = try bn.state()
        var file = BatchNormState(
            scale: [2, 3, 4], bias: [10, 20, 30], mean: [0, 0, 0], var: [1, 1, 1], numOfProps: 0
        ).safeTensors()
        #expect(throws: StateFileError(.nonAffineParameter(key: "weight", index: 0, expected: 1, actual: 2))) {
            try bn.loadState(from: file)
        }
        file.tensors["weight"] = .init(float32: [1, 1, 1], shape: [3])
        #expect(throws: StateFileError(.nonAffineParameter(key: "bias", index: 0, expected: 0, actual: 10))) {
            try bn.loadState(from: file)
        }
        #expect(
            throws: BatchNormError.invalidArgument(
                name: "scale[0]", expected: "1.0 (the module is not affine)", actual: "2.0")
        ) {
            try bn.load(
                BatchNormState(scale: [2, 3, 4], bias: [0, 0, 0], mean: [0, 0, 0], var: [1, 1, 1], numOfProps: 0))
        }
        #expect(try bn.state() == before)
        // A PuzzleLib module with scale != 1 loaded into a non-affine module names its params dataset.
        let path = StateFixtures.path("puzzlelib_container.hdf")
        let fixed = try BatchNorm3D(maps: 4, affine: false, name: "seq.bn1")
        #expect(throws: StateFileError.self) { try fixed.loadState(fromFile: path) }
        do { try fixed.loadState(fromFile: path) } catch let error as StateFileError {
            guard case .nonAffineParameter(let key, 0, 1, _) = error.problem else {
                Issue.record("\(error)")
                return
            }
            #expect(key.hasPrefix("params/") && key.hasSuffix("(seq.bn1.scale)"))
        }
        // PuzzleLib's own affine=False module (scale 1, bias 0) loads.
        try BatchNorm3D(maps: 2, affine: false, name: "seq.fixed").loadState(fromFile: path)
    }

    /// The HDF5 file we write for the container fixture's modules is the committed file that
    /// `scripts/make_puzzlelib_fixtures.py --verify` reads back with h5py as PuzzleLib's
    /// `Module.load` does. Set BNKIT_REGENERATE_GOLDEN=1 to rewrite it in the source tree.
    @Test func writesTheHDF5BytesThatH5pyReads() throws {
        let source = try StateFile(contentsOfFile: StateFixtures.path("puzzlelib_container.hdf"))
        let bytes = try StateFile.serialized(try source.modules(), format: .puzzleLibHDF5)
        if ProcessInfo.processInfo.environment["BNKIT_REGENERATE_GOLDEN"] == "1" {
            try AtomicFileWriter.write(bytes, to: StateFixtures.directory + "/puzzlelib_swift_written.hdf")
        }
        #expect(bytes == (try StateFixtures.bytes("puzzlelib_swift_written.hdf")))
        // Our reader reads it back to the same modules, ranks included.
        #expect(try StateFile(parsing: bytes).modules() == (try source.modules()))
        let file = try HDF5File(parsing: bytes)
        #expect(file.groups == ["attrs", "links", "params"])
        #expect(file.dataset("links/seq.bn1.scale")?.dataType == .integer(byteCount: 8, signed: true, bigEndian: false))
        #expect(file.dataset("attrs/seq.bn0d.var")?.shape == [1, 6])
        let slashed = StateFile.ModuleState(name: "a/b", state: try source.module("seq.bn1").state)
        #expect(
            throws: StateFileError(
                .invalidValue(key: "a/b", expected: "a PuzzleLib module name without '/' or NUL", actual: "'a/b'"))
        ) {
            try StateFile.serialized([slashed], format: .puzzleLibHDF5)
        }
    }

    /// Features outside h5py's libver="earliest" subset are named.
    @Test func unsupportedHDF5FeaturesAreNamed() throws {
        var bytes = try StateFixtures.bytes("puzzlelib_unnamed.hdf")
        bytes[8] = 2
        #expect(
            throws: HDF5Error.unsupported(
                feature:
                    "superblock version 2 (written with libver 'v108' or later; expected version 0 or 1, libver 'earliest')"
            )
        ) {
            try StateFile(parsing: bytes)
        }
        bytes = try StateFixtures.bytes("puzzlelib_container.hdf")
        let blueprint = try #require(try HDF5File(parsing: bytes).dataset("blueprint"))
        #expect(blueprint.dataType == .unsupported(name: "variable-length"))
        #expect(throws: HDF5Error.self) { try HDF5File(parsing: bytes).floatValues(of: blueprint) }
        #expect(throws: HDF5Error.notHDF5) { try HDF5File(parsing: Array(repeating: 0, count: 2048)) }
    }
}
