import BatchNormCore

/// A state file of either format, safetensors or PuzzleLib HDF5, recognized by its first
/// bytes: the BatchNorm modules it holds, and every other tensor by name.
///
/// Opening reads what the format needs to list its contents and no more: a safetensors
/// header is validated against the file's size before its data are read; an HDF5 file's
/// structure is read and its datasets only when a module is asked for.
///
/// ```swift
/// let file = try StateFile(contentsOfFile: "model.hdf")
/// print(file.moduleNames)                       // ["seq.bn1", "seq.bn2"]
/// let bn1 = try file.module("seq.bn1", maps: 4, rank: 5)
/// ```
public struct StateFile {
    /// One BatchNorm module's state as stored under `name`.
    public struct ModuleState: Equatable, Sendable {
        /// The key prefix (safetensors) or PuzzleLib module name (HDF5): `"seq.bn1"`, or `""`
        /// for bare keys / an unnamed PuzzleLib module.
        public var name: String
        /// The values.
        public var state: BatchNormState
        /// The data rank of PuzzleLib's parameter shape `(1, C, 1, ...)` (2 for `BatchNorm`
        /// to 5 for `BatchNorm3D`), or `nil` where the format does not say (safetensors `[C]`).
        public var rank: Int?
        /// `false` for a module saved with `affine: false`: no `weight` and `bias` in safetensors,
        /// the `affine` = 0 attribute on `links/<name>.scale` in a PuzzleLib file (see
        /// ``StateFileFormat/puzzleLibHDF5``); scale and bias are then 1 and 0 (PuzzleLib stores
        /// them so). Preserved by ``serialized(_:format:)`` in both formats.
        public var affine: Bool

        /// Creates a module entry.
        public init(name: String, state: BatchNormState, rank: Int? = nil, affine: Bool = true) {
            self.name = name
            self.state = state
            self.rank = rank
            self.affine = affine
        }
    }

    /// A tensor or dataset of the file: name, shape and element type.
    public struct Entry: Equatable, Sendable {
        /// The safetensors key or the HDF5 dataset path (`"params/0"`).
        public var name: String
        /// The extents (`[]` for a scalar).
        public var shape: [Int]
        /// The element type in the format's words (`"F32"`, `"float32"`, ...).
        public var dataType: String
    }

    /// The file's format.
    public let format: StateFileFormat
    /// The path it was read from, or `nil` when parsed from memory (named in errors).
    public let path: String?
    /// The names of the BatchNorm modules it holds, sorted: the prefixes of the
    /// `running_mean` keys (safetensors) or the names of the `attrs/<name>.mean` datasets
    /// (PuzzleLib HDF5).
    public let moduleNames: [String]
    /// Every tensor (safetensors) or dataset (HDF5), sorted by name.
    public let entries: [Entry]

    enum Content {
        case safeTensors(SafeTensorsFile)
        case hdf5(HDF5File)
    }
    let content: Content

    /// Opens the state file at `path`, of either format whatever its extension.
    /// - Throws: ``FileIOError``; ``StateFileError`` (``StateFileError/Problem/notAStateFile(contents:)``)
    ///   naming what the file holds when it is neither format; ``SafeTensorsError`` or
    ///   ``HDF5Error`` when it is malformed.
    public init(contentsOfFile path: String) throws {
        let reader = try FileReader(path: path)
        let format: StateFileFormat
        do {
            format = try StateFileFormat.detect(size: reader.size) { try reader.read(at: $0, count: $1) }
        } catch var error as StateFileError {
            error.file = path
            throw error
        }
        switch format {
        case .safeTensors: self.init(.safeTensors(try SafeTensorsFile(contentsOfFile: path)), path: path)
        case .puzzleLibHDF5: self.init(.hdf5(try HDF5File(source: HDF5Source(file: reader))), path: path)
        }
    }

    /// Parses a state file of either format held in memory.
    /// - Throws: As ``init(contentsOfFile:)``, without a file name.
    public init(parsing bytes: [UInt8]) throws {
        switch try StateFileFormat.detect(size: bytes.count, read: { Array(bytes[$0..<($0 + $1)]) }) {
        case .safeTensors: self.init(.safeTensors(try SafeTensorsFile(parsing: bytes)), path: nil)
        case .puzzleLibHDF5: self.init(.hdf5(try HDF5File(parsing: bytes)), path: nil)
        }
    }

    init(_ content: Content, path: String?) {
        self.content = content
        self.path = path
        switch content {
        case .safeTensors(let file):
            format = .safeTensors
            entries = file.tensors.keys.sorted().map {
                Entry(name: $0, shape: file.tensors[$0]!.shape, dataType: file.tensors[$0]!.dataType.rawValue)
            }
            moduleNames = StateFileRecord.moduleNames(safeTensors: file)
        case .hdf5(let file):
            format = .puzzleLibHDF5
            entries = file.datasets.map { Entry(name: $0.path, shape: $0.shape, dataType: $0.dataType.description) }
            moduleNames = StateFileRecord.moduleNames(puzzleLib: file)
        }
    }

    /// The state of module `name`, checked against what the module loading it expects.
    ///
    /// Checks, in every format: the entries exist (a missing module lists ``moduleNames``),
    /// have the format's shape and a floating-point type, agree on `C` (and with `maps`), and
    /// with `rank` where the file states one; every value is finite and every variance
    /// non-negative; for `affine: false`, scale and bias are absent or exactly 1 and 0.
    ///
    /// - Parameters:
    ///   - name: Key prefix or PuzzleLib module name (see ``ModuleState/name``).
    ///   - maps: The expected channel count, or `nil` to take it from the file.
    ///   - rank: The module's data rank, checked against a PuzzleLib parameter shape; `nil`: any.
    ///   - affine: The module's `affine` flag.
    /// - Throws: ``StateFileError`` naming the file and key; ``HDF5Error`` for a dataset
    ///   that cannot be read.
    public func module(_ name: String, maps: Int? = nil, rank: Int? = nil, affine: Bool = true) throws -> ModuleState {
        try read(name, maps: maps, rank: rank, affine: affine)
    }

    /// Every BatchNorm module of the file, in ``moduleNames`` order, each as stored: a
    /// safetensors module without `weight` and `bias`, or a PuzzleLib module marked
    /// `affine` = 0, is read as not affine.
    /// - Throws: As ``module(_:maps:rank:affine:)``.
    public func modules() throws -> [ModuleState] {
        try modules(named: moduleNames)
    }

    /// The modules `names`, each as stored (see ``modules()``).
    /// - Throws: As ``module(_:maps:rank:affine:)``.
    public func modules(named names: [String]) throws -> [ModuleState] {
        try names.map { try read($0, maps: nil, rank: nil, affine: nil) }
    }

    /// Module `name`; `affine: nil` takes the flag from the file.
    private func read(_ name: String, maps: Int?, rank: Int?, affine: Bool?) throws -> ModuleState {
        do {
            let record: StateFileRecord
            switch content {
            case .safeTensors(let file):
                record = try StateFileRecord(safeTensors: file, prefix: name, modules: moduleNames)
            case .hdf5(let file): record = try StateFileRecord(puzzleLib: file, name: name, modules: moduleNames)
            }
            let affine = affine ?? record.affine
            return ModuleState(
                name: name, state: try record.state(maps: maps, rank: rank, affine: affine), rank: record.rank,
                affine: affine)
        } catch var error as StateFileError {
            error.file = path
            throw error
        }
    }

    /// The entries that belong to no BatchNorm module of ``moduleNames`` (a model's
    /// convolution weights, a PuzzleLib blueprint, ...).
    public func otherEntries() -> [Entry] {
        var used = Set<String>()
        for name in moduleNames {
            switch content {
            case .safeTensors:
                for field in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"] {
                    used.insert(BatchNormState.key(field, prefix: name))
                }
            case .hdf5(let file):
                used.formUnion(StateFileRecord.puzzleLibPaths(file, name: name))
            }
        }
        return entries.filter { !used.contains($0.name) }
    }

    /// The bytes of a file holding `modules` in `format`.
    ///
    /// safetensors: PyTorch's keys under each module's name (`weight` and `bias` left out
    /// for a module whose ``ModuleState/affine`` is `false`). PuzzleLib HDF5: the layout of
    /// `Module.save` (uncompressed contiguous datasets), `numOfProps` not stored, a
    /// non-affine module's scale and bias stored as 1 and 0 and marked with the `affine` = 0
    /// attribute on its scale link.
    ///
    /// - Throws: ``StateFileError/Problem/invalidValue(key:expected:actual:)`` for an HDF5
    ///   module name with `/` or NUL (HDF5 names cannot hold them).
    public static func serialized(_ modules: [ModuleState], format: StateFileFormat) throws -> [UInt8] {
        switch format {
        case .safeTensors:
            var file = SafeTensorsFile()
            for module in modules {
                file.tensors.merge(module.state.safeTensors(prefix: module.name, includeAffine: module.affine).tensors)
                { $1 }
            }
            return file.serialized()
        case .puzzleLibHDF5:
            if let bad = modules.first(where: { $0.name.contains("/") || $0.name.utf8.contains(0) }) {
                throw StateFileError(
                    .invalidValue(
                        key: bad.name, expected: "a PuzzleLib module name without '/' or NUL", actual: "'\(bad.name)'"))
            }
            return StateFileRecord.puzzleLibFile(modules)
        }
    }

    /// Writes `modules` to `path` atomically (temporary file, `fsync`, `rename`).
    /// - Parameters:
    ///   - modules: The modules to save, each under its own name.
    ///   - path: The destination file.
    ///   - format: The format; `nil` picks it from the extension (``StateFileFormat/init(forPath:)``).
    /// - Throws: ``FileIOError``, or the errors of ``serialized(_:format:)``; the destination is
    ///   unchanged on failure.
    public static func write(_ modules: [ModuleState], toFile path: String, format: StateFileFormat? = nil) throws {
        try AtomicFileWriter.write(try serialized(modules, format: format ?? StateFileFormat(forPath: path)), to: path)
    }
}
