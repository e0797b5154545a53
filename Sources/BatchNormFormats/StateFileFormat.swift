import BatchNormCore

/// The file formats a module state is saved in and loaded from.
public enum StateFileFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    /// safetensors with PyTorch's state-dict keys (`<prefix>.weight`, `.bias`,
    /// `.running_mean`, `.running_var`, `.num_batches_tracked`).
    case safeTensors = "safetensors"
    /// PuzzleLib's HDF5 model file (`Module.save`): `links/<name>.scale` and
    /// `links/<name>.bias` index datasets of `params`; `attrs/<name>.mean` and `.var`.
    case puzzleLibHDF5 = "hdf5"

    /// The format's name: `safetensors` or `hdf5`.
    public var description: String { rawValue }

    /// The file extensions of PuzzleLib HDF5 files.
    public static let hdf5Extensions = ["hdf", "h5", "hdf5"]

    /// The format for a path's extension: ``puzzleLibHDF5`` for `.hdf`, `.h5` and `.hdf5`
    /// (any case), ``safeTensors`` for anything else (`.safetensors`, none, ...).
    public init(forPath path: String) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let pathExtension = name.contains(".") ? String(name.split(separator: ".").last!).lowercased() : ""
        self = Self.hdf5Extensions.contains(pathExtension) ? .puzzleLibHDF5 : .safeTensors
    }

    /// The format of a file from its first bytes, whatever its name.
    ///
    /// HDF5 is recognized by its signature (at byte 0, or 512, 1024, ... after a user block),
    /// safetensors by an 8-byte little-endian header length of at most 100 MB followed by `{`
    /// (a truncated safetensors file is still recognized, and its parser says how it is cut).
    ///
    /// - Parameters:
    ///   - size: The file's size in bytes.
    ///   - read: Returns `count` bytes at `offset` (only offsets and counts within `size` are asked).
    /// - Throws: ``StateFileError/Problem/notAStateFile(contents:)`` saying what the bytes are
    ///   instead (a NumPy array, JSON text, a ZIP archive such as a PyTorch `.pt` file, a
    ///   Python pickle, an empty file, or unknown bytes), or the `read` function's errors.
    public static func detect(size: Int, read: (_ offset: Int, _ count: Int) throws -> [UInt8]) throws
        -> StateFileFormat
    {
        let head = try read(0, min(size, 16))
        var offset = 0
        while size >= 8, offset <= size - 8 {
            if try read(offset, 8) == HDF5Superblock.signature { return .puzzleLibHDF5 }
            offset = offset == 0 ? 512 : offset * 2
        }
        if head.count >= 9 {
            var length: UInt64 = 0
            for k in 0..<8 { length |= UInt64(head[k]) << (8 * UInt64(k)) }
            if length <= UInt64(SafeTensorsFile.maximumHeaderLength), head[8] == UInt8(ascii: "{") {
                return .safeTensors
            }
        }
        throw StateFileError(.notAStateFile(contents: describe(head, size: size)))
    }

    /// What a non-state file is, from its first bytes.
    static func describe(_ head: [UInt8], size: Int) -> String {
        if size == 0 { return "nothing (an empty file)" }
        if head.starts(with: [0x93] + Array("NUMPY".utf8)) { return "a NumPy array (.npy)" }
        if head.starts(with: Array("PK".utf8) + [3, 4]) {
            return "a ZIP archive (a PyTorch .pt/.pth checkpoint is one: convert it with safetensors.torch.save_file)"
        }
        if head.count >= 2, head[0] == 0x80, (2...5).contains(head[1]) { return "a Python pickle" }
        if head.starts(with: [0x1F, 0x8B]) { return "gzip-compressed data" }
        if let first = head.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }),
            first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
        {
            return "JSON text"
        }
        let hex = head.prefix(8).map {
            String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16)
        }
        return "unknown bytes (\(size) bytes starting \(hex.joined(separator: " ")))"
    }
}
