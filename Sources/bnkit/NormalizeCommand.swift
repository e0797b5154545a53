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
            The input is a float32 or float16 C-order .npy array of rank 2 to 5; the output has the \
            same shape and dtype (float16 is normalized natively on both devices: each value is \
            computed in float32 with float32 statistics and rounded once). --layout states how \
            the file's axes are ordered: ncdhw (default) means the array is (N, C, D, H, W); ndhwc \
            means the array is (N, D, H, W, C), channels last (e.g. x.permute(0, 2, 3, 4, 1) of a \
            PyTorch tensor). The state is a safetensors file with PyTorch's BatchNorm keys \
            (weight, bias, running_mean, running_var, num_batches_tracked), under --prefix.
            The file is processed in chunks of whole samples along N, so files larger than memory work.
            """)

    @Argument(help: "Input .npy file.")
    var input: String

    @Option(help: "State file (.safetensors) with PyTorch's state-dict keys.")
    var state: String

    @Option(name: [.short, .customLong("output")], help: "Output .npy file (written atomically).")
    var output: String

    @Option(help: "Where to compute: cpu or cuda.")
    var device: ComputeDevice = .cpu

    @OptionGroup var options: StateOptions

    @Option(name: .customLong("chunk-mb"), help: "Memory per chunk in MiB, fractions allowed (at least one sample is processed at a time).")
    var chunkMegabytes: Double = 64

    func validate() throws {
        guard chunkMegabytes > 0, chunkMegabytes.isFinite else { throw ValidationError("--chunk-mb must be > 0, got \(chunkMegabytes)") }
    }

    func run() throws {
        let state = try readState(path: state, prefix: options.prefix)
        let reader = try withContext(input) { try FileReader(path: input) }
        let header = try withContext(input) {
            let header = try NumPyArrayHeader(parsing: try reader.read(at: 0, count: min(reader.size, NumPyArrayHeader.maximumHeaderLength)))
            try header.checkDataSize(fileSize: reader.size)
            return header
        }
        guard header.shape.count >= 2 else {
            throw CommandFailure("\(input): array of shape \(header.shape) has no channel axis (expected rank 2 to 5)")
        }
        let shape = Tensor.logicalShape(ofPhysical: header.shape, layout: options.layout)
        guard shape[1] == state.maps else {
            throw CommandFailure("\(input): array of shape \(header.shape) (\(options.layout)) has \(shape[1]) channels, the state has \(state.maps) maps")
        }
        let backend: any BatchNormBackend = device == .cuda ? try CUDABackend() : CPUBackend()
        let module = try makeModule(rank: shape.count, maps: state.maps, epsilon: options.epsilon, inplace: true,
                                    backend: backend)
        try module.load(state)
        module.evalMode()

        let batch = shape[0]
        let sampleElements = shape.dropFirst().reduce(1, *)
        let samplesPerChunk = max(1, Int(min(chunkMegabytes * 1_048_576, 1e15))
                                    / max(1, sampleElements * header.dataType.byteCount))
        let writer = try AtomicFileWriter(path: output)
        try writer.write(try NumPyArrayHeader(shape: header.shape, dataType: header.dataType).encoded())
        let progress = ProgressBar(total: batch, label: "normalize")
        var first = 0
        while first < batch {
            let count = min(samplesPerChunk, batch - first)
            let chunkShape = [count] + shape.dropFirst()
            let storage = TensorStorage(byteCount: count * sampleElements * header.dataType.byteCount)
            try withContext(input) {
                try reader.read(at: header.dataOffset + first * sampleElements * header.dataType.byteCount,
                                count: storage.byteCount, into: storage.rawAddress)
            }
            let chunk = try Tensor(shape: chunkShape, layout: options.layout, dataType: header.dataType, sharing: storage)
            let result = try module(chunk)  // in place, in the file's dtype: result shares `storage`
            module.reset()  // drop the references to the chunk
            try writer.write(result.storage.rawAddress, count: result.storage.byteCount)
            first += count
            progress.update(first)
        }
        progress.finish()
        try writer.commit()
    }
}
