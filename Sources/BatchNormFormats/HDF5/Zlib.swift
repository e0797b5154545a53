import BatchNormCore
import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// zlib's `uncompress`, opened at run time from the system's `libz.so.1` (present on every
/// Linux; nothing is linked at build time). `BNKIT_ZLIB` names another library to try first.
///
/// Only decompression is needed: the HDF5 writer stores its datasets uncompressed.
enum Zlib {
    /// `int uncompress(Bytef *dest, uLongf *destLen, const Bytef *source, uLong sourceLen)`.
    private typealias Uncompress =
        @convention(c) (
            UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt>,
            UnsafePointer<UInt8>?, UInt
        ) -> Int32

    private static let loaded: Result<Uncompress, HDF5Error> = {
        var candidates = ["libz.so.1", "libz.so", "libz.1.dylib", "libz.dylib"]
        if let override = environmentValue("BNKIT_ZLIB") { candidates.insert(override, at: 0) }
        do {
            let library = try DynamicLibrary.open("libz", candidates: candidates, environmentVariable: "BNKIT_ZLIB")
            return .success(try library.function("uncompress", as: Uncompress.self))
        } catch DynamicLibraryError.notFound(_, _, let searched) {
            return .failure(.zlibUnavailable(searched: searched))
        } catch {
            return .failure(.zlibUnavailable(searched: ["\(error)"]))
        }
    }()

    /// Inflates a zlib stream (RFC 1950, as HDF5's deflate filter writes it) that must expand
    /// to exactly `expectedCount` bytes: the output buffer holds one byte more, never what the stream asks for.
    ///
    /// - Throws: ``HDF5Error/zlibUnavailable(searched:)``, or ``HDF5Error/corrupt(structure:reason:)``
    ///   for a stream that is invalid, truncated, or inflates to another size.
    static func inflate(_ compressed: [UInt8], expectedCount: Int, structure: @autoclosure () -> String) throws
        -> [UInt8]
    {
        let uncompress = try loaded.get()
        guard expectedCount > 0 else { return [] }
        // One spare byte: a stream that inflates to more than expected fills it (Z_BUF_ERROR or a longer length).
        var length = UInt(expectedCount + 1)
        var status: Int32 = 0
        let output = [UInt8](unsafeUninitializedCapacity: expectedCount + 1) { out, initialized in
            status = compressed.withUnsafeBufferPointer { input in
                uncompress(out.baseAddress, &length, input.baseAddress, UInt(input.count))
            }
            initialized = status == 0 ? min(Int(length), expectedCount + 1) : 0
        }
        switch status {
        case 0 where Int(length) == expectedCount:
            return output
        case 0:
            throw HDF5Error.corrupt(
                structure: structure(), reason: "deflate stream inflates to \(length) bytes, expected \(expectedCount)")
        case -5: // Z_BUF_ERROR: the output overflowed or the input ended early
            throw HDF5Error.corrupt(
                structure: structure(),
                reason: "deflate stream is truncated or inflates to more than \(expectedCount) bytes")
        case -3: // Z_DATA_ERROR
            throw HDF5Error.corrupt(structure: structure(), reason: "deflate stream is invalid (zlib Z_DATA_ERROR)")
        default:
            throw HDF5Error.corrupt(structure: structure(), reason: "zlib uncompress failed with status \(status)")
        }
    }
}

/// The value of environment variable `name`, or `nil`.
private func environmentValue(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    let string = String(cString: value)
    return string.isEmpty ? nil : string
}
