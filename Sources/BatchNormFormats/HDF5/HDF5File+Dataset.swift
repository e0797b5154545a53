import BatchNormCore

/// Where a dataset's values are: the layout message and the filter pipeline.
struct HDF5Storage {
    enum Layout {
        /// The raw data inside the layout message.
        case compact([UInt8])
        /// One block of `size` bytes at `address` (`nil`: never written).
        case contiguous(address: Int?, size: Int)
        /// Chunks of `chunkShape` elements indexed by the version-1 B-tree at `tree` (`nil`: none written).
        case chunked(tree: Int?, chunkShape: [Int])
    }

    /// A filter of the pipeline, in the order the writer applied it.
    enum Filter: Equatable {
        case deflate
        case shuffle
    }

    let layout: Layout
    /// The pipeline as written; each chunk's filter mask may skip optional filters.
    let filters: [Filter]
}

/// Decodes the messages of a dataset's object header.
enum HDF5DatasetMessages {
    static func dataset(path: String, messages: [HDF5Message], superblock: HDF5Superblock) throws -> HDF5File.Dataset {
        func message(_ type: Int, _ name: String) throws -> HDF5Message {
            guard let found = messages.first(where: { $0.type == type }) else {
                throw HDF5Error.corrupt(structure: "dataset '\(path)'", reason: "has no \(name) message")
            }
            guard found.flags & 0x02 == 0 else {
                throw HDF5Error.unsupported(feature: "shared \(name) message of dataset '\(path)'")
            }
            return found
        }
        let shape = try dataspace(try message(0x01, "dataspace"), path: path, superblock: superblock)
        let dataType = try datatype(try message(0x03, "datatype"), path: path)
        let storage: Result<HDF5Storage, HDF5Error>
        do {
            if messages.contains(where: { $0.type == 0x07 }) {
                throw HDF5Error.unsupported(
                    feature:
                        "external storage of dataset '\(path)' (its values are in other files, named by an external data files message)"
                )
            }
            let layout = try self.layout(
                try message(0x08, "data layout"), path: path, rank: shape.count, superblock: superblock)
            let pipeline = try messages.first { $0.type == 0x0B }.map { try filters($0, path: path) } ?? []
            if case .chunked = layout {
            } else if !pipeline.isEmpty {
                throw HDF5Error.corrupt(
                    structure: "dataset '\(path)'", reason: "has a filter pipeline but is not chunked")
            }
            storage = .success(HDF5Storage(layout: layout, filters: pipeline))
        } catch let error as HDF5Error {
            storage = .failure(error) // reported when the values are read
        }
        return HDF5File.Dataset(
            path: path, shape: shape, dataType: dataType, storage: storage,
            attributes: messages.filter { $0.type == 0x0C })
    }

    /// Attribute message, version 1 (reserved byte; name, datatype and dataspace each padded
    /// to 8 bytes), 2 (no padding) or 3 (a character set byte, no padding):
    ///
    ///     version | reserved or flags | name size (2) | datatype size (2) | dataspace size (2) |
    ///     [charset (1)] | name (NUL-terminated) | datatype | dataspace | data
    ///
    /// The attribute's name and, when it is `wanted`, its datatype, shape and raw data.
    static func attribute(_ message: HDF5Message, wanted: String, path: String, superblock: HDF5Superblock) throws
        -> (dataType: HDF5DataType, shape: [Int], data: [UInt8])?
    {
        let structure = "attribute message of '\(path)' at \(message.offset)"
        var cursor = HDF5Cursor(message.data, structure: structure)
        let version = try cursor.byte("version")
        guard (1...3).contains(version) else { throw cursor.corrupt("version", "is \(version), expected 1 to 3") }
        _ = try cursor.byte("flags")
        let nameSize = try cursor.uint16("name size")
        let datatypeSize = try cursor.uint16("datatype size")
        let dataspaceSize = try cursor.uint16("dataspace size")
        if version == 3 { _ = try cursor.byte("character set") }
        func padded(_ size: Int) -> Int { version == 1 ? (size + 7) / 8 * 8 : size }
        let nameBytes = try cursor.take(padded(nameSize), "name")
        guard String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self) == wanted else { return nil }
        let datatype = try cursor.take(padded(datatypeSize), "datatype")
        let dataspace = try cursor.take(padded(dataspaceSize), "dataspace")
        let dataType = try self.datatype(
            HDF5Message(type: 0x03, flags: 0, data: datatype, offset: message.offset), path: path)
        let shape = try self.dataspace(
            HDF5Message(type: 0x01, flags: 0, data: dataspace, offset: message.offset), path: path,
            superblock: superblock)
        let (count, overflow) = shape.reduce((1, false)) { partial, extent in
            let (product, overflow) = partial.0.multipliedReportingOverflow(by: extent)
            return (product, partial.1 || overflow)
        }
        let (byteCount, tooLarge) = count.multipliedReportingOverflow(by: dataType.byteCount)
        guard !overflow, !tooLarge, byteCount <= cursor.remaining else {
            throw cursor.corrupt("data", "holds \(cursor.remaining) bytes, fewer than its shape \(shape) needs")
        }
        return (dataType, shape, try cursor.take(byteCount, "data"))
    }

    /// Dataspace message, version 1 (rank, flags, 5 reserved bytes) or 2 (rank, flags, type),
    /// then `rank` extents of L bytes (and maximum extents when flag bit 0 is set).
    static func dataspace(_ message: HDF5Message, path: String, superblock: HDF5Superblock) throws -> [Int] {
        var cursor = HDF5Cursor(
            message.data, structure: "dataspace message of '\(path)' at \(message.offset)",
            offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
        let version = try cursor.byte("version")
        let rank = try cursor.byte("dimensionality")
        _ = try cursor.byte("flags")
        switch version {
        case 1:
            try cursor.skip(5, "reserved")
        case 2:
            let type = try cursor.byte("type")
            guard type != 2 else { throw HDF5Error.unsupported(feature: "null dataspace of dataset '\(path)'") }
            guard type <= 1 else { throw cursor.corrupt("type", "is \(type), expected 0 (scalar) or 1 (simple)") }
        default:
            throw cursor.corrupt("version", "is \(version), expected 1 or 2")
        }
        guard rank <= 32 else { throw cursor.corrupt("dimensionality", "is \(rank), expected at most 32") }
        return try (0..<rank).map { try cursor.length("extent \($0)") }
    }

    /// Datatype message: class and version (1), class bit field (3), size (4), properties.
    /// Fixed point (class 0): bit 0 byte order, bit 3 signed; bit offset (2), precision (2).
    /// Floating point (class 1): bits 0 and 6 byte order; bit offset (2), precision (2),
    /// exponent location, exponent size, mantissa location, mantissa size (1 each), bias (4).
    static func datatype(_ message: HDF5Message, path: String) throws -> HDF5DataType {
        var cursor = HDF5Cursor(message.data, structure: "datatype message of '\(path)' at \(message.offset)")
        let classAndVersion = try cursor.byte("class and version")
        let bits = try cursor.unsigned(3, "class bit field")
        let size = try cursor.uint32("size")
        let names = [
            "fixed-point", "floating-point", "time", "string", "bit field", "opaque", "compound", "reference",
            "enumerated", "variable-length", "array",
        ]
        let typeClass = classAndVersion & 0x0F
        switch typeClass {
        case 0:
            let offset = try cursor.uint16("bit offset"), precision = try cursor.uint16("bit precision")
            guard [1, 2, 4, 8].contains(size), offset == 0, precision == 8 * size else {
                return .unsupported(name: "fixed-point of \(size) bytes, bit offset \(offset), precision \(precision)")
            }
            return .integer(byteCount: size, signed: bits & 0x08 != 0, bigEndian: bits & 0x01 != 0)
        case 1:
            let offset = try cursor.uint16("bit offset"), precision = try cursor.uint16("bit precision")
            let fields = try (0..<4).map { _ in try cursor.byte("exponent and mantissa fields") }
            let bias = try cursor.uint32("exponent bias")
            // IEEE 754 binary16/32/64: (exponent location, size, mantissa location, size, bias).
            let ieee: [Int: ([Int], Int)] = [
                2: ([10, 5, 0, 10], 15), 4: ([23, 8, 0, 23], 127), 8: ([52, 11, 0, 52], 1023),
            ]
            guard bits & 0x40 == 0, let expected = ieee[size], offset == 0, precision == 8 * size,
                fields == expected.0, bias == expected.1, (bits >> 8) & 0xFF == UInt64(8 * size - 1)
            else {
                return .unsupported(name: "non-IEEE floating-point of \(size) bytes")
            }
            return .float(byteCount: size, bigEndian: bits & 0x01 != 0)
        case 2...10:
            return .unsupported(name: names[typeClass])
        default:
            throw cursor.corrupt("class", "is \(typeClass), expected 0 to 10")
        }
    }

    /// Data layout message, version 3: class 0 compact (size (2), data), 1 contiguous
    /// (address O, size L), 2 chunked (dimensionality r+1 (1), B-tree address O, r+1 chunk
    /// extents of 4 bytes, the last the element size).
    static func layout(_ message: HDF5Message, path: String, rank: Int, superblock: HDF5Superblock) throws
        -> HDF5Storage.Layout
    {
        var cursor = HDF5Cursor(
            message.data, structure: "data layout message of '\(path)' at \(message.offset)",
            offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
        let version = try cursor.byte("version")
        guard version == 3 else {
            throw HDF5Error.unsupported(
                feature:
                    "data layout message version \(version) of dataset '\(path)' (expected version 3, as HDF5 1.6 to 1.14 write with libver 'earliest')"
            )
        }
        let layoutClass = try cursor.byte("layout class")
        switch layoutClass {
        case 0:
            let size = try cursor.uint16("compact data size")
            return .compact(try cursor.take(size, "compact data"))
        case 1:
            let address = try cursor.address("contiguous data address")
            return .contiguous(address: address, size: try cursor.length("contiguous data size"))
        case 2:
            let dimensionality = try cursor.byte("chunk dimensionality")
            guard dimensionality == rank + 1 else {
                throw cursor.corrupt(
                    "chunk dimensionality", "is \(dimensionality), expected \(rank + 1) (the dataspace rank + 1)")
            }
            let tree = try cursor.address("chunk B-tree address")
            let extents = try (0..<dimensionality).map { try cursor.uint32("chunk extent \($0)") }
            guard extents.allSatisfy({ $0 > 0 }) else { throw cursor.corrupt("chunk extents", "\(extents) include 0") }
            return .chunked(tree: tree, chunkShape: Array(extents.dropLast()))
        case 3:
            throw HDF5Error.unsupported(feature: "virtual dataset layout of '\(path)'")
        default:
            throw cursor.corrupt("layout class", "is \(layoutClass), expected 0, 1 or 2")
        }
    }

    /// Filter pipeline message, version 1 (filter count, 6 reserved bytes; per filter: id (2),
    /// name length (2), flags (2), value count (2), name padded to 8, values (4 each), padded
    /// to an even count) or version 2 (no reserved bytes, names only for ids >= 256, no padding).
    static func filters(_ message: HDF5Message, path: String) throws -> [HDF5Storage.Filter] {
        var cursor = HDF5Cursor(message.data, structure: "filter pipeline message of '\(path)' at \(message.offset)")
        let version = try cursor.byte("version")
        guard version == 1 || version == 2 else { throw cursor.corrupt("version", "is \(version), expected 1 or 2") }
        let count = try cursor.byte("filter count")
        guard count <= 32 else { throw cursor.corrupt("filter count", "is \(count), expected at most 32") }
        if version == 1 { try cursor.skip(6, "reserved") }
        let names = [
            3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf", 307: "bzip2", 32001: "blosc",
        ]
        return try (0..<count).map { _ in
            let id = try cursor.uint16("filter id")
            let nameLength = version == 1 || id >= 256 ? try cursor.uint16("filter name length") : 0
            _ = try cursor.uint16("filter flags")
            let values = try cursor.uint16("client data count")
            try cursor.skip(version == 1 ? (nameLength + 7) / 8 * 8 : nameLength, "filter name")
            try cursor.skip(4 * values + (version == 1 && values % 2 == 1 ? 4 : 0), "client data")
            switch id {
            case 1: return .deflate
            case 2: return .shuffle
            default:
                throw HDF5Error.unsupported(
                    feature:
                        "filter \(names[id].map { "'\($0)' " } ?? "")(id \(id)) of dataset '\(path)' (expected deflate or shuffle)"
                )
            }
        }
    }
}
