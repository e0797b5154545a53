import ArgumentParser
import BatchNormKit

extension CalibrateCommand {
    /// The state calibration starts from: scale and bias from `--state` (1 and 0 without
    /// it), fresh running statistics, or the whole state with `--continue`.
    func initialState() throws -> BatchNormState {
        var initial = BatchNormState(scale: Array(repeating: 1, count: maps), bias: Array(repeating: 0, count: maps),
                                     mean: Array(repeating: 0, count: maps), var: Array(repeating: 1, count: maps),
                                     numOfProps: 0)
        if let state {
            let loaded = try readState(path: state, prefix: options.prefix, maps: maps)
            initial.scale = loaded.scale
            initial.bias = loaded.bias
            if continueStatistics {
                initial = loaded
            }
        }
        return initial
    }

    /// `bnkit calibrate --mpi`, one process per rank under `mpirun`: step `k`'s batch is the
    /// union of every rank's `k`-th file (rank `r` takes files `r`, `r + size`, ...; a rank
    /// with no file left contributes an empty batch), so the result equals a single-process
    /// `calibrate` over the per-step concatenations along `N`. Rank 0 writes the output
    /// (atomically). A rank that cannot read its file makes every rank fail, naming it.
    func runMPI() throws {
        let group: MPIProcessGroup
        do { group = try MPIProcessGroup.world() } catch { throw CommandFailure("--mpi: \(error)") }
        let initial = try initialState()
        let steps = (files.count + group.size - 1) / group.size
        var module: BatchNormND?
        var template: Tensor?
        var values = 0
        for step in 0..<steps {
            let index = step * group.size + group.rank
            var batch: Tensor?
            var failure: (any Error)?
            do {
                if index < files.count {
                    batch = try withContext(files[index]) { try readBatch(files[index]) }
                } else {
                    // No file left: an empty batch of the same axes as the first file.
                    if template == nil { template = try withContext(files[0]) { try readBatch(files[0]) } }
                    if let template {
                        batch = try Tensor(zeros: [0] + template.shape.dropFirst(), layout: template.layout)
                    }
                }
                if module == nil, let batch {
                    let created = try makeModule(rank: batch.rank, maps: maps, epsilon: options.epsilon,
                                                 initFactor: initFactor, minFactor: minFactor)
                    try created.load(initial)
                    created.trainMode()
                    created.processGroup = group
                    module = created
                }
            } catch {
                failure = error
            }
            // Every rank learns whether every rank has its batch before the collective forward.
            let statuses = try group.allGather([failure == nil ? 0 : 1])
            if let failure { throw failure }
            if let failed = statuses.indices.first(where: { statuses[$0] != 0 }) {
                let file = step * group.size + failed
                throw CommandFailure("rank \(failed) could not read its batch \(file < files.count ? files[file] : files[0])")
            }
            guard let module, let batch else { throw CommandFailure("rank \(group.rank): no batch at step \(step)") }
            _ = try module(batch)
            module.reset()
            values += batch.elementCount / maps
        }
        let total = try group.allGather([Double(values)]).reduce(0, +)
        guard group.rank == 0, let module else { return }
        try withContext(output) { try module.saveState(toFile: output, prefix: options.prefix) }
        print("calibrated \(maps) maps over \(files.count) batch\(files.count == 1 ? "" : "es") on \(group.size) rank\(group.size == 1 ? "" : "s") "
              + "(\(steps) synchronized steps, \(Int(total)) values per channel); num_batches_tracked "
              + "\(module.numOfProps); wrote \(output)")
    }

    /// One batch as `float32` in the layout of `--layout`.
    func readBatch(_ file: String) throws -> Tensor {
        let batch = try Tensor(contentsOfNPYFile: file, fileLayout: options.layout)
        return batch.dataType == .float32 ? batch : batch.converted(to: options.layout, dataType: .float32)
    }
}
