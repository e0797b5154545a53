import BatchNormKit

/// libFuzzer entry point: the HDF5 writer. An input starting with `L` describes a large group
/// (the next two bytes give up to 4,200 modules, about 8,400 members per group: several
/// symbol-table nodes under a B-tree of two levels; the rest of the bytes seed the values);
/// any other input is parsed as a PuzzleLib file. Either way the modules are written, read
/// back and compared: what was read must be what was written, and writing it again must give
/// the same bytes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHDF5RoundTrip(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let modules: [StateFile.ModuleState]
    if bytes.first == UInt8(ascii: "L"), bytes.count >= 3 {
        modules = largeGroup(count: (Int(bytes[1]) << 8 | Int(bytes[2])) % 4200 + 1, seed: bytes.dropFirst(3))
    } else {
        guard let file = expected({ try StateFile(parsing: bytes) }), file.format == .puzzleLibHDF5,
            let read = expected({ try file.modules() })
        else { return 0 }
        modules = read
    }
    let written = try! StateFile.serialized(modules, format: .puzzleLibHDF5)
    let reread = try! StateFile(parsing: written).modules()
    let order = modules.sorted { $0.name < $1.name } // the order modules() reads them in
    precondition(
        reread
            == order.map { module in
                var expected = module
                expected.state.numOfProps = 0 // PuzzleLib files do not store the counter
                expected.rank = module.rank ?? 5
                return expected
            }, "the modules read back differ from those written")
    precondition(
        try! StateFile.serialized(reread, format: .puzzleLibHDF5)
            == StateFile.serialized(order, format: .puzzleLibHDF5), "writing again changed the bytes")
    return 0
}

/// `count` one-channel modules whose names and values come from `seed`.
func largeGroup(count: Int, seed: ArraySlice<UInt8>) -> [StateFile.ModuleState] {
    (0..<count).map { index in
        let byte = seed.isEmpty ? UInt8(truncatingIfNeeded: index) : seed[seed.startIndex + index % seed.count]
        let value = Float(byte) - 128 + Float(index) / 8
        let affine = byte % 5 != 0
        return StateFile.ModuleState(
            name: "m\(byte).\(index)",
            state: BatchNormState(
                scale: [affine ? value : 1], bias: [affine ? -value : 0], mean: [value], var: [Float(byte)],
                numOfProps: 0),
            rank: 2 + Int(byte % 4), affine: affine)
    }
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
