import BatchNormKit

/// libFuzzer entry point: a state file loaded into modules, as `bnkit normalize --state`
/// does. Parsing, every BatchNorm state the file holds (bare keys and every prefix of a
/// `running_mean` key, with and without `affine`), loading into a module of every rank and
/// an evaluation forward must either throw a `SafeTensorsError` or `BatchNormError`, or
/// leave a module whose state round-trips through its own file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStateLoading(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let file = expected({ try SafeTensorsFile(parsing: bytes) }) else { return 0 }
    let prefixes = Set(file.tensors.keys.compactMap { key -> String? in
        guard key == "running_mean" || key.hasSuffix(".running_mean") else { return nil }
        return String(key.dropLast("running_mean".count)).split(separator: ".", omittingEmptySubsequences: false)
            .dropLast().joined(separator: ".")
    })
    for prefix in prefixes.sorted() {
        for affine in [true, false] {
            guard let state = expected({ try BatchNormState(safeTensors: file, prefix: prefix, requireAffine: affine) }),
                  state.maps <= 4096 else { continue }
            for rank in 2...5 {
                var generator = SeededGenerator(seed: 0)
                let family = BatchNormND.familyMember(forDataRank: rank)!
                let module = try! family.init(maps: state.maps, empty: true, using: &generator)
                guard expected({ try module.load(state) }) != nil else { continue }
                precondition(try! module.state() == state, "a loaded state differs from the file's")
                let reloaded = try! family.init(maps: state.maps, empty: true, using: &generator)
                try! reloaded.loadState(from: try! module.stateSafeTensors(prefix: prefix), prefix: prefix)
                precondition(try! reloaded.state() == state, "a saved state does not load back")
                module.evalMode()
                let x = try! Tensor.ones(shape: [2, state.maps] + Array(repeating: 1, count: rank - 2))
                _ = expected { try module(x) }
            }
        }
    }
    return 0
}

/// The result of `body`, or `nil` when it throws one of the library's input errors; any
/// other error stops the fuzzer.
func expected<T>(_ body: () throws -> T) -> T? {
    do { return try body() } catch is SafeTensorsError { return nil } catch is BatchNormError { return nil } catch {
        fatalError("unexpected error type \(type(of: error)): \(error)")
    }
}
