import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// Mutated safetensors and .npy files, parsed from memory: every one must either throw the
/// format's error or load correctly. Deterministic (seeded), and fast enough for
/// debug builds: each test parses more than 10,000 files.
@Suite struct CorruptionFuzzTests {
    /// 12,000 per format; BNKIT_FUZZ_ITERATIONS overrides it for longer runs.
    static let iterations = ProcessInfo.processInfo.environment["BNKIT_FUZZ_ITERATIONS"].flatMap { Int($0) } ?? 12_000

    // MARK: safetensors

    /// A safetensors file split into its header text and data buffer.
    struct SafeTensorsParts {
        var header: [UInt8]
        var data: [UInt8]
        init(_ bytes: [UInt8]) {
            let length = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16
            header = Array(bytes[8..<(8 + length)])
            data = Array(bytes[(8 + length)...])
        }
        /// The file with a header length that matches the (edited) header.
        var bytes: [UInt8] {
            var result = [UInt8]()
            withUnsafeBytes(of: UInt64(header.count).littleEndian) { result.append(contentsOf: $0) }
            return result + header + data
        }
    }

    static func replacing(
        _ bytes: [UInt8], _ target: String, with replacement: String, using generator: inout SeededGenerator
    ) -> [UInt8] {
        let pattern = Array(target.utf8)
        var matches: [Int] = []
        if bytes.count >= pattern.count {
            for i in 0...(bytes.count - pattern.count) where bytes[i..<(i + pattern.count)].elementsEqual(pattern) {
                matches.append(i)
            }
        }
        guard let at = matches.randomElement(using: &generator) else { return bytes }
        return Array(bytes[..<at]) + Array(replacement.utf8) + Array(bytes[(at + pattern.count)...])
    }

    static func flipBits(
        _ bytes: inout [UInt8], in range: Range<Int>, count: Int, using generator: inout SeededGenerator
    ) {
        guard !range.isEmpty else { return }
        for _ in 0..<count {
            let index = Int.random(in: range, using: &generator)
            bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
        }
    }

    static let hostileNumbers = [
        "0", "1", "-1", "7", "8", "9", "12", "16", "4294967296", "9223372036854775807",
        "9223372036854775808", "99999999999999999999", "1e3", "2.5", "-0", "00", "1E400",
    ]

    static func mutateSafeTensors(_ seed: [UInt8], kind: Int, using generator: inout SeededGenerator) -> [UInt8] {
        var bytes = seed
        var parts = SafeTensorsParts(seed)
        switch kind {
        case 0: // truncation
            return Array(seed.prefix(Int.random(in: 0..<seed.count, using: &generator)))
        case 1: // bit flips anywhere
            flipBits(&bytes, in: 0..<bytes.count, count: Int.random(in: 1...8, using: &generator), using: &generator)
            return bytes
        case 2: // bit flips in the header text
            flipBits(
                &bytes, in: 8..<(8 + parts.header.count), count: Int.random(in: 1...3, using: &generator),
                using: &generator)
            return bytes
        case 3: // bogus header lengths, huge ones included
            let candidates: [UInt64] = [
                0, 1, 2, 7, UInt64(parts.header.count) - 1, UInt64(parts.header.count) + 1,
                UInt64(seed.count - 8), UInt64(seed.count - 7), UInt64(seed.count), 100_000_000,
                100_000_001, 1 << 32, 1 << 62, 1 << 63, UInt64.max, UInt64.max - 7,
                UInt64.random(in: 0...UInt64.max, using: &generator),
                UInt64.random(in: 0...UInt64(2 * seed.count), using: &generator),
            ]
            let length = candidates.randomElement(using: &generator)!
            withUnsafeBytes(of: length.littleEndian) { for k in 0..<8 { bytes[k] = $0[k] } }
            return bytes
        case 4: // a number of the header replaced by a hostile one
            let digits = parts.header.indices.filter { (0x30...0x39).contains(parts.header[$0]) }
            guard let at = digits.randomElement(using: &generator) else { return bytes }
            var end = at
            while end < parts.header.count, (0x30...0x39).contains(parts.header[end]) { end += 1 }
            parts.header.replaceSubrange(at..<end, with: Array(hostileNumbers.randomElement(using: &generator)!.utf8))
            return parts.bytes
        case 5: // overlapping tensors: one entry's offsets copied onto another's
            let text = String(decoding: parts.header, as: UTF8.self)
            let offsets = text.split(separator: "\"data_offsets\":").dropFirst().map {
                String($0.prefix { $0 != "]" }) + "]"
            }
            guard offsets.count >= 2 else { return bytes }
            let source = offsets.randomElement(using: &generator)!, target = offsets.randomElement(using: &generator)!
            parts.header = replacing(
                parts.header, "\"data_offsets\":" + target, with: "\"data_offsets\":" + source, using: &generator)
            return parts.bytes
        case 6: // misaligned tensors: offsets shifted by a few bytes
            let text = String(decoding: parts.header, as: UTF8.self)
            let offsets = text.split(separator: "\"data_offsets\":[").dropFirst().map { $0.prefix { $0 != "]" } }
            guard let pair = offsets.randomElement(using: &generator) else { return bytes }
            let numbers = pair.split(separator: ",").compactMap { Int($0) }
            guard numbers.count == 2 else { return bytes }
            let shift = [-3, -1, 1, 2, 4].randomElement(using: &generator)!
            let shifted = "\(numbers[0] + shift),\(numbers[1] + (Bool.random(using: &generator) ? shift : 0))"
            parts.header = replacing(parts.header, "[" + pair + "]", with: "[" + shifted + "]", using: &generator)
            return parts.bytes
        case 7: // non-UTF-8 bytes inside the header
            let invalid: [[UInt8]] = [
                [0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0x80], [0x00],
            ]
            let at = Int.random(in: 1..<parts.header.count, using: &generator)
            parts.header.insert(contentsOf: invalid.randomElement(using: &generator)!, at: at)
            return parts.bytes
        case 8: // deeply nested JSON, balanced or not
            let depth = [10, 63, 64, 65, 100, 1000, 5000].randomElement(using: &generator)!
            let open = Bool.random(using: &generator) ? "[" : "{\"a\":"
            let close = open == "[" ? "]" : "}"
            let body =
                String(repeating: open, count: depth) + "1"
                + String(repeating: close, count: Int.random(in: (depth - 1)...depth, using: &generator))
            parts.header = Array(("{\"x\":" + body + "}").utf8)
            return parts.bytes
        case 9: // a header byte range deleted or duplicated
            let start = Int.random(in: 0..<parts.header.count, using: &generator)
            let end = min(parts.header.count, start + Int.random(in: 1...12, using: &generator))
            if Bool.random(using: &generator) {
                parts.header.removeSubrange(start..<end)
            } else {
                parts.header.insert(contentsOf: parts.header[start..<end], at: start)
            }
            return parts.bytes
        case 10: // a JSON punctuation character planted
            let at = Int.random(in: 0..<parts.header.count, using: &generator)
            parts.header[at] = Array("{}[]\",:0123456789-eE. \\u".utf8).randomElement(using: &generator)!
            return parts.bytes
        case 11: // another dtype
            let replacement = ["F16", "BF16", "F64", "I64", "U8", "BOOL", "X32", "", "f32", "F8_E4M3"].randomElement(
                using: &generator)!
            parts.header = replacing(parts.header, "\"F32\"", with: "\"" + replacement + "\"", using: &generator)
            return parts.bytes
        case 12: // another shape
            let replacement = [
                "[]", "[1]", "[4]", "[2]", "[3,1]", "[1,3]", "[0]", "[-3]", "[3.0]", "[\"3\"]",
                "[4294967296,4294967296]", "[9223372036854775807]", "{}", "null",
            ].randomElement(using: &generator)!
            parts.header = replacing(
                parts.header, "\"shape\":[" + (Bool.random(using: &generator) ? "3]" : "]"),
                with: "\"shape\":" + replacement, using: &generator)
            return parts.bytes
        default: // data bytes appended or removed
            if Bool.random(using: &generator), !parts.data.isEmpty {
                parts.data.removeLast(Int.random(in: 1...min(8, parts.data.count), using: &generator))
            } else {
                parts.data += (0..<Int.random(in: 1...8, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
            }
            return parts.bytes
        }
    }

    @Test func mutatedSafeTensorsFilesThrowOrLoadCorrectly() throws {
        let seeds: [(bytes: [UInt8], prefix: String, maps: Int)] = [
            (try StateFixtures.bytes("state_torch_bn3d_c3.safetensors"), "", 3),
            (try StateFixtures.bytes("state_swift_golden.safetensors"), "", 4),
            (try StateFixtures.bytes("state_torch_model_prefixed.safetensors"), "layer1.bn", 3),
            (try StateFixtures.bytes("state_torch_bn3d_c3_f16.safetensors"), "", 3),
        ]
        var generator = SeededGenerator(seed: 20_261_124)
        let modules = [3: try BatchNorm3D(maps: 3), 4: try BatchNorm3D(maps: 4)]
        var thrown = 0, parsed = 0, loaded = 0
        for iteration in 0..<Self.iterations {
            let seed = seeds[iteration % seeds.count]
            let mutated = Self.mutateSafeTensors(seed.bytes, kind: (iteration / seeds.count) % 14, using: &generator)
            let file: SafeTensorsFile
            do {
                file = try SafeTensorsFile(parsing: mutated)
            } catch is SafeTensorsError {
                thrown += 1
                continue
            } catch {
                Issue.record("iteration \(iteration): unexpected error type \(type(of: error)): \(error)")
                continue
            }
            parsed += 1
            // A successful parse is a consistent file: sizes match, and it survives a re-serialization.
            for (key, entry) in file.tensors where entry.bytes.count != entry.shape.reduce(entry.dataType.byteCount, *)
            {
                Issue.record("iteration \(iteration): '\(key)' has \(entry.bytes.count) bytes for shape \(entry.shape)")
            }
            if (try? SafeTensorsFile(parsing: file.serialized())) != file {
                Issue.record("iteration \(iteration): re-serialized file differs")
            }
            // Loading it into a module either succeeds with exactly the file's values or leaves the module unchanged.
            let module = modules[seed.maps]!
            let before = try module.state()
            do {
                try module.loadState(from: file, prefix: seed.prefix)
                let expected = try BatchNormState(safeTensors: file, prefix: seed.prefix, maps: seed.maps)
                if !Self.identical(try module.state(), expected) {
                    Issue.record("iteration \(iteration): loaded state differs from the file")
                }
                loaded += 1
                try module.load(before)
            } catch is StateFileError {
                // A well-formed file that holds no valid state (a missing key, NaN, a negative variance).
                if !Self.identical(try module.state(), before) {
                    Issue.record("iteration \(iteration): failed load changed the module")
                }
            } catch {
                Issue.record("iteration \(iteration): unexpected error type \(type(of: error)): \(error)")
            }
        }
        #expect(thrown + parsed == Self.iterations)
        #expect(thrown > Self.iterations / 2)
        #expect(loaded > 100) // bit flips in the data still give valid files
    }

    /// Bitwise equality (NaN payloads from bit flips included).
    static func identical(_ a: BatchNormState, _ b: BatchNormState) -> Bool {
        func bits(_ s: BatchNormState) -> [UInt32] { (s.scale + s.bias + s.mean + s.var).map(\.bitPattern) }
        return bits(a) == bits(b) && a.numOfProps == b.numOfProps
    }

    // MARK: .npy

    static func mutateNumPy(_ seed: [UInt8], kind: Int, using generator: inout SeededGenerator) -> [UInt8] {
        var bytes = seed
        let version = seed[6]
        let prefixLength = version == 1 ? 10 : 12
        let headerLength =
            version == 1 ? Int(seed[8]) | Int(seed[9]) << 8 : Int(seed[8]) | Int(seed[9]) << 8 | Int(seed[10]) << 16
        var dict = Array(seed[prefixLength..<(prefixLength + headerLength)])
        var data = Array(seed[(prefixLength + headerLength)...])
        func rebuilt() -> [UInt8] {
            var result = Array(seed[0..<8])
            if version == 1 {
                result += [UInt8(dict.count & 0xFF), UInt8((dict.count >> 8) & 0xFF)]
            } else {
                result += (0..<4).map { UInt8((dict.count >> (8 * $0)) & 0xFF) }
            }
            return result + dict + data
        }
        switch kind {
        case 0: // truncation
            return Array(seed.prefix(Int.random(in: 0..<seed.count, using: &generator)))
        case 1: // bit flips anywhere
            flipBits(&bytes, in: 0..<bytes.count, count: Int.random(in: 1...8, using: &generator), using: &generator)
            return bytes
        case 2: // bit flips in magic, version, length and dict
            flipBits(
                &bytes, in: 0..<(prefixLength + headerLength), count: Int.random(in: 1...3, using: &generator),
                using: &generator)
            return bytes
        case 3: // bogus header lengths
            let length = [
                0, 1, headerLength - 1, headerLength + 1, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF,
                Int.random(in: 0...0xFFFF_FFFF, using: &generator),
            ].randomElement(using: &generator)!
            for k in 0..<(prefixLength - 8) { bytes[8 + k] = UInt8((length >> (8 * k)) & 0xFF) }
            return bytes
        case 4: // another version
            bytes[6] = [0, 1, 2, 3, 4, 255].randomElement(using: &generator)!
            bytes[7] = [0, 0, 0, 1].randomElement(using: &generator)!
            return bytes
        case 5: // another shape
            let shape = [
                "()", "(2,)", "(24,)", "(2, 3, 4)", "(4, 3, 2)", "(2, 3, 5)", "(0, 3, 4)", "(-2, 3, 4)", "(2 3 4)",
                "(99999999999999999999,)", "(4294967296, 4294967296)", "(2, 3, 4L)", "((2,),)", "[2, 3, 4]", "(,)",
            ]
            .randomElement(using: &generator)!
            dict = replacing(dict, "(2, 3, 4)", with: shape, using: &generator)
            return rebuilt()
        case 6: // another dtype
            let descr = ["<f2", "<f4", ">f4", "<f8", "<i4", "|u1", "<c8", "", "<f4'", "f4", "=f4", "<U3", "|O"]
                .randomElement(using: &generator)!
            dict = replacing(
                dict, dict.contains(UInt8(ascii: "2")) && seed[prefixLength + 12] == UInt8(ascii: "2") ? "<f2" : "<f4",
                with: descr, using: &generator)
            return rebuilt()
        case 7: // Fortran order, or a non-boolean
            dict = replacing(
                dict, "False", with: ["True", "1", "None", "false", "Fals"].randomElement(using: &generator)!,
                using: &generator)
            return rebuilt()
        case 8: // non-ASCII / non-UTF-8 bytes in the dict
            let invalid: [[UInt8]] = [[0xFF], [0xC3, 0xA9], [0xED, 0xA0, 0x80], [0xC0, 0x80], [0x80], [0x00]]
            dict.insert(
                contentsOf: invalid.randomElement(using: &generator)!,
                at: Int.random(in: 0..<dict.count, using: &generator))
            return rebuilt()
        case 9: // nested parentheses or braces
            let depth = [2, 50, 5000].randomElement(using: &generator)!
            dict = Array(
                ("{'descr': '<f4', 'fortran_order': False, 'shape': " + String(repeating: "(", count: depth)
                    + "2" + String(repeating: ")", count: depth) + ", }\n").utf8)
            return rebuilt()
        case 10: // a dict byte range deleted, duplicated or replaced with punctuation
            let start = Int.random(in: 0..<dict.count, using: &generator)
            let end = min(dict.count, start + Int.random(in: 1...8, using: &generator))
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: dict.removeSubrange(start..<end)
            case 1: dict.insert(contentsOf: dict[start..<end], at: start)
            default: dict[start] = Array("{}()'\":,TF0123456789L\\ \n".utf8).randomElement(using: &generator)!
            }
            return rebuilt()
        case 11: // magic corrupted
            bytes[Int.random(in: 0..<6, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            return bytes
        default: // data bytes appended or removed
            if Bool.random(using: &generator), !data.isEmpty {
                data.removeLast(Int.random(in: 1...min(8, data.count), using: &generator))
            } else {
                data += (0..<Int.random(in: 1...8, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
            }
            return rebuilt()
        }
    }

    /// The data section of a `.npy` file as little-endian `float16`/`float32` bytes, decoded
    /// element by element (a separate path from the reader's).
    static func littleEndianElements(_ file: [UInt8], _ header: NumPyArrayHeader) -> [UInt8] {
        let width = header.storedByteCount
        var result = [UInt8]()
        for start in stride(from: header.dataOffset, to: file.count, by: width) {
            var element = Array(file[start..<(start + width)])
            if header.isBigEndian { element.reverse() }
            if width == 8 {
                let bits = element.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                withUnsafeBytes(of: Float(Double(bitPattern: bits)).bitPattern.littleEndian) {
                    result.append(contentsOf: $0)
                }
            } else {
                result += element
            }
        }
        return result
    }

    @Test func mutatedNumPyFilesThrowOrLoadCorrectly() throws {
        let seeds = try ["state_npy_f4_v1.npy", "state_npy_f2_v1.npy", "state_npy_f4_v2.npy", "state_npy_f4_v3.npy"]
            .map(StateFixtures.bytes)
        var generator = SeededGenerator(seed: 42)
        var thrown = 0, loaded = 0
        for iteration in 0..<Self.iterations {
            let seed = seeds[iteration % seeds.count]
            let mutated = Self.mutateNumPy(seed, kind: (iteration / seeds.count) % 13, using: &generator)
            do {
                let tensor = try Tensor(npyBytes: mutated)
                let header = try NumPyArrayHeader(parsing: mutated)
                // A successful read holds exactly the file's data bytes (decoded for a
                // big-endian or float64 file).
                let stored = Array(
                    UnsafeRawBufferPointer(start: tensor.storage.rawAddress, count: tensor.storage.byteCount))
                if tensor.shape != header.shape || stored != Self.littleEndianElements(mutated, header) {
                    Issue.record("iteration \(iteration): tensor does not hold the file's data")
                }
                let again = try Tensor(npyBytes: try tensor.npyBytes())
                if again.shape != tensor.shape || again.dataType != tensor.dataType {
                    Issue.record("iteration \(iteration): round trip changed the array")
                }
                loaded += 1
            } catch is NumPyArrayError {
                thrown += 1
            } catch {
                Issue.record("iteration \(iteration): unexpected error type \(type(of: error)): \(error)")
            }
        }
        #expect(thrown + loaded == Self.iterations)
        #expect(thrown > Self.iterations / 2)
        #expect(loaded > 100)
    }

    // MARK: JSON

    @Test func strictJSONEdgeCases() throws {
        func header(_ json: String) -> [UInt8] {
            var parts = SafeTensorsParts(Array(repeating: 0, count: 8))
            parts.header = Array(json.utf8)
            return parts.bytes
        }
        let rejected = [
            #"{"a":}"#, #"{"a":1,}"#, #"{"a" 1}"#, #"{'a':1}"#, #"{"a":01}"#, #"{"a":1.}"#, #"{"a":-}"#,
            #"{"a":"\ud800"}"#, #"{"a":"\udc00"}"#, "{\"a\":\"\u{1}\"}", #"{"a":"\x"}"#, #"{"a":tru}"#,
            #"{"a":1}x"#, #"{"a":[1,2}"#, #"{"a":"unterminated}"#, #"{"__metadata__":{"k":1}}"#,
            #"{"__metadata__":[]}"#, #"{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"extra":1}}"#,
        ]
        for json in rejected {
            #expect(throws: SafeTensorsError.self, "\(json)") { try SafeTensorsFile(parsing: header(json)) }
        }
        let accepted = [
            #"{}"#, #"{ }  "#, #"{"__metadata__":{"a":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"}}"#,
            #"{"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
        ]
        for json in accepted {
            #expect(throws: Never.self, "\(json)") { try SafeTensorsFile(parsing: header(json)) }
        }
        let metadata = try SafeTensorsFile(parsing: header(accepted[2])).metadata["a"]
        #expect(metadata == "\"\\/\u{8}\u{c}\n\r\té😀")
    }
}
