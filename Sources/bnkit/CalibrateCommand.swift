import ArgumentParser
import BatchNormKit

/// `bnkit calibrate`: re-estimates running statistics with training-mode forward passes.
struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Re-estimate running statistics over .npy batches (AdaBN, after SWA) and save the state.",
        discussion: """
            Each file is one training batch (float16, float32 or float64 .npy, rank 2 to 5, axes as \
            --layout). The number of channels is taken from --state, or else from the first batch's \
            channel axis; --maps, when given, must agree, and every batch is checked against it \
            (and against the first batch's rank) before it is used. \
            By default the statistics start afresh: scale and bias come from --state (or 1 and 0 \
            without it), the running mean and variance are reset to 0 and 1 and the counter \
            (num_batches_tracked) to 0, and with the default factors (--init-factor 1, \
            --min-factor 0) the result is the plain average of the batches' means and unbiased \
            variances, as PyTorch's momentum=None and torch.optim.swa_utils.update_bn. With \
            --continue, the state's running statistics and counter are kept and updated instead. \
            The module's scale and bias are never changed. The output is written atomically, with \
            the same key prefix. A progress bar is drawn on stderr when it is a terminal.
            """)

    @Argument(help: "Batches, one .npy file each (at least one).")
    var files: [String]

    @Option(parsing: .unconditional, help: "Number of channels C (default: from --state or the first batch).")
    var maps: Int?

    @Option(help: "State to start from (.safetensors): scale and bias, and with --continue the statistics.")
    var state: String?

    @Option(name: [.short, .customLong("output")], help: "Output state file (.safetensors).")
    var output: String

    @Flag(
        name: .customLong("continue"),
        help: "Keep and update the state's running statistics and counter instead of resetting them.")
    var continueStatistics = false

    @OptionGroup var options: StateOptions

    @Option(
        name: .customLong("init-factor"), parsing: .unconditional,
        help: "Running-average factor numerator, in [0, 1]: factor = max(init-factor / n, min-factor).")
    var initFactor: Double = 1

    @Option(
        name: .customLong("min-factor"), parsing: .unconditional,
        help:
            "Lower bound of the factor, in [0, 1] (0: cumulative average; PyTorch's momentum, e.g. 0.1, for an exponential average)."
    )
    var minFactor: Double = 0

    @Flag(help: "Print nothing on success.")
    var quiet = false

    /// Everything that needs no file, before anything is read or allocated.
    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("at least one .npy batch is required") }
        if let maps { guard maps >= 1 else { throw ValidationError("--maps must be >= 1, got \(maps)") } }
        try validateModuleArguments(epsilon: options.epsilon, initFactor: initFactor, minFactor: minFactor)
        guard !continueStatistics || state != nil else { throw ValidationError("--continue needs --state") }
    }

    @Flag(
        help:
            "Under mpirun: step k's batch is the union of every rank's k-th file (rank r takes files r, r + size, ...); rank 0 writes the output."
    )
    var mpi = false

    func run() throws {
        try checkOutput(output, isNotAnyOf: files.map { ("the batch", $0) } + (state.map { [("the state", $0)] } ?? []))
        if mpi { return try runMPI() }
        let setup = try prepare()
        let module = try setup.loadedModule(self)
        let progress = ProgressBar(total: files.count, label: "calibrate")
        var values = 0
        for (index, file) in files.enumerated() {
            let shape = index == 0 ? setup.first : try BatchShape(file: file, layout: options.layout)
            try setup.check(shape)
            try withContext(file) {
                let batch = try readBatch(file)
                _ = try module(batch)
                module.reset()
                values += batch.elementCount / setup.maps
            }
            if !quiet, let note = conversionNote(shape.header, file: file) { standardError(note) }
            progress.update(index + 1)
        }
        progress.finish()
        try withContext(output) { try module.saveState(toFile: output, prefix: options.prefix) }
        guard !quiet else { return }
        print(
            "calibrated \(setup.maps) maps over \(files.count) batch\(files.count == 1 ? "" : "es") (\(values) values per channel); "
                + "num_batches_tracked \(module.numOfProps); wrote \(output)")
    }
}

/// What a calibration needs before the first batch is read: the channel count (from
/// `--maps`, the state or the first batch's header, in that order), the first batch's shape,
/// and the state it starts from.
struct CalibrationSetup {
    /// C.
    let maps: Int
    /// Where ``maps`` came from, for messages.
    let source: String
    /// The first batch's header: its rank is every batch's rank.
    let first: BatchShape
    /// Scale and bias from `--state` (1 and 0 without it) with fresh running statistics, or
    /// the whole state with `--continue`.
    let initial: BatchNormState

    /// Throws, naming the file, unless `shape` has the first batch's rank and ``maps`` channels.
    func check(_ shape: BatchShape) throws {
        try shape.check(maps: maps, rank: first.rank, source: source)
    }

    /// The family member of the batches' rank with ``initial`` loaded, in training mode.
    func loadedModule(_ command: CalibrateCommand) throws -> BatchNormND {
        let module = try withContext(first.file) {
            try makeModule(
                rank: first.rank, maps: maps, epsilon: command.options.epsilon,
                initFactor: command.initFactor, minFactor: command.minFactor)
        }
        try withContext(command.state ?? command.output) { try module.load(initial) }
        module.trainMode()
        return module
    }
}

extension CalibrateCommand {
    /// Reads the state and the first batch's header and checks them against each other and
    /// `--maps`, before any batch data is read or anything sized by them is allocated.
    func prepare() throws -> CalibrationSetup {
        let loaded = try state.map { try readState(path: $0, prefix: options.prefix, maps: self.maps) }
        let first = try BatchShape(file: files[0], layout: options.layout)
        let maps = self.maps ?? loaded?.maps ?? first.channels
        let source = self.maps != nil ? "--maps" : loaded != nil ? "the state" : "the first batch"
        try first.check(maps: maps, rank: first.rank, source: source)
        var initial = BatchNormState(
            scale: Array(repeating: 1, count: maps), bias: Array(repeating: 0, count: maps),
            mean: Array(repeating: 0, count: maps), var: Array(repeating: 1, count: maps),
            numOfProps: 0)
        if let loaded {
            initial.scale = loaded.scale
            initial.bias = loaded.bias
            if continueStatistics { initial = loaded }
        }
        return CalibrationSetup(maps: maps, source: source, first: first, initial: initial)
    }

    /// One batch in the layout of `--layout` and the file's data type (float16 runs natively,
    /// float64 is read as float32).
    func readBatch(_ file: String) throws -> Tensor {
        try Tensor(contentsOfNPYFile: file, fileLayout: options.layout)
    }
}

/// The header of one batch file and its logical shape, read before its data.
struct BatchShape {
    let file: String
    let header: NumPyArrayHeader
    let shape: [Int]

    init(file: String, layout: TensorLayout) throws {
        self.file = file
        header = try withContext(file) { try readNumPyHeader(try FileReader(path: file)) }
        shape = Tensor.logicalShape(ofPhysical: header.shape, layout: layout)
    }

    var rank: Int { shape.count }
    /// The channel axis's extent, 0 for rank < 2.
    var channels: Int { shape.count >= 2 ? shape[1] : 0 }

    /// Throws, naming the file, unless the batch has rank 2 to 5, `rank` and `maps` channels
    /// (`source` says where `maps` came from).
    func check(maps: Int, rank: Int, source: String) throws {
        guard (2...5).contains(shape.count) else {
            throw CommandFailure(
                "\(file): data of rank \(shape.count) (shape \(header.shape)) is not supported "
                    + "(expected rank 2 to 5: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W))")
        }
        guard shape.count == rank else {
            throw CommandFailure(
                "\(file): data of rank \(shape.count) (shape \(header.shape)), expected rank \(rank) as the first batch"
            )
        }
        guard channels == maps else {
            throw CommandFailure(
                "\(file): array of shape \(header.shape) has \(channels) channels, expected \(maps) (from \(source))")
        }
    }
}
