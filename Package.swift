// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "BatchNormKit",
    products: [
        .library(name: "BatchNormKit", targets: ["BatchNormKit"]),
        .executable(name: "bnkit", targets: ["bnkit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "BatchNormKit"),
        // The plain `Double` reference every kernel is checked against. A regular target
        // (not test-only) so that `bnkit selftest` can use it from a release build.
        .target(name: "BatchNormReference", dependencies: ["BatchNormKit"]),
        .executableTarget(
            name: "bnkit",
            dependencies: [
                "BatchNormKit",
                "BatchNormReference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "BatchNormKitTests",
            dependencies: ["BatchNormKit", "BatchNormReference"],
            resources: [.copy("Fixtures")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
