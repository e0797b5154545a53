import BatchNormKit
import Foundation

/// Paths and comparisons shared by the state, .npy and CLI tests.
enum StateFixtures {
    /// The copied `Fixtures` folder of the test bundle.
    static var directory: String {
        if let path = Bundle.module.path(forResource: "Fixtures", ofType: nil) { return path }
        return sourceDirectory  // fall back to the source tree
    }

    /// `Tests/BatchNormKitTests/Fixtures` in the source tree (for regenerating golden files).
    static var sourceDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }

    /// The path of fixture `name`.
    static func path(_ name: String) -> String { directory + "/" + name }

    /// The bytes of fixture `name`.
    static func bytes(_ name: String) throws -> [UInt8] { try FileReader.readAll(path: path(name)) }

    /// A fresh empty directory for files written by a test.
    static func temporaryDirectory() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bnkit-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }

    /// Largest `|a − b| / max(|b|, floor)` over the elements (relative error, with a floor so
    /// that values near zero are compared on the scale of the data).
    static func maximumRelativeError(_ actual: [Float], _ expected: [Float], floor: Double = 1e-3) -> Double {
        precondition(actual.count == expected.count)
        var worst = 0.0
        for (a, b) in zip(actual, expected) {
            let error = abs(Double(a) - Double(b)) / max(abs(Double(b)), floor)
            worst = max(worst, error.isNaN ? .infinity : error)
        }
        return worst
    }

    /// The state of the PyTorch-trained fixture, as PyTorch wrote it.
    static let torchStateName = "state_torch_bn3d_c3.safetensors"
}
