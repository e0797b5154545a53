import ArgumentParser
import BatchNormKit

/// `bnkit calibrate`: re-estimates running statistics with training-mode forward passes.
struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Re-estimate running statistics over .npy batches (AdaBN, after SWA) and save the state.",
        discussion: """
            Each file is one training batch (float32 or float16 .npy, rank 2 to 5, axes as --layout). \
            By default the statistics start afresh: scale and bias come from --state (or 1 and 0 \
            without it), the running mean and variance are reset to 0 and 1 and the counter \
            (num_batches_tracked) to 0, and with the default factors (--init-factor 1, \
            --min-factor 0) the result is the plain average of the batches' means and unbiased \
            variances, as PyTorch's momentum=None and torch.optim.swa_utils.update_bn. With \
            --continue, the state's running statistics and counter are kept and updated instead. \
            The module's scale and bias are never changed. The output is written atomically, with \
            the same key prefix. A progress bar is drawn on stderr when it is a terminal.
            """)

    @Argument(help: "Batches, one .npy file each.")
    var files: [String] = []

    @Option(help: "Number of channels C.")
    var maps: Int

    @Option(help: "State to start from (.safetensors): scale and bias, and with --continue the statistics.")
    var state: String?

    @Option(name: [.short, .customLong("output")], help: "Output state file (.safetensors).")
    var output: String

    @Flag(name: .customLong("continue"), help: "Keep and update the state's running statistics and counter instead of resetting them.")
    var continueStatistics = false

    @OptionGroup var options: StateOptions

    @Option(name: .customLong("init-factor"), help: "Running-average factor numerator: factor = max(init-factor / n, min-factor).")
    var initFactor: Double = 1

    @Option(name: .customLong("min-factor"), help: "Lower bound of the factor (0: cumulative average; PyTorch's momentum, e.g. 0.1, for an exponential average).")
    var minFactor: Double = 0

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("at least one .npy batch is required") }
        guard maps >= 1 else { throw ValidationError("--maps must be >= 1, got \(maps)") }
        guard !continueStatistics || state != nil else { throw ValidationError("--continue needs --state") }
    }

    func run() throws {
        var initial = BatchNormState(scale: Array(repeating: 1, count: maps), bias: Array(repeating: 0, count: maps),
                                     mean: Array(repeating: 0, count: maps), var: Array(repeating: 1, count: maps),
                                     numOfProps: 0)
        if let state {
            let loaded = try readState(path: state, prefix: options.prefix, maps: maps)
            initial.scale = loaded.scale
            initial.bias = loaded.bias
            if continueStatistics {
                initial = loaded
            }
        }
        var module: BatchNormND?
        let progress = ProgressBar(total: files.count, label: "calibrate")
        var values = 0
        for (index, file) in files.enumerated() {
            try withContext(file) {
                // float16 batches run natively (statistics in double, no float32 copy).
                let batch = try Tensor(contentsOfNPYFile: file, fileLayout: options.layout)
                if module == nil {
                    let created = try makeModule(rank: batch.rank, maps: maps, epsilon: options.epsilon,
                                                 initFactor: initFactor, minFactor: minFactor)
                    try created.load(initial)
                    created.trainMode()
                    module = created
                }
                _ = try module!(batch)
                module!.reset()
                values += batch.elementCount / maps
            }
            progress.update(index + 1)
        }
        progress.finish()
        try withContext(output) { try module!.saveState(toFile: output, prefix: options.prefix) }
        print("calibrated \(maps) maps over \(files.count) batch\(files.count == 1 ? "" : "es") (\(values) values per channel); "
              + "num_batches_tracked \(module!.numOfProps); wrote \(output)")
    }
}
