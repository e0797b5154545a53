import ArgumentParser
import BatchNormKit

/// `bnkit convert`: the BatchNorm modules of a state file, written in the other format.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert the BatchNorm modules of a state file between safetensors and PuzzleLib HDF5.",
        discussion: """
            Every BatchNorm module of IN (or only the one named --prefix) is written to OUT, \
            atomically. safetensors uses PyTorch's keys under each module's name \
            (<name>.weight, .bias, .running_mean, .running_var, .num_batches_tracked); PuzzleLib HDF5 \
            the layout of Module.save (links/<name>.scale and .bias indexing params/<i>, \
            attrs/<name>.mean and .var, float32 of shape (1, C, 1, ...)). The format of IN is \
            recognized by content, that of OUT by its extension (.hdf, .h5, .hdf5: HDF5; else \
            safetensors) unless --format says. PuzzleLib does not save numOfProps: converted from \
            HDF5, num_batches_tracked is 0. safetensors has no parameter rank: --rank gives it for \
            HDF5 output. Tensors that belong to no BatchNorm module are left out, with a note on stderr.
            """)

    @Argument(help: "Input state file (.safetensors or PuzzleLib .hdf).")
    var input: String

    @Argument(help: "Output state file.")
    var output: String

    @Option(
        help: "Convert only the module with this name (key prefix; '' for bare keys or an unnamed PuzzleLib module).")
    var prefix: String?

    @Option(
        help:
            "Data rank of the PuzzleLib parameter shape (1, C, 1, ...) when the input has none: 2 (BatchNorm) to 5 (BatchNorm3D)."
    )
    var rank: Int = 5

    @Option(help: "Output format: safetensors or hdf5 (default: from the output's extension).")
    var format: StateFileFormat?

    func validate() throws {
        guard (2...5).contains(rank) else { throw ValidationError("--rank must be 2 to 5, got \(rank)") }
    }

    func run() throws {
        try checkOutput(output, isNotAnyOf: [("the input", input)])
        let source = try withContext(input) { try StateFile(contentsOfFile: input) }
        var modules = try withContext(input) { () -> [StateFile.ModuleState] in
            if let prefix { return try source.modules(named: [prefix]) }
            return try source.modules()
        }
        guard !modules.isEmpty else { throw CommandFailure("\(input): holds no BatchNorm module (nothing to convert)") }
        for index in modules.indices where modules[index].rank == nil { modules[index].rank = rank }
        let outputFormat = format ?? StateFileFormat(forPath: output)
        let others = source.otherEntries()
        if prefix == nil, !others.isEmpty {
            let names = others.prefix(8).map(\.name).joined(separator: ", ") + (others.count > 8 ? ", ..." : "")
            standardError(
                "note: left out \(others.count) tensor\(others.count == 1 ? "" : "s") of no BatchNorm module: \(names)\n"
            )
        }
        try withContext(output) { try StateFile.write(modules, toFile: output, format: outputFormat) }
        let names = modules.prefix(8).map { "'\($0.name)'" } + (modules.count > 8 ? ["..."] : [])
        print(
            "converted \(modules.count) BatchNorm module\(modules.count == 1 ? "" : "s") (\(names.joined(separator: ", "))) "
                + "from \(source.format) to \(outputFormat); wrote \(output)")
    }
}

extension StateFileFormat: ExpressibleByArgument {}
