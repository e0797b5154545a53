import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// Safetensors state files: PyTorch interoperability, round trips, errors.
@Suite struct SafeTensorsTests {
    /// A state with awkward values: negative scale, large mean, tiny and huge variance.
    static let goldenState = BatchNormState(
        scale: [1.5, -0.25, 2, 0.5], bias: [0.125, -1, 0, 3.5], mean: [10, -2.5, 0.001, 1e6],
        var: [4, 0.0625, 1e-3, 2.5e11], numOfProps: 7)

    @Test func parsesTheFileWrittenByPyTorch() throws {
        let file = try SafeTensorsFile(parsing: try StateFixtures.bytes(StateFixtures.torchStateName))
        #expect(file.tensors.keys.sorted() == ["bias", "num_batches_tracked", "running_mean", "running_var", "weight"])
        #expect(file.tensors["num_batches_tracked"]?.dataType == .int64)
        #expect(file.tensors["num_batches_tracked"]?.shape == [])
        #expect(file.tensors["num_batches_tracked"]?.integerValues() == [4])
        #expect(file.tensors["weight"]?.floatValues() == [1.5, -0.75, 0.25])
        #expect(file.tensors["bias"]?.floatValues() == [0.1, -2, 3])
        #expect(file.tensors["running_mean"]?.shape == [3])
    }

    @Test(arguments: [TensorLayout.channelsFirst, .channelsLast])
    func stateTrainedInPyTorchReproducesItsEvaluationOutput(layout: TensorLayout) throws {
        let bn = try BatchNorm3D(maps: 3, empty: true)
        try bn.loadState(fromFile: StateFixtures.path(StateFixtures.torchStateName))
        #expect(bn.numOfProps == 4)
        bn.evalMode()
        let suffix = layout == .channelsFirst ? "" : "_ndhwc"
        let input = try Tensor(
            contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_input\(suffix).npy"), fileLayout: layout)
        let expected = try Tensor(
            contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_output\(suffix).npy"), fileLayout: layout)
        #expect(input.shape == [2, 3, 4, 5, 6] && input.layout == layout)
        let output = try bn(input)
        #expect(StateFixtures.maximumRelativeError(output.scalars, expected.scalars) <= 1e-5)
    }

    @Test func convertsFloat64Float16AndBFloat16Parameters() throws {
        let reference = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: StateFixtures.path(StateFixtures.torchStateName)))
        for (suffix, tolerance) in [("f64", 0.0), ("f16", 1e-3), ("bf16", 8e-3)] {
            let state = try BatchNormState(
                safeTensors: SafeTensorsFile(
                    contentsOfFile: StateFixtures.path("state_torch_bn3d_c3_\(suffix).safetensors")))
            #expect(state.numOfProps == 4)
            for (a, b) in [
                (state.scale, reference.scale), (state.bias, reference.bias), (state.mean, reference.mean),
                (state.var, reference.var),
            ] {
                #expect(StateFixtures.maximumRelativeError(a, b, floor: 1) <= tolerance, "\(suffix)")
            }
        }
    }

    @Test func loadsPrefixedKeysFromAModelFile() throws {
        let file = try SafeTensorsFile(contentsOfFile: StateFixtures.path("state_torch_model_prefixed.safetensors"))
        #expect(file.metadata == ["format": "pt"])
        let bn = try BatchNorm3D(maps: 3, name: "layer1.bn", empty: true)
        try bn.loadState(from: file) // prefix defaults to the name
        let bare = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: StateFixtures.path(StateFixtures.torchStateName)))
        #expect(try bn.state() == bare)
        let unnamed = try BatchNorm3D(maps: 3)
        #expect(throws: StateFileError(.missingModule(name: "", modules: ["layer1.bn"]))) {
            try unnamed.loadState(from: file)
        }
        try unnamed.loadState(from: file, prefix: "layer1.bn")
        #expect(try unnamed.state() == bare)
    }

    @Test func roundTripsThroughBytesAndFiles() throws {
        var generator = SeededGenerator(seed: 3)
        let bn = try BatchNorm3D(maps: 5, sscale: 0.5, using: &generator)
        for _ in 0..<3 {
            _ = try bn(try Tensor.normal(shape: [2, 5, 2, 3, 3], mean: 4, standardDeviation: 2, using: &generator))
        }
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bn.safetensors"
        try bn.saveState(toFile: path)
        try bn.saveState(toFile: path) // replacing an existing file
        // No temporary left
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["bn.safetensors"])
        let restored = try BatchNorm3D(maps: 5, empty: true)
        try restored.loadState(fromFile: path)
        #expect(try restored.state() == bn.state())
        #expect(restored.numOfProps == 3)
        // The factor schedule resumes: one more identical step gives identical statistics.
        let batch = try Tensor.normal(shape: [2, 5, 2, 3, 3], using: &generator)
        _ = try bn(batch)
        _ = try restored(batch)
        #expect(try restored.state() == bn.state())
        // Byte-level re-parse of what we write.
        let bytes = try bn.stateSafeTensors().serialized()
        #expect(try SafeTensorsFile(parsing: bytes).serialized() == bytes)
        #expect(bytes.count % 8 == 0)
    }

    /// The bytes we write for ``goldenState`` are the committed golden file, which
    /// `scripts/make_state_fixtures.py --verify-swift` loads into nn.BatchNorm3d.
    /// Set BNKIT_REGENERATE_GOLDEN=1 to rewrite it in the source tree.
    @Test func writesTheGoldenBytesThatPyTorchLoads() throws {
        let bn = try BatchNorm3D(maps: 4, empty: true)
        try bn.load(Self.goldenState)
        let bytes = try bn.stateSafeTensors().serialized()
        if ProcessInfo.processInfo.environment["BNKIT_REGENERATE_GOLDEN"] == "1" {
            try AtomicFileWriter.write(bytes, to: StateFixtures.directory + "/state_swift_golden.safetensors")
        }
        #expect(bytes == (try StateFixtures.bytes("state_swift_golden.safetensors")))
        let header = String(decoding: bytes[8..<(8 + Int(bytes[0]) + Int(bytes[1]) << 8)], as: UTF8.self)
        #expect(header.hasPrefix(#"{"bias":{"dtype":"F32","shape":[4],"data_offsets":["#))
        #expect(header.contains(#""num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]}"#))
    }

    @Test func acceptsACounterOfShapeOne() throws {
        var file = Self.goldenState.safeTensors()
        file.tensors["num_batches_tracked"] = .init(int64: [12], shape: [1])
        #expect(try BatchNormState(safeTensors: SafeTensorsFile(parsing: file.serialized())).numOfProps == 12)
    }

    @Test func emptyModuleBecomesUsableAfterALoad() throws {
        let bn = try BatchNorm3D(maps: 4, empty: true)
        #expect(throws: BatchNormError.emptyModule(name: nil)) { try bn.state() }
        #expect(throws: BatchNormError.emptyModule(name: nil)) { try bn.saveState(toFile: "/nonexistent/x") }
        try bn.loadState(from: Self.goldenState.safeTensors())
        bn.evalMode()
        let output = try bn(try Tensor.ones(shape: [1, 4, 1, 1, 2]))
        let expected = (0..<4).map { c in
            Float(
                Double(Self.goldenState.scale[c]) * (1 - Double(Self.goldenState.mean[c]))
                    / (Double(Self.goldenState.var[c]) + 1e-5).squareRoot() + Double(Self.goldenState.bias[c]))
        }
        #expect(StateFixtures.maximumRelativeError(output.scalars, expected.flatMap { [$0, $0] }) <= 1e-6)
    }

    @Test func nonAffineModulesSaveAndLoadWithoutWeightAndBias() throws {
        let bn = try BatchNorm2D(maps: 2, affine: false)
        let file = try bn.stateSafeTensors()
        #expect(file.tensors.keys.sorted() == ["num_batches_tracked", "running_mean", "running_var"])
        let other = try BatchNorm2D(maps: 2, affine: false, empty: true)
        try other.loadState(from: file)
        #expect(try other.scale.scalars == [1, 1])
        let affine = try BatchNorm2D(maps: 2)
        #expect(throws: StateFileError(.missingKey(key: "weight", available: ["running_mean", "running_var"]))) {
            try affine.loadState(from: file)
        }
    }

    /// Each bad state throws an error naming the key and leaves the module as it was.
    @Test func badStatesThrowNamingTheKeyAndLeaveTheModuleUnchanged() throws {
        var generator = SeededGenerator(seed: 11)
        let bn = try BatchNorm3D(maps: 4, sscale: 0.3, using: &generator)
        _ = try bn(try Tensor.normal(shape: [2, 4, 2, 2, 2], using: &generator))
        let before = try bn.state()
        let good = Self.goldenState.safeTensors()
        func modified(_ change: (inout SafeTensorsFile) -> Void) -> SafeTensorsFile {
            var file = good
            change(&file)
            return file
        }
        let cases: [(SafeTensorsFile, StateFileError.Problem)] = [
            (
                modified { $0.tensors["running_var"] = nil },
                .missingKey(key: "running_var", available: ["bias", "num_batches_tracked", "running_mean", "weight"])
            ),
            (
                modified { $0.tensors["weight"] = .init(float32: [1, 2, 3, 4], shape: [2, 2]) },
                .shapeMismatch(key: "weight", expected: "[C] with C >= 1", actual: [2, 2])
            ),
            (
                modified { $0.tensors["bias"] = .init(float32: [1, 2, 3], shape: [3]) },
                .mapsMismatch(key: "bias", expected: 4, actual: 3)
            ),
            (
                modified { $0.tensors["running_mean"] = .init(int64: [1, 2, 3, 4], shape: [4]) },
                .dataTypeMismatch(key: "running_mean", expected: "F32 (or F16, BF16, F64)", actual: "I64")
            ),
            (
                modified { $0.tensors["num_batches_tracked"] = .init(float32: [3], shape: []) },
                .dataTypeMismatch(key: "num_batches_tracked", expected: "I64", actual: "F32")
            ),
            (
                modified { $0.tensors["num_batches_tracked"] = .init(int64: [3, 4], shape: [2]) },
                .shapeMismatch(key: "num_batches_tracked", expected: "[] or [1]", actual: [2])
            ),
            (
                modified { $0.tensors["num_batches_tracked"] = .init(int64: [-1], shape: []) },
                .invalidValue(key: "num_batches_tracked", expected: ">= 0", actual: "-1")
            ),
            (
                modified { $0.tensors["weight"] = try! .init(dataType: .uint8, shape: [4], bytes: [1, 2, 3, 4]) },
                .dataTypeMismatch(key: "weight", expected: "F32 (or F16, BF16, F64)", actual: "U8")
            ),
            (
                modified { $0.tensors["running_var"] = .init(float32: [1, -2, 3, 4], shape: [4]) },
                .negativeVariance(key: "running_var", index: 1, value: -2)
            ),
            (
                modified { $0.tensors["running_mean"] = .init(float32: [1, 2, .infinity, 4], shape: [4]) },
                .nonFiniteValue(key: "running_mean", index: 2, value: .infinity)
            ),
        ]
        for (file, problem) in cases {
            let expected = StateFileError(problem)
            #expect(throws: expected) { try bn.loadState(from: SafeTensorsFile(parsing: file.serialized())) }
            #expect("\(expected)".contains("'\(expected.key ?? "")'"))
            #expect(try bn.state() == before)
            #expect(bn.savemean != nil) // saved tensors not dropped either
        }
        let empty = try BatchNorm3D(maps: 4, empty: true)
        #expect(throws: StateFileError.self) { try empty.loadState(from: cases[0].0) }
        #expect(throws: BatchNormError.emptyModule(name: nil)) { try empty.state() }
    }

    @Test func rejectsMalformedFilesWithClearErrors() throws {
        func parse(_ header: String, data: [UInt8] = []) throws -> SafeTensorsFile {
            var bytes = [UInt8]()
            withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
            return try SafeTensorsFile(parsing: bytes + Array(header.utf8) + data)
        }
        #expect(throws: SafeTensorsError.truncatedHeaderLength(byteCount: 3)) {
            try SafeTensorsFile(parsing: [1, 2, 3])
        }
        #expect(throws: SafeTensorsError.headerTooLarge(length: .max, limit: 100_000_000)) {
            try SafeTensorsFile(parsing: Array(repeating: 0xFF, count: 16))
        }
        #expect(throws: SafeTensorsError.headerPastEnd(headerLength: 100, byteCount: 12)) {
            try SafeTensorsFile(parsing: [100, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0x7D, 0x20, 0x20])
        }
        #expect(throws: SafeTensorsError.offsetsOutOfBounds(key: "a", begin: 0, end: 8, bufferSize: 4)) {
            try parse(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0])
        }
        #expect(throws: SafeTensorsError.dataSizeMismatch(key: "a", expected: 8, actual: 4)) {
            try parse(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        }
        #expect(throws: SafeTensorsError.overlappingOrGap(key: "b", expectedBegin: 4, actualBegin: 2)) {
            try parse(
                #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}}"#,
                data: [0, 0, 0, 0])
        }
        #expect(throws: SafeTensorsError.bufferSizeMismatch(expected: 4, actual: 6)) {
            try parse(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0, 0, 0])
        }
        #expect(throws: SafeTensorsError.unknownDataType(key: "a", dataType: "F128")) {
            try parse(#"{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        }
        #expect(throws: SafeTensorsError.invalidEntry(key: "a", reason: "shape must hold non-negative integers")) {
            try parse(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        }
        for shape in ["[4294967296,4294967296]", "[0,4294967296,4294967296]"] {
            #expect {
                try parse(#"{"a":{"dtype":"F32","shape":"# + shape + #","data_offsets":[0,0]}}"#)
            } throws: { error in
                guard case SafeTensorsError.invalidEntry("a", let reason) = error else { return false }
                return reason.contains("too large")
            }
        }
        #expect(throws: SafeTensorsError.self) { try parse(#"{"a":1,"a":2}"#) }
        #expect(throws: SafeTensorsError.self) { try parse(String(repeating: "[", count: 10_000)) }
        #expect(throws: SafeTensorsError.self) { try parse("{" + String(repeating: #""a":{"#, count: 200)) }
        #expect(try parse("{}").tensors.isEmpty)
        #expect(try parse(#"{"__metadata__":{"k":"v\u00e9"}}   "#).metadata == ["k": "vé"])
        #expect(throws: FileIOError.self) { try SafeTensorsFile(contentsOfFile: "/nonexistent/state.safetensors") }
    }
}
