// swift-tools-version: 6.0
// libFuzzer targets for BatchNormKit's file parsers, kept out of the main package so that
// they never become products a client sees. Build and run them with Fuzz/run (its header
// gives the usage), which builds with `swift build --sanitize=fuzzer
// --sanitize=address -Xswiftc -parse-as-library`.
import PackageDescription

/// One executable per parser: `Sources/Fuzz<Name>/Fuzz<Name>.swift` defines
/// `LLVMFuzzerTestOneInput`. Adding a target is one name here, one source file and one line
/// of seeds in Fuzz/run.
let targets = ["NumPy", "SafeTensors", "StateLoading", "HDF5RoundTrip"]

let package = Package(
    name: "BatchNormKitFuzz",
    dependencies: [.package(name: "BatchNormKit", path: "..")],
    targets: targets.map {
        .executableTarget(name: "Fuzz\($0)", dependencies: [.product(name: "BatchNormKit", package: "BatchNormKit")])
    },
    swiftLanguageModes: [.v6]
)
