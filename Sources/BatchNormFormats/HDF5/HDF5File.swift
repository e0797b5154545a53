import BatchNormCore

/// The element type of an HDF5 dataset, as far as this reader goes.
public enum HDF5DataType: Equatable, Sendable, CustomStringConvertible {
    /// A two's-complement (`signed`) or unsigned integer of 1, 2, 4 or 8 bytes.
    case integer(byteCount: Int, signed: Bool, bigEndian: Bool)
    /// An IEEE 754 binary16, binary32 or binary64 value.
    case float(byteCount: Int, bigEndian: Bool)
    /// A type the reader lists but does not read (strings, compounds, variable-length
    /// data, references, non-IEEE floats, ...), named in `name`.
    case unsupported(name: String)

    /// Bytes per element (0 for ``unsupported(name:)``).
    public var byteCount: Int {
        switch self {
        case .integer(let byteCount, _, _), .float(let byteCount, _): byteCount
        case .unsupported: 0
        }
    }

    /// NumPy's name (`float32`, `int64`, `uint8`), with `big-endian` when so, or the
    /// unsupported type's name.
    public var description: String {
        switch self {
        case .integer(let byteCount, let signed, let bigEndian):
            "\(signed ? "int" : "uint")\(8 * byteCount)\(bigEndian ? " big-endian" : "")"
        case .float(let byteCount, let bigEndian):
            "float\(8 * byteCount)\(bigEndian ? " big-endian" : "")"
        case .unsupported(let name):
            name
        }
    }
}

/// An HDF5 file of the kind h5py writes with `libver="earliest"` (PuzzleLib's model files),
/// read in pure Swift: its groups and datasets, and the values of the datasets asked for.
///
/// Supported: superblock versions 0 and 1; version-1 object headers with continuation
/// blocks; symbol-table groups (version-1 B-trees, symbol-table nodes, local heaps) and
/// groups whose few links are kept in their header (compact link storage); hard links (an
/// object may have several paths) and soft and external links (listed in ``links``, not
/// followed);
/// simple and scalar dataspaces; fixed-point and IEEE floating-point datatypes of either
/// byte order; compact, contiguous and chunked layouts (version-1 B-tree chunk index,
/// edge chunks); the deflate filter (through the system zlib) and the shuffle filter.
/// Anything else throws ``HDF5Error/unsupported(feature:)`` naming it when it is met:
/// newer superblocks and object headers and groups with dense link storage when the file is opened, a
/// dataset's unsupported datatype, layout, filter or external storage when its values are
/// read (so such a dataset can still be listed). Member names must be UTF-8.
///
/// Opening reads the file's structure only (superblock, object headers, group B-trees and
/// heaps), each piece checked against the file's size before it is read; values are read
/// when asked for. Corrupted input throws ``HDF5Error`` and never traps, hangs or allocates
/// more than the structures that the file holds account for: B-tree levels must decrease,
/// every node and continuation block is visited once, and inflated chunks must have exactly
/// the size their dataspace gives.
///
/// ```swift
/// let file = try HDF5File(contentsOfFile: "model.hdf")
/// for dataset in file.datasets { print(dataset.path, dataset.shape, dataset.dataType) }
/// ```
public final class HDF5File {
    /// A dataset of the file: its full path (`"params/0"`), shape and element type.
    public struct Dataset: Sendable {
        /// Path from the root group, components joined by `/`, without a leading slash.
        public let path: String
        /// The dataspace's extents; `[]` for a scalar.
        public let shape: [Int]
        /// The element type.
        public let dataType: HDF5DataType
        /// Where the values are stored, or why they cannot be read.
        let storage: Result<HDF5Storage, HDF5Error>
        /// The attribute messages, decoded when an attribute is asked for.
        let attributes: [HDF5Message]
    }

    /// Every dataset, sorted by path.
    public let datasets: [Dataset]
    /// Every group but the root, sorted by path.
    public let groups: [String]
    /// The soft and external links, which are listed but not followed: each link's path and
    /// its target (a path in the file, or `file:path` for an external link).
    public let links: [String: String]
    /// The position in ``datasets`` of each path.
    private let datasetIndex: [String: Int]

    let source: HDF5Source
    let superblock: HDF5Superblock
    var offsetSize: Int { superblock.offsetSize }
    var lengthSize: Int { superblock.lengthSize }

    /// The largest dataset this reader inflates (4 GiB): more is not a model's parameter.
    public static let maximumDatasetByteCount = 1 << 32

    /// Opens and reads the structure of the HDF5 file at `path`; values are read on demand.
    /// - Throws: ``FileIOError``, ``HDF5Error``.
    public convenience init(contentsOfFile path: String) throws {
        try self.init(source: HDF5Source(file: try FileReader(path: path)))
    }

    /// Reads the structure of an HDF5 file held in memory.
    /// - Throws: ``HDF5Error``.
    public convenience init(parsing bytes: [UInt8]) throws {
        try self.init(source: HDF5Source(bytes: bytes))
    }

    init(source: HDF5Source) throws {
        self.source = source
        let superblock = try HDF5Superblock(source: source)
        self.superblock = superblock
        var walker = HDF5GroupWalker(source: source, superblock: superblock)
        try walker.walk(group: superblock.rootObjectHeader, path: "", ancestors: [])
        datasets = walker.datasets.sorted { $0.path < $1.path }
        groups = walker.groups.sorted()
        links = walker.links
        datasetIndex = Dictionary(datasets.enumerated().map { ($1.path, $0) }) { first, _ in first }
    }

    /// The dataset at `path`, or `nil` (a soft link is no dataset), found in constant time.
    public func dataset(_ path: String) -> Dataset? {
        datasetIndex[path].map { datasets[$0] }
    }

    /// The values of a floating-point dataset as `Float` (binary16 exactly, binary64
    /// rounded to nearest), in C order.
    /// - Throws: ``HDF5Error`` for unreadable storage, an integer or unsupported type.
    public func floatValues(of dataset: Dataset) throws -> [Float] {
        guard case .float(let byteCount, let bigEndian) = dataset.dataType else {
            throw HDF5Error.unsupported(
                feature: "dataset '\(dataset.path)' of type \(dataset.dataType) read as floating point")
        }
        let bytes = try rawValues(of: dataset)
        return (0..<(bytes.count / byteCount)).map { index in
            let bits = Self.element(bytes, index, byteCount, bigEndian)
            switch byteCount {
            case 2: return Float(Float16(bitPattern: UInt16(truncatingIfNeeded: bits)))
            case 4: return Float(bitPattern: UInt32(truncatingIfNeeded: bits))
            default: return Float(Double(bitPattern: bits))
            }
        }
    }

    /// The values of an integer dataset as `Int64` (an unsigned 8-byte value above
    /// `Int64.max` throws), in C order.
    /// - Throws: ``HDF5Error`` for unreadable storage, a floating-point or unsupported type.
    public func integerValues(of dataset: Dataset) throws -> [Int64] {
        guard case .integer(let byteCount, let signed, let bigEndian) = dataset.dataType else {
            throw HDF5Error.unsupported(
                feature: "dataset '\(dataset.path)' of type \(dataset.dataType) read as integers")
        }
        let bytes = try rawValues(of: dataset)
        return try (0..<(bytes.count / byteCount)).map { index in
            let bits = Self.element(bytes, index, byteCount, bigEndian)
            let unusedBits = UInt64(64 - 8 * byteCount)
            if signed { return Int64(bitPattern: bits << unusedBits) >> Int64(unusedBits) }
            guard let value = Int64(exactly: bits) else {
                throw HDF5Error.unsupported(
                    feature: "dataset '\(dataset.path)' holds the uint64 value \(bits), beyond int64")
            }
            return value
        }
    }

    /// The value of the integer attribute `name` of `dataset` (a scalar or one element), or
    /// `nil` when the dataset has no attribute of that name.
    /// - Throws: ``HDF5Error`` for a malformed attribute, or one that is not a single integer.
    func integerAttribute(_ name: String, of dataset: Dataset) throws -> Int64? {
        for message in dataset.attributes {
            guard
                let found = try HDF5DatasetMessages.attribute(
                    message, wanted: name, path: dataset.path, superblock: superblock)
            else { continue }
            guard case .integer(let byteCount, let signed, let bigEndian) = found.dataType,
                found.data.count == byteCount
            else {
                throw HDF5Error.unsupported(
                    feature:
                        "attribute '\(name)' of '\(dataset.path)' of type \(found.dataType) and shape \(found.shape) (expected one integer)"
                )
            }
            let bits = Self.element(found.data, 0, byteCount, bigEndian)
            let unusedBits = UInt64(64 - 8 * byteCount)
            return signed ? Int64(bitPattern: bits << unusedBits) >> Int64(unusedBits) : Int64(truncatingIfNeeded: bits)
        }
        return nil
    }

    /// Element `index` of `byteCount` bytes as an unsigned integer.
    private static func element(_ bytes: [UInt8], _ index: Int, _ byteCount: Int, _ bigEndian: Bool) -> UInt64 {
        var value: UInt64 = 0
        for k in 0..<byteCount {
            let byte = UInt64(bytes[index * byteCount + (bigEndian ? byteCount - 1 - k : k)])
            value |= byte << (8 * UInt64(k))
        }
        return value
    }

    /// The dataset's bytes in C order, as stored (file byte order).
    func rawValues(of dataset: Dataset) throws -> [UInt8] {
        guard dataset.dataType.byteCount > 0 else {
            throw HDF5Error.unsupported(feature: "dataset '\(dataset.path)' has datatype \(dataset.dataType)")
        }
        let storage = try dataset.storage.get()
        let reader = HDF5DataReader(
            file: self, path: dataset.path, shape: dataset.shape,
            elementSize: dataset.dataType.byteCount)
        return try reader.read(storage)
    }

    /// The absolute file offset of `address` (relative to the base address).
    func fileOffset(_ address: Int, _ structure: @autoclosure () -> String) throws -> Int {
        try superblock.fileOffset(address, size: source.size, structure())
    }
}
