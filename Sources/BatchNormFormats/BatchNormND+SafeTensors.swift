import BatchNormCore

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
    /// `numOfProps` so the factor schedule resumes. This is what
    /// `safetensors.torch.save_file(nn.BatchNorm3d(C).state_dict(), path)` writes (with an
    /// empty prefix). Other keys in the file are ignored.
    ///
    /// Parameters and statistics are stored as `Float32`; `F32` is read exactly, `F16`,
    /// `BF16` and `F64` are converted (`F64` rounded to nearest). `num_batches_tracked` may be
    /// any integer dtype (PyTorch writes `I64`). The values follow the rules of
    /// ``StateFile/module(_:maps:rank:affine:)``.
    ///
    /// - Parameters:
    ///   - file: The parsed file.
    ///   - prefix: Key prefix; `""` for bare keys.
    ///   - maps: The expected channel count, or `nil` to take it from `running_mean`.
    ///   - requireAffine: `false` for a module created with `affine: false`, whose PyTorch
    ///     counterpart saves no `weight` and `bias`: absent ones read as 1 and 0, present
    ///     ones must be exactly 1 and 0.
    /// - Throws: ``StateFileError`` naming the key: a missing module (listing the prefixes
    ///   the file holds) or key, a wrong shape, dtype or channel count, a negative counter, a
    ///   non-finite value or a negative variance.
    public init(
        safeTensors file: SafeTensorsFile, prefix: String = "", maps: Int? = nil,
        requireAffine: Bool = true
    ) throws {
        let record = try StateFileRecord(
            safeTensors: file, prefix: prefix, modules: StateFileRecord.moduleNames(safeTensors: file))
        self = try record.state(maps: maps, rank: nil, affine: requireAffine)
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
    /// The key prefix used when none is given: the module's `name`, or `""` (bare keys).
    public var stateKeyPrefix: String { name ?? "" }

    /// The module's state as a safetensors file with PyTorch's state-dict keys (see
    /// ``BatchNormState/safeTensors(prefix:includeAffine:)``); `weight` and `bias` are
    /// omitted for an `affine: false` module, as PyTorch does.
    ///
    /// - Parameter prefix: Key prefix; `nil` uses ``stateKeyPrefix`` (the name, or bare keys).
    /// - Throws: `BatchNormError/emptyModule(name:)` before a state is loaded.
    public func stateSafeTensors(prefix: String? = nil) throws -> SafeTensorsFile {
        try state().safeTensors(prefix: prefix ?? stateKeyPrefix, includeAffine: affine)
    }

    /// Loads the state from a parsed safetensors file; an `empty` module becomes usable.
    ///
    /// - Parameters:
    ///   - file: The file, for example written by `safetensors.torch.save_file(bn.state_dict())`.
    ///   - prefix: Key prefix; `nil` uses ``stateKeyPrefix``.
    /// - Throws: ``StateFileError``: the errors of
    ///   ``BatchNormState/init(safeTensors:prefix:maps:requireAffine:)`` with `maps` set to
    ///   the module's and `requireAffine` to `affine`. The module is unchanged after a throw.
    public func loadState(from file: SafeTensorsFile, prefix: String? = nil) throws {
        let state = try BatchNormState(
            safeTensors: file, prefix: prefix ?? stateKeyPrefix, maps: maps,
            requireAffine: affine)
        try load(state)
    }
}

extension StateFileRecord {
    /// The prefixes of the `running_mean` keys, sorted (`""` for a bare `running_mean`).
    static func moduleNames(safeTensors file: SafeTensorsFile) -> [String] {
        let suffix = "running_mean"
        return file.tensors.keys.compactMap { key in
            if key == suffix { return "" }
            return key.hasSuffix("." + suffix) ? String(key.dropLast(suffix.count + 1)) : nil
        }.sorted()
    }

    /// The entries under `prefix`: `[C]` float vectors and an integer counter of shape `[]` or `[1]`.
    /// - Throws: ``StateFileError`` for a missing module or key, a wrong dtype or shape, a negative counter.
    init(safeTensors file: SafeTensorsFile, prefix: String, modules: [String]) throws {
        func key(_ field: String) -> String { BatchNormState.key(field, prefix: prefix) }
        guard file.tensors[key("running_mean")] != nil else {
            throw StateFileError(.missingModule(name: prefix, modules: modules))
        }
        func field(_ name: String, required: Bool = true) throws -> Field {
            let key = key(name)
            guard let entry = file.tensors[key] else {
                if required { throw StateFileError(.missingKey(key: key, available: file.tensors.keys.sorted())) }
                return Field(key: key, values: nil, maps: 0)
            }
            guard let values = entry.floatValues() else {
                throw StateFileError(
                    .dataTypeMismatch(key: key, expected: "F32 (or F16, BF16, F64)", actual: entry.dataType.rawValue))
            }
            guard entry.shape.count == 1, entry.shape[0] >= 1 else {
                throw StateFileError(.shapeMismatch(key: key, expected: "[C] with C >= 1", actual: entry.shape))
            }
            return Field(key: key, values: values, maps: entry.shape[0])
        }
        mean = try field("running_mean")
        variance = try field("running_var")
        let affineKeys = file.tensors[key("weight")] != nil || file.tensors[key("bias")] != nil
        scale = try field("weight", required: affineKeys)
        bias = try field("bias", required: affineKeys)
        let counterKey = key("num_batches_tracked")
        guard let counter = file.tensors[counterKey] else {
            throw StateFileError(.missingKey(key: counterKey, available: file.tensors.keys.sorted()))
        }
        guard let values = counter.integerValues() else {
            throw StateFileError(.dataTypeMismatch(key: counterKey, expected: "I64", actual: counter.dataType.rawValue))
        }
        guard counter.shape == [] || counter.shape == [1] else {
            throw StateFileError(.shapeMismatch(key: counterKey, expected: "[] or [1]", actual: counter.shape))
        }
        guard values[0] >= 0, let count = Int(exactly: values[0]) else {
            throw StateFileError(.invalidValue(key: counterKey, expected: ">= 0", actual: "\(values[0])"))
        }
        numOfProps = count
        rank = nil
        affine = affineKeys
    }
}
