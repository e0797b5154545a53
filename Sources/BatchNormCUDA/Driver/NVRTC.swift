import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// NVRTC, the CUDA run-time compiler, loaded with `dlopen`: compiles CUDA C source to PTX
/// (virtual `compute_XY`) or CUBIN (real `sm_XY`) without a CUDA toolkit at build time.
///
/// Usable without a driver or GPU: ``compile(_:architecture:options:)`` is what the
/// kernel-compilation checks run on machines without a GPU.
public final class NVRTC: @unchecked Sendable {
    typealias Program = OpaquePointer?
    typealias Result = Int32

    private let library: DynamicLibrary
    private let nvrtcVersion: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Result
    private let nvrtcCreateProgram:
        @convention(c) (
            UnsafeMutablePointer<Program>, UnsafePointer<CChar>,
            UnsafePointer<CChar>?, Int32,
            UnsafePointer<UnsafePointer<CChar>?>?,
            UnsafePointer<UnsafePointer<CChar>?>?
        ) -> Result
    private let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Result
    private let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program>) -> Result
    private let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    private let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    private let nvrtcGetPTXSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Result
    private let nvrtcGetPTX: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result
    private let nvrtcGetCUBINSize: (@convention(c) (Program, UnsafeMutablePointer<Int>) -> Result)?
    private let nvrtcGetCUBIN: (@convention(c) (Program, UnsafeMutablePointer<CChar>) -> Result)?
    private let nvrtcGetErrorString: @convention(c) (Result) -> UnsafePointer<CChar>?
    private let nvrtcGetNumSupportedArchs: (@convention(c) (UnsafeMutablePointer<Int32>) -> Result)?
    private let nvrtcGetSupportedArchs: (@convention(c) (UnsafeMutablePointer<Int32>) -> Result)?

    /// The library that was loaded.
    public var path: String { library.path }

    /// Loads NVRTC from the first of `search.nvrtcCandidates` that opens (and, when
    /// `maximumMajorVersion` is given, whose major version is not above it: a CUDA 13 NVRTC
    /// emits code a CUDA 12 driver cannot load).
    /// - Throws: ``CUDAError/libraryNotFound(library:environmentVariable:searched:)`` naming
    ///   every path tried, or ``CUDAError/missingSymbol(library:symbol:)``.
    public init(search: CUDALibrarySearch = CUDALibrarySearch(), maximumMajorVersion: Int? = nil) throws {
        do {
            library = try DynamicLibrary.open(
                "libnvrtc (the CUDA run-time compiler)", candidates: search.nvrtcCandidates,
                environmentVariable: CUDALibrarySearch.nvrtcPathVariable
            ) { library in
                guard let maximumMajorVersion,
                    let version: @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32 =
                        library.optionalFunction("nvrtcVersion")
                else { return nil }
                var major: Int32 = 0, minor: Int32 = 0
                guard version(&major, &minor) == 0, Int(major) > maximumMajorVersion else { return nil }
                return "NVRTC \(major).\(minor) is newer than the driver's CUDA \(maximumMajorVersion)"
            }
            nvrtcVersion = try library.function("nvrtcVersion")
            nvrtcCreateProgram = try library.function("nvrtcCreateProgram")
            nvrtcCompileProgram = try library.function("nvrtcCompileProgram")
            nvrtcDestroyProgram = try library.function("nvrtcDestroyProgram")
            nvrtcGetProgramLogSize = try library.function("nvrtcGetProgramLogSize")
            nvrtcGetProgramLog = try library.function("nvrtcGetProgramLog")
            nvrtcGetPTXSize = try library.function("nvrtcGetPTXSize")
            nvrtcGetPTX = try library.function("nvrtcGetPTX")
            nvrtcGetErrorString = try library.function("nvrtcGetErrorString")
            nvrtcGetCUBINSize = library.optionalFunction("nvrtcGetCUBINSize")
            nvrtcGetCUBIN = library.optionalFunction("nvrtcGetCUBIN")
            nvrtcGetNumSupportedArchs = library.optionalFunction("nvrtcGetNumSupportedArchs")
            nvrtcGetSupportedArchs = library.optionalFunction("nvrtcGetSupportedArchs")
        } catch let error as DynamicLibraryError {
            throw CUDAError(error)
        }
    }

    /// NVRTC's version, `(major, minor)`.
    public var version: (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        return (Int(major), Int(minor))
    }

    /// The compute capabilities NVRTC can target, as `major·10 + minor` (`90` for sm_90);
    /// empty when the library cannot tell (NVRTC before 11.2).
    public var supportedArchitectures: [Int] {
        guard let count = nvrtcGetNumSupportedArchs, let list = nvrtcGetSupportedArchs else { return [] }
        var n: Int32 = 0
        guard count(&n) == 0, n > 0 else { return [] }
        var values = [Int32](repeating: 0, count: Int(n))
        guard list(&values) == 0 else { return [] }
        return values.map(Int.init)
    }

    /// Whether ``compile(_:architecture:options:)`` can return CUBIN for `sm_XY` targets.
    public var producesCUBIN: Bool { nvrtcGetCUBIN != nil && nvrtcGetCUBINSize != nil }

    /// The result of a compilation.
    public struct Image: Sendable {
        /// PTX text (NUL-terminated) for `compute_XY`, CUBIN for `sm_XY`.
        public var bytes: [UInt8]
        /// Whether ``bytes`` is CUBIN (otherwise PTX).
        public var isCUBIN: Bool
        /// NVRTC's log (warnings), possibly empty.
        public var log: String
        /// The PTX text, when ``isCUBIN`` is `false`.
        public var ptx: String? {
            isCUBIN ? nil : String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Compiles `source` for `architecture` (`"compute_90"` gives PTX, `"sm_90"` CUBIN when
    /// ``producesCUBIN``).
    /// - Throws: ``CUDAError/compilation(architecture:log:)`` with NVRTC's log, or
    ///   ``CUDAError/nvrtc(function:code:name:)``.
    public func compile(_ source: String, architecture: String, options: [String] = []) throws -> Image {
        var program: Program = nil
        try check(nvrtcCreateProgram(&program, source, "bnkit_kernels.cu", 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtcDestroyProgram(&program) }
        let arguments = ["--gpu-architecture=\(architecture)"] + options
        let cStrings = arguments.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let pointers = cStrings.map { UnsafePointer<CChar>($0) }
        let result = pointers.withUnsafeBufferPointer {
            nvrtcCompileProgram(program, Int32(arguments.count), $0.baseAddress)
        }
        let log = programLog(program)
        guard result == 0 else {
            if result == 6 /* NVRTC_ERROR_COMPILATION */ {
                throw CUDAError.compilation(architecture: architecture, log: log)
            }
            try check(result, "nvrtcCompileProgram")
            return Image(bytes: [], isCUBIN: false, log: log)
        }
        if architecture.hasPrefix("sm_"), let sizeOf = nvrtcGetCUBINSize, let get = nvrtcGetCUBIN {
            var size = 0
            try check(sizeOf(program, &size), "nvrtcGetCUBINSize")
            var bytes = [UInt8](repeating: 0, count: size)
            try bytes.withUnsafeMutableBytes {
                try check(get(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN")
            }
            return Image(bytes: bytes, isCUBIN: true, log: log)
        }
        var size = 0
        try check(nvrtcGetPTXSize(program, &size), "nvrtcGetPTXSize")
        var bytes = [UInt8](repeating: 0, count: max(size, 1))
        try bytes.withUnsafeMutableBytes {
            try check(nvrtcGetPTX(program, $0.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetPTX")
        }
        return Image(bytes: bytes, isCUBIN: false, log: log)
    }

    private func programLog(_ program: Program) -> String {
        var size = 0
        guard nvrtcGetProgramLogSize(program, &size) == 0, size > 1 else { return "" }
        var bytes = [CChar](repeating: 0, count: size)
        guard nvrtcGetProgramLog(program, &bytes) == 0 else { return "" }
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Throws ``CUDAError/nvrtc(function:code:name:)`` with `nvrtcGetErrorString`'s name.
    private func check(_ result: Result, _ function: StaticString) throws {
        guard result != 0 else { return }
        let name = nvrtcGetErrorString(result).map { String(cString: $0) } ?? "nvrtcResult(\(result))"
        throw CUDAError.nvrtc(function: "\(function)", code: result, name: name)
    }
}
