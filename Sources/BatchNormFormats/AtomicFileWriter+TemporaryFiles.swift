import BatchNormCore
import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension AtomicFileWriter {
    /// The temporary files of the writers of this process that are neither committed nor
    /// discarded, and the one place that creates, renames and removes them, under one lock:
    /// a program being interrupted calls ``removeAllForExit()`` and no writer can create or
    /// rename a temporary file after it.
    package enum TemporaryFiles {
        private static let lock = Lock()
        nonisolated(unsafe) private static var live = Set<String>()

        /// `.<file>.tmp-<pid>-<suffix>`, with `file` cut (at a character boundary, to one
        /// character at least) so that the name has at most `maximumLength` bytes: any name the
        /// file system accepts for the destination gets a temporary name it accepts too.
        static func name(for file: String, processIdentifier: pid_t, suffix: String, maximumLength: Int = 255)
            -> String
        {
            let tail = ".tmp-\(processIdentifier)-\(suffix)"
            let room = maximumLength - 1 - tail.utf8.count
            var kept = ""
            for character in file {
                guard kept.isEmpty || kept.utf8.count + character.utf8.count <= room else { break }
                kept.append(character)
            }
            return "." + kept + tail
        }

        /// The longest file name the file system of `directory` accepts (`NAME_MAX`, 255 when
        /// it does not say).
        static func maximumNameLength(in directory: String) -> Int {
            let length = pathconf(directory, Int32(_PC_NAME_MAX))
            return length > 0 ? length : 255
        }

        /// Creates `path` exclusively (mode 0644) and records it; the descriptor and `errno`.
        static func create(_ path: String) -> (descriptor: Int32, code: Int32) {
            lock.withLock {
                let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                guard descriptor >= 0 else { return (descriptor, errno) }
                live.insert(path)
                return (descriptor, 0)
            }
        }

        /// Renames the temporary file over `destination` and forgets it; 0 or `errno`.
        static func rename(_ path: String, to destination: String) -> Int32 {
            lock.withLock {
                #if canImport(Glibc)
                    let result = Glibc.rename(path, destination)
                #elseif canImport(Musl)
                    let result = Musl.rename(path, destination)
                #else
                    let result = Darwin.rename(path, destination)
                #endif
                guard result == 0 else { return errno }
                live.remove(path)
                return 0
            }
        }

        /// Removes the temporary file and forgets it.
        static func remove(_ path: String) {
            lock.withLock {
                unlink(path)
                live.remove(path)
            }
        }

        /// Removes every live temporary file and exits with `status` without unwinding
        /// (`_exit`), holding the lock so that no writer creates or commits a file in
        /// between: for a process interrupted by a signal. Call it from a normal thread (such
        /// as one waiting in `sigwait`), not from a signal handler.
        package static func removeAllAndExit(status: Int32) -> Never {
            lock.withLock {
                for path in live { unlink(path) }
                _exit(status)
            }
        }

        /// Removes the temporary files in `directory` whose name has this format and whose
        /// process is no longer running (`kill(pid, 0)` answers `ESRCH`). `prefix` is
        /// what joins the directory to a name (`""` or `"dir/"`). Files of live processes,
        /// and every other file, are left alone.
        static func removeStale(in directory: String, prefix: String) {
            guard let stream = opendir(directory) else { return }
            defer { closedir(stream) }
            let me = getpid()
            while let entry = readdir(stream) {
                let name = withUnsafePointer(to: entry.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) {
                        String(cString: $0)
                    }
                }
                guard let pid = processIdentifier(inTemporaryName: name), pid != me,
                    kill(pid, 0) != 0, errno == ESRCH
                else { continue }
                var info = stat()
                guard lstat(prefix + name, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                unlink(prefix + name)
            }
        }

        /// The pid in a name `.<file>.tmp-<pid>-<suffix>` (`suffix` in base 36), or `nil` for
        /// any other name.
        static func processIdentifier(inTemporaryName name: String) -> pid_t? {
            let bytes = Array(name.utf8), marker = Array(".tmp-".utf8)
            guard bytes.first == UInt8(ascii: "."), bytes.count > marker.count + 1,
                let start = (1...(bytes.count - marker.count)).reversed().first(where: {
                    $0 > 1 && Array(bytes[$0..<($0 + marker.count)]) == marker
                })
            else { return nil }
            let parts = bytes[(start + marker.count)...].split(
                separator: UInt8(ascii: "-"), omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 10, parts[0].first != UInt8(ascii: "0"),
                parts[0].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                !parts[1].isEmpty,
                parts[1].allSatisfy({
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                        || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                }),
                let pid = pid_t(String(decoding: parts[0], as: UTF8.self))
            else { return nil }
            return pid
        }
    }
}
