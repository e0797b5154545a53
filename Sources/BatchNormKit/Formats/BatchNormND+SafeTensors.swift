extension BatchNormState {
    /// The PyTorch state-dict key of `field` under `prefix`: `"<prefix>.<field>"`, or the bare
    /// field name for an empty prefix (`"weight"`, `"running_mean"`, ...).
    public static func key(_ field: String, prefix: String) -> String {
        prefix.isEmpty ? field : "\(prefix).\(field)"
    }

    /// Reads a state saved with PyTorch's state-dict keys.
    ///
    /// Keys (under `prefix`, see ``key(_:prefix:)``): `weight` (scale), `bias`,
    /// `running_mean`, `running_var`, each of shape `[C]`, and `num_batches_tracked` (an
    /// `I64` scalar of shape `[]` as PyTorch writes it, or `[1]`), which becomes
    /// ``numOfProps`` so the factor schedule resumes. This is what
    /// `safetensors.torch.save_file(nn.BatchNorm3d(C).state_dict(), path)` writes (with an
    /// empty prefix). Other keys in the file are ignored.
    ///
    /// Parameters and statistics are stored as `Float32`; `F32` is read exactly, `F16`,
    /// `BF16` and `F64` are converted (`F64` rounded to nearest). `num_batches_tracked` may be
    /// any integer dtype (PyTorch writes `I64`).
    ///
    /// - Parameters:
    ///   - file: The parsed file.
    ///   - prefix: Key prefix; `""` for bare keys.
    ///   - maps: The expected channel count, or `nil` to take it from `running_mean`.
    ///   - requireAffine: When `false` (a module created with `affine: false`, whose PyTorch
    ///     counterpart saves no `weight` and `bias`), absent `weight`/`bias` read as 1 and 0.
    /// - Throws: ``SafeTensorsError/missingKey(key:available:)``,
    ///   ``SafeTensorsError/dataTypeMismatch(key:expected:actual:)``,
    ///   ``SafeTensorsError/shapeMismatch(key:expected:actual:)``,
    ///   ``SafeTensorsError/mapsMismatch(key:expected:actual:)`` (the channel counts of the
    ///   keys disagree with each other or with `maps`), or
    ///   ``SafeTensorsError/invalidValue(key:expected:actual:)`` for a negative counter.
    public init(safeTensors file: SafeTensorsFile, prefix: String = "", maps: Int? = nil,
                requireAffine: Bool = true) throws {
        let available = file.tensors.keys.sorted()
        func entry(_ field: String) throws -> (key: String, entry: SafeTensorsFile.Entry) {
            let key = Self.key(field, prefix: prefix)
            guard let entry = file.tensors[key] else { throw SafeTensorsError.missingKey(key: key, available: available) }
            return (key, entry)
        }
        var expectedMaps = maps
        func vector(_ field: String) throws -> [Float] {
            let (key, entry) = try entry(field)
            guard let values = entry.floatValues() else {
                throw SafeTensorsError.dataTypeMismatch(key: key, expected: "F32 (or F16, BF16, F64)", actual: entry.dataType.rawValue)
            }
            guard entry.shape.count == 1 else {
                throw SafeTensorsError.shapeMismatch(key: key, expected: "[\(expectedMaps.map(String.init) ?? "C")]", actual: entry.shape)
            }
            if let expected = expectedMaps {
                guard entry.shape[0] == expected else {
                    throw SafeTensorsError.mapsMismatch(key: key, expected: expected, actual: entry.shape[0])
                }
            } else {
                guard entry.shape[0] >= 1 else {
                    throw SafeTensorsError.shapeMismatch(key: key, expected: "[C] with C >= 1", actual: entry.shape)
                }
                expectedMaps = entry.shape[0]
            }
            return values
        }
        let mean = try vector("running_mean")
        let variance = try vector("running_var")
        let affineKeysPresent = file.tensors[Self.key("weight", prefix: prefix)] != nil
            || file.tensors[Self.key("bias", prefix: prefix)] != nil
        let scale: [Float], bias: [Float]
        if requireAffine || affineKeysPresent {
            scale = try vector("weight")
            bias = try vector("bias")
        } else {
            scale = Array(repeating: 1, count: mean.count)
            bias = Array(repeating: 0, count: mean.count)
        }
        let (key, counter) = try entry("num_batches_tracked")
        guard let values = counter.integerValues() else {
            throw SafeTensorsError.dataTypeMismatch(key: key, expected: "I64", actual: counter.dataType.rawValue)
        }
        guard counter.shape == [] || counter.shape == [1] else {
            throw SafeTensorsError.shapeMismatch(key: key, expected: "[] or [1]", actual: counter.shape)
        }
        guard values[0] >= 0, let count = Int(exactly: values[0]) else {
            throw SafeTensorsError.invalidValue(key: key, expected: ">= 0", actual: "\(values[0])")
        }
        self.init(scale: scale, bias: bias, mean: mean, var: variance, numOfProps: count)
    }

    /// The state as PyTorch state-dict tensors: `F32` vectors of shape `[C]` and an `I64`
    /// scalar (shape `[]`) `num_batches_tracked`, under `prefix` (see ``key(_:prefix:)``).
    ///
    /// - Parameters:
    ///   - prefix: Key prefix; `""` for bare keys as in `nn.BatchNorm3d(C).state_dict()`.
    ///   - includeAffine: Write `weight` and `bias`; pass `false` for an `affine: false`
    ///     module, whose PyTorch counterpart has no such keys.
    public func safeTensors(prefix: String = "", includeAffine: Bool = true) -> SafeTensorsFile {
        var file = SafeTensorsFile()
        if includeAffine {
            file.tensors[Self.key("weight", prefix: prefix)] = .init(float32: scale, shape: [scale.count])
            file.tensors[Self.key("bias", prefix: prefix)] = .init(float32: bias, shape: [bias.count])
        }
        file.tensors[Self.key("running_mean", prefix: prefix)] = .init(float32: mean, shape: [mean.count])
        file.tensors[Self.key("running_var", prefix: prefix)] = .init(float32: self.var, shape: [self.var.count])
        file.tensors[Self.key("num_batches_tracked", prefix: prefix)] = .init(int64: [Int64(numOfProps)], shape: [])
        return file
    }
}

extension BatchNormND {
    /// The key prefix used when none is given: the module's ``name``, or `""` (bare keys).
    public var stateKeyPrefix: String { name ?? "" }

    /// The module's state as a safetensors file with PyTorch's state-dict keys (see
    /// ``BatchNormState/safeTensors(prefix:includeAffine:)``); `weight` and `bias` are
    /// omitted for an `affine: false` module, as PyTorch does.
    ///
    /// - Parameter prefix: Key prefix; `nil` uses ``stateKeyPrefix`` (the name, or bare keys).
    /// - Throws: ``BatchNormError/emptyModule(name:)`` before a state is loaded.
    public func stateSafeTensors(prefix: String? = nil) throws -> SafeTensorsFile {
        try state().safeTensors(prefix: prefix ?? stateKeyPrefix, includeAffine: affine)
    }

    /// Saves the state atomically as a safetensors file that PyTorch's `load_state_dict`
    /// accepts (after `safetensors.torch.load_file`, with the prefix stripped).
    ///
    /// - Parameters:
    ///   - path: Destination; replaced atomically (temporary file, `fsync`, `rename`).
    ///   - prefix: Key prefix; `nil` uses ``stateKeyPrefix``.
    /// - Throws: ``BatchNormError/emptyModule(name:)``, ``FileIOError``.
    public func saveState(toFile path: String, prefix: String? = nil) throws {
        try stateSafeTensors(prefix: prefix).write(toFile: path)
    }

    /// Loads the state from a parsed safetensors file; an `empty` module becomes usable.
    ///
    /// - Parameters:
    ///   - file: The file, for example written by `safetensors.torch.save_file(bn.state_dict())`.
    ///   - prefix: Key prefix; `nil` uses ``stateKeyPrefix``.
    /// - Throws: The errors of ``BatchNormState/init(safeTensors:prefix:maps:requireAffine:)``
    ///   with `maps` set to the module's. The module is unchanged after a throw.
    public func loadState(from file: SafeTensorsFile, prefix: String? = nil) throws {
        let state = try BatchNormState(safeTensors: file, prefix: prefix ?? stateKeyPrefix, maps: maps,
                                       requireAffine: affine)
        try load(state)
    }

    /// Reads a safetensors file and loads the state from it (see ``loadState(from:prefix:)``).
    /// - Throws: ``FileIOError``, ``SafeTensorsError``; the module is unchanged after a throw.
    public func loadState(fromFile path: String, prefix: String? = nil) throws {
        try loadState(from: try SafeTensorsFile(contentsOfFile: path), prefix: prefix)
    }
}
