import BatchNormCore

/// Bounds-checked random access to the bytes of an HDF5 file (a `FileReader` or a buffer):
/// every read is checked against the file's size before anything is allocated.
struct HDF5Source {
    /// The file's size in bytes.
    let size: Int
    private let reader: (Int, Int) throws -> [UInt8]

    init(file: FileReader) {
        size = file.size
        reader = { try file.read(at: $0, count: $1) }
    }

    init(bytes: [UInt8]) {
        size = bytes.count
        reader = { Array(bytes[$0..<($0 + $1)]) }
    }

    /// `count` bytes at `offset`, for `structure` (named in the error when they are not in the file).
    func read(at offset: Int, count: Int, structure: @autoclosure () -> String) throws -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw HDF5Error.corrupt(
                structure: structure(),
                reason: "\(count) bytes at offset \(offset) run past the end of the file (\(size) bytes)")
        }
        return try reader(offset, count)
    }
}

/// A little-endian reader over one structure's bytes, with the file's sizes of offsets and
/// lengths; reading past the end throws ``HDF5Error/corrupt(structure:reason:)`` naming the field.
struct HDF5Cursor {
    let bytes: [UInt8]
    /// What is being read, for errors (`"object header at 800"`).
    let structure: String
    /// Bytes per file address (2, 4 or 8).
    let offsetSize: Int
    /// Bytes per length field (2, 4 or 8).
    let lengthSize: Int
    private(set) var position = 0

    init(_ bytes: [UInt8], structure: String, offsetSize: Int = 8, lengthSize: Int = 8) {
        self.bytes = bytes
        self.structure = structure
        self.offsetSize = offsetSize
        self.lengthSize = lengthSize
    }

    var remaining: Int { bytes.count - position }

    /// Fails with `reason` about `field` of this structure.
    func corrupt(_ field: String, _ reason: String) -> HDF5Error {
        .corrupt(structure: structure, reason: "\(field) \(reason)")
    }

    /// An unsigned little-endian integer of `count` (<= 8) bytes.
    mutating func unsigned(_ count: Int, _ field: String) throws -> UInt64 {
        guard count <= remaining else {
            throw corrupt(field, "needs \(count) bytes at byte \(position), but only \(remaining) remain")
        }
        var value: UInt64 = 0
        for k in 0..<count { value |= UInt64(bytes[position + k]) << (8 * UInt64(k)) }
        position += count
        return value
    }

    mutating func byte(_ field: String) throws -> Int { Int(try unsigned(1, field)) }
    mutating func uint16(_ field: String) throws -> Int { Int(try unsigned(2, field)) }
    mutating func uint32(_ field: String) throws -> Int { Int(try unsigned(4, field)) }

    /// A value of `count` bytes as a non-negative `Int` (an 8-byte value above `Int.max` throws).
    mutating func size(_ count: Int, _ field: String) throws -> Int {
        let value = try unsigned(count, field)
        guard let result = Int(exactly: value) else { throw corrupt(field, "is \(value), beyond any file offset") }
        return result
    }

    /// A length field (the file's size of lengths).
    mutating func length(_ field: String) throws -> Int { try size(lengthSize, field) }

    /// A file address, or `nil` for the undefined address (all bits set).
    mutating func address(_ field: String) throws -> Int? {
        let value = try unsigned(offsetSize, field)
        let undefined: UInt64 = offsetSize == 8 ? .max : (1 << (8 * UInt64(offsetSize))) - 1
        if value == undefined { return nil }
        guard let result = Int(exactly: value) else { throw corrupt(field, "is \(value), beyond any file offset") }
        return result
    }

    /// `count` raw bytes.
    mutating func take(_ count: Int, _ field: String) throws -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw corrupt(field, "needs \(count) bytes at byte \(position), but only \(remaining) remain")
        }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    mutating func skip(_ count: Int, _ field: String) throws {
        guard count >= 0, count <= remaining else {
            throw corrupt(field, "needs \(count) bytes at byte \(position), but only \(remaining) remain")
        }
        position += count
    }

    /// Checks a 4-byte ASCII signature such as `TREE`.
    mutating func expectSignature(_ signature: String) throws {
        let found = try take(4, "signature")
        guard found == Array(signature.utf8) else {
            throw corrupt(
                "signature",
                "is \(found.map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : "\\x\(String($0, radix: 16))" }.joined()), expected \(signature)"
            )
        }
    }
}
