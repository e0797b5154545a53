import BatchNormCore

/// A state file that is well formed (or not a state file at all) but does not hold the
/// module state asked for: the file is named (when read from a path), with the key and the
/// expected and actual values.
///
/// Format errors, a file's syntax, are apart: ``SafeTensorsError`` for safetensors,
/// ``HDF5Error`` for HDF5. Loading a state never changes the module when it throws.
public struct StateFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public enum Problem: Equatable, Sendable {
        /// The file is neither safetensors nor HDF5; `contents` says what its first bytes
        /// are (`"a NumPy array (.npy)"`, `"JSON text"`, `"an empty file"`, ...).
        case notAStateFile(contents: String)
        /// No BatchNorm module `name` (a key prefix) is in the file; `modules` lists the
        /// names of those it holds.
        case missingModule(name: String, modules: [String])
        /// Module `key`'s entry is absent although the module's others are there.
        case missingKey(key: String, available: [String])
        /// An entry has the wrong shape (`expected` in words, such as `"[4]"` or `"(1, C, 1, 1, 1)"`).
        case shapeMismatch(key: String, expected: String, actual: [Int])
        /// An entry's channel count differs from the module's `maps` or from the other entries'.
        case mapsMismatch(key: String, expected: Int, actual: Int)
        /// A PuzzleLib entry of shape `(1, C, 1, ...)` has another rank than the module's data.
        case rankMismatch(key: String, expected: Int, actual: Int)
        /// An entry's element type cannot be read as what the module stores.
        case dataTypeMismatch(key: String, expected: String, actual: String)
        /// `key[index]` is NaN or infinite.
        case nonFiniteValue(key: String, index: Int, value: Float)
        /// `key[index]`, a running variance, is negative.
        case negativeVariance(key: String, index: Int, value: Float)
        /// An `affine: false` module's scale or bias in the file is not exactly 1 or 0:
        /// such a module never applies them, so loading them would silently change it.
        case nonAffineParameter(key: String, index: Int, expected: Float, actual: Float)
        /// Another value outside its domain (a negative counter, a link to no dataset).
        case invalidValue(key: String, expected: String, actual: String)
    }

    /// The file's path, or `nil` for a file parsed from memory.
    public var file: String?
    /// What is wrong.
    public var problem: Problem

    /// Creates an error about `file`.
    public init(file: String? = nil, _ problem: Problem) {
        self.file = file
        self.problem = problem
    }

    /// The key concerned, or `nil` (a file that is not a state file, a missing module).
    public var key: String? {
        switch problem {
        case .notAStateFile, .missingModule: nil
        case .missingKey(let key, _), .shapeMismatch(let key, _, _), .mapsMismatch(let key, _, _),
            .rankMismatch(let key, _, _), .dataTypeMismatch(let key, _, _), .nonFiniteValue(let key, _, _),
            .negativeVariance(let key, _, _), .nonAffineParameter(let key, _, _, _), .invalidValue(let key, _, _):
            key
        }
    }

    /// `<file>: <what is wrong>`, naming the key, the expected and the actual value.
    public var description: String {
        let text: String
        switch problem {
        case .notAStateFile(let contents):
            text = "not a state file: it holds \(contents) (expected safetensors or PuzzleLib HDF5)"
        case .missingModule(let name, let modules):
            let listed = modules.isEmpty ? "none" : Self.list(modules.map { "'\($0)'" })
            text =
                "no BatchNorm module \(name.isEmpty ? "with bare keys (prefix '')" : "'\(name)'") (modules in the file: \(listed))"
        case .missingKey(let key, let available):
            text = "missing key '\(key)' (available: \(available.isEmpty ? "none" : Self.list(available)))"
        case .shapeMismatch(let key, let expected, let actual):
            text = "'\(key)' has shape \(actual) (expected: \(expected))"
        case .mapsMismatch(let key, let expected, let actual):
            text = "'\(key)' has \(actual) maps (expected: \(expected))"
        case .rankMismatch(let key, let expected, let actual):
            text = "'\(key)' has rank \(actual) (expected: \(expected), the module's data rank)"
        case .dataTypeMismatch(let key, let expected, let actual):
            text = "'\(key)' has dtype \(actual) (expected: \(expected))"
        case .nonFiniteValue(let key, let index, let value):
            text = "'\(key)'[\(index)] is \(value) (expected a finite value)"
        case .negativeVariance(let key, let index, let value):
            text = "'\(key)'[\(index)] is \(value) (expected a variance >= 0)"
        case .nonAffineParameter(let key, let index, let expected, let actual):
            text =
                "'\(key)'[\(index)] is \(actual) (expected: \(expected), the module is not affine and never applies it)"
        case .invalidValue(let key, let expected, let actual):
            text = "'\(key)' must be \(expected), got \(actual)"
        }
        return file.map { "\($0): \(text)" } ?? text
    }

    /// The first 20 items joined with ", ", and how many more.
    private static func list(_ items: [String]) -> String {
        items.count <= 20
            ? items.joined(separator: ", ")
            : items.prefix(20).joined(separator: ", ") + ", ... (\(items.count - 20) more)"
    }
}
