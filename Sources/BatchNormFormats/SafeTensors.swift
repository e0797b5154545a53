import BatchNormCore

/// The element types of the safetensors format, with the format's own names.
public enum SafeTensorsDataType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// `BOOL`, one byte.
    case bool = "BOOL"
    /// `U8`.
    case uint8 = "U8"
    /// `I8`.
    case int8 = "I8"
    /// `F8_E5M2`, one byte.
    case float8E5M2 = "F8_E5M2"
    /// `F8_E4M3`, one byte.
    case float8E4M3 = "F8_E4M3"
    /// `I16`.
    case int16 = "I16"
    /// `U16`.
    case uint16 = "U16"
    /// `F16`, IEEE binary16.
    case float16 = "F16"
    /// `BF16`, bfloat16 (the upper half of a binary32).
    case bfloat16 = "BF16"
    /// `I32`.
    case int32 = "I32"
    /// `U32`.
    case uint32 = "U32"
    /// `F32`, IEEE binary32.
    case float32 = "F32"
    /// `F64`, IEEE binary64.
    case float64 = "F64"
    /// `I64`, PyTorch's `torch.long`.
    case int64 = "I64"
    /// `U64`.
    case uint64 = "U64"

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .bool, .uint8, .int8, .float8E5M2, .float8E4M3: 1
        case .int16, .uint16, .float16, .bfloat16: 2
        case .int32, .uint32, .float32: 4
        case .float64, .int64, .uint64: 8
        }
    }

    /// The format's name (`"F32"`, `"I64"`, ...).
    public var description: String { rawValue }
}

/// Errors thrown while parsing a safetensors file: its syntax, not its meaning.
///
/// Every case names the key (where there is one), the expected and the actual value; the
/// parser throws one of these for any malformed input and never traps. A well-formed file
/// that does not hold the module state asked for throws ``StateFileError`` instead.
public enum SafeTensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The data is shorter than the 8-byte header length.
    case truncatedHeaderLength(byteCount: Int)
    /// The declared header length exceeds the limit (100 MB, as in the reference implementation).
    case headerTooLarge(length: UInt64, limit: Int)
    /// The declared header runs past the end of the data.
    case headerPastEnd(headerLength: Int, byteCount: Int)
    /// The header is not a valid JSON object of the expected form.
    case invalidHeader(reason: String)
    /// A tensor entry of the header is malformed (`reason` says how).
    case invalidEntry(key: String, reason: String)
    /// A tensor's `dtype` is not one of the format's names.
    case unknownDataType(key: String, dataType: String)
    /// A tensor's byte range does not match its shape and dtype.
    case dataSizeMismatch(key: String, expected: Int, actual: Int)
    /// A tensor's `data_offsets` reach past the data buffer.
    case offsetsOutOfBounds(key: String, begin: Int, end: Int, bufferSize: Int)
    /// A tensor does not start where the previous one ends: the tensors overlap or leave a gap.
    case overlappingOrGap(key: String, expectedBegin: Int, actualBegin: Int)
    /// The tensors do not cover the whole data buffer.
    case bufferSizeMismatch(expected: Int, actual: Int)

    /// One sentence naming the key, the expected and the actual value.
    public var description: String {
        switch self {
        case .truncatedHeaderLength(let byteCount):
            "safetensors data is truncated: \(byteCount) bytes, expected at least 8 for the header length"
        case .headerTooLarge(let length, let limit):
            "safetensors header length \(length) exceeds the limit of \(limit) bytes"
        case .headerPastEnd(let headerLength, let byteCount):
            "safetensors header of \(headerLength) bytes runs past the end of the data (\(byteCount) bytes): file truncated or corrupted"
        case .invalidHeader(let reason):
            "invalid safetensors header: \(reason)"
        case .invalidEntry(let key, let reason):
            "invalid safetensors entry '\(key)': \(reason)"
        case .unknownDataType(let key, let dataType):
            "safetensors entry '\(key)' has unknown dtype '\(dataType)' (expected one of \(SafeTensorsDataType.allCases.map(\.rawValue).joined(separator: ", ")))"
        case .dataSizeMismatch(let key, let expected, let actual):
            "safetensors entry '\(key)' spans \(actual) bytes, expected \(expected) for its shape and dtype"
        case .offsetsOutOfBounds(let key, let begin, let end, let bufferSize):
            "safetensors entry '\(key)' has data_offsets [\(begin), \(end)] past the data buffer of \(bufferSize) bytes: file truncated or corrupted"
        case .overlappingOrGap(let key, let expectedBegin, let actualBegin):
            "safetensors entry '\(key)' begins at byte \(actualBegin), expected \(expectedBegin): tensors overlap or leave a gap"
        case .bufferSizeMismatch(let expected, let actual):
            "safetensors data buffer has \(actual) bytes, the tensors cover \(expected)"
        }
    }
}

/// A safetensors file in memory: named tensors of raw little-endian bytes and optional
/// string metadata, parsed and serialized in pure Swift.
///
/// The format (<https://github.com/huggingface/safetensors>): an 8-byte little-endian
/// header length `N`, `N` bytes of JSON header
/// `{"name": {"dtype": "F32", "shape": [3], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
/// then the data buffer; offsets are relative to the buffer.
///
/// Parsing is strict and safe on hostile input: the header length is bounded (100 MB), the
/// JSON is parsed by a small strict parser with a depth limit (UTF-8 checked, duplicate keys
/// rejected), every tensor's byte range must match its shape and dtype, and the tensors must
/// tile the data buffer exactly (sorted by offset, no overlap, no gap, nothing left over),
/// as the reference implementation requires. Anything else throws a ``SafeTensorsError``.
///
/// ```swift
/// var file = SafeTensorsFile()
/// file.tensors["weight"] = SafeTensorsFile.Entry(float32: [1, 2, 3], shape: [3])
/// try file.write(toFile: "state.safetensors")          // atomic
/// let again = try SafeTensorsFile(contentsOfFile: "state.safetensors")
/// ```
public struct SafeTensorsFile: Equatable, Sendable {
    /// The largest accepted header, as in the reference implementation.
    public static let maximumHeaderLength = 100_000_000

    /// One tensor: its dtype, shape and raw little-endian bytes (C order).
    public struct Entry: Equatable, Sendable {
        /// The element type.
        public let dataType: SafeTensorsDataType
        /// The shape; `[]` is a scalar holding one element.
        public let shape: [Int]
        /// `shape.reduce(1, *) · dataType.byteCount` bytes.
        public let bytes: [UInt8]

        /// Creates an entry from raw bytes.
        /// - Throws: ``SafeTensorsError/dataSizeMismatch(key:expected:actual:)`` (with an empty
        ///   key) when `bytes` does not hold the shape's elements, or
        ///   ``SafeTensorsError/invalidEntry(key:reason:)`` for a negative or overflowing shape.
        public init(dataType: SafeTensorsDataType, shape: [Int], bytes: [UInt8]) throws {
            let expected = try Self.byteCount(shape: shape, dataType: dataType, key: "")
            guard bytes.count == expected else {
                throw SafeTensorsError.dataSizeMismatch(key: "", expected: expected, actual: bytes.count)
            }
            self.dataType = dataType
            self.shape = shape
            self.bytes = bytes
        }

        init(unchecked dataType: SafeTensorsDataType, shape: [Int], bytes: [UInt8]) {
            self.dataType = dataType
            self.shape = shape
            self.bytes = bytes
        }

        /// An `F32` tensor. `values.count` must equal the product of `shape` (a mismatch traps:
        /// it is a programming error, not bad input).
        public init(float32 values: [Float], shape: [Int]) {
            precondition(values.count == shape.reduce(1, *), "Entry(float32:shape:): value count does not match shape")
            var bytes = [UInt8]()
            bytes.reserveCapacity(values.count * 4)
            for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
            self.init(unchecked: .float32, shape: shape, bytes: bytes)
        }

        /// An `I64` tensor. `values.count` must equal the product of `shape` (`[]` for a scalar).
        public init(int64 values: [Int64], shape: [Int]) {
            precondition(values.count == shape.reduce(1, *), "Entry(int64:shape:): value count does not match shape")
            var bytes = [UInt8]()
            bytes.reserveCapacity(values.count * 8)
            for value in values { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
            self.init(unchecked: .int64, shape: shape, bytes: bytes)
        }

        /// Number of elements, the product of the shape (1 for a scalar).
        public var elementCount: Int { bytes.count / dataType.byteCount }

        /// The elements as `Float`, converting `F16`, `BF16` and `F64` (rounded to nearest).
        /// - Returns: `nil` for other dtypes.
        public func floatValues() -> [Float]? {
            switch dataType {
            case .float32: return (0..<elementCount).map { Float(bitPattern: load(UInt32.self, at: $0)) }
            case .float16: return (0..<elementCount).map { Float(Float16(bitPattern: load(UInt16.self, at: $0))) }
            case .bfloat16: return (0..<elementCount).map { Float(bitPattern: UInt32(load(UInt16.self, at: $0)) << 16) }
            case .float64: return (0..<elementCount).map { Float(Double(bitPattern: load(UInt64.self, at: $0))) }
            default: return nil
            }
        }

        /// The elements as `Int64` for the integer dtypes (`I8` ... `I64`, `U8` ... `U32`, `BOOL`).
        /// - Returns: `nil` for floating-point dtypes and for `U64` values above `Int64.max`.
        public func integerValues() -> [Int64]? {
            var result = [Int64]()
            for i in 0..<elementCount {
                switch dataType {
                case .bool, .uint8: result.append(Int64(bytes[i]))
                case .int8: result.append(Int64(Int8(bitPattern: bytes[i])))
                case .int16: result.append(Int64(Int16(bitPattern: load(UInt16.self, at: i))))
                case .uint16: result.append(Int64(load(UInt16.self, at: i)))
                case .int32: result.append(Int64(Int32(bitPattern: load(UInt32.self, at: i))))
                case .uint32: result.append(Int64(load(UInt32.self, at: i)))
                case .int64: result.append(Int64(bitPattern: load(UInt64.self, at: i)))
                case .uint64:
                    guard let value = Int64(exactly: load(UInt64.self, at: i)) else { return nil }
                    result.append(value)
                default: return nil
                }
            }
            return result
        }

        /// Element `index` as a little-endian unsigned integer of `T`'s width.
        private func load<T: FixedWidthInteger>(_: T.Type, at index: Int) -> T {
            bytes.withUnsafeBytes {
                T(littleEndian: $0.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self))
            }
        }

        /// Bytes of a tensor of `shape` and `dataType`, by the shape rule of ``TensorShape``
        /// (no negative extent; the non-zero extents' product in bytes fits in `Int`).
        static func byteCount(shape: [Int], dataType: SafeTensorsDataType, key: String) throws -> Int {
            do { return try TensorShape.size(of: shape, elementByteCount: dataType.byteCount).bytes } catch {
                throw SafeTensorsError.invalidEntry(key: key, reason: "shape \(shape) \(TensorShape.reason(error))")
            }
        }
    }

    /// The tensors by name.
    public var tensors: [String: Entry]
    /// The header's `__metadata__` strings (empty when absent).
    public var metadata: [String: String]

    /// Creates a file in memory.
    public init(tensors: [String: Entry] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Parses a complete safetensors file from memory.
    ///
    /// - Parameter bytes: The whole file.
    /// - Throws: A ``SafeTensorsError`` for truncated, corrupted or malformed data; never traps.
    public init(parsing bytes: [UInt8]) throws {
        let layout = try Self.parseHeader(fileSize: bytes.count) { offset, count in
            Array(bytes[offset..<(offset + count)])
        }
        try self.init(layout) { offset, count in Array(bytes[offset..<(offset + count)]) }
    }

    /// Reads and parses a safetensors file: the header first, validated against the file's
    /// size, then the data it accounts for (so a file that is not safetensors, or a header
    /// whose tensors do not cover the file exactly, is rejected before any data is read).
    /// - Throws: ``FileIOError`` when the file cannot be read, ``SafeTensorsError`` when it
    ///   is malformed.
    public init(contentsOfFile path: String) throws {
        let reader = try FileReader(path: path)
        let layout = try Self.parseHeader(fileSize: reader.size) { try reader.read(at: $0, count: $1) }
        try self.init(layout) { try reader.read(at: $0, count: $1) }
    }

    /// The validated header: metadata, and each tensor's place in the data buffer.
    private struct HeaderLayout {
        var metadata: [String: String]
        var entries: [(key: String, dataType: SafeTensorsDataType, shape: [Int], begin: Int, end: Int)]
        /// File offset of the data buffer.
        var bufferStart: Int
    }

    /// Reads the data of a validated header (`read(offset, count)` returns file bytes).
    private init(_ layout: HeaderLayout, read: (Int, Int) throws -> [UInt8]) throws {
        let buffer = try read(layout.bufferStart, layout.entries.last?.end ?? 0)
        var tensors: [String: Entry] = [:]
        for item in layout.entries {
            tensors[item.key] = Entry(
                unchecked: item.dataType, shape: item.shape, bytes: Array(buffer[item.begin..<item.end]))
        }
        self.init(tensors: tensors, metadata: layout.metadata)
    }

    /// Parses and validates the header of a file of `fileSize` bytes, reading only the header
    /// length and the header: the tensors must tile the rest of the file exactly.
    private static func parseHeader(fileSize: Int, read: (Int, Int) throws -> [UInt8]) throws -> HeaderLayout {
        guard fileSize >= 8 else { throw SafeTensorsError.truncatedHeaderLength(byteCount: fileSize) }
        let lengthBytes = try read(0, 8)
        var declared: UInt64 = 0
        for k in 0..<8 { declared |= UInt64(lengthBytes[k]) << (8 * UInt64(k)) }
        guard declared <= UInt64(Self.maximumHeaderLength) else {
            throw SafeTensorsError.headerTooLarge(length: declared, limit: Self.maximumHeaderLength)
        }
        let headerLength = Int(declared)
        guard headerLength <= fileSize - 8 else {
            throw SafeTensorsError.headerPastEnd(headerLength: headerLength, byteCount: fileSize)
        }
        let header = try read(8, headerLength)
        guard header.first == UInt8(ascii: "{") else {
            throw SafeTensorsError.invalidHeader(reason: "expected a JSON object starting with '{'")
        }
        let json: JSONValue
        do {
            json = try StrictJSONParser.parse(header, maximumSize: Self.maximumHeaderLength)
        } catch let error as StrictJSONError {
            throw SafeTensorsError.invalidHeader(reason: error.description)
        }
        guard case .object(let members) = json else {
            throw SafeTensorsError.invalidHeader(reason: "expected a JSON object, got \(json.kindName)")
        }
        let bufferStart = 8 + headerLength
        let bufferSize = fileSize - bufferStart
        var metadata: [String: String] = [:]
        var layout: [(key: String, dataType: SafeTensorsDataType, shape: [Int], begin: Int, end: Int)] = []
        for (key, value) in members {
            if key == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw SafeTensorsError.invalidHeader(
                        reason: "__metadata__ must be an object, got \(value.kindName)")
                }
                for (name, text) in pairs {
                    guard case .string(let string) = text else {
                        throw SafeTensorsError.invalidHeader(
                            reason: "__metadata__ value '\(name)' must be a string, got \(text.kindName)")
                    }
                    metadata[name] = string
                }
                continue
            }
            layout.append(try Self.parseEntry(key: key, value: value, bufferSize: bufferSize))
        }
        // The tensors must tile the buffer: sorted by offset, each starting where the previous ended.
        layout.sort { ($0.begin, $0.end, $0.key) < ($1.begin, $1.end, $1.key) }
        var expectedBegin = 0
        for item in layout {
            guard item.begin == expectedBegin else {
                throw SafeTensorsError.overlappingOrGap(
                    key: item.key, expectedBegin: expectedBegin, actualBegin: item.begin)
            }
            expectedBegin = item.end
        }
        guard expectedBegin == bufferSize else {
            throw SafeTensorsError.bufferSizeMismatch(expected: expectedBegin, actual: bufferSize)
        }
        return HeaderLayout(metadata: metadata, entries: layout, bufferStart: bufferStart)
    }

    /// Validates one `{"dtype", "shape", "data_offsets"}` entry.
    private static func parseEntry(key: String, value: JSONValue, bufferSize: Int) throws
        -> (key: String, dataType: SafeTensorsDataType, shape: [Int], begin: Int, end: Int)
    {
        guard case .object(let fields) = value else {
            throw SafeTensorsError.invalidEntry(key: key, reason: "expected an object, got \(value.kindName)")
        }
        var dtypeName: String?, shape: [Int]?, offsets: [Int]?
        for (field, fieldValue) in fields {
            switch field {
            case "dtype":
                guard case .string(let name) = fieldValue else {
                    throw SafeTensorsError.invalidEntry(
                        key: key, reason: "dtype must be a string, got \(fieldValue.kindName)")
                }
                dtypeName = name
            case "shape":
                shape = try nonNegativeIntegers(fieldValue, key: key, field: "shape")
            case "data_offsets":
                offsets = try nonNegativeIntegers(fieldValue, key: key, field: "data_offsets")
            default:
                throw SafeTensorsError.invalidEntry(key: key, reason: "unexpected field '\(field)'")
            }
        }
        guard let dtypeName else { throw SafeTensorsError.invalidEntry(key: key, reason: "missing field 'dtype'") }
        guard let shape else { throw SafeTensorsError.invalidEntry(key: key, reason: "missing field 'shape'") }
        guard let offsets else { throw SafeTensorsError.invalidEntry(key: key, reason: "missing field 'data_offsets'") }
        guard let dataType = SafeTensorsDataType(rawValue: dtypeName) else {
            throw SafeTensorsError.unknownDataType(key: key, dataType: dtypeName)
        }
        guard offsets.count == 2 else {
            throw SafeTensorsError.invalidEntry(
                key: key, reason: "data_offsets must hold 2 integers, got \(offsets.count)")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw SafeTensorsError.invalidEntry(key: key, reason: "data_offsets [\(begin), \(end)] are reversed")
        }
        guard end <= bufferSize else {
            throw SafeTensorsError.offsetsOutOfBounds(key: key, begin: begin, end: end, bufferSize: bufferSize)
        }
        let expected = try Entry.byteCount(shape: shape, dataType: dataType, key: key)
        guard end - begin == expected else {
            throw SafeTensorsError.dataSizeMismatch(key: key, expected: expected, actual: end - begin)
        }
        return (key, dataType, shape, begin, end)
    }

    private static func nonNegativeIntegers(_ value: JSONValue, key: String, field: String) throws -> [Int] {
        guard case .array(let elements) = value else {
            throw SafeTensorsError.invalidEntry(key: key, reason: "\(field) must be an array, got \(value.kindName)")
        }
        return try elements.map {
            guard case .integer(let integer) = $0, integer >= 0 else {
                throw SafeTensorsError.invalidEntry(key: key, reason: "\(field) must hold non-negative integers")
            }
            return integer
        }
    }

    /// The file's bytes.
    ///
    /// Deterministic: the header lists `__metadata__` first (when not empty), then the tensors
    /// sorted by name, with no whitespace, padded with spaces to a multiple of 8 bytes; the
    /// data are ordered by decreasing element size, then name (as the reference writer does,
    /// so every tensor is aligned to its element size).
    public func serialized() -> [UInt8] {
        let order = tensors.keys.sorted {
            let a = tensors[$0]!.dataType.byteCount, b = tensors[$1]!.dataType.byteCount
            return a != b ? a > b : $0 < $1
        }
        var offsets: [String: (Int, Int)] = [:]
        var position = 0
        for key in order {
            offsets[key] = (position, position + tensors[key]!.bytes.count)
            position += tensors[key]!.bytes.count
        }
        var header = "{"
        var first = true
        if !metadata.isEmpty {
            header += "\"__metadata__\":{"
            header += metadata.keys.sorted().map { "\(Self.quoted($0)):\(Self.quoted(metadata[$0]!))" }.joined(
                separator: ",")
            header += "}"
            first = false
        }
        for key in tensors.keys.sorted() {
            let entry = tensors[key]!, (begin, end) = offsets[key]!
            header += (first ? "" : ",") + Self.quoted(key)
            header +=
                ":{\"dtype\":\"\(entry.dataType.rawValue)\",\"shape\":[\(entry.shape.map(String.init).joined(separator: ","))],"
            header += "\"data_offsets\":[\(begin),\(end)]}"
            first = false
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var result = [UInt8]()
        result.reserveCapacity(8 + headerBytes.count + position)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { result.append(contentsOf: $0) }
        result.append(contentsOf: headerBytes)
        for key in order { result.append(contentsOf: tensors[key]!.bytes) }
        return result
    }

    /// Writes ``serialized()`` to `path` atomically (temporary file in the same directory,
    /// `fsync`, `rename`, directory `fsync`): a reader never sees a partial file.
    /// - Throws: ``FileIOError``; the destination is unchanged on failure.
    public func write(toFile path: String) throws {
        try AtomicFileWriter.write(serialized(), to: path)
    }

    /// A JSON string literal.
    static func quoted(_ string: String) -> String {
        var result = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
