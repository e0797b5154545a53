import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// NumPy `.npy` read and write.
@Suite struct NumPyArrayTests {
    /// `rng.standard_normal((2, 3, 4))` as numpy wrote it in every header version.
    @Test(arguments: ["state_npy_f4_v1.npy", "state_npy_f4_v2.npy", "state_npy_f4_v3.npy"])
    func readsFloat32InEveryHeaderVersion(name: String) throws {
        let tensor = try Tensor(npyBytes: try StateFixtures.bytes(name))
        let reference = try Tensor(npyBytes: try StateFixtures.bytes("state_npy_f4_v1.npy"))
        #expect(tensor.shape == [2, 3, 4])
        #expect(tensor.dataType == .float32)
        #expect(tensor.scalars == reference.scalars)
        let header = try NumPyArrayHeader(parsing: try StateFixtures.bytes(name))
        #expect(header.dataOffset % 64 == 0)
    }

    @Test func readsFloat16() throws {
        let half = try Tensor(npyBytes: try StateFixtures.bytes("state_npy_f2_v1.npy"))
        let single = try Tensor(npyBytes: try StateFixtures.bytes("state_npy_f4_v1.npy"))
        #expect(half.dataType == .float16 && half.shape == [2, 3, 4])
        #expect(half.scalars == single.scalars.map { Float(Float16($0)) })
    }

    /// NumPy's default dtype: `float64` is read as `float32`, rounded to nearest (the file and
    /// the float32 fixture hold the same `standard_normal` draw).
    @Test func readsFloat64AsFloat32() throws {
        let bytes = try StateFixtures.bytes("state_npy_f8.npy")
        let wide = try Tensor(npyBytes: bytes)
        let single = try Tensor(npyBytes: try StateFixtures.bytes("state_npy_f4_v1.npy"))
        #expect(wide.dataType == .float32 && wide.shape == [2, 3, 4])
        #expect(wide.scalars == single.scalars)
        let header = try NumPyArrayHeader(parsing: bytes)
        #expect(header.storedByteCount == 8 && header.dataByteCount == 24 * 8 && header.needsConversion)
        let path = try Self.writeTemporary(bytes)
        #expect(try Tensor(contentsOfNPYFile: path).scalars == single.scalars)
    }

    /// `'>f2'`, `'>f4'` and `'>f8'`: NumPy's byte-swapped arrays read as the little-endian
    /// ones, from memory and from a file (the file path reads through the bounded buffer).
    @Test(arguments: [("state_npy_f2_v1.npy", 2), ("state_npy_f4_v1.npy", 4), ("state_npy_f8.npy", 8)])
    func readsBigEndian(name: String, width: Int) throws {
        let little = try StateFixtures.bytes(name)
        let header = try NumPyArrayHeader(parsing: little)
        var big = Self.replacingDescr(of: little, with: ">f\(width)")
        for start in stride(from: header.dataOffset, to: big.count, by: width) {
            big[start..<(start + width)].reverse()
        }
        let expected = try Tensor(npyBytes: little)
        let fromBytes = try Tensor(npyBytes: big)
        #expect(fromBytes.dataType == expected.dataType && fromBytes.scalars == expected.scalars)
        #expect(try Tensor(contentsOfNPYFile: Self.writeTemporary(big)).scalars == expected.scalars)
        // Written back little-endian.
        #expect(try NumPyArrayHeader(parsing: fromBytes.npyBytes()).descr == (width == 2 ? "<f2" : "<f4"))
        if width == 4 {
            #expect(
                try Tensor(npyBytes: try StateFixtures.bytes("state_npy_f4_bigendian.npy")).scalars == expected.scalars)
        }
    }

    /// The header bytes with the dtype string replaced by one of the same length.
    static func replacingDescr(of bytes: [UInt8], with descr: String) -> [UInt8] {
        var result = bytes
        let key = Array("'descr': '".utf8)
        let start = (0...(bytes.count - key.count)).first { Array(bytes[$0..<($0 + key.count)]) == key }! + key.count
        result.replaceSubrange(start..<(start + 3), with: Array(descr.utf8))
        return result
    }

    /// `bytes` written to a fresh temporary file; its path.
    static func writeTemporary(_ bytes: [UInt8]) throws -> String {
        let path = try StateFixtures.temporaryDirectory() + "/array.npy"
        try AtomicFileWriter.write(bytes, to: path)
        return path
    }

    /// A shape whose element count is 0 but whose other extents overflow is refused where it
    /// is made, as NumPy refuses it: in a header, in a tensor initializer.
    @Test func rejectsShapesWhoseNonZeroExtentsOverflow() throws {
        let header = StateFixtures.npyHeader(shape: "(0, 3, 4294967296, 4294967296)")
        #expect {
            try NumPyArrayHeader(parsing: header)
        } throws: { error in
            guard case NumPyArrayError.invalidHeader(let reason) = error else { return false }
            return reason.contains("[0, 3, 4294967296, 4294967296]") && reason.contains("too large")
        }
        #expect(throws: TensorError.invalidShape(shape: [0, 3, 1 << 32, 1 << 32])) {
            try Tensor(zeros: [0, 3, 1 << 32, 1 << 32])
        }
        #expect(throws: TensorError.invalidShape(shape: [0, 3, 1 << 31, 1 << 31])) {
            try Tensor(zeros: [0, 3, 1 << 31, 1 << 31])
        }
        // float16 halves the bytes: 2^61 elements of 2 bytes fit, of 4 bytes they do not.
        #expect(throws: TensorError.self) { try Tensor(zeros: [0, 1 << 61]) }
        #expect(try Tensor(zeros: [0, 1 << 61], dataType: .float16).elementCount == 0)
        #expect(try Tensor(zeros: [0, 3, 1 << 20, 1 << 20]).scalars.isEmpty)
    }

    @Test func readsAScalar() throws {
        let scalar = try Tensor(npyBytes: try StateFixtures.bytes("state_npy_scalar.npy"))
        #expect(scalar.shape == [] && scalar.scalars == [2.5])
    }

    @Test func rejectsOtherDataTypesAndFortranOrderNamingThem() throws {
        #expect(throws: NumPyArrayError.fortranOrder) {
            try Tensor(npyBytes: try StateFixtures.bytes("state_npy_fortran.npy"))
        }
        #expect(throws: NumPyArrayError.unsupportedDataType(descr: "<i4")) {
            try Tensor(npyBytes: try StateFixtures.bytes("state_npy_int32.npy"))
        }
        #expect(throws: NumPyArrayError.unsupportedDataType(descr: ">i4")) {
            try Tensor(npyBytes: Self.replacingDescr(of: try StateFixtures.bytes("state_npy_int32.npy"), with: ">i4"))
        }
        #expect(throws: NumPyArrayError.unsupportedDataType(descr: "|f4")) {
            try Tensor(npyBytes: Self.replacingDescr(of: try StateFixtures.bytes("state_npy_f4_v1.npy"), with: "|f4"))
        }
        #expect("\(NumPyArrayError.unsupportedDataType(descr: "<i4"))".contains("'<i4'"))
        #expect("\(NumPyArrayError.fortranOrder)".contains("Fortran"))
    }

    /// Our bytes for the numpy fixture's array are numpy's bytes, header included.
    @Test func writesTheBytesNumPyWrites() throws {
        for name in [
            "state_npy_f4_v1.npy", "state_npy_f2_v1.npy", "state_torch_bn3d_c3_input.npy", "state_npy_scalar.npy",
        ] {
            let bytes = try StateFixtures.bytes(name)
            #expect(try Tensor(npyBytes: bytes).npyBytes() == bytes, "\(name)")
        }
    }

    @Test(arguments: [TensorDataType.float32, .float16])
    func roundTripsThroughFilesInBothLayouts(dataType: TensorDataType) throws {
        var generator = SeededGenerator(seed: 21)
        let logical = try Tensor.normal(shape: [2, 3, 2, 3, 4], using: &generator).converted(
            to: .channelsFirst, dataType: dataType)
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for fileLayout in TensorLayout.allCases {
            for tensorLayout in TensorLayout.allCases {
                let path = directory + "/x.npy"
                try logical.converted(to: tensorLayout).writeNPY(toFile: path, fileLayout: fileLayout)
                let header = try NumPyArrayHeader(parsing: FileReader.readAll(path: path))
                #expect(header.shape == (fileLayout == .channelsFirst ? [2, 3, 2, 3, 4] : [2, 2, 3, 4, 3]))
                let back = try Tensor(contentsOfNPYFile: path, fileLayout: fileLayout)
                #expect(back.layout == fileLayout && back.shape == logical.shape && back.dataType == dataType)
                #expect(back.scalars == logical.scalars)
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["x.npy"])
    }

    /// The channels-last fixture is PyTorch's `x.permute(0, 2, 3, 4, 1)`: read as ndhwc it is x.
    @Test func channelsLastFileIsThePermutedArray() throws {
        let first = try Tensor(contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_input.npy"))
        let last = try Tensor(
            contentsOfNPYFile: StateFixtures.path("state_torch_bn3d_c3_input_ndhwc.npy"), fileLayout: .channelsLast)
        #expect(last.shape == first.shape)
        #expect(last.scalars == first.scalars)
    }

    @Test func rejectsMalformedHeaders() throws {
        func header(_ dict: String, version: UInt8 = 1, data: Int = 0) -> [UInt8] {
            let body = Array(dict.utf8)
            var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
            if version == 1 {
                bytes += [UInt8(body.count & 0xFF), UInt8(body.count >> 8)]
            } else {
                bytes += [UInt8(body.count), 0, 0, 0]
            }
            return bytes + body + Array(repeating: 0, count: data)
        }
        let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n"
        #expect(try Tensor(npyBytes: header(good, data: 8)).scalars == [0, 0])
        #expect(throws: NumPyArrayError.dataSizeMismatch(expected: 8, actual: 7)) {
            try Tensor(npyBytes: header(good, data: 7))
        }
        #expect(throws: NumPyArrayError.dataSizeMismatch(expected: 8, actual: 9)) {
            try Tensor(npyBytes: header(good, data: 9))
        }
        #expect(throws: NumPyArrayError.notNumPyFile) { try Tensor(npyBytes: Array("PK\u{3}\u{4}hello".utf8)) }
        #expect(throws: NumPyArrayError.truncatedHeader(expected: 10, actual: 4)) {
            try Tensor(npyBytes: [0x93, 0x4E, 0x55, 0x4D])
        }
        #expect(throws: NumPyArrayError.unsupportedVersion(major: 4, minor: 0)) {
            try Tensor(npyBytes: header(good, version: 4))
        }
        #expect(throws: NumPyArrayError.self) {
            try Tensor(npyBytes: header("{'descr': '<f4', 'shape': (2,), }", data: 8))
        }
        #expect(throws: NumPyArrayError.self) {
            try Tensor(npyBytes: header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", data: 8))
        }
        #expect(throws: NumPyArrayError.self) {
            try Tensor(
                npyBytes: header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }"))
        }
        #expect(throws: NumPyArrayError.self) {
            try Tensor(
                npyBytes: header("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'descr': '<f4'}", data: 8))
        }
        #expect(throws: NumPyArrayError.self) {
            try Tensor(npyBytes: header("{'descr': '<f\u{e9}', 'fortran_order': False, 'shape': (2,), }", data: 8))
        }
        #expect(
            throws: NumPyArrayError.headerTooLarge(
                length: 0x7FFF_FFFF, limit: NumPyArrayHeader.maximumHeaderLength - 12)
        ) {
            try NumPyArrayHeader(parsing: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0, 0xFF, 0xFF, 0xFF, 0x7F])
        }
        #expect(throws: FileIOError.self) { try Tensor(contentsOfNPYFile: "/nonexistent.npy") }
    }
}
