import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// `bnkit fold` on the model fixtures of scripts/make_fold_fixtures.py: a PyTorch Conv3d +
/// BatchNorm3d state dict (safetensors) and the same model as PuzzleLib saves it (HDF5). The
/// expected weight and bias are the script's float64 folding rounded once to float32, the
/// library's rule, so they must match bit for bit.
extension CLITests {
    static func expectedFold() throws -> SafeTensorsFile {
        try SafeTensorsFile(contentsOfFile: StateFixtures.path("fold_model_expected.safetensors"))
    }

    @Test func foldWritesASafeTensorsFileWithTheBatchNormFoldedIn() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = StateFixtures.path("fold_model.safetensors"), output = directory + "/folded.safetensors"
        let run = try Self.bnkit(["fold", input, "--conv", "stem.conv", "--bn", "stem.bn", "-o", output])
        Self.succeeds(run)
        #expect(run.standardOutput.hasPrefix("folded BatchNorm 'stem.bn' into convolution 'stem.conv'"))
        #expect(run.standardOutput.contains("removed 5 entries"))
        let source = try SafeTensorsFile(contentsOfFile: input), folded = try SafeTensorsFile(contentsOfFile: output)
        #expect(folded.tensors.keys.sorted() == ["head.weight", "stem.conv.bias", "stem.conv.weight"])
        #expect(folded.tensors["head.weight"] == source.tensors["head.weight"])
        let expected = try Self.expectedFold()
        for key in ["stem.conv.weight", "stem.conv.bias"] {
            let actual = try #require(folded.tensors[key])
            #expect(actual.shape == expected.tensors[key]?.shape, "\(key)")
            #expect(actual.dataType == .float32, "\(key)")
            #expect(actual.floatValues().map(bits) == expected.tensors[key]?.floatValues().map(bits), "\(key)")
            #expect(actual != source.tensors[key], "\(key) unchanged")
        }
    }

    @Test func foldWritesAPuzzleLibFileWithTheBatchNormFoldedIn() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = StateFixtures.path("fold_puzzlelib.hdf")
        let source = try HDF5File(contentsOfFile: input)
        let expected = try Self.expectedFold()
        let values = { (file: HDF5File, path: String) throws -> [Float] in
            try file.floatValues(of: try #require(file.dataset(path), "\(path)"))
        }
        let link = { (file: HDF5File, name: String) throws -> String in
            "params/\(try file.integerValues(of: try #require(file.dataset("links/\(name)"), "links/\(name)"))[0])"
        }

        // With a bias: W and b replaced in place, the batch norm's six datasets gone.
        let output = directory + "/folded.hdf"
        let run = try Self.bnkit(["fold", input, "--conv", "stem.conv", "--bn", "stem.bn", "-o", output])
        Self.succeeds(run)
        #expect(run.standardOutput.contains("removed 6 entries"))
        let folded = try HDF5File(contentsOfFile: output)
        #expect(try StateFile(contentsOfFile: output).moduleNames.isEmpty)
        let (weightPath, biasPath) = (try link(source, "stem.conv.W"), try link(source, "stem.conv.b"))
        #expect(try link(folded, "stem.conv.W") == weightPath && (try link(folded, "stem.conv.b")) == biasPath)
        #expect(
            folded.dataset(weightPath)?.shape == [4, 2, 3, 3, 3] && folded.dataset(biasPath)?.shape == [1, 4, 1, 1, 1])
        #expect(bits(try values(folded, weightPath)) == expected.tensors["stem.conv.weight"]?.floatValues().map(bits))
        #expect(bits(try values(folded, biasPath)) == expected.tensors["stem.conv.bias"]?.floatValues().map(bits))
        let removed = try ["stem.bn.scale", "stem.bn.bias"].map { try link(source, $0) }
        let kept = source.datasets.map(\.path).filter {
            !$0.contains("stem.bn") && !(removed + [weightPath, biasPath]).contains($0)
        }
        #expect(Set(folded.datasets.map(\.path)) == Set(kept + [weightPath, biasPath]))
        for path in kept where path.hasPrefix("params/") {
            #expect(bits(try values(folded, path)) == bits(try values(source, path)), "\(path)")
        }

        // Without a bias: one is added as the next params index, with its link.
        let added = directory + "/added.hdf"
        let second = try Self.bnkit(["fold", input, "--conv", "noBias", "--bn", "stem.bn", "-o", added])
        Self.succeeds(second)
        #expect(second.standardOutput.contains("(params/1, params/6 added)"))
        let withBias = try HDF5File(contentsOfFile: added)
        #expect(try link(withBias, "noBias.b") == "params/6")
        #expect(withBias.dataset("params/6")?.shape == [1, 4, 1, 1, 1])
        #expect(bits(try values(withBias, "params/6")) == expected.tensors["noBias.b"]?.floatValues().map(bits))
        #expect(bits(try values(withBias, "params/1")) == expected.tensors["stem.conv.weight"]?.floatValues().map(bits))
    }

    @Test func foldRefusesBadInputsWithOneLine() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let state = directory + "/model.safetensors", output = directory + "/out.safetensors"
        try FileManager.default.copyItem(atPath: StateFixtures.path("fold_model.safetensors"), toPath: state)
        let hdf = StateFixtures.path("fold_puzzlelib.hdf")
        let before = try FileReader.readAll(path: state)
        for (arguments, fragment) in [
            (["fold", state, "--conv", "stem.conv", "--bn", "stem.bn", "-o", state], "is the same file as the state"),
            (["fold", state, "--conv", "stem.cnv", "--bn", "stem.bn", "-o", output], "stem.cnv.weight"),
            (["fold", state, "--conv", "stem.conv", "--bn", "stem.bm", "-o", output], "stem.bm"),
            (
                ["fold", state, "--conv", "stem.bn", "--bn", "stem.bn", "-o", output],
                "the batch norm 'stem.bn''s scale"
            ),
            (["fold", state, "--conv", "head", "--bn", "stem.bn", "-o", output], "rank 3 to 5"),
            (
                ["fold", state, "--conv", "stem.conv", "--bn", "stem.bn", "--transposed", "-o", output],
                "groups × axis 1 = 1 × 2 = 2"
            ),
            (["fold", state, "--conv", "stem.conv", "--bn", "stem.bn", "--groups", "3", "-o", output], "divisor"),
            (["fold", state, "--conv", "stem.conv", "--bn", "stem.bn", "--groups", "0", "-o", output], "--groups"),
            (["fold", hdf, "--conv", "stem", "--bn", "stem.bn", "-o", directory + "/o.hdf"], "links/stem.W"),
            // A PuzzleLib file the writer cannot copy unchanged: refused, not converted.
            (
                ["fold", StateFixtures.path("puzzlelib_float16.hdf"), "--conv", "c", "--bn", "net.bn", "-o", output],
                "got float16 of shape [1, 3, 1, 1, 1]"
            ),
            (
                [
                    "fold", StateFixtures.path("puzzlelib_container.hdf"), "--conv", "c", "--bn", "seq.bn1", "-o",
                    output,
                ],
                "'blueprint' must be a float32 array or an integer scalar in a group of the root"
            ),
        ] {
            let run = try Self.bnkit(arguments)
            Self.fails(run, mentioning: fragment)
        }
        #expect(try FileReader.readAll(path: state) == before)
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
