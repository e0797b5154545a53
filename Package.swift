// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BatchNormKit",
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
        // The CPU backend's hot loops in C, compiled for AVX-512 and AVX2 through per-function
        // target attributes and chosen at run time (no build flags: none may be unsafe).
        // libm: the generic level's fused multiply-adds call the C library's fma.
        .target(name: "CBatchNormKernels", linkerSettings: [.linkedLibrary("m")]),
        // Benchmark-only C loops (the memory-bandwidth loops of the bench roofline), per kernel
        // level as the kernels are: linked by bnkit and the tests only, not by the product.
        .target(name: "CBenchmarkKernels", dependencies: ["CBatchNormKernels"]),
        // dlopen of system libraries (CUDA, MPI, zlib) and a pthread lock, shared by the targets.
        .target(name: "SystemLibrary"),
        .target(name: "BatchNormKit", dependencies: ["CBatchNormKernels", "SystemLibrary"]),
        // The plain `Double` reference every kernel is checked against. A regular target
        // (not test-only) so that `bnkit selftest` can use it from a release build.
        .target(name: "BatchNormReference", dependencies: ["BatchNormKit"]),
        // CUDA backend: libcuda and libnvrtc are opened with dlopen at run time; nothing CUDA
        // is needed to build, and the package never links against CUDA.
        .target(
            name: "BatchNormCUDA", dependencies: ["BatchNormKit", "SystemLibrary"],
            resources: [.embedInCode("Kernels/BatchNormKernels.cu")]),
        // GPU-versus-CPU-versus-reference comparisons shared by `bnkit selftest` and the tests.
        .target(name: "BatchNormCUDAChecks", dependencies: ["BatchNormKit", "BatchNormCUDA", "BatchNormReference"]),
        .executableTarget(
            name: "bnkit",
            dependencies: [
                "BatchNormKit",
                "BatchNormReference",
                "BatchNormCUDA",
                "BatchNormCUDAChecks",
                "CBenchmarkKernels", // the bandwidth loops of the bench roofline
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "BatchNormKitTests",
            dependencies: ["BatchNormKit", "BatchNormReference", "CBatchNormKernels", "CBenchmarkKernels"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "BatchNormCUDATests",
            dependencies: ["BatchNormKit", "BatchNormCUDA", "BatchNormCUDAChecks", "BatchNormReference"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
