import BatchNormKit
import BatchNormTestSupport
import Testing

/// Half tensors in files: safetensors `F16` / `BF16` entries both ways; `.npy` `<f2`, and
/// a clear error for bfloat16, which NumPy has no dtype for.
@Suite struct HalfPrecisionFileTests {
    @Test(arguments: TensorDataType.allCases, TensorLayout.allCases)
    func safeTensorsEntriesRoundTrip(type: TensorDataType, layout: TensorLayout) throws {
        var generator = SeededGenerator(seed: 12)
        let tensor = try Tensor.normal(
            shape: [2, 3, 4, 5], mean: 1, standardDeviation: 3, layout: layout,
            using: &generator
        ).converted(to: layout, dataType: type)
        let entry = SafeTensorsFile.Entry(tensor: tensor)
        #expect(entry.dataType.rawValue == ["float32": "F32", "float16": "F16", "bfloat16": "BF16"][type.rawValue])
        #expect(entry.shape == [2, 3, 4, 5] && entry.bytes.count == tensor.elementCount * type.byteCount)
        #expect(entry.floatValues() == tensor.scalars)
        let file = try SafeTensorsFile(parsing: SafeTensorsFile(tensors: ["x": entry]).serialized())
        let back = try Tensor(safeTensorsEntry: try #require(file.tensors["x"]), key: "x", layout: layout)
        #expect(back.dataType == type && back.layout == layout && back.scalars == tensor.scalars)
        #expect(throws: StateFileError(.dataTypeMismatch(key: "n", expected: "F32, F16 or BF16 data", actual: "I64"))) {
            try Tensor(safeTensorsEntry: .init(int64: [1], shape: []), key: "n")
        }
    }

    @Test func numPyHasFloat16ButNoBFloat16() throws {
        let values: [Float] = [1, -2.5, 65504, 1e-7, 3.14159, 0]
        let half = try Tensor(values, shape: [2, 3], dataType: .float16)
        let read = try Tensor(npyBytes: try half.npyBytes())
        #expect(read.dataType == .float16 && read.scalars == half.scalars)
        let bfloat = try Tensor(values, shape: [2, 3], dataType: .bfloat16)
        #expect(throws: NumPyArrayError.noNumPyDataType(.bfloat16)) { _ = try bfloat.npyBytes() }
        #expect(NumPyArrayError.noNumPyDataType(.bfloat16).description.contains("NumPy has no dtype for bfloat16"))
    }
}
