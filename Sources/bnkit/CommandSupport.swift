import ArgumentParser
import BatchNormCUDA
import BatchNormKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failure of a command, with a message ready for `bnkit: error: ...` and, for `--verbose`,
/// detail lines printed under it (such as every path searched for a library).
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    var details: [String] = []
    init(_ description: String, details: [String] = []) {
        self.description = description
        self.details = details
    }
}

/// A failure about the data of one input file, whose message `withContext` prefixes with
/// the file's name (a ``CommandFailure`` is passed through as it is).
struct InputFailure: Error, CustomStringConvertible {
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
        throw CommandFailure(error.description) // names the path already
    } catch let error as StateFileError where error.file != nil {
        throw CommandFailure(error.description) // names the path already
    } catch {
        throw CommandFailure("\(context): \(error)")
    }
}

/// Throws unless `output` is another file than every one of `inputs` (each a description
/// such as `"the state"` and a path), compared by device and inode after following links, so
/// that a hard link or a symbolic link to an input is caught too. An output that does not
/// exist yet is no input; an input that cannot be examined is left to the read that follows.
func checkOutput(_ output: String, isNotAnyOf inputs: [(description: String, path: String)]) throws {
    var target = stat()
    guard stat(output, &target) == 0 else { return }
    for input in inputs {
        var source = stat()
        guard stat(input.path, &source) == 0 else { continue }
        if source.st_dev == target.st_dev && source.st_ino == target.st_ino {
            throw CommandFailure(
                "output \(output) is the same file as \(input.description) \(input.path): refusing to overwrite an input; choose another output"
            )
        }
    }
}

/// `--layout`: the library's layout names (``TensorLayout/init(name:)``), case-insensitive:
/// `ncdhw`, `nchw`, `ncl`, `nc`, `channels_first` (channels on axis 1) or `ndhwc`, `nhwc`,
/// `nlc`, `channels_last`, `channels_last_3d` (channels last).
@Sendable func parseLayout(_ text: String) throws -> TensorLayout {
    guard let layout = TensorLayout(name: text) else {
        throw ValidationError(
            "expected ncdhw, nchw, ncl, nc, channels_first, ndhwc, nhwc, nlc, channels_last or channels_last_3d")
    }
    return layout
}

/// The help text of every `--layout` option.
let layoutHelp = ArgumentHelp(
    "Axis order of the arrays in the files: ncdhw, nchw, ncl, nc or channels_first (channels on axis 1); "
        + "ndhwc, nhwc, nlc, channels_last or channels_last_3d (channels last). Default: ncdhw.", valueName: "layout")

/// Options of the commands that read arrays and a state file: `--layout`, `--prefix`, `--epsilon`.
struct StateOptions: ParsableArguments {
    @Option(help: layoutHelp, transform: parseLayout)
    var layout: TensorLayout = .channelsFirst

    @Option(help: "Key prefix in the state file ('' for bare keys, e.g. 'layer1.bn').")
    var prefix: String = ""

    @Option(parsing: .unconditional, help: "Epsilon added to the variance (not stored in state files).")
    var epsilon: Double = 1e-5

    func validate() throws {
        try validateModuleArguments(epsilon: epsilon)
    }
}

/// Checks `--epsilon`, `--init-factor` and `--min-factor` by the library's own rule (an
/// `empty:` module allocates nothing), naming the option.
func validateModuleArguments(epsilon: Double = 1e-5, initFactor: Double = 1, minFactor: Double = 0.1) throws {
    do {
        _ = try BatchNorm(maps: 1, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor, empty: true)
    } catch BatchNormError.invalidArgument(let name, let expected, let actual) {
        let option = ["epsilon": "--epsilon", "initFactor": "--init-factor", "minFactor": "--min-factor"][name] ?? name
        throw ValidationError("\(option) must be \(expected), got \(actual)")
    }
}

extension TensorDataType: ExpressibleByArgument {}

/// Where `normalize` and `bench` compute.
enum ComputeDevice: String, ExpressibleByArgument, CaseIterable {
    case cpu, cuda
}

/// The family member for data of `rank` (2: BatchNorm, ..., 5: BatchNorm3D), scale exactly 1.
func makeModule(
    rank: Int, maps: Int, epsilon: Double, initFactor: Double = 1, minFactor: Double = 0.1,
    inplace: Bool = false, backend: any BatchNormBackend<Tensor> = CPUBackend()
) throws -> BatchNormND {
    guard let family = BatchNormND.familyMember(forDataRank: rank) else {
        throw InputFailure(
            "data of rank \(rank) is not supported (expected rank 2 to 5: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W))"
        )
    }
    var generator = SeededGenerator(seed: 0)
    return try family.init(
        maps: maps, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor, sscale: 0,
        inplace: inplace, backend: backend, using: &generator)
}

/// Checks `--chunk-mb`: finite and > 0.
func validateChunkMegabytes(_ chunkMegabytes: Double) throws {
    guard chunkMegabytes > 0, chunkMegabytes.isFinite else {
        throw ValidationError("--chunk-mb must be > 0, got \(chunkMegabytes)")
    }
}

/// Samples per chunk when a sample holds `sampleElements` values of `bytesPerElement` bytes,
/// for a budget of `chunkMegabytes` MiB: at least one.
func samplesPerChunk(sampleElements: Int, bytesPerElement: Int, chunkMegabytes: Double) -> Int {
    let (sampleBytes, overflow) = sampleElements.multipliedReportingOverflow(by: bytesPerElement)
    guard !overflow, sampleBytes > 0 else { return 1 }
    return max(1, Int(min(chunkMegabytes * 1_048_576, 1e15)) / sampleBytes)
}

/// Reads the header of a `.npy` file and checks that the file holds the data it announces.
func readNumPyHeader(_ reader: FileReader) throws -> NumPyArrayHeader {
    let header = try NumPyArrayHeader(
        parsing: try reader.read(at: 0, count: min(reader.size, NumPyArrayHeader.maximumHeaderLength)))
    try header.checkDataSize(fileSize: reader.size)
    return header
}

/// The one-line note for a file whose elements are converted on reading (`float64` to
/// `float32`), or `nil`.
func conversionNote(_ header: NumPyArrayHeader, file: String) -> String? {
    guard header.storedByteCount != header.dataType.byteCount else { return nil }
    return "bnkit: note: \(file) is float64 ('\(header.descr)'); read as float32 (rounded to nearest)\n"
}

extension CommandFailure {
    /// A CUDA error in one short line; the list of paths tried in ``details``.
    init(cuda error: CUDAError) {
        if case .libraryNotFound(let library, let variable, let searched) = error {
            self.init(
                "CUDA unavailable: could not load \(library); \(searched.count) paths tried "
                    + "(--verbose lists them); set \(variable) to its path",
                details: searched.map { "tried \($0)" })
        } else {
            let lines = error.description.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            self.init(lines[0], details: Array(lines.dropFirst()))
        }
    }
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
        standardError(
            "\r\(label) [\(String(repeating: "#", count: filled))\(String(repeating: " ", count: width - filled))] \(percent)% (\(done)/\(total))"
        )
    }

    /// Ends the line.
    func finish() {
        guard enabled, lastDrawn >= 0 else { return }
        standardError("\n")
    }
}
