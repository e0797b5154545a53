import ArgumentParser
import BatchNormKit

/// `bnkit inspect`: what a state (.safetensors) or .npy file holds.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show keys, shapes, dtypes and per-channel summaries of a .safetensors, PuzzleLib .hdf or .npy file.",
        discussion: """
            A safetensors file: every tensor's dtype, shape and min/max/mean, then, for each \
            BatchNorm state found (a prefix with running_mean), a per-channel table of weight, bias, \
            running_mean, running_var and num_batches_tracked. A PuzzleLib HDF5 model file: every \
            BatchNorm module (name, rank, maps, a per-channel table of scale, bias, mean and var), then \
            the other datasets by name, shape and dtype. A .npy file: shape, dtype, and for \
            rank >= 2 the per-channel count, mean, standard deviation (population), min and max over \
            every axis but the channel axis (axis 1 for ncdhw, the last axis for ndhwc); read in \
            chunks, so large files are fine. The kind is recognised by content, not by extension.
            """)

    @Argument(help: "A .safetensors, PuzzleLib .hdf or .npy file.")
    var file: String

    @Option(help: layoutHelp, transform: parseLayout)
    var layout: TensorLayout = .channelsFirst

    @Option(
        name: .customLong("chunk-mb"), parsing: .unconditional,
        help: "Memory per chunk in MiB when reading a .npy file.")
    var chunkMegabytes: Double = 64

    func validate() throws {
        try validateChunkMegabytes(chunkMegabytes)
    }

    func run() throws {
        let reader = try withContext(file) { try FileReader(path: file) }
        let prefix = try withContext(file) { try reader.read(at: 0, count: min(reader.size, 6)) }
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        // A file shorter than the magic that begins like it (an empty x.npy too) is a cut .npy.
        let looksLikeNumPy =
            prefix == magic
            || (prefix.count < 6 && magic.starts(with: prefix) && (!prefix.isEmpty || file.hasSuffix(".npy")))
        if looksLikeNumPy {
            try withContext(file) { try inspectNumPy(reader) }
        } else {
            let format = try withContext(file) {
                try StateFileFormat.detect(size: reader.size) { try reader.read(at: $0, count: $1) }
            }
            switch format {
            case .safeTensors:
                try withContext(file) { try inspectSafeTensors(try SafeTensorsFile(contentsOfFile: file)) }
            case .puzzleLibHDF5: try withContext(file) { try inspectPuzzleLib(try StateFile(contentsOfFile: file)) }
            }
        }
    }

    func format(_ value: Double) -> String {
        let magnitude = abs(value)
        if value == 0 || (magnitude >= 1e-3 && magnitude < 1e6) {
            let scaled = (value * 1e6).rounded() / 1e6
            return "\(scaled)"
        }
        return "\(Float(value))"
    }

    private func inspectSafeTensors(_ safeTensors: SafeTensorsFile) throws {
        print("\(file): safetensors, \(safeTensors.tensors.count) tensor\(safeTensors.tensors.count == 1 ? "" : "s")")
        for key in safeTensors.metadata.keys.sorted() { print("  metadata \(key) = \(safeTensors.metadata[key]!)") }
        let keyWidth = safeTensors.tensors.keys.map(\.count).max() ?? 0
        for key in safeTensors.tensors.keys.sorted() {
            let entry = safeTensors.tensors[key]!
            let integers = entry.integerValues()
            let values: [Double] = entry.floatValues().map { $0.map(Double.init) } ?? integers?.map(Double.init) ?? []
            // Integer tensors (num_batches_tracked) print their values as integers.
            func value(_ index: Int) -> String { integers.map { "\($0[index])" } ?? format(values[index]) }
            var line =
                "  \(key.padding(keyWidth))  \(entry.dataType.rawValue.padding(7))  \("\(entry.shape)".padding(14))"
            if values.count == 1 {
                line += "  value \(value(0))"
            } else if !values.isEmpty {
                line +=
                    "  min \(value(values.indices.min { values[$0] < values[$1] }!))  max \(value(values.indices.max { values[$0] < values[$1] }!))"
                line += "  mean \(format(values.reduce(0, +) / Double(values.count)))"
            }
            print(line.trimmingTrailingSpaces())
        }
        let suffix = "running_mean"
        let prefixes = safeTensors.tensors.keys.filter { $0 == suffix || $0.hasSuffix("." + suffix) }
            .map { String($0.dropLast(suffix.count)).trimmingDot() }.sorted()
        for prefix in prefixes {
            guard let state = try? BatchNormState(safeTensors: safeTensors, prefix: prefix) else {
                print(
                    "\nBatchNorm state '\(prefix)': incomplete (weight, bias, running_mean, running_var, num_batches_tracked expected)"
                )
                continue
            }
            print(
                "\nBatchNorm state\(prefix.isEmpty ? "" : " '\(prefix)'"): \(state.maps) maps, num_batches_tracked \(state.numOfProps)"
            )
            print(tableRow(["channel", "weight", "bias", "running_mean", "running_var"]))
            for c in 0..<state.maps {
                let row = [
                    "\(c)", format(Double(state.scale[c])), format(Double(state.bias[c])),
                    format(Double(state.mean[c])), format(Double(state.var[c])),
                ]
                print(tableRow(row))
            }
        }
    }

    private func inspectNumPy(_ reader: FileReader) throws {
        let header = try readNumPyHeader(reader)
        let stored = header.needsConversion ? " ('\(header.descr)', read as \(header.dataType))" : ""
        print(
            "\(file): npy, shape \(header.shape), dtype \(header.dataType)\(stored), C order, data at byte \(header.dataOffset) (\(header.dataByteCount) bytes)"
        )
        let shape = Tensor.logicalShape(ofPhysical: header.shape, layout: layout)
        let channels = shape.count >= 2 ? shape[1] : 1
        if shape.count >= 2 {
            print(
                "logical (N, C, ...) shape \(shape) with --layout \(layout); channel axis \(layout == .channelsFirst || shape.count == 2 ? 1 : shape.count - 1) of the file"
            )
        }
        guard header.elementCount > 0 else {
            print("empty array")
            return
        }
        // Per-channel count, mean and M2 merged chunk by chunk (Chan et al.), min and max.
        var moments = Array(repeating: ChannelMoments.empty, count: channels)
        var minimum = Array(repeating: Double.infinity, count: channels)
        var maximum = Array(repeating: -Double.infinity, count: channels)
        let batch = shape.first ?? 1
        let sampleElements = shape.count >= 1 ? shape.dropFirst().reduce(1, *) : 1
        // The chunk is converted to float32 below, so the budget counts 4 bytes per value.
        let perChunk = samplesPerChunk(
            sampleElements: sampleElements, bytesPerElement: 4, chunkMegabytes: chunkMegabytes)
        let spatial = shape.count > 2 ? shape[2...].reduce(1, *) : 1
        var first = 0
        while first < batch {
            let count = min(perChunk, batch - first)
            let storage = TensorStorage(byteCount: count * sampleElements * header.dataType.byteCount)
            try header.readElements(
                from: reader, first: first * sampleElements, count: count * sampleElements, into: storage.rawAddress)
            let chunkShape = shape.isEmpty ? [] : [count] + shape.dropFirst()
            var chunk = try Tensor(shape: chunkShape, layout: layout, dataType: header.dataType, sharing: storage)
            if chunk.dataType != .float32 { chunk = chunk.converted(to: layout, dataType: .float32) }
            let values = chunk.storage.floats
            let geometry = ChannelGeometry(shape: shape.count >= 2 ? chunkShape : [chunk.elementCount])
            for c in 0..<channels {
                var sum = 0.0
                for n in 0..<count {
                    for s in 0..<spatial {
                        let value = Double(values[geometry.offset(n: n, c: c, s: s, layout: layout)])
                        sum += value
                        minimum[c] = min(minimum[c], value)
                        maximum[c] = max(maximum[c], value)
                    }
                }
                let m = Double(count * spatial), mean = sum / m
                var m2 = 0.0
                for n in 0..<count {
                    for s in 0..<spatial {
                        let d = Double(values[geometry.offset(n: n, c: c, s: s, layout: layout)]) - mean
                        m2 += d * d
                    }
                }
                moments[c] = moments[c].merged(with: ChannelMoments(count: m, mean: mean, m2: m2))
            }
            first += count
            if shape.isEmpty { break }
        }
        print(tableRow(["channel", "count", "mean", "std", "min", "max"]))
        for c in 0..<channels {
            let row = [
                "\(shape.count >= 2 ? "\(c)" : "all")", "\(Int(moments[c].count))", format(moments[c].mean),
                format((moments[c].m2 / moments[c].count).squareRoot()), format(minimum[c]), format(maximum[c]),
            ]
            print(tableRow(row))
        }
    }

    /// A table row: two spaces, then the cells in columns 13 wide, no trailing space.
    private func tableRow(_ cells: [String]) -> String {
        ("  " + cells.map { $0.padding(13) }.joined(separator: " ")).trimmingTrailingSpaces()
    }
}

extension String {
    /// The string padded with spaces to at least `width` characters.
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    /// The string without trailing spaces.
    func trimmingTrailingSpaces() -> String {
        var text = Substring(self)
        while text.last == " " { text.removeLast() }
        return String(text)
    }
    /// The string without a trailing `"."`.
    func trimmingDot() -> String { hasSuffix(".") ? String(dropLast()) : self }
}
