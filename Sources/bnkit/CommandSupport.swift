import ArgumentParser
import BatchNormKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failure of a command, with a message ready for `bnkit: error: ...`.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Writes `text` to stderr unbuffered.
func standardError(_ text: String) {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        if written < 0 && errno == EINTR { continue }
        guard written > 0 else { return }
        bytes = bytes.dropFirst(written)
    }
}

/// Runs `body`, prefixing any error's message with `context` (typically a file name).
func withContext<T>(_ context: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as CommandFailure {
        throw error
    } catch let error as FileIOError {
        throw CommandFailure(error.description)  // names the path already
    } catch let error as StateFileError where error.file != nil {
        throw CommandFailure(error.description)  // names the path already
    } catch {
        throw CommandFailure("\(context): \(error)")
    }
}

/// `--layout ncdhw|ndhwc`: how the axes of the arrays in the files are ordered.
enum LayoutArgument: String, ExpressibleByArgument, CaseIterable {
    /// `(N, C, spatial...)`.
    case ncdhw
    /// `(N, spatial..., C)`, channels last.
    case ndhwc

    /// The library's layout.
    var layout: TensorLayout { self == .ncdhw ? .channelsFirst : .channelsLast }
}

/// Options of the commands that read arrays and a state file: `--layout`, `--prefix`, `--epsilon`.
struct StateOptions: ParsableArguments {
    @Option(name: .customLong("layout"), help: "Axis order of the arrays in the files: ncdhw (N, C, spatial...) or ndhwc (N, spatial..., C).")
    var layoutArgument: LayoutArgument = .ncdhw

    /// The library's layout for `--layout`.
    var layout: TensorLayout { layoutArgument.layout }

    @Option(help: "Key prefix in the state file ('' for bare keys, e.g. 'layer1.bn').")
    var prefix: String = ""

    @Option(help: "Epsilon added to the variance (not stored in state files).")
    var epsilon: Double = 1e-5

    func validate() throws {
        guard epsilon > 0, epsilon.isFinite else { throw ValidationError("--epsilon must be finite and > 0, got \(epsilon)") }
    }
}

extension TensorDataType: ExpressibleByArgument {}

/// Where `normalize` and `bench` compute.
enum ComputeDevice: String, ExpressibleByArgument, CaseIterable {
    case cpu, cuda
}

/// The family member for data of `rank` (2: BatchNorm, ..., 5: BatchNorm3D), scale exactly 1.
func makeModule(rank: Int, maps: Int, epsilon: Double, initFactor: Double = 1, minFactor: Double = 0.1,
                inplace: Bool = false, backend: any BatchNormBackend = CPUBackend()) throws -> BatchNormND {
    guard let family = BatchNormND.familyMember(forDataRank: rank) else {
        throw CommandFailure("data of rank \(rank) is not supported (expected rank 2 to 5: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W))")
    }
    var generator = SeededGenerator(seed: 0)
    return try family.init(maps: maps, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor, sscale: 0,
                           inplace: inplace, backend: backend, using: &generator)
}

/// Reads the state under `prefix` (a key prefix or PuzzleLib module name) from a state file
/// of either format; `rank`, when given, must match a PuzzleLib file's parameter rank.
func readState(path: String, prefix: String, maps: Int? = nil, rank: Int? = nil) throws -> BatchNormState {
    try withContext(path) {
        try StateFile(contentsOfFile: path).module(prefix, maps: maps, rank: rank).state
    }
}

/// A text progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar {
    private let total: Int
    private let label: String
    private let enabled: Bool
    private var lastDrawn = -1

    init(total: Int, label: String) {
        self.total = max(total, 1)
        self.label = label
        enabled = isatty(STDERR_FILENO) == 1
    }

    /// Redraws for `done` of `total` units (at most once per percent).
    func update(_ done: Int) {
        guard enabled else { return }
        let percent = done * 100 / total
        guard percent != lastDrawn else { return }
        lastDrawn = percent
        let width = 30, filled = done * width / total
        standardError("\r\(label) [\(String(repeating: "#", count: filled))\(String(repeating: " ", count: width - filled))] \(percent)% (\(done)/\(total))")
    }

    /// Ends the line.
    func finish() {
        guard enabled, lastDrawn >= 0 else { return }
        standardError("\n")
    }
}
