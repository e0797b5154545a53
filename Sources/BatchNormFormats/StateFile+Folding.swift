import BatchNormCore

extension StateFile {
    /// The file that ``folding(batchNorm:intoConvolution:epsilon:transposed:groups:)`` makes.
    package struct FoldedFile {
        /// The bytes of the new file, in this file's format.
        package var bytes: [UInt8]
        /// The keys (safetensors) or dataset paths (HDF5) of the folded weight and bias.
        package var weightKey, biasKey: String
        /// Whether the convolution had no bias, so that one was added.
        package var addedBias: Bool
        /// The batch norm's entries, left out of the new file.
        package var removedKeys: [String]
    }

    /// This file with the evaluation-mode batch norm `batchNorm` folded into the convolution
    /// `convolution` before it (``BatchNormND/foldedConvolution(weight:bias:transposed:groups:)``):
    /// the convolution's weight replaced, its bias replaced or added, the batch norm's entries
    /// removed, every other entry copied with its values unchanged.
    ///
    /// Where the convolution is found:
    /// - safetensors: `<convolution>.weight` and, if present, `<convolution>.bias` (PyTorch's
    ///   keys; shapes `(Cout, Cin/groups, k...)` or transposed `(Cin, Cout/groups, k...)`, and
    ///   `[Cout]`). The folded tensors keep the weight's and the bias's element types.
    /// - PuzzleLib HDF5: the variables `W` and `b` of PuzzleLib's `Conv` and `Deconv` modules,
    ///   saved as links `links/<convolution>.W` and `links/<convolution>.b` to `params/<i>`
    ///   (`b` of shape `(1, Cout, 1, ...)`). A missing bias is added as `params/<n>` (`n` one
    ///   past the largest index) with its link. The new file is written by this library's HDF5
    ///   writer (uncompressed `float32` arrays and `int64` scalars), so every dataset must be a
    ///   `float32` array or an integer scalar in a group of the root, with no attribute but the
    ///   `affine` mark; a file holding anything else (a `float16` model, a blueprint string, soft
    ///   links) is refused rather than changed.
    ///
    /// - Throws: ``StateFileError`` naming the key (and this file) for a missing module,
    ///   convolution or entry, an entry of the wrong type or shape, or an HDF5 file whose
    ///   entries cannot be copied unchanged; ``BatchNormError`` from the folding itself (shapes,
    ///   groups, non-finite results); ``HDF5Error`` for unreadable data.
    package func folding(
        batchNorm: String, intoConvolution convolution: String, epsilon: Double, transposed: Bool, groups: Int
    ) throws -> FoldedFile {
        do {
            let module = try self.module(batchNorm)
            let fold = { (weight: Tensor, bias: Tensor?) throws -> (weight: Tensor, bias: Tensor) in
                let bn = try BatchNorm3D(maps: module.state.maps, epsilon: epsilon, empty: true)
                try bn.load(module.state)
                bn.evalMode()
                return try bn.foldedConvolution(weight: weight, bias: bias, transposed: transposed, groups: groups)
            }
            switch content {
            case .safeTensors(let file):
                return try Self.folding(file, module: module, convolution: convolution, fold: fold)
            case .hdf5(let file):
                return try Self.folding(file, module: module, convolution: convolution, fold: fold)
            }
        } catch var error as StateFileError {
            error.file = path
            throw error
        }
    }

    private typealias Fold = (_ weight: Tensor, _ bias: Tensor?) throws -> (weight: Tensor, bias: Tensor)

    private static func folding(
        _ file: SafeTensorsFile, module: ModuleState, convolution: String, fold: Fold
    ) throws -> FoldedFile {
        let weightKey = BatchNormState.key("weight", prefix: convolution)
        let biasKey = BatchNormState.key("bias", prefix: convolution)
        let removed = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"].map {
            BatchNormState.key($0, prefix: module.name)
        }.filter { file.tensors[$0] != nil }
        guard !removed.contains(weightKey) else {
            throw StateFileError(
                .invalidValue(
                    key: weightKey, expected: "a convolution's weight",
                    actual: "the batch norm '\(module.name)''s scale"))
        }
        guard let weightEntry = file.tensors[weightKey] else {
            throw StateFileError(.missingKey(key: weightKey, available: file.tensors.keys.sorted()))
        }
        let weight = try Tensor(safeTensorsEntry: weightEntry, key: weightKey)
        let bias = try file.tensors[biasKey].map { try Tensor(safeTensorsEntry: $0, key: biasKey) }
        let folded = try fold(weight, bias)
        var output = file
        for key in removed { output.tensors[key] = nil }
        output.tensors[weightKey] = SafeTensorsFile.Entry(tensor: folded.weight)
        output.tensors[biasKey] = SafeTensorsFile.Entry(tensor: folded.bias)
        return FoldedFile(
            bytes: output.serialized(), weightKey: weightKey, biasKey: biasKey, addedBias: bias == nil,
            removedKeys: removed)
    }

    private static func folding(
        _ file: HDF5File, module: ModuleState, convolution: String, fold: Fold
    ) throws -> FoldedFile {
        // Everything the writer must reproduce, checked before anything is computed.
        if let (link, target) = file.links.min(by: { $0.key < $1.key }) {
            throw StateFileError(
                .invalidValue(
                    key: link, expected: "only datasets and groups (a file this library can copy unchanged)",
                    actual: "a link to '\(target)'"))
        }
        var groups: [String: HDF5Writer.Group] = [:]
        for group in file.groups {
            guard !group.contains("/") else {
                throw StateFileError(
                    .invalidValue(
                        key: group, expected: "groups of the root only (a file this library can copy unchanged)",
                        actual: "a nested group"))
            }
            groups[group] = HDF5Writer.Group(name: group, datasets: [])
        }
        var values: [String: HDF5Writer.Value] = [:]
        var affineMarks: Set<String> = []
        for dataset in file.datasets {
            let key = dataset.path
            let copyable = "a float32 array or an integer scalar in a group of the root (what this library writes)"
            let parts = key.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw StateFileError(.invalidValue(key: key, expected: copyable, actual: "a dataset of the root"))
            }
            switch dataset.dataType {
            case .float(byteCount: 4, _):
                values[key] = .float32(try file.floatValues(of: dataset), shape: dataset.shape)
            case .integer where dataset.shape.reduce(1, *) == 1 && dataset.shape.count <= 1:
                values[key] = .int64(try file.integerValues(of: dataset)[0])
            default:
                throw StateFileError(
                    .invalidValue(key: key, expected: copyable, actual: "\(dataset.dataType) of shape \(dataset.shape)")
                )
            }
            let affine = try file.integerAttribute(StateFileRecord.affineAttribute, of: dataset)
            guard dataset.attributes.count == (affine == nil ? 0 : 1) else {
                throw StateFileError(
                    .invalidValue(
                        key: key, expected: "no attribute but '\(StateFileRecord.affineAttribute)'",
                        actual: "\(dataset.attributes.count) attributes"))
            }
            if affine == 0 { affineMarks.insert(key) }
        }

        /// The dataset `links/<convolution>.<variable>` names, with its values and shape; `nil` without the link.
        func parameter(_ variable: String) throws -> (path: String, values: [Float], shape: [Int])? {
            let link = "links/\(convolution).\(variable)"
            guard let linkDataset = file.dataset(link) else { return nil }
            guard case .int64(let index) = values[link],
                case .float32(let stored, let shape) = values["params/\(index)"]
            else {
                throw StateFileError(
                    .invalidValue(
                        key: link, expected: "a scalar integer naming a float32 dataset of params",
                        actual: "\(linkDataset.dataType) of shape \(linkDataset.shape)"))
            }
            return ("params/\(index)", stored, shape)
        }
        guard let weightParameter = try parameter("W") else {
            let available = file.datasets.map(\.path).filter { $0.hasPrefix("links/") && $0.hasSuffix(".W") }
            throw StateFileError(.missingKey(key: "links/\(convolution).W", available: available))
        }
        let biasParameter = try parameter("b")
        if let biasParameter {
            let shape = biasParameter.shape
            guard shape.count >= 2, shape[0] == 1, shape.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                throw StateFileError(
                    .shapeMismatch(
                        key: biasParameter.path, expected: "(1, Cout, 1, ...) (PuzzleLib's b)", actual: shape))
            }
        }
        let removed = StateFileRecord.puzzleLibPaths(file, name: module.name).filter { file.dataset($0) != nil }
            .sorted()
        if let shared = [weightParameter, biasParameter].compactMap({ $0?.path }).first(where: removed.contains) {
            throw StateFileError(
                .invalidValue(
                    key: shared, expected: "a convolution's own parameter", actual: "one of the batch norm's datasets"))
        }
        let weightShape = weightParameter.shape
        let folded = try fold(
            try Tensor(weightParameter.values, shape: weightShape),
            try biasParameter.map { try Tensor($0.values, shape: [$0.values.count]) })

        for key in removed { values[key] = nil }
        values[weightParameter.path] = .float32(folded.weight.scalars, shape: weightShape)
        let biasPath: String, biasShape: [Int]
        if let biasParameter {
            (biasPath, biasShape) = (biasParameter.path, biasParameter.shape)
        } else {
            let indices = file.datasets.compactMap { $0.path.hasPrefix("params/") ? Int64($0.path.dropFirst(7)) : nil }
            let largest = indices.max() ?? -1
            guard largest < Int64.max else {
                throw StateFileError(
                    .invalidValue(
                        key: "params/\(largest)", expected: "indices below Int64.max (a bias is added after the last)",
                        actual: "\(largest)"))
            }
            let index = largest + 1
            biasPath = "params/\(index)"
            biasShape = [1, folded.bias.shape[0]] + Array(repeating: 1, count: weightShape.count - 2)
            values["links/\(convolution).b"] = .int64(index)
        }
        values[biasPath] = .float32(folded.bias.scalars, shape: biasShape)

        for (key, value) in values {
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            groups[parts[0], default: HDF5Writer.Group(name: parts[0], datasets: [])].datasets.append((parts[1], value))
            if affineMarks.contains(key) {
                groups[parts[0]]!.attributes[parts[1]] = [(StateFileRecord.affineAttribute, 0)]
            }
        }
        return FoldedFile(
            bytes: HDF5Writer.file(Array(groups.values)), weightKey: weightParameter.path, biasKey: biasPath,
            addedBias: biasParameter == nil, removedKeys: removed)
    }
}
