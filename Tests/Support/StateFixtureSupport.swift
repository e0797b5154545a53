import BatchNormKit
import Foundation

/// Paths and comparisons shared by the test targets' fixture-based tests.
public enum StateFixtures {
    /// `Tests/Fixtures` in the source tree: the committed fixtures, each with the script that
    /// made it (scripts/make_*_fixtures.py).
    public static var directory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }

    /// The path of fixture `name`.
    public static func path(_ name: String) -> String { directory + "/" + name }

    /// The bytes of fixture `name`.
    public static func bytes(_ name: String) throws -> [UInt8] { try FileReader.readAll(path: path(name)) }

    /// A fresh empty directory for files written by a test.
    public static func temporaryDirectory() throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bnkit-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url.path
    }

    /// Largest `|a − b| / max(|b|, floor)` over the elements (relative error, with a floor so
    /// that values near zero are compared on the scale of the data).
    public static func maximumRelativeError(_ actual: [Float], _ expected: [Float], floor: Double = 1e-3) -> Double {
        precondition(actual.count == expected.count)
        var worst = 0.0
        for (a, b) in zip(actual, expected) {
            let error = abs(Double(a) - Double(b)) / max(abs(Double(b)), floor)
            worst = max(worst, error.isNaN ? .infinity : error)
        }
        return worst
    }

    /// The header of a version 1.0 `.npy` file with `descr` and `shape` (a Python tuple),
    /// padded as NumPy pads it; no data.
    public static func npyHeader(shape: String, descr: String = "<f4") -> [UInt8] {
        let dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }".utf8)
        let total = (10 + dict.count + 1 + 63) / 64 * 64
        let text = dict + Array(repeating: 0x20, count: total - 10 - dict.count - 1) + [0x0A]
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(text.count & 0xFF), UInt8(text.count >> 8)] + text
    }

    /// The state of the PyTorch-trained fixture, as PyTorch wrote it.
    public static let torchStateName = "state_torch_bn3d_c3.safetensors"
}
