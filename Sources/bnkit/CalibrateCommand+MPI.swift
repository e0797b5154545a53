import ArgumentParser
import BatchNormKit

extension CalibrateCommand {
    /// `bnkit calibrate --mpi`, one process per rank under `mpirun`: step `k`'s batch is the
    /// union of every rank's `k`-th file (rank `r` takes files `r`, `r + size`, ...; a rank
    /// with no file left contributes an empty batch), so the result equals a single-process
    /// `calibrate` over the per-step concatenations along `N`. Rank 0 writes the output
    /// (atomically). A rank that cannot read its file makes every rank fail, naming it.
    func runMPI() throws {
        let group: MPIProcessGroup
        do { group = try MPIProcessGroup.world() } catch { throw CommandFailure("--mpi: \(error)") }
        let setup = try prepare()
        let maps = setup.maps
        let steps = (files.count + group.size - 1) / group.size
        var module: BatchNormND?
        var values = 0
        for step in 0..<steps {
            let index = step * group.size + group.rank
            var batch: Tensor?
            var failure: (any Error)?
            do {
                if index < files.count {
                    try setup.check(try BatchShape(file: files[index], layout: options.layout))
                    batch = try withContext(files[index]) { try readBatch(files[index]) }
                } else {
                    // No file left: an empty batch of the first file's axes.
                    batch = try Tensor(zeros: [0] + setup.first.shape.dropFirst(), layout: options.layout)
                }
                if module == nil, batch != nil {
                    let created = try setup.loadedModule(self)
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
                throw CommandFailure(
                    "rank \(failed) could not read its batch \(file < files.count ? files[file] : files[0])")
            }
            guard let module, let batch else { throw CommandFailure("rank \(group.rank): no batch at step \(step)") }
            _ = try module(batch)
            module.reset()
            values += batch.elementCount / maps
        }
        let total = try group.allGather([Double(values)]).reduce(0, +)
        guard group.rank == 0, let module else { return }
        try withContext(output) { try module.saveState(toFile: output, prefix: options.prefix) }
        print(
            "calibrated \(maps) maps over \(files.count) batch\(files.count == 1 ? "" : "es") on \(group.size) rank\(group.size == 1 ? "" : "s") "
                + "(\(steps) synchronized steps, \(Int(total)) values per channel); num_batches_tracked "
                + "\(module.numOfProps); wrote \(output)")
    }
}
