import BatchNormCore
import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// An error from the operating system while reading or writing a file.
public struct FileIOError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file (or directory) concerned.
    public var path: String
    /// What was being done: `"open"`, `"read"`, `"write"`, `"fsync"`, `"rename"`, ...
    public var operation: String
    /// `errno` after the failing call (0 for a short read at the end of the file).
    public var code: Int32
    /// A message for errors that are not an `errno` (such as a short read).
    public var detail: String?

    /// Creates an error; `detail` overrides the `strerror` text.
    public init(path: String, operation: String, code: Int32, detail: String? = nil) {
        self.path = path
        self.operation = operation
        self.code = code
        self.detail = detail
    }

    /// `<operation> <path>: <strerror or detail>`.
    public var description: String {
        let reason = detail ?? String(cString: strerror(code))
        return "\(operation) \(path): \(reason)"
    }
}

/// A read-only file read at explicit offsets with `pread`, so that large files can be read
/// a piece at a time in bounded memory.
///
/// ```swift
/// let file = try FileReader(path: "volume.npy")
/// let prefix = try file.read(at: 0, count: min(file.size, 4096))
/// ```
public final class FileReader {
    /// The path the file was opened with.
    public let path: String
    /// The file's size in bytes when it was opened.
    public let size: Int
    private let descriptor: Int32

    /// Opens `path` for reading.
    ///
    /// The file is opened non-blocking and checked to be a regular file before anything is
    /// read, so a named pipe, a terminal or a device is refused at once instead of blocking.
    /// - Throws: ``FileIOError`` when the file cannot be opened or is not a regular file
    ///   (naming what it is: a directory, a named pipe, ...).
    public init(path: String) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { throw FileIOError(path: path, operation: "open", code: errno) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            let code = errno
            close(descriptor)
            throw FileIOError(path: path, operation: "stat", code: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(descriptor)
            throw FileIOError(
                path: path, operation: "open", code: EINVAL,
                detail: "not a regular file (\(Self.kind(mode: info.st_mode)))")
        }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) & ~O_NONBLOCK)
        self.descriptor = descriptor
        size = Int(info.st_size)
    }

    deinit { close(descriptor) }

    /// What a file of mode `mode` is, in words: `"a directory"`, `"a named pipe"`, ...
    static func kind(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFIFO: "a named pipe"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
    }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    /// - Throws: ``FileIOError`` on an I/O error or when the file ends before `offset + count`.
    public func read(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws {
        var done = 0
        while done < count {
            let result = pread(descriptor, buffer + done, count - done, off_t(offset + done))
            if result < 0 {
                if errno == EINTR { continue }
                throw FileIOError(path: path, operation: "read", code: errno)
            }
            if result == 0 {
                throw FileIOError(
                    path: path, operation: "read", code: 0,
                    detail: "file ends at byte \(offset + done), expected \(offset + count) bytes")
            }
            done += result
        }
    }

    /// Reads exactly `count` bytes at `offset`.
    /// - Throws: ``FileIOError`` on an I/O error or a short file.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try read(at: offset, count: count, into: UnsafeMutableRawPointer(buffer.baseAddress!))
            initialized = count
        }
    }

    /// The whole file.
    /// - Throws: ``FileIOError``.
    public static func readAll(path: String) throws -> [UInt8] {
        let file = try FileReader(path: path)
        return try file.read(at: 0, count: file.size)
    }
}

/// Writes a file atomically: the bytes go to a temporary file in the destination's
/// directory, which is flushed with `fsync` and renamed over the destination by
/// ``commit()``; the directory is then `fsync`ed so the rename is durable. Readers see
/// either the old file or the complete new one, never a partial write.
///
/// If the writer is discarded without ``commit()`` (an error, a crash of the operation) the
/// temporary file is removed and the destination is untouched. A destination that exists
/// keeps its permission bits (the new file gets them before the rename); a new one is created
/// with mode 0644 less the umask. The temporary file is named `.<name>.tmp-<pid>-<random>`,
/// with `<name>` cut short when the whole would be longer than the file system allows: a program can remove the temporary files of its live writers
/// when it is interrupted (`bnkit` does on SIGINT and SIGTERM), and each new writer removes
/// the temporaries that processes no longer running (killed with SIGKILL, say) left in its
/// directory.
///
/// ```swift
/// let writer = try AtomicFileWriter(path: "state.safetensors")
/// try writer.write(bytes)
/// try writer.commit()
/// ```
public final class AtomicFileWriter {
    /// The destination path.
    public let path: String
    /// The temporary file's path (same directory as ``path``).
    public let temporaryPath: String
    private var descriptor: Int32
    private var committed = false

    /// Creates the temporary file next to `path` (mode 0644, exclusive creation).
    /// - Throws: ``FileIOError`` when the directory is not writable.
    public init(path: String) throws {
        self.path = path
        let (directory, file) = Self.split(path)
        var random = SystemRandomNumberGenerator()
        let suffix = String(random.next() as UInt64, radix: 36)
        let prefix = directory == "." && !path.hasPrefix("./") ? "" : directory + "/"
        temporaryPath =
            prefix
            + TemporaryFiles.name(
                for: file, processIdentifier: getpid(), suffix: suffix,
                maximumLength: TemporaryFiles.maximumNameLength(in: directory))
        TemporaryFiles.removeStale(in: directory, prefix: prefix)
        let (descriptor, code) = TemporaryFiles.create(temporaryPath)
        self.descriptor = descriptor
        guard descriptor >= 0 else {
            throw FileIOError(path: path, operation: "create a temporary file for", code: code)
        }
    }

    deinit {
        if !committed {
            if descriptor >= 0 { close(descriptor) }
            TemporaryFiles.remove(temporaryPath)
        }
    }

    /// Appends `count` bytes from `bytes`.
    /// - Throws: ``FileIOError`` (for example when the disk is full).
    public func write(_ bytes: UnsafeRawPointer, count: Int) throws {
        precondition(!committed, "AtomicFileWriter used after commit()")
        var done = 0
        while done < count {
            let result = systemWrite(descriptor, bytes + done, count - done)
            if result < 0 {
                if errno == EINTR { continue }
                throw FileIOError(path: temporaryPath, operation: "write", code: errno)
            }
            done += result
        }
    }

    /// Appends `bytes`.
    /// - Throws: ``FileIOError``.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { buffer in
            if let base = buffer.baseAddress { try write(base, count: buffer.count) }
        }
    }

    /// Gives the temporary file the permission bits of an existing ``path``, flushes it,
    /// renames it to ``path`` and flushes the directory.
    /// - Throws: ``FileIOError``; the destination is unchanged when `fsync` or `rename` fail.
    public func commit() throws {
        precondition(!committed, "AtomicFileWriter committed twice")
        var existing = stat()
        if stat(path, &existing) == 0, fchmod(descriptor, existing.st_mode & 0o777) != 0 {
            throw FileIOError(path: temporaryPath, operation: "chmod", code: errno)
        }
        guard fsync(descriptor) == 0 else { throw FileIOError(path: temporaryPath, operation: "fsync", code: errno) }
        guard close(descriptor) == 0 else {
            descriptor = -1
            throw FileIOError(path: temporaryPath, operation: "close", code: errno)
        }
        descriptor = -1
        let code = TemporaryFiles.rename(temporaryPath, to: path)
        guard code == 0 else { throw FileIOError(path: path, operation: "rename", code: code) }
        committed = true
        let directory = open(Self.split(path).directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else {
            throw FileIOError(path: Self.split(path).directory, operation: "open", code: errno)
        }
        defer { close(directory) }
        guard fsync(directory) == 0 else {
            throw FileIOError(path: Self.split(path).directory, operation: "fsync", code: errno)
        }
    }

    /// Writes `bytes` to `path` atomically (see ``AtomicFileWriter``).
    /// - Throws: ``FileIOError``.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let writer = try AtomicFileWriter(path: path)
        try writer.write(bytes)
        try writer.commit()
    }

    /// `(directory, file name)` of a path; the directory is `"."` for a bare name.
    static func split(_ path: String) -> (directory: String, file: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }
}

/// The C library's `write`, named apart from ``AtomicFileWriter/write(_:count:)``.
@inline(__always)
private func systemWrite(_ descriptor: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
        Glibc.write(descriptor, buffer, count)
    #elseif canImport(Musl)
        Musl.write(descriptor, buffer, count)
    #else
        Darwin.write(descriptor, buffer, count)
    #endif
}
