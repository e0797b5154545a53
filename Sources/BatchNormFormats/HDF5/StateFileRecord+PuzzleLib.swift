import BatchNormCore

/// PuzzleLib's layout of a BatchNorm module named `N` (`Module.save`, `libver="earliest"`):
///
///     links/N.scale, links/N.bias   scalar integers i, j
///     params/i, params/j            the scale and bias
///     attrs/N.mean, attrs/N.var     the running statistics
///
/// all of shape `(1, C) + (1,) * (R - 2)` for data rank `R`, `float32` (or `float16` after
/// `calcMode`). `numOfProps` is not saved: it is 0 after a load, as in PuzzleLib.
///
/// PuzzleLib saves an `affine=False` module like any other (its scale and bias, exactly 1
/// and 0, are variables it saves and loads); the flag itself lives only in the module's
/// constructor arguments. So that such a module stays non-affine through a file, this
/// library marks it with an integer attribute `affine` = 0 on `links/N.scale`, which
/// PuzzleLib and h5py ignore when loading; a module without the attribute is affine.
extension StateFileRecord {
    /// The names `N` of the `attrs/N.mean` datasets, sorted.
    static func moduleNames(puzzleLib file: HDF5File) -> [String] {
        file.datasets.compactMap { dataset in
            guard dataset.path.hasPrefix("attrs/"), dataset.path.hasSuffix(".mean") else { return nil }
            return String(dataset.path.dropFirst("attrs/".count).dropLast(".mean".count))
        }.sorted()
    }

    /// The dataset paths of module `name` (its links, the `params` they name where readable, its attributes).
    static func puzzleLibPaths(_ file: HDF5File, name: String) -> Set<String> {
        var paths: Set<String> = [
            "links/\(name).scale", "links/\(name).bias", "attrs/\(name).mean", "attrs/\(name).var",
        ]
        for field in ["scale", "bias"] {
            if let link = file.dataset("links/\(name).\(field)"), let index = try? file.integerValues(of: link).first {
                paths.insert("params/\(index)")
            }
        }
        return paths
    }

    /// Module `name` of a PuzzleLib file.
    /// - Throws: ``StateFileError`` for a missing module, link or dataset, a link that is no
    ///   scalar index of `params`, a wrong dtype or shape; ``HDF5Error`` for unreadable data.
    init(puzzleLib file: HDF5File, name: String, modules: [String]) throws {
        guard file.dataset("attrs/\(name).mean") != nil else {
            throw StateFileError(.missingModule(name: name, modules: modules))
        }
        func dataset(_ path: String) throws -> HDF5File.Dataset {
            if let dataset = file.dataset(path) { return dataset }
            if let target = file.links[path] {
                throw StateFileError(
                    .invalidValue(
                        key: path, expected: "a dataset (soft and external links are not followed)",
                        actual: "a link to '\(target)'"))
            }
            let available = file.datasets.map(\.path).filter {
                $0.hasPrefix("links/\(name).") || $0.hasPrefix("attrs/\(name).")
            }
            throw StateFileError(.missingKey(key: path, available: available))
        }
        func parameter(_ field: String) throws -> (key: String, dataset: HDF5File.Dataset) {
            let linkPath = "links/\(name).\(field)"
            let link = try dataset(linkPath)
            guard case .integer = link.dataType, link.shape.isEmpty || link.shape == [1] else {
                throw StateFileError(
                    .invalidValue(
                        key: linkPath, expected: "a scalar integer (an index into params)",
                        actual: "\(link.dataType) of shape \(link.shape)"))
            }
            let index = try file.integerValues(of: link)[0]
            guard let target = file.dataset("params/\(index)") else {
                throw StateFileError(
                    .invalidValue(key: linkPath, expected: "the index of a dataset in params", actual: "\(index)"))
            }
            return ("params/\(index) (\(name).\(field))", target)
        }
        var rank: Int?
        func field(_ key: String, _ dataset: HDF5File.Dataset) throws -> Field {
            guard case .float = dataset.dataType else {
                throw StateFileError(
                    .dataTypeMismatch(
                        key: key, expected: "float32 (or float16, float64)", actual: "\(dataset.dataType)"))
            }
            let shape = dataset.shape
            guard shape.count >= 2, shape[0] == 1, shape[1] >= 1, shape.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                throw StateFileError(.shapeMismatch(key: key, expected: "(1, C, 1, ...) with C >= 1", actual: shape))
            }
            if let rank, shape.count != rank {
                throw StateFileError(.rankMismatch(key: key, expected: rank, actual: shape.count))
            }
            rank = shape.count
            return Field(key: key, values: try file.floatValues(of: dataset), maps: shape[1])
        }
        mean = try field("attrs/\(name).mean", try dataset("attrs/\(name).mean"))
        variance = try field("attrs/\(name).var", try dataset("attrs/\(name).var"))
        let scaleParameter = try parameter("scale"), biasParameter = try parameter("bias")
        scale = try field(scaleParameter.key, scaleParameter.dataset)
        bias = try field(biasParameter.key, biasParameter.dataset)
        numOfProps = 0
        self.rank = rank
        affine = try file.integerAttribute(Self.affineAttribute, of: try dataset("links/\(name).scale")) != 0
    }

    /// The attribute of `links/N.scale` that marks a module saved with `affine: false` (value 0).
    static let affineAttribute = "affine"

    /// The bytes of a PuzzleLib file holding `modules`: for each module in order, its scale
    /// and bias as `params/<i>` (i counting from 0) with `int64` links, its statistics in
    /// `attrs`, every dataset `float32` of shape `(1, C, 1, ...)` of the module's rank
    /// (5 when it has none). An `affine: false` module is written with scale 1 and bias 0,
    /// as PuzzleLib saves it, and the `affine` = 0 attribute on its scale link.
    static func puzzleLibFile(_ modules: [StateFile.ModuleState]) -> [UInt8] {
        var params = HDF5Writer.Group(name: "params", datasets: [])
        var links = HDF5Writer.Group(name: "links", datasets: [])
        var attrs = HDF5Writer.Group(name: "attrs", datasets: [])
        for module in modules {
            let state = module.state
            let shape = [1, state.maps] + Array(repeating: 1, count: max(2, module.rank ?? 5) - 2)
            if !module.affine { links.attributes["\(module.name).scale"] = [(affineAttribute, 0)] }
            for (field, values) in [("scale", state.scale), ("bias", state.bias)] {
                links.datasets.append(("\(module.name).\(field)", .int64(Int64(params.datasets.count))))
                params.datasets.append(("\(params.datasets.count)", .float32(values, shape: shape)))
            }
            attrs.datasets.append(("\(module.name).mean", .float32(state.mean, shape: shape)))
            attrs.datasets.append(("\(module.name).var", .float32(state.var, shape: shape)))
        }
        return HDF5Writer.file([params, links, attrs])
    }
}
