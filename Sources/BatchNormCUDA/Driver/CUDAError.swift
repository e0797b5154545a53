import SystemLibrary

/// Errors of the CUDA backend: libraries not found, driver or NVRTC calls that failed,
/// kernels that did not compile, tensors the GPU cannot take.
///
/// Every `CUresult` and `nvrtcResult` other than success becomes one of these, with the
/// function that returned it and the code's name (`cuGetErrorName`, `nvrtcGetErrorString`).
public enum CUDAError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A shared library (`libcuda`, `libnvrtc`) could not be loaded. `searched` lists every
    /// path or name tried, in order, with `dlopen`'s reason; `environmentVariable` names the
    /// variable that overrides the search.
    case libraryNotFound(library: String, environmentVariable: String, searched: [String])
    /// A library was loaded but lacks a function the backend needs.
    case missingSymbol(library: String, symbol: String)
    /// A CUDA driver call returned an error.
    case driver(function: String, code: Int32, name: String, message: String)
    /// An NVRTC call returned an error.
    case nvrtc(function: String, code: Int32, name: String)
    /// NVRTC rejected the kernel source; `log` is its compilation log.
    case compilation(architecture: String, log: String)
    /// The driver loaded but there is no usable device (`cuDeviceGetCount` returned 0 or the
    /// requested ordinal is out of range).
    case noDevice(reason: String)
    /// A driver call reported success but returned a null handle where it must return one
    /// (`what`: the handle, such as "module" or "event"); a driver defect, not a missing GPU.
    case nullHandle(function: String, what: String)
    /// A tensor or argument the CUDA backend cannot handle.
    case invalidArgument(name: String, expected: String, actual: String)

    /// The CUDA form of a failure to load `libcuda` or `libnvrtc`.
    init(_ error: DynamicLibraryError) {
        switch error {
        case .notFound(let library, let variable, let searched):
            self = .libraryNotFound(library: library, environmentVariable: variable, searched: searched)
        case .missingSymbol(let library, let symbol):
            self = .missingSymbol(library: library, symbol: symbol)
        }
    }

    public var description: String {
        switch self {
        case .libraryNotFound(let library, let variable, let searched):
            "CUDA unavailable: could not load \(library) (set \(variable) to its path to override the search); tried: "
                + searched.joined(separator: "; ")
        case .missingSymbol(let library, let symbol):
            "CUDA unavailable: \(library) has no symbol \(symbol) (too old?)"
        case .driver(let function, let code, let name, let message):
            "\(function) failed: \(name) (\(code))\(message.isEmpty ? "" : ": \(message)")"
        case .nvrtc(let function, let code, let name):
            "\(function) failed: \(name) (\(code))"
        case .compilation(let architecture, let log):
            "NVRTC could not compile the BatchNormKit kernels for \(architecture):\n\(log)"
        case .noDevice(let reason):
            "CUDA unavailable: no usable GPU (\(reason))"
        case .nullHandle(let function, let what):
            "\(function) succeeded but returned no \(what)"
        case .invalidArgument(let name, let expected, let actual):
            "\(name) must be \(expected), got \(actual)"
        }
    }

    /// Whether the error means "no CUDA here" (no library, no device, or a driver that
    /// reports no device or an insufficient version) rather than a failure of a working GPU.
    public var meansUnavailable: Bool {
        switch self {
        case .libraryNotFound, .missingSymbol, .noDevice: true
        case .driver(_, _, let name, _):
            [
                "CUDA_ERROR_NO_DEVICE", "CUDA_ERROR_INSUFFICIENT_DRIVER", "CUDA_ERROR_NOT_INITIALIZED",
                "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
                "CUDA_ERROR_OPERATING_SYSTEM", "CUDA_ERROR_NOT_SUPPORTED",
            ].contains(name)
        default: false
        }
    }
}
