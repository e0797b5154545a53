import BatchNormCore

/// The loaded kernel module of one device: the NVRTC image and its entry points.
final class CUDAKernels: @unchecked Sendable {
    /// The architecture the image was compiled for (`"sm_90"` for CUBIN, `"compute_90"` for PTX).
    let architecture: String
    /// The compute capability (`major · 10 + minor`) the image was compiled for: the device's,
    /// or lower when NVRTC does not know the device (PTX for an older target). It decides
    /// which entry points the image has (``CUDAKernelSource/entryPoints(computeCapability:)``).
    let computeCapability: Int
    private let module: OpaquePointer
    private let functions: [String: OpaquePointer]

    /// Compiles ``CUDAKernelSource/source`` for the device and loads it.
    ///
    /// Target choice: with compute capability `XY`, CUBIN for `sm_XY` when NVRTC supports
    /// that architecture and can emit CUBIN; otherwise PTX for the newest `compute_AB <= XY`
    /// NVRTC supports (JIT-compiled by the driver). If the CUBIN does not load, PTX is tried.
    init(device: CUDADevice, nvrtc: NVRTC) throws {
        let capability = device.computeCapability.major * 10 + device.computeCapability.minor
        let supported = nvrtc.supportedArchitectures
        var targets = [(architecture: String, capability: Int)]()
        if supported.isEmpty || supported.contains(capability) {
            if nvrtc.producesCUBIN { targets.append(("sm_\(capability)", capability)) }
            targets.append(("compute_\(capability)", capability))
        } else if let best = supported.filter({ $0 <= capability }).max() {
            targets.append(("compute_\(best)", best))
        } else {
            throw CUDAError.compilation(
                architecture: "sm_\(capability)",
                log: "NVRTC \(nvrtc.version.major).\(nvrtc.version.minor) (\(nvrtc.path)) supports only "
                    + supported.map { "sm_\($0)" }.joined(separator: ", "))
        }
        var lastError: Error = CUDAError.compilation(architecture: "sm_\(capability)", log: "no compilation target")
        for target in targets {
            do {
                let image = try nvrtc.compile(
                    CUDAKernelSource.source, architecture: target.architecture,
                    options: CUDAKernelSource.compileOptions)
                var module: OpaquePointer?
                try image.bytes.withUnsafeBytes {
                    try device.driver.check(
                        device.driver.cuModuleLoadData(&module, $0.baseAddress!), "cuModuleLoadData")
                }
                guard let module else { throw CUDAError.nullHandle(function: "cuModuleLoadData", what: "module") }
                var functions = [String: OpaquePointer]()
                for name in CUDAKernelSource.entryPoints(computeCapability: target.capability) {
                    var function: OpaquePointer?
                    try device.driver.check(
                        device.driver.cuModuleGetFunction(&function, module, name),
                        "cuModuleGetFunction")
                    functions[name] = function
                }
                self.architecture = target.architecture
                self.computeCapability = target.capability
                self.module = module
                self.functions = functions
                return
            } catch let error as CUDAError {
                if case .compilation = error { throw error }
                lastError = error
            }
        }
        throw lastError
    }

    /// Whether the image has the `bf16` kernels (compiled for
    /// ``CUDAKernelSource/bfloat16MinimumCapability`` or later).
    var hasBFloat16Kernels: Bool { computeCapability >= CUDAKernelSource.bfloat16MinimumCapability }

    /// The entry point `name` (one of ``CUDAKernelSource/entryPoints(computeCapability:)`` for
    /// ``computeCapability``).
    func function(_ name: String) -> OpaquePointer {
        guard let function = functions[name] else { preconditionFailure("unknown kernel \(name)") }
        return function
    }
}

/// How the kernels see a tensor: `(N, C, S)` and the effective layout.
///
/// `C = 1` is processed as channels-first and `S = 1` as channels-last whatever the declared
/// layout: both layouts store the same bytes then, and these choices keep blocks full.
struct KernelGeometry {
    let batch: Int
    let channels: Int
    let spatial: Int
    let channelsFirst: Bool

    init(shape: [Int], layout: TensorLayout) {
        let geometry = ChannelGeometry(shape: shape)
        batch = geometry.batch
        channels = geometry.channels
        spatial = geometry.spatial
        if channels == 1 {
            channelsFirst = true
        } else if spatial == 1 {
            channelsFirst = false
        } else {
            channelsFirst = layout == .channelsFirst
        }
    }

    var elementCount: Int { batch * channels * spatial }
    /// `K`: channels-first chunks per plane.
    var chunksPerPlane: Int { (spatial + CUDAKernelSource.chunkLength - 1) / CUDAKernelSource.chunkLength }
    /// `R = N·S`: channels-last rows.
    var rows: Int { batch * spatial }
    /// `TX`: threads across channels in a channels-last statistics block.
    var threadsAcrossChannels: Int {
        var width = 1
        while width < min(channels, 32) { width *= 2 }
        return width
    }
    /// `B`: channels-last row blocks.
    var rowBlocks: Int {
        let rowsPerBlock = CUDAKernelSource.threadsPerBlock / threadsAcrossChannels * CUDAKernelSource.rowsPerThread
        return (rows + rowsPerBlock - 1) / rowsPerBlock
    }
    /// Blocks of a statistics or reduce launch.
    var reductionBlocks: Int {
        channelsFirst
            ? batch * channels * chunksPerPlane
            : rowBlocks * ((channels + threadsAcrossChannels - 1) / threadsAcrossChannels)
    }
    /// Partials written by a statistics or reduce launch.
    var partialCount: Int { channelsFirst ? batch * channels * chunksPerPlane : rowBlocks * channels }
}
