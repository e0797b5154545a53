import BatchNormKit

/// libFuzzer entry point: a state file (safetensors or PuzzleLib HDF5, recognized by its first
/// bytes) loaded into modules, as `bnkit normalize --state` does. Parsing, every BatchNorm
/// module the file holds, loading it into the family member of its rank, saving it again in
/// the same format and an evaluation forward must either throw one of the library's input
/// errors or leave a module whose state round-trips through its own file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStateLoading(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let file = expected({ try StateFile(parsing: bytes) }),
        let modules = expected({ try file.modules() })
    else { return 0 }
    for stored in modules where stored.state.maps <= 4096 {
        let rank = stored.rank ?? 5
        guard let family = BatchNormND.familyMember(forDataRank: rank) else {
            preconditionFailure("module '\(stored.name)' read with rank \(rank)")
        }
        var generator = SeededGenerator(seed: 0)
        let module = try! family.init(
            maps: stored.state.maps, affine: stored.affine, name: stored.name, empty: true,
            using: &generator)
        try! module.load(stored.state) // a state the file gave out must be loadable
        precondition(try! module.state() == stored.state, "a loaded state differs from the file's")
        let again = try! StateFile.serialized(
            [
                StateFile.ModuleState(
                    name: stored.name, state: stored.state, rank: rank,
                    affine: stored.affine)
            ], format: file.format)
        let reread = try! StateFile(parsing: again).module(stored.name, rank: rank, affine: stored.affine)
        precondition(reread.state == stored.state, "a saved state does not load back")
        module.evalMode()
        let x = try! Tensor.ones(shape: [2, stored.state.maps] + Array(repeating: 1, count: rank - 2))
        _ = try! module(x)
    }
    return 0
}

/// The result of `body`, or `nil` when it throws one of the library's input errors; any
/// other error stops the fuzzer.
func expected<T>(_ body: () throws -> T) -> T? {
    do { return try body() } catch is SafeTensorsError { return nil } catch is StateFileError {
        return nil
    } catch is HDF5Error { return nil } catch is BatchNormError { return nil } catch {
        fatalError("unexpected error type \(type(of: error)): \(error)")
    }
}
