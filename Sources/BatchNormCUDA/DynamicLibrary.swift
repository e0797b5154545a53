#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A shared library opened with `dlopen`, kept open for the life of the process.
final class DynamicLibrary: @unchecked Sendable {
    /// What was loaded (the name or path that succeeded).
    let path: String
    /// The library's role, for messages (`"libcuda"`, `"libnvrtc"`).
    let library: String
    private let handle: UnsafeMutableRawPointer

    private init(path: String, library: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.library = library
        self.handle = handle
    }

    /// Opens the first candidate that loads.
    /// - Throws: ``CUDAError/libraryNotFound(library:environmentVariable:searched:)`` listing
    ///   every candidate with `dlopen`'s reason.
    /// `reject` may refuse a library that loaded (returning why); the search then goes on.
    static func open(_ library: String, candidates: [String], environmentVariable: String,
                     reject: (DynamicLibrary) -> String? = { _ in nil }) throws -> DynamicLibrary {
        var tried = [String]()
        for candidate in candidates {
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                let opened = DynamicLibrary(path: candidate, library: library, handle: handle)
                if let reason = reject(opened) {
                    tried.append("\(candidate) (\(reason))")
                    dlclose(handle)
                    continue
                }
                return opened
            }
            let reason = dlerror().map { String(cString: $0) } ?? "not loadable"
            tried.append("\(candidate) (\(reason))")
        }
        if candidates.isEmpty { tried.append("no candidate paths") }
        throw CUDAError.libraryNotFound(library: library, environmentVariable: environmentVariable, searched: tried)
    }

    /// The address of `symbol`, or `nil`.
    func address(of symbol: String) -> UnsafeMutableRawPointer? {
        dlsym(handle, symbol)
    }

    /// `symbol` as a C function of type `F`.
    /// - Throws: ``CUDAError/missingSymbol(library:symbol:)``.
    func function<F>(_ symbol: String, as type: F.Type = F.self) throws -> F {
        guard let address = address(of: symbol) else {
            throw CUDAError.missingSymbol(library: "\(library) (\(path))", symbol: symbol)
        }
        return unsafeBitCast(address, to: F.self)
    }

    /// `symbol` as a C function of type `F`, or `nil` when the library lacks it.
    func optionalFunction<F>(_ symbol: String, as type: F.Type = F.self) -> F? {
        address(of: symbol).map { unsafeBitCast($0, to: F.self) }
    }
}

/// A plain mutual-exclusion lock (a heap-allocated `pthread_mutex_t`).
final class Lock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` holding the lock.
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
