import ArgumentParser
import BatchNormKit

/// `bnkit fold`: an evaluation-mode batch norm folded into the convolution before it.
struct FoldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fold",
        abstract: "Fold an evaluation-mode BatchNorm module into the convolution before it.",
        discussion: """
            Writes OUT, atomically, as STATE with the batch norm under --bn folded into the \
            convolution under --conv: with k = scale/sqrt(var + epsilon), the weight becomes k·W \
            (per output channel) and the bias k·(b − mean) + bias (b = 0 when the convolution has \
            none; the bias is then added), computed in double precision and rounded once. The \
            batch norm's entries are removed and every other entry is copied unchanged. \
            safetensors: the convolution's <conv>.weight and <conv>.bias (PyTorch's keys). \
            PuzzleLib HDF5: the links links/<conv>.W and links/<conv>.b to params/<i> (Conv and \
            Deconv modules); OUT is written uncompressed, and a file holding anything but float32 \
            arrays and integer scalars in groups of the root is refused. OUT has STATE's format.
            """)

    @Argument(help: "State file holding the convolution and the batch norm (.safetensors or PuzzleLib .hdf).")
    var state: String

    @Option(help: "Key prefix (safetensors) or PuzzleLib module name of the convolution.")
    var conv: String

    @Option(help: "Key prefix (safetensors) or PuzzleLib module name of the batch norm.")
    var bn: String

    @Option(name: .shortAndLong, help: "Output state file (same format as STATE).")
    var output: String

    @Flag(help: "The convolution is transposed: its weight is (Cin, Cout/groups, k...).")
    var transposed = false

    @Option(help: "The convolution's groups.")
    var groups: Int = 1

    @Option(parsing: .unconditional, help: "Epsilon of the batch norm (not stored in state files).")
    var epsilon: Double = 1e-5

    func validate() throws {
        guard groups >= 1 else { throw ValidationError("--groups must be >= 1, got \(groups)") }
        try validateModuleArguments(epsilon: epsilon)
    }

    func run() throws {
        try checkOutput(output, isNotAnyOf: [("the state", state)])
        let source = try withContext(state) { try StateFile(contentsOfFile: state) }
        let folded = try withContext(state) {
            try source.folding(
                batchNorm: bn, intoConvolution: conv, epsilon: epsilon, transposed: transposed, groups: groups)
        }
        try withContext(output) { try AtomicFileWriter.write(folded.bytes, to: output) }
        print(
            "folded BatchNorm '\(bn)' into \(transposed ? "transposed " : "")convolution '\(conv)' "
                + "(\(folded.weightKey), \(folded.biasKey)\(folded.addedBias ? " added" : "")); "
                + "removed \(folded.removedKeys.count) entries; wrote \(output)")
    }
}
