import BatchNormCore

extension BatchNormND {
    /// Loads the state from a state file of either format, recognized by its first bytes
    /// (not its name): safetensors with PyTorch's keys, or a PuzzleLib HDF5 model file.
    ///
    /// safetensors: `<prefix>.weight`, `.bias`, `.running_mean`, `.running_var`,
    /// `.num_batches_tracked` (see ``BatchNormState/init(safeTensors:prefix:maps:requireAffine:)``).
    /// PuzzleLib HDF5: the module named `prefix` (`"seq.bn1"`, or `""` for an unnamed
    /// module): `links/<prefix>.scale` and `.bias` index datasets of `params`,
    /// `attrs/<prefix>.mean` and `.var`, of shape `(1, C, 1, ...)` of this module's data rank.
    /// PuzzleLib does not save `numOfProps`: after an HDF5 load it is 0, as after
    /// PuzzleLib's own `Module.load`, so the factor schedule starts again.
    ///
    /// For an `affine: false` module, `weight`/`scale` and `bias` must be absent or exactly
    /// 1 and 0 (PyTorch's strict `load_state_dict` refuses them for `affine=False`).
    ///
    /// - Parameters:
    ///   - path: The file.
    ///   - prefix: Key prefix or PuzzleLib module name; `nil` uses ``stateKeyPrefix``.
    /// - Throws: ``FileIOError``; ``StateFileError`` naming the file and key (not a state
    ///   file, saying what it holds instead; a missing module, listing those the file holds;
    ///   a wrong shape, rank, dtype or channel count; a non-finite value, a negative
    ///   variance, a non-affine module's scale or bias); ``SafeTensorsError`` or
    ///   ``HDF5Error`` for a malformed file. The module is unchanged after a throw.
    public func loadState(fromFile path: String, prefix: String? = nil) throws {
        let module = try StateFile(contentsOfFile: path).module(
            prefix ?? stateKeyPrefix, maps: maps, rank: dataRank,
            affine: affine)
        try load(module.state)
    }

    /// Saves the state atomically (temporary file, `fsync`, `rename`): a reader sees the
    /// old file or the complete new one.
    ///
    /// safetensors: PyTorch's state-dict keys, which `load_state_dict` accepts after
    /// `safetensors.torch.load_file` (`weight` and `bias` omitted for an `affine: false`
    /// module, as PyTorch does). PuzzleLib HDF5: the layout `Module.load` reads, with the
    /// module named `prefix`; `numOfProps` is not stored (PuzzleLib has no place for it), and
    /// a non-affine module's scale and bias are written as 1 and 0, as PuzzleLib does.
    ///
    /// - Parameters:
    ///   - path: Destination.
    ///   - format: The format; `nil` picks it from the extension: `.hdf`, `.h5`, `.hdf5` for
    ///     PuzzleLib HDF5, anything else safetensors.
    ///   - prefix: Key prefix or PuzzleLib module name; `nil` uses ``stateKeyPrefix``.
    /// - Throws: `BatchNormError/emptyModule(name:)`, ``FileIOError``, ``StateFileError``
    ///   for an HDF5 module name holding `/`; the destination is unchanged on failure.
    public func saveState(toFile path: String, format: StateFileFormat? = nil, prefix: String? = nil) throws {
        let module = StateFile.ModuleState(
            name: prefix ?? stateKeyPrefix, state: try state(), rank: dataRank, affine: affine)
        try StateFile.write([module], toFile: path, format: format)
    }
}
