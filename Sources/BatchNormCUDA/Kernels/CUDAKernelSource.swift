/// The CUDA C source of every BatchNormKit kernel, compiled at first use with NVRTC for the
/// device's architecture (see ``CUDADevice``). The source is `BatchNormKernels.cu` beside this
/// file, embedded in the binary at build time (a SwiftPM resource), so nothing CUDA is needed
/// to build the package; `Tools/KernelEmulation` includes the same file to run the kernels on
/// the CPU, and the `KernelCompilationTests` compile it wherever NVRTC is found, GPU or not.
///
/// Kernels (each for `f32`, `f16` and, from compute capability 8.0 on, `bf16` storage; `cf` =
/// channels-first NCDHW, `cl` = channels-last NDHWC):
/// - `bn_stats_*`: collect → merge of the training forward in one launch (per-block shifted
///   sums in `double`, Chan merge of block partials in fixed order by the last block to
///   finish); writes the per-channel moments (count, mean, M2).
/// - `bn_reduce_*`: `Σg`, `Σg·(x − μ)` of the training backward in one launch, likewise;
///   writes the per-channel sums.
///
/// No kernel finalizes: the moments or sums are copied back and `BatchNormND`
/// finalizes them on the host (statistics, running update, apply coefficients), as on every
/// other path; the apply kernel then runs with the coefficients it computed.
/// - `bn_apply_*_{x,gx,g}_*`: `out = a·g + b·(x − shift) + offset` per channel.
public enum CUDAKernelSource {
    /// Threads per block of every kernel (`BN_THREADS` in the source).
    public static let threadsPerBlock = definedValue("BN_THREADS")
    /// Values per channels-first block (one chunk of an `(n, c)` plane), `L` in the kernels
    /// (`BN_CHUNK`).
    public static let chunkLength = definedValue("BN_CHUNK")
    /// Rows per thread row in a channels-last statistics or reduce block
    /// (`BN_ROWS_PER_THREAD`).
    public static let rowsPerThread = definedValue("BN_ROWS_PER_THREAD")

    /// The lowest compute capability (`major · 10 + minor`) whose kernels include the `bf16`
    /// ones: 80 (Ampere), the first architecture with the `cvt.rn.bf16.f32` instruction that
    /// rounds their results. Read from the source (`BN_BFLOAT16_MINIMUM_ARCH`, in
    /// `__CUDA_ARCH__` units), which compiles the `bf16` entry points only from there on.
    public static let bfloat16MinimumCapability = definedValue("BN_BFLOAT16_MINIMUM_ARCH") / 10

    /// Names of every kernel entry point of the source, for every storage type (`f32`, `f16`,
    /// `bf16`); an image compiled for a given architecture has
    /// ``entryPoints(computeCapability:)``.
    public static let entryPoints = entryPoints(computeCapability: .max)

    /// Names of the entry points of an image compiled for compute capability
    /// `computeCapability` (`major · 10 + minor`, as in `sm_86` → 86): the `f32` and `f16`
    /// kernels, and the `bf16` ones when `computeCapability` is at least
    /// ``bfloat16MinimumCapability``.
    public static func entryPoints(computeCapability: Int) -> [String] {
        let suffixes = computeCapability >= bfloat16MinimumCapability ? ["f32", "f16", "bf16"] : ["f32", "f16"]
        return suffixes.flatMap { suffix in
            [
                "bn_stats_cf", "bn_stats_cl", "bn_reduce_cf", "bn_reduce_cl",
                "bn_apply_cf_x", "bn_apply_cf_gx", "bn_apply_cf_g", "bn_apply_cl_x", "bn_apply_cl_gx",
                "bn_apply_cl_g",
            ]
            .map { "\($0)_\(suffix)" }
        }
    }

    /// NVRTC options used for every compilation. `--fmad=false` keeps the kernels' arithmetic
    /// (the apply's `float` operations, the merges' `double` ones) rounded like the CPU
    /// kernels' (no contraction into FMA).
    public static let compileOptions = ["--fmad=false", "--std=c++17"]

    /// The complete CUDA C source, with the math each kernel implements in comments.
    public static let source = String(decoding: PackageResources.BatchNormKernels_cu, as: UTF8.self)

    /// The integer of the source's line `#define name value`. The source is part of the
    /// binary, so a missing or malformed line is a build defect, not a run-time condition.
    static func definedValue(_ name: String) -> Int {
        let prefix = "#define \(name) "
        for line in source.split(separator: "\n") where line.hasPrefix(prefix) {
            if let value = Int(line.dropFirst(prefix.count).trimmingCharacters(in: " ")) { return value }
        }
        preconditionFailure("BatchNormKernels.cu defines no integer \(name)")
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in character: Character) -> Substring {
        var result = self
        while result.first == character { result = result.dropFirst() }
        while result.last == character { result = result.dropLast() }
        return result
    }
}
