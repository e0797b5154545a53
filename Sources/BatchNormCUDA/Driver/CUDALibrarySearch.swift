#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where BatchNormCUDA looks for the CUDA driver (`libcuda`) and NVRTC (`libnvrtc`), both
/// opened with `dlopen` at run time: nothing CUDA is needed to build the package.
///
/// - Driver: ``driverPathVariable`` when set (and nothing else); otherwise `libcuda.so.1`
///   and `libcuda.so` through the dynamic loader's path, then the usual system directories.
/// - NVRTC: ``nvrtcPathVariable`` when set (a file, or a directory holding `libnvrtc.so*`;
///   nothing else is tried); otherwise `libnvrtc.so` and the versioned sonames through the
///   loader path (`LD_LIBRARY_PATH`, `ld.so.cache`), then `libnvrtc.so.*` in
///   `$CUDA_HOME` and `$CUDA_PATH` (`lib64`, `targets/x86_64-linux/lib`),
///   the `LD_LIBRARY_PATH` directories, `/usr/local/cuda/lib64`,
///   `/usr/local/cuda/targets/x86_64-linux/lib`, `/usr/local/cuda-*/…`, then pip's
///   `site-packages/nvidia/cuda_nvrtc/lib` (`$VIRTUAL_ENV`, system and user Python; PyTorch's
///   CUDA wheels install it) and conda's `lib`, newest version first in each directory.
///   An NVRTC newer than the driver (major version) is skipped: its code would not load.
public struct CUDALibrarySearch: Sendable, Equatable {
    /// Overrides the driver search: the path of `libcuda.so.1`.
    public static let driverPathVariable = "BNKIT_CUDA_DRIVER_PATH"
    /// Overrides the NVRTC search: the path of `libnvrtc.so.*` or its directory.
    public static let nvrtcPathVariable = "BNKIT_NVRTC_PATH"
    /// Selects the device ordinal (default 0).
    public static let deviceVariable = "BNKIT_CUDA_DEVICE"
    /// The variables the search reads.
    public static let variables = [
        driverPathVariable, nvrtcPathVariable, deviceVariable,
        "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "HOME",
    ]

    /// The environment the search reads (only ``variables`` matter).
    public var environment: [String: String]

    /// A search reading `environment`; by default the process environment.
    public init(environment: [String: String]? = nil) {
        self.environment = environment ?? CUDALibrarySearch.processEnvironment()
    }

    /// The current values of ``variables`` in the process environment.
    public static func processEnvironment() -> [String: String] {
        var result = [String: String]()
        for name in variables {
            if let value = getenv(name) { result[name] = String(cString: value) }
        }
        return result
    }

    private func value(_ name: String) -> String? {
        guard let value = environment[name], !value.isEmpty else { return nil }
        return value
    }

    /// The device ordinal from ``deviceVariable``, 0 by default.
    public var deviceOrdinal: Int { value(Self.deviceVariable).flatMap { Int($0) } ?? 0 }

    /// Driver library candidates, in the order they are tried.
    public var driverCandidates: [String] {
        if let path = value(Self.driverPathVariable) { return [path] }
        return [
            "libcuda.so.1", "libcuda.so", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1",
            "/usr/lib/wsl/lib/libcuda.so.1", "/usr/local/cuda/compat/libcuda.so.1",
        ]
    }

    /// Directories searched for `libnvrtc.so.*` after the loader path.
    public var nvrtcDirectories: [String] {
        var directories = [String]()
        for variable in ["CUDA_HOME", "CUDA_PATH"] {
            if let root = value(variable) {
                directories += ["\(root)/lib64", "\(root)/targets/x86_64-linux/lib", "\(root)/lib"]
            }
        }
        if let path = value("LD_LIBRARY_PATH") {
            directories += path.split(separator: ":").map(String.init).filter { !$0.isEmpty }
        }
        directories += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
        directories += Self.matches("/usr/local/cuda-*/targets/x86_64-linux/lib").reversed()
        // NVRTC from pip (`nvidia-cuda-nvrtc-cu12`, a dependency of PyTorch's CUDA wheels) or conda.
        var pythonRoots = [
            "/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
            "/usr/lib/python3*/dist-packages", "/opt/conda/lib/python3*/site-packages",
        ]
        if let environment = value("VIRTUAL_ENV") {
            pythonRoots.insert("\(environment)/lib/python3*/site-packages", at: 0)
        }
        if let home = value("HOME") { pythonRoots.append("\(home)/.local/lib/python3*/site-packages") }
        for root in pythonRoots {
            directories += Self.matches("\(root)/nvidia/cuda_nvrtc/lib").reversed()
        }
        directories += ["/opt/conda/lib"]
        return Self.unique(directories)
    }

    /// NVRTC library candidates, in the order they are tried.
    public var nvrtcCandidates: [String] {
        if let path = value(Self.nvrtcPathVariable) {
            return Self.isDirectory(path) ? Self.nvrtcLibraries(in: path) + ["\(path)/libnvrtc.so"] : [path]
        }
        var candidates = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"]
        for directory in nvrtcDirectories {
            candidates += Self.nvrtcLibraries(in: directory)
        }
        return Self.unique(candidates)
    }

    /// `libnvrtc.so.*` in `directory` (not the builtins or `.alt` variants), newest first.
    static func nvrtcLibraries(in directory: String) -> [String] {
        let found = matches("\(directory)/libnvrtc.so.*").filter { !$0.contains("builtins") && !$0.contains(".alt.") }
        return found.sorted { versionKey($0).lexicographicallyPrecedes(versionKey($1)) }.reversed()
    }

    /// Numeric parts after `.so.` (`libnvrtc.so.12.4.127` → `[12, 4, 127]`).
    static func versionKey(_ path: String) -> [Int] {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        guard let range = name.firstRange(of: ".so.") else { return [] }
        return name[range.upperBound...].split(separator: ".").map { Int($0) ?? 0 }
    }

    /// Paths matching a shell pattern (`glob(3)`).
    static func matches(_ pattern: String) -> [String] {
        var result = glob_t()
        defer { globfree(&result) }
        guard glob(pattern, 0, nil, &result) == 0 else { return [] }
        return (0..<Int(result.gl_pathc)).compactMap { result.gl_pathv[$0].map { String(cString: $0) } }
    }

    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
    }

    static func unique(_ values: [String]) -> [String] {
        var seen = Set<String>()
        return values.filter { seen.insert($0).inserted }
    }
}
