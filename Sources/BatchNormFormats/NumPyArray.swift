import BatchNormCore

/// Errors thrown while reading a NumPy `.npy` file.
///
/// The reader throws one of these for any malformed or unsupported input and never traps.
public enum NumPyArrayError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The data does not start with the magic string `\x93NUMPY`.
    case notNumPyFile
    /// The data ends before the header does.
    case truncatedHeader(expected: Int, actual: Int)
    /// The format version is not 1.0, 2.0 or 3.0.
    case unsupportedVersion(major: Int, minor: Int)
    /// The header exceeds ``NumPyArrayHeader/maximumHeaderLength``.
    case headerTooLarge(length: Int, limit: Int)
    /// The header dictionary is malformed (`reason` says how).
    case invalidHeader(reason: String)
    /// The dtype is not `float16`, `float32` or `float64` (`'<f2'`, `'<f4'`, `'<f8'` or
    /// their big-endian `'>'` forms).
    case unsupportedDataType(descr: String)
    /// The array is stored in Fortran (column-major) order; only C order is read.
    case fortranOrder
    /// The data section does not hold the shape's elements.
    case dataSizeMismatch(expected: Int, actual: Int)
    /// A tensor of this type cannot be written: NumPy has no dtype for it (bfloat16).
    case noNumPyDataType(TensorDataType)

    /// One sentence naming what was expected and what was found.
    public var description: String {
        switch self {
        case .notNumPyFile:
            "not a NumPy .npy file (expected the magic string \\x93NUMPY)"
        case .truncatedHeader(let expected, let actual):
            ".npy header is truncated: \(actual) bytes, expected \(expected)"
        case .unsupportedVersion(let major, let minor):
            ".npy format version \(major).\(minor) is not supported (expected 1.0, 2.0 or 3.0)"
        case .headerTooLarge(let length, let limit):
            ".npy header of \(length) bytes exceeds the limit of \(limit)"
        case .invalidHeader(let reason):
            "invalid .npy header: \(reason)"
        case .unsupportedDataType(let descr):
            ".npy dtype '\(descr)' is not supported (expected float16, float32 or float64: '<f2', '<f4', '<f8' or big-endian '>f2', '>f4', '>f8')"
        case .fortranOrder:
            ".npy array is in Fortran order (fortran_order: True); expected C order"
        case .dataSizeMismatch(let expected, let actual):
            ".npy data section has \(actual) bytes, expected \(expected) for the shape and dtype: file truncated or corrupted"
        case .noNumPyDataType(let type):
            "NumPy has no dtype for \(type) (a .npy file holds '<f4' float32 or '<f2' float16): convert the tensor "
                + "to float32 first, or store it in a safetensors file (BF16)"
        }
    }
}

/// The header of a NumPy `.npy` file: shape and element type of a C-order array, and where
/// its data begin.
///
/// Format (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>): the
/// magic `\x93NUMPY`, a version byte pair (1.0: 2-byte header length; 2.0: 4-byte length;
/// 3.0: 4-byte length and a UTF-8 header), then a Python dict literal
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` padded with spaces and a
/// newline so the data start on a 64-byte boundary.
///
/// `float16`, `float32` and `float64` in C order are accepted, little-endian (`'<'`, or `'='`
/// on this little-endian machine) or big-endian (`'>'`); anything else throws a
/// ``NumPyArrayError`` naming it. Elements are read as ``dataType``: `float16` and `float32`
/// keep their type, `float64` (NumPy's default) is rounded to `float32`, and big-endian
/// elements are byte-swapped (``readElements(from:first:count:into:)`` does both). Files are
/// always written little-endian. The header parser is strict (exactly the three keys, Python
/// literals only) and bounded by ``maximumHeaderLength``; a shape with a negative extent, or
/// whose non-zero extents multiply past `Int.max` bytes, is refused (as NumPy does) even when
/// it holds no element.
///
/// Reading a file in pieces:
/// ```swift
/// let file = try FileReader(path: "x.npy")
/// let header = try NumPyArrayHeader(parsing: file.read(at: 0, count: min(file.size, 1 << 16)))
/// try header.checkDataSize(fileSize: file.size)
/// let storage = TensorStorage(byteCount: header.elementCount * header.dataType.byteCount)
/// try header.readElements(from: file, first: 0, count: header.elementCount, into: storage.rawAddress)
/// ```
public struct NumPyArrayHeader: Equatable, Sendable {
    /// The longest accepted header (the version 1.0 limit, 64 KiB, plus the prefix).
    public static let maximumHeaderLength = 65_536 + 10

    /// The array's shape, `[]` for a scalar.
    public var shape: [Int]
    /// The type the elements are read as: the file's `float16` or `float32`, and `float32`
    /// for a `float64` file.
    public var dataType: TensorDataType
    /// Byte offset of the first element (the header's total length).
    public var dataOffset: Int
    /// The file's dtype as written in the header (`"<f4"`, `">f8"`, ...).
    public var descr: String
    /// Bytes per element in the file: 2, 4 or 8.
    public var storedByteCount: Int
    /// Whether the file's elements are big-endian (`'>'`).
    public var isBigEndian: Bool

    /// Number of elements, the product of the shape.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes of the data section.
    public var dataByteCount: Int { elementCount * storedByteCount }

    /// Whether reading converts the elements (a `float64` or a big-endian file) rather than
    /// copying the bytes as they are.
    public var needsConversion: Bool { isBigEndian || storedByteCount != dataType.byteCount }

    /// Parses the header at the start of `bytes` (which may hold more than the header).
    ///
    /// - Throws: ``NumPyArrayError`` for a bad magic, version, header, dtype
    ///   (``NumPyArrayError/unsupportedDataType(descr:)`` names it) or Fortran order.
    public init(parsing bytes: [UInt8]) throws {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 6 else {
            if Array(bytes) == Array(magic.prefix(bytes.count)) {
                throw NumPyArrayError.truncatedHeader(expected: 10, actual: bytes.count)
            }
            throw NumPyArrayError.notNumPyFile
        }
        guard Array(bytes[0..<6]) == magic else { throw NumPyArrayError.notNumPyFile }
        guard bytes.count >= 8 else { throw NumPyArrayError.truncatedHeader(expected: 10, actual: bytes.count) }
        let major = Int(bytes[6]), minor = Int(bytes[7])
        let prefixLength: Int, headerLength: Int
        switch (major, minor) {
        case (1, 0):
            prefixLength = 10
            guard bytes.count >= prefixLength else {
                throw NumPyArrayError.truncatedHeader(expected: prefixLength, actual: bytes.count)
            }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        case (2, 0), (3, 0):
            prefixLength = 12
            guard bytes.count >= prefixLength else {
                throw NumPyArrayError.truncatedHeader(expected: prefixLength, actual: bytes.count)
            }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        default:
            throw NumPyArrayError.unsupportedVersion(major: major, minor: minor)
        }
        guard headerLength <= Self.maximumHeaderLength - prefixLength else {
            throw NumPyArrayError.headerTooLarge(length: headerLength, limit: Self.maximumHeaderLength - prefixLength)
        }
        guard bytes.count >= prefixLength + headerLength else {
            throw NumPyArrayError.truncatedHeader(expected: prefixLength + headerLength, actual: bytes.count)
        }
        let text = Array(bytes[prefixLength..<(prefixLength + headerLength)])
        if major < 3 {
            guard text.allSatisfy({ $0 < 0x80 }) else {
                throw NumPyArrayError.invalidHeader(reason: "non-ASCII byte in a version \(major).0 header")
            }
        } else if let offset = StrictJSONParser.firstInvalidUTF8Offset(text) {
            throw NumPyArrayError.invalidHeader(reason: "invalid UTF-8 at header byte \(offset)")
        }
        var parser = PythonDictParser(bytes: text)
        let dictionary = try parser.parseHeader()
        if case .list(let fields)? = dictionary["descr"] {
            throw NumPyArrayError.unsupportedDataType(descr: "\(fields) (a structured dtype)")
        }
        guard dictionary.count == 3, case .string(let descr)? = dictionary["descr"],
            case .bool(let fortran)? = dictionary["fortran_order"], case .tuple(let shape)? = dictionary["shape"]
        else {
            throw NumPyArrayError.invalidHeader(
                reason:
                    "expected exactly the keys 'descr' (a string), 'fortran_order' (a bool) and 'shape' (a tuple), got \(dictionary.keys.sorted())"
            )
        }
        guard !fortran else { throw NumPyArrayError.fortranOrder }
        guard descr.utf8.count == 3, let order = descr.first, "<=>".contains(order) else {
            throw NumPyArrayError.unsupportedDataType(descr: descr)
        }
        switch descr.dropFirst() {
        case "f2":
            dataType = .float16
            storedByteCount = 2
        case "f4":
            dataType = .float32
            storedByteCount = 4
        case "f8":
            dataType = .float32
            storedByteCount = 8
        default: throw NumPyArrayError.unsupportedDataType(descr: descr)
        }
        isBigEndian = order == ">"
        self.descr = descr
        do { _ = try TensorShape.size(of: shape, elementByteCount: storedByteCount) } catch {
            throw NumPyArrayError.invalidHeader(reason: "shape \(shape) \(TensorShape.reason(error))")
        }
        self.shape = shape
        dataOffset = prefixLength + headerLength
    }

    /// A header for a new file (version 1.0, or 2.0 when the dict needs more than 65535 bytes).
    /// - Throws: ``NumPyArrayError/noNumPyDataType(_:)`` for `TensorDataType/bfloat16`.
    public init(shape: [Int], dataType: TensorDataType) throws {
        guard dataType != .bfloat16 else { throw NumPyArrayError.noNumPyDataType(dataType) }
        self.shape = shape
        self.dataType = dataType
        descr = dataType == .float32 ? "<f4" : "<f2"
        storedByteCount = dataType.byteCount
        isBigEndian = false
        dataOffset = 0
        dataOffset = encoded().count
    }

    /// Checks that a file of `fileSize` bytes holds exactly the data this header announces.
    /// - Throws: ``NumPyArrayError/dataSizeMismatch(expected:actual:)``.
    public func checkDataSize(fileSize: Int) throws {
        let actual = fileSize - dataOffset
        guard actual == dataByteCount else {
            throw NumPyArrayError.dataSizeMismatch(expected: dataByteCount, actual: actual)
        }
    }

    /// The header bytes as NumPy writes them: magic, version, length, the dict
    /// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, spaces and `\n`, padded
    /// so the total is a multiple of 64 bytes.
    public func encoded() -> [UInt8] {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        let version1 = (10 + dict.count + 1 + 63) / 64 * 64 - 10 <= 65_535
        let prefixLength = version1 ? 10 : 12
        let total = (prefixLength + dict.count + 1 + 63) / 64 * 64
        dict.append(contentsOf: Array(repeating: 0x20, count: total - prefixLength - dict.count - 1))
        dict.append(0x0A)
        var result: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version1 ? 1 : 2, 0]
        if version1 {
            result += [UInt8(dict.count & 0xFF), UInt8(dict.count >> 8)]
        } else {
            result += (0..<4).map { UInt8((dict.count >> (8 * $0)) & 0xFF) }
        }
        return result + dict
    }
}

extension NumPyArrayHeader {
    /// Reads `count` elements starting at element `first` of the file's data section into
    /// `destination`, as ``dataType`` (`count · dataType.byteCount` bytes): a plain read for
    /// little-endian `float16`/`float32`; big-endian elements are byte-swapped and `float64`
    /// rounded to nearest `float32`, through a bounded buffer (1 MiB).
    /// - Throws: ``FileIOError`` on an I/O error or a short file.
    public func readElements(from file: FileReader, first: Int, count: Int, into destination: UnsafeMutableRawPointer)
        throws
    {
        let offset = dataOffset + first * storedByteCount
        guard needsConversion else {
            return try file.read(at: offset, count: count * storedByteCount, into: destination)
        }
        let piece = max(1, (1 << 20) / storedByteCount)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: piece * storedByteCount, alignment: 8)
        defer { buffer.deallocate() }
        var done = 0
        while done < count {
            let length = min(piece, count - done)
            try file.read(at: offset + done * storedByteCount, count: length * storedByteCount, into: buffer)
            decode(buffer, count: length, into: destination + done * dataType.byteCount)
            done += length
        }
    }

    /// Converts `count` elements in the file's format at `source` to ``dataType`` at `destination`.
    func decode(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutableRawPointer) {
        func load<T: FixedWidthInteger>(_: T.Type, _ index: Int) -> T {
            let raw = source.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self)
            return isBigEndian ? T(bigEndian: raw) : T(littleEndian: raw)
        }
        switch storedByteCount {
        case 2:
            let output = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { output[i] = load(UInt16.self, i) }
        case 4:
            let output = destination.assumingMemoryBound(to: UInt32.self)
            for i in 0..<count { output[i] = load(UInt32.self, i) }
        default:
            let output = destination.assumingMemoryBound(to: Float.self)
            for i in 0..<count { output[i] = Float(Double(bitPattern: load(UInt64.self, i))) }
        }
    }
}

/// Parses the Python literal dict of a `.npy` header: string keys, and values that are
/// strings, `True`/`False`, tuples of non-negative integers, or lists (kept as their text,
/// so that a structured dtype's `descr` can be named). Nothing else is accepted.
struct PythonDictParser {
    enum Value: Equatable {
        case string(String)
        case bool(Bool)
        case tuple([Int])
        /// A list literal as written (`[('x', '<f4'), ('y', '<i4')]`).
        case list(String)
    }

    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    private func fail(_ reason: String) -> NumPyArrayError {
        .invalidHeader(reason: "\(reason) at header byte \(position)")
    }

    private mutating func skipSpaces() {
        while position < bytes.count, bytes[position] == 0x20 || bytes[position] == 0x09 { position += 1 }
    }

    private mutating func expect(_ character: Character) throws {
        skipSpaces()
        guard position < bytes.count, bytes[position] == character.asciiValue! else {
            throw fail("expected '\(character)'")
        }
        position += 1
    }

    private mutating func peek(_ character: Character) -> Bool {
        skipSpaces()
        return position < bytes.count && bytes[position] == character.asciiValue!
    }

    /// The dict, followed only by spaces and newlines.
    mutating func parseHeader() throws -> [String: Value] {
        try expect("{")
        var result: [String: Value] = [:]
        while !peek("}") {
            let key = try parseString()
            try expect(":")
            let value = try parseValue()
            guard result.updateValue(value, forKey: key) == nil else { throw fail("duplicate key '\(key)'") }
            if peek(",") { position += 1 } else { break }
        }
        try expect("}")
        while position < bytes.count, [0x20, 0x0A, 0x0D, 0x09, 0x00].contains(bytes[position]) { position += 1 }
        guard position == bytes.count else { throw fail("unexpected data after the dict") }
        return result
    }

    private mutating func parseValue() throws -> Value {
        skipSpaces()
        guard position < bytes.count else { throw fail("unexpected end of header") }
        switch bytes[position] {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "T"):
            try literal("True")
            return .bool(true)
        case UInt8(ascii: "F"):
            try literal("False")
            return .bool(false)
        case UInt8(ascii: "("): return .tuple(try parseTuple())
        case UInt8(ascii: "["): return .list(try parseListText())
        default: throw fail("unexpected value")
        }
    }

    /// The text of a list literal, brackets of every kind balanced outside quoted strings.
    private mutating func parseListText() throws -> String {
        let start = position
        var depth = 0
        var quote: UInt8?
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            if let open = quote {
                if byte == open { quote = nil }
            } else if byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"") {
                quote = byte
            } else if [UInt8(ascii: "["), UInt8(ascii: "("), UInt8(ascii: "{")].contains(byte) {
                depth += 1
            } else if [UInt8(ascii: "]"), UInt8(ascii: ")"), UInt8(ascii: "}")].contains(byte) {
                depth -= 1
                if depth == 0 { return String(decoding: bytes[start..<position], as: UTF8.self) }
            }
        }
        throw fail("unterminated list")
    }

    private mutating func literal(_ word: String) throws {
        let utf8 = Array(word.utf8)
        guard position + utf8.count <= bytes.count, Array(bytes[position..<(position + utf8.count)]) == utf8 else {
            throw fail("expected \(word)")
        }
        position += utf8.count
    }

    private mutating func parseString() throws -> String {
        skipSpaces()
        guard position < bytes.count, bytes[position] == UInt8(ascii: "'") || bytes[position] == UInt8(ascii: "\"")
        else {
            throw fail("expected a quoted string")
        }
        let quote = bytes[position]
        position += 1
        let start = position
        while position < bytes.count, bytes[position] != quote {
            guard bytes[position] != UInt8(ascii: "\\"), bytes[position] >= 0x20 else {
                throw fail("escapes and control characters are not supported in strings")
            }
            position += 1
        }
        guard position < bytes.count else { throw fail("unterminated string") }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        position += 1
        return text
    }

    private mutating func parseTuple() throws -> [Int] {
        try expect("(")
        var values: [Int] = []
        while !peek(")") {
            let start = position
            var value = 0
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times.addingReportingOverflow(Int(bytes[position] - UInt8(ascii: "0")))
                guard !overflow1, !overflow2 else { throw fail("dimension too large") }
                value = sum
                position += 1
            }
            guard position > start else { throw fail("expected a non-negative integer") }
            if position < bytes.count, bytes[position] == UInt8(ascii: "L") { position += 1 } // Python 2 long
            values.append(value)
            if peek(",") { position += 1 } else { break }
        }
        try expect(")")
        return values
    }
}
