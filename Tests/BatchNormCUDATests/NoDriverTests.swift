import BatchNormCore
import Testing

@testable import BatchNormCUDA

#if canImport(Glibc)
    import Glibc
#endif

/// The path every machine without CUDA takes: clear errors naming what was searched, the
/// package and the CPU backend unaffected. These run everywhere.
@Suite struct NoDriverTests {
    @Test func driverOverrideIsTheOnlyPathTriedAndIsNamed() throws {
        let search = CUDALibrarySearch(environment: ["BNKIT_CUDA_DRIVER_PATH": "/nonexistent/libcuda.so.1"])
        #expect(search.driverCandidates == ["/nonexistent/libcuda.so.1"])
        let error = try #require(throws: CUDAError.self) { try CUDADevice(search: search) }
        guard case .libraryNotFound(let library, let variable, let searched) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(library.contains("libcuda"))
        #expect(variable == "BNKIT_CUDA_DRIVER_PATH")
        #expect(searched.count == 1 && searched[0].hasPrefix("/nonexistent/libcuda.so.1 ("))
        #expect(error.description.contains("BNKIT_CUDA_DRIVER_PATH"))
        #expect(error.description.contains("/nonexistent/libcuda.so.1"))
        #expect(error.meansUnavailable)
    }

    @Test func nvrtcOverrideIsTheOnlyPathTriedAndIsNamed() throws {
        let search = CUDALibrarySearch(environment: ["BNKIT_NVRTC_PATH": "/nonexistent/libnvrtc.so.12"])
        #expect(search.nvrtcCandidates == ["/nonexistent/libnvrtc.so.12"])
        let error = try #require(throws: CUDAError.self) { try NVRTC(search: search) }
        #expect(error.description.contains("libnvrtc"))
        #expect(error.description.contains("BNKIT_NVRTC_PATH"))
        #expect(error.description.contains("/nonexistent/libnvrtc.so.12"))
        #expect(error.meansUnavailable)
    }

    @Test func defaultSearchCoversLoaderPathCudaHomeAndUsrLocalCuda() {
        let search = CUDALibrarySearch(environment: [
            "CUDA_HOME": "/opt/cuda-home", "CUDA_PATH": "/opt/cuda-path",
            "LD_LIBRARY_PATH": "/opt/ld-one::/opt/ld-two",
        ])
        let directories = search.nvrtcDirectories
        for expected in [
            "/opt/cuda-home/lib64", "/opt/cuda-home/targets/x86_64-linux/lib", "/opt/cuda-path/lib64",
            "/opt/ld-one", "/opt/ld-two", "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
        ] {
            #expect(directories.contains(expected), "missing \(expected)")
        }
        #expect(Array(search.nvrtcCandidates.prefix(3)) == ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"])
        #expect(search.driverCandidates.first == "libcuda.so.1")
        #expect(CUDALibrarySearch(environment: [:]).nvrtcDirectories.contains("/opt/conda/lib"))
        #expect(search.deviceOrdinal == 0)
        #expect(CUDALibrarySearch(environment: ["BNKIT_CUDA_DEVICE": "3"]).deviceOrdinal == 3)
    }

    @Test func nvrtcDirectoryListsVersionsNewestFirstWithoutBuiltins() throws {
        var template = Array("/tmp/bnkit-nvrtc-XXXXXX".utf8CString)
        let directory = try #require(mkdtemp(&template).map { String(cString: $0) })
        defer {
            for name in [
                "libnvrtc.so.11.2", "libnvrtc.so.12.4.99", "libnvrtc.so.12.10.1", "libnvrtc-builtins.so.12.4",
                "libnvrtc.alt.so.12",
            ] { unlink("\(directory)/\(name)") }
            rmdir(directory)
        }
        for name in [
            "libnvrtc.so.11.2", "libnvrtc.so.12.4.99", "libnvrtc.so.12.10.1", "libnvrtc-builtins.so.12.4",
            "libnvrtc.alt.so.12",
        ] {
            let file = fopen("\(directory)/\(name)", "w")
            fputs("not a shared library", file)
            fclose(file)
        }
        let search = CUDALibrarySearch(environment: ["BNKIT_NVRTC_PATH": directory])
        #expect(
            search.nvrtcCandidates == [
                "\(directory)/libnvrtc.so.12.10.1", "\(directory)/libnvrtc.so.12.4.99",
                "\(directory)/libnvrtc.so.11.2", "\(directory)/libnvrtc.so",
            ])
        let error = try #require(throws: CUDAError.self) { try NVRTC(search: search) }
        guard case .libraryNotFound(_, _, let searched) = error else {
            Issue.record("unexpected error \(error)")
            return
        }
        #expect(searched.count == 4)
        #expect(searched[0].contains("libnvrtc.so.12.10.1 ("), "each entry carries dlopen's reason")
    }

    @Test func defaultSearchWithoutCUDAThrowsAClearError() throws {
        let availability = CUDADevice.availability()
        guard case .failure(let error) = availability else {
            // A machine with a GPU: the GPU tests cover it.
            return
        }
        #expect(error.meansUnavailable, "\(error)")
        #expect(error.description.hasPrefix("CUDA unavailable") || error.description.contains("CUDA_ERROR"))
        // Asking for the GPU backend throws the same error; the failure is remembered.
        let backendError = try #require(throws: CUDAError.self) { try CUDABackend() }
        #expect(backendError == error)
        #expect(throws: CUDAError.self) { try CUDADevice.shared() }
    }

    @Test func cpuBackendIsUnaffectedByMissingCUDA() throws {
        let bn = try BatchNorm3D(maps: 3)
        let y = try bn(try Tensor.arange(shape: [5, 3, 10, 10, 10]))
        #expect(y.shape == [5, 3, 10, 10, 10])
        #expect(abs(Double(try bn.mean.scalars[1]) - 7499.5) < 1e-3)
    }

    @Test func resultNamesAndErrorDescriptions() {
        #expect(CUDAResultName.name(of: 100) == "CUDA_ERROR_NO_DEVICE")
        #expect(CUDAResultName.name(of: 700) == "CUDA_ERROR_ILLEGAL_ADDRESS")
        #expect(CUDAResultName.name(of: 12345) == "CUresult(12345)")
        let error = CUDAError.driver(
            function: "cuInit", code: 100, name: "CUDA_ERROR_NO_DEVICE",
            message: "no CUDA-capable device is detected")
        #expect(error.description == "cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected")
        #expect(error.meansUnavailable)
        #expect(
            !CUDAError.driver(
                function: "cuLaunchKernel", code: 700, name: "CUDA_ERROR_ILLEGAL_ADDRESS",
                message: ""
            ).meansUnavailable)
        #expect(
            CUDAError.nvrtc(function: "nvrtcCompileProgram", code: 6, name: "NVRTC_ERROR_COMPILATION")
                .description.contains("NVRTC_ERROR_COMPILATION"))
    }

    @Test func kernelGeometryDispatch() {
        // C = 1 runs the channels-first kernels and S = 1 the channels-last ones, whatever the layout.
        #expect(KernelGeometry(shape: [2, 1, 4, 4, 4], layout: .channelsLast).channelsFirst)
        #expect(!KernelGeometry(shape: [64, 33], layout: .channelsFirst).channelsFirst)
        let seed = KernelGeometry(shape: [5, 3, 10, 10, 10], layout: .channelsFirst)
        #expect(seed.chunksPerPlane == 1 && seed.reductionBlocks == 15 && seed.partialCount == 15)
        let large = KernelGeometry(shape: [2, 16, 128, 128, 128], layout: .channelsFirst)
        #expect(large.chunksPerPlane == 128 && large.reductionBlocks == 2 * 16 * 128)
        let last = KernelGeometry(shape: [8, 64, 16, 56, 56], layout: .channelsLast)
        #expect(last.threadsAcrossChannels == 32)
        #expect(last.rowBlocks == (8 * 16 * 56 * 56 + 511) / 512)
        #expect(last.reductionBlocks == last.rowBlocks * 2 && last.partialCount == last.rowBlocks * 64)
        #expect(KernelGeometry(shape: [1, 3, 5, 5, 5], layout: .channelsLast).threadsAcrossChannels == 4)
    }

    @Test func everyEntryPointIsDefinedInTheSource() {
        let source = CUDAKernelSource.source
        #expect(CUDAKernelSource.entryPoints.count == 30)
        #expect(Set(CUDAKernelSource.entryPoints).count == 30)
        for name in CUDAKernelSource.entryPoints {
            let base = name[..<name.lastIndex(of: "_")!] // without "_f32" / "_f16" / "_bf16"
            #expect(source.contains("\(base)_##SUFFIX("), "no definition of \(name)")
        }
        for suffix in ["f32", "f16", "bf16"] {
            #expect(CUDAKernelSource.entryPoints.filter { $0.hasSuffix("_\(suffix)") }.count == 10)
        }
        // bfloat16 kernels from compute capability 8.0 on, the rule the source states once.
        #expect(CUDAKernelSource.bfloat16MinimumCapability == 80)
        #expect(source.contains("\n#define BN_BFLOAT16_MINIMUM_ARCH 800\n"))
        #expect(source.contains("\nBN_ENTRY_POINTS(bf16, bn_bfloat16)\n"))
        let older = CUDAKernelSource.entryPoints(computeCapability: 75)
        #expect(older.count == 20 && !older.contains { $0.hasSuffix("_bf16") })
        #expect(CUDAKernelSource.entryPoints(computeCapability: 80) == CUDAKernelSource.entryPoints)
        #expect(CUDAKernelSource.entryPoints(computeCapability: 90) == CUDAKernelSource.entryPoints)
        // The block geometry is read from the embedded source's #define lines.
        #expect(source.contains("\n#define BN_THREADS \(CUDAKernelSource.threadsPerBlock)\n"))
        #expect(source.contains("\n#define BN_CHUNK \(CUDAKernelSource.chunkLength)\n"))
        #expect(source.contains("\n#define BN_ROWS_PER_THREAD \(CUDAKernelSource.rowsPerThread)\n"))
        #expect(
            CUDAKernelSource.threadsPerBlock.nonzeroBitCount == 1 && CUDAKernelSource.threadsPerBlock >= 32,
            "threads per block must be a power of two of at least one warp")
        #expect(!source.contains("#include"), "the kernels need no CUDA headers")
    }

    @Test func cacheSizeClasses() {
        #expect(CUDADevice.roundedSize(0) == 512)
        #expect(CUDADevice.roundedSize(513) == 1024)
        #expect(CUDADevice.roundedSize(1 << 20) == 1 << 20)
        #expect(CUDADevice.roundedSize((1 << 20) + 1) == 2 << 20)
        #expect(CUDADevice.roundedSize(5 << 20) == 6 << 20)
    }
}
