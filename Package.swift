// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BatchNormKit",
    // Linux (x86_64 tested in CI, aarch64 kernels checked under emulation) needs no entry;
    // these are the oldest Apple systems the code is written for (built, not tested here).
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .library(name: "BatchNormKit", targets: ["BatchNormKit"]),
        .library(name: "BatchNormCUDA", targets: ["BatchNormCUDA"]),
        .executable(name: "bnkit", targets: ["bnkit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `swift package generate-documentation` (build-time tooling only; nothing is linked).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The CPU backend's hot loops in C, compiled for each kernel level through per-function
        // target attributes and chosen at run time (no build flags: none may be unsafe).
        // libm: the generic level's fused multiply-adds call the C library's fma.
        .target(name: "CBatchNormKernels", linkerSettings: [.linkedLibrary("m")]),
        // Benchmark-only C loops (the memory-bandwidth loops of the bench roofline), per kernel
        // level as the kernels are: linked by bnkit and the tests only, not by the product.
        .target(name: "CBenchmarkKernels", dependencies: ["CBatchNormKernels"]),
        // dlopen of system libraries (CUDA, MPI, zlib) and a pthread lock, shared by the targets.
        .target(name: "SystemLibrary"),
        // The core: tensors, the BatchNorm family, the backend seam, the CPU backend, process
        // groups. No file formats.
        .target(name: "BatchNormCore", dependencies: ["CBatchNormKernels", "SystemLibrary"]),
        // File formats (safetensors, .npy, PuzzleLib HDF5, the JSON reader, atomic writes), on
        // the core's public API.
        .target(name: "BatchNormFormats", dependencies: ["BatchNormCore", "SystemLibrary"]),
        // The module users import: re-exports the core and the formats.
        .target(name: "BatchNormKit", dependencies: ["BatchNormCore", "BatchNormFormats"]),
        // The plain `Double` reference every kernel is checked against. A regular target
        // (not test-only) so that `bnkit selftest` can use it from a release build.
        .target(name: "BatchNormReference", dependencies: ["BatchNormCore"]),
        // CUDA backend: libcuda and libnvrtc are opened with dlopen at run time; nothing CUDA
        // is needed to build, and the package never links against CUDA.
        .target(
            name: "BatchNormCUDA", dependencies: ["BatchNormCore", "SystemLibrary"],
            resources: [.embedInCode("Kernels/BatchNormKernels.cu")]),
        // GPU-versus-CPU-versus-reference comparisons shared by `bnkit selftest` and the tests.
        .target(name: "BatchNormCUDAChecks", dependencies: ["BatchNormCore", "BatchNormCUDA", "BatchNormReference"]),
        // What exists only to measure (the switch that runs the CPU passes unfused). Only `bnkit`
        // and the tests link it.
        .target(name: "BatchNormBenchmarkSupport", dependencies: ["BatchNormCore"]),
        .executableTarget(
            name: "bnkit",
            dependencies: [
                "BatchNormKit",
                "BatchNormReference",
                "BatchNormCUDA",
                "BatchNormCUDAChecks",
                "BatchNormBenchmarkSupport",
                "CBenchmarkKernels", // the bandwidth loops of the bench roofline
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Helpers shared by the test targets (seeded data, comparisons, fixture paths).
        .target(
            name: "BatchNormTestSupport", dependencies: ["BatchNormKit", "BatchNormReference"],
            path: "Tests/Support"),
        .testTarget(
            name: "BatchNormCoreTests",
            dependencies: [
                "BatchNormCore", "BatchNormReference", "BatchNormTestSupport", "BatchNormBenchmarkSupport",
                "CBatchNormKernels", "CBenchmarkKernels",
            ]
        ),
        .testTarget(
            name: "BatchNormFormatsTests",
            dependencies: ["BatchNormKit", "BatchNormReference", "BatchNormTestSupport"]
        ),
        .testTarget(
            name: "BNKitTests",
            dependencies: ["BatchNormKit", "BatchNormReference", "BatchNormTestSupport"]
        ),
        .testTarget(
            name: "BatchNormCUDATests",
            dependencies: ["BatchNormCore", "BatchNormCUDA", "BatchNormCUDAChecks", "BatchNormReference"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
