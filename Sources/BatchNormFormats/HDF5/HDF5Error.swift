import BatchNormCore

/// Errors thrown while reading an HDF5 file.
///
/// The reader throws one of these for any corrupted, truncated or unsupported input and
/// never traps, hangs or allocates more than the file's structures account for. Each case
/// names the unsupported feature or the corrupt structure and field.
public enum HDF5Error: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file has no HDF5 signature (`\x89HDF\r\n\x1a\n`) at byte 0 or a power-of-two
    /// offset from 512.
    case notHDF5
    /// The file uses a feature outside the subset that PuzzleLib's h5py files use
    /// (`libver="earliest"`): named in `feature`.
    case unsupported(feature: String)
    /// A structure of the file is malformed: `structure` names it (with its file offset),
    /// `reason` the field and what was expected.
    case corrupt(structure: String, reason: String)
    /// A dataset the caller asked for is absent.
    case missingDataset(path: String)
    /// The system zlib (`libz.so.1`) could not be opened; `searched` lists each candidate
    /// with its reason.
    case zlibUnavailable(searched: [String])

    /// One sentence naming the feature or the corrupt field.
    public var description: String {
        switch self {
        case .notHDF5:
            "not an HDF5 file (no signature \\x89HDF\\r\\n\\x1a\\n at byte 0, 512, 1024, ...)"
        case .unsupported(let feature):
            "HDF5 feature not supported: \(feature)"
        case .corrupt(let structure, let reason):
            "corrupt HDF5 \(structure): \(reason)"
        case .missingDataset(let path):
            "HDF5 file has no dataset '\(path)'"
        case .zlibUnavailable(let searched):
            "the deflate filter needs zlib, which could not be opened (tried \(searched.joined(separator: "; "))); "
                + "install zlib or set BNKIT_ZLIB to its path"
        }
    }
}
