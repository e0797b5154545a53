import ArgumentParser
import BatchNormCUDA
import BatchNormKit

/// `bnkit normalize`: evaluation forward of a stored batch of volumes, in bounded memory.
///
/// The input is processed in chunks of whole samples along the batch axis `N`: each chunk is
/// a valid evaluation batch because evaluation uses the running statistics, not the batch's.
/// Each chunk is read with `pread` straight into the tensor buffer, normalized in place and
/// appended to a temporary output file, which is renamed over `-o` at the end (atomic). Memory
/// use is one chunk (`--chunk-mb`, at least one sample), whatever the file size.
struct NormalizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "normalize",
        abstract: "Evaluation-mode batch normalization of a .npy batch with a saved state.",
        discussion: """
            The input is a float16, float32 or float64 C-order .npy array of rank 2 to 5, either \
            byte order; the output has the same shape, little-endian, and the same dtype (float64 is \
            read and written as float32, with a note on stderr; float16 is normalized natively on both \
            devices: each value is computed in float32 with float32 statistics and rounded once). \
            --layout states how the file's axes are ordered: ncdhw (default) means the array is \
            (N, C, D, H, W); ndhwc means the array is (N, D, H, W, C), channels last (e.g. \
            x.permute(0, 2, 3, 4, 1) of a PyTorch tensor). The state is a safetensors file with \
            PyTorch's BatchNorm keys (weight, bias, running_mean, running_var, num_batches_tracked) \
            under --prefix, or a PuzzleLib HDF5 model file with the module named --prefix \
            (recognized by content). The file is processed in chunks of whole samples along N, so files larger \
            than memory work. The arithmetic is kept as is: NaN inputs give NaN outputs and a tiny \
            --epsilon on a zero-variance channel gives inf; the summary line counts such outputs and \
            --check-finite makes them an error (nothing is written).
            """)

    @Argument(help: "Input .npy file.")
    var input: String

    @Option(help: "State file: .safetensors with PyTorch's state-dict keys, or a PuzzleLib .hdf model.")
    var state: String

    @Option(name: [.short, .customLong("output")], help: "Output .npy file (written atomically).")
    var output: String

    @Option(help: "Where to compute.")
    var device: ComputeDevice = .cpu

    @OptionGroup var options: StateOptions

    @Option(
        name: .customLong("chunk-mb"), parsing: .unconditional,
        help: "Memory per chunk in MiB, fractions allowed (at least one sample is processed at a time).")
    var chunkMegabytes: Double = 64

    @Flag(help: "Fail, writing nothing, when an output is NaN or infinite.")
    var checkFinite = false

    @Flag(help: "Print nothing on success.")
    var quiet = false

    @Flag(help: "Detail lines under an error (such as every path searched for the CUDA libraries).")
    var verbose = false

    func validate() throws {
        try validateChunkMegabytes(chunkMegabytes)
    }

    func run() throws {
        let start = BenchCommand.now()
        // The input batch may be the output: it is read before the output replaces it.
        try checkOutput(output, isNotAnyOf: [("the state", state)])
        let reader = try withContext(input) { try FileReader(path: input) }
        let header = try withContext(input) { try readNumPyHeader(reader) }
        guard header.shape.count >= 2 else {
            throw CommandFailure("\(input): array of shape \(header.shape) has no channel axis (expected rank 2 to 5)")
        }
        let shape = Tensor.logicalShape(ofPhysical: header.shape, layout: options.layout)
        let state = try readState(path: state, prefix: options.prefix, rank: shape.count)
        guard shape[1] == state.maps else {
            throw CommandFailure(
                "\(input): array of shape \(header.shape) (\(options.layout)) has \(shape[1]) channels, the state has \(state.maps) maps"
            )
        }
        let backend: any BatchNormBackend<Tensor> = device == .cuda ? try CUDABackend() : CPUBackend()
        let module = try withContext(input) {
            try makeModule(
                rank: shape.count, maps: state.maps, epsilon: options.epsilon, inplace: true, backend: backend)
        }
        try withContext(self.state) { try module.load(state) }
        module.evalMode()
        if !quiet, let note = conversionNote(header, file: input) { standardError(note) }

        let batch = shape[0]
        let sampleElements = shape.dropFirst().reduce(1, *)
        let perChunk = samplesPerChunk(
            sampleElements: sampleElements, bytesPerElement: header.dataType.byteCount,
            chunkMegabytes: chunkMegabytes)
        let writer = try AtomicFileWriter(path: output)
        try writer.write(try NumPyArrayHeader(shape: header.shape, dataType: header.dataType).encoded())
        let progress = ProgressBar(total: batch, label: "normalize")
        var first = 0, chunks = 0
        var nonFinite = NonFiniteCount()
        while first < batch {
            let count = min(perChunk, batch - first)
            let chunkShape = [count] + shape.dropFirst()
            let storage = TensorStorage(byteCount: count * sampleElements * header.dataType.byteCount)
            try withContext(input) {
                try header.readElements(
                    from: reader, first: first * sampleElements, count: count * sampleElements,
                    into: storage.rawAddress)
            }
            let chunk = try Tensor(
                shape: chunkShape, layout: options.layout, dataType: header.dataType, sharing: storage)
            let result = try module(chunk) // in place, in the file's dtype: result shares `storage`
            module.reset() // drop the references to the chunk
            nonFinite.add(result, firstElement: first * sampleElements)
            try writer.write(result.storage.rawAddress, count: result.storage.byteCount)
            first += count
            chunks += 1
            progress.update(first)
        }
        progress.finish()
        let elements = batch * sampleElements
        if checkFinite, let firstIndex = nonFinite.firstIndex {
            throw CommandFailure(
                "\(input): \(nonFinite.count) of \(elements) outputs are not finite (NaN or ±Inf; the first "
                    + "at element \(firstIndex) of the file); --check-finite: \(output) not written")
        }
        try writer.commit()
        guard !quiet else { return }
        let seconds = BenchCommand.now() - start
        let bytes = Double(header.dataByteCount + elements * header.dataType.byteCount)
        print(
            "normalized \(elements) elements (\(header.shape), \(header.dataType)) in \(chunks) chunk\(chunks == 1 ? "" : "s") "
                + "in \(BenchCommand.format(seconds, 3)) s (\(BenchCommand.format(bytes / max(seconds, 1e-9) / 1e9, 2)) GB/s read and written); "
                + "non-finite outputs: \(nonFinite.count); wrote \(output)")
    }
}

/// Non-finite values among the outputs, and the file position of the first.
struct NonFiniteCount {
    var count = 0
    var firstIndex: Int?

    /// Counts the NaN and ±Inf elements of `tensor`, whose first storage element is element
    /// `firstElement` of the file (the file and the tensor share the storage order).
    mutating func add(_ tensor: Tensor, firstElement: Int) {
        // float32 is scanned in place; other storage types (float16) as a float32 copy.
        let values = tensor.dataType == .float32 ? tensor : tensor.converted(to: tensor.layout, dataType: .float32)
        let floats = values.storage.floats
        for i in 0..<values.elementCount where !floats[i].isFinite {
            count += 1
            if firstIndex == nil { firstIndex = firstElement + i }
        }
    }
}
