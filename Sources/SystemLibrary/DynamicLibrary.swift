#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A shared library opened with `dlopen`, kept open for the life of the process.
package final class DynamicLibrary: @unchecked Sendable {
    /// What was loaded (the name or path that succeeded).
    package let path: String
    /// The library's role, for messages (`"libcuda"`, `"libmpi"`, `"libz"`).
    package let library: String
    private let handle: UnsafeMutableRawPointer

    private init(path: String, library: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.library = library
        self.handle = handle
    }

    /// Opens the first candidate that loads.
    /// - Throws: ``DynamicLibraryError/notFound(library:environmentVariable:searched:)`` listing
    ///   every candidate with `dlopen`'s reason.
    /// `reject` may refuse a library that loaded (returning why); the search then goes on.
    /// `global` loads with `RTLD_GLOBAL` (for libraries whose own plug-ins look up its symbols).
    package static func open(
        _ library: String, candidates: [String], environmentVariable: String,
        global: Bool = false,
        reject: (DynamicLibrary) -> String? = { _ in nil }
    ) throws -> DynamicLibrary {
        var tried = [String]()
        for candidate in candidates {
            if let handle = dlopen(candidate, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL)) {
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
        throw DynamicLibraryError.notFound(library: library, environmentVariable: environmentVariable, searched: tried)
    }

    /// The address of `symbol`, or `nil`.
    package func address(of symbol: String) -> UnsafeMutableRawPointer? {
        dlsym(handle, symbol)
    }

    /// `symbol` as a C function of type `F`.
    /// - Throws: ``DynamicLibraryError/missingSymbol(library:symbol:)``.
    package func function<F>(_ symbol: String, as type: F.Type = F.self) throws -> F {
        guard let address = address(of: symbol) else {
            throw DynamicLibraryError.missingSymbol(library: "\(library) (\(path))", symbol: symbol)
        }
        return unsafeBitCast(address, to: F.self)
    }

    /// `symbol` as a C function of type `F`, or `nil` when the library lacks it.
    package func optionalFunction<F>(_ symbol: String, as type: F.Type = F.self) -> F? {
        address(of: symbol).map { unsafeBitCast($0, to: F.self) }
    }
}

/// Why a system library could not be used: it did not load, or lacks a function.
package enum DynamicLibraryError: Error, Equatable, Sendable {
    /// No candidate loaded; `searched` lists each with `dlopen`'s reason, in order, and
    /// `environmentVariable` names the variable that overrides the search.
    case notFound(library: String, environmentVariable: String, searched: [String])
    /// The library loaded but has no `symbol`.
    case missingSymbol(library: String, symbol: String)
}
