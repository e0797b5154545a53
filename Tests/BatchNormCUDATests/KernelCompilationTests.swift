import BatchNormCUDA
import BatchNormCUDAChecks
import Testing

/// NVRTC, when found (loader path, CUDA_HOME, /usr/local/cuda, or `BNKIT_NVRTC_PATH`, e.g. the
/// `nvidia-cuda-nvrtc-cu12` wheel's `site-packages/nvidia/cuda_nvrtc/lib`), compiles every
/// kernel: a real check of the CUDA source that needs no driver and no GPU. Without NVRTC
/// the tests are reported as skipped.
@Suite struct KernelCompilationTests {
    static let nvrtc = try? NVRTC()

    @Test(
        .enabled(if: nvrtc != nil, "SKIPPED: no libnvrtc found (set BNKIT_NVRTC_PATH to compile the kernels)"),
        arguments: ["compute_90", "compute_80", "compute_75"])
    func kernelsCompileToPTXWithEveryEntryPoint(architecture: String) throws {
        let nvrtc = try #require(Self.nvrtc)
        let outcome = try CUDAKernelCompilation.compile(architectures: [architecture], nvrtc: nvrtc)[0]
        #expect(!outcome.isCUBIN)
        let expected = CUDAKernelSource.entryPoints(computeCapability: outcome.computeCapability)
        #expect(Set(outcome.entryPoints) == Set(expected))
        // bfloat16 from sm_80 on (all 30 entry points), not below (the 20 of f32 and f16).
        #expect(expected.count == (outcome.computeCapability >= 80 ? 30 : 20))
        #expect(outcome.log.isEmpty || !outcome.log.contains("warning"), "\(outcome.log)")
    }

    /// The bfloat16 stores round with `cvt.rn.bf16.f32` where the target has it; below sm_80
    /// the PTX has no bfloat16 code at all (ptxas would reject the instruction there).
    @Test(
        .enabled(if: nvrtc != nil, "SKIPPED: no libnvrtc found"),
        arguments: [("compute_80", true), ("compute_90", true), ("compute_75", false)])
    func bfloat16CodeOnlyFromSM80(architecture: String, hasBFloat16: Bool) throws {
        let nvrtc = try #require(Self.nvrtc)
        let image = try nvrtc.compile(
            CUDAKernelSource.source, architecture: architecture, options: CUDAKernelSource.compileOptions)
        let ptx = try #require(image.ptx)
        #expect(ptx.contains("cvt.rn.bf16.f32") == hasBFloat16)
        #expect(ptx.contains("_bf16") == hasBFloat16)
    }

    @Test(
        .enabled(if: nvrtc?.producesCUBIN ?? false, "SKIPPED: no libnvrtc with CUBIN output found"),
        arguments: ["sm_90", "sm_80", "sm_75"])
    func kernelsAssembleToCUBIN(architecture: String) throws {
        let nvrtc = try #require(Self.nvrtc)
        let outcome = try CUDAKernelCompilation.compile(architectures: [architecture], nvrtc: nvrtc)[0]
        #expect(outcome.isCUBIN)
        #expect(outcome.byteCount > 10_000)
    }

    @Test(.enabled(if: nvrtc != nil, "SKIPPED: no libnvrtc found"))
    func nvrtcNewerThanTheDriverIsSkippedWithAReason() throws {
        let error = try #require(throws: CUDAError.self) { try NVRTC(maximumMajorVersion: 10) }
        guard case .libraryNotFound(_, _, let searched) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(searched.contains { $0.contains("is newer than the driver's CUDA 10") })
    }

    @Test(.enabled(if: nvrtc != nil, "SKIPPED: no libnvrtc found"))
    func compilationErrorsCarryTheLog() throws {
        let nvrtc = try #require(Self.nvrtc)
        let error = try #require(throws: CUDAError.self) {
            try nvrtc.compile("extern \"C\" __global__ void broken() { undeclared = 1; }", architecture: "compute_90")
        }
        guard case .compilation(let architecture, let log) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(architecture == "compute_90")
        #expect(log.contains("undeclared"))
    }
}
