import BatchNormKit
import BatchNormTestSupport
import Testing

/// Groups larger than one symbol-table node: written under a B-tree of several levels, read
/// back whole, each module found by its path in constant time.
struct HDF5LargeGroupTests {
    /// `count` one-channel modules with distinct values.
    static func modules(_ count: Int) -> [StateFile.ModuleState] {
        (0..<count).map { index in
            let value = Float(index), affine = index % 7 != 0
            return StateFile.ModuleState(
                name: "m\(index)",
                state: BatchNormState(
                    scale: [affine ? value + 0.5 : 1], bias: [affine ? -value : 0], mean: [value * 2],
                    var: [value + 1], numOfProps: 0),
                rank: 4, affine: affine)
        }
    }

    /// 32,769 modules: 65,538 members in `params`, past the 16-bit count of one symbol-table
    /// node (at 32,768 modules every dataset was lost before). Every module comes back as it went in.
    @Test func moreMembersThanOneSymbolTableNodeCountsRoundTrip() throws {
        let modules = Self.modules(32_769).sorted { $0.name < $1.name } // the order modules() reads them in
        let bytes = try StateFile.serialized(modules, format: .puzzleLibHDF5)
        let file = try StateFile(parsing: bytes)
        #expect(file.entries.count == 6 * modules.count) // two links, two params, two attrs each
        let read = try file.modules()
        #expect(read.count == modules.count)
        let byName = Dictionary(uniqueKeysWithValues: read.map { ($0.name, $0) })
        for module in modules { #expect(byName[module.name] == module) }
        // Written again, the bytes are the same.
        #expect(try StateFile.serialized(read, format: .puzzleLibHDF5) == bytes)
    }

    /// A module saved with `affine: false` stays so through a PuzzleLib file, with scale 1 and
    /// bias 0 stored as PuzzleLib stores them; through safetensors it has no weight and bias.
    @Test func aNonAffineModuleStaysNonAffine() throws {
        let module = StateFile.ModuleState(
            name: "bn",
            state: BatchNormState(scale: [1, 1], bias: [0, 0], mean: [1, 2], var: [3, 4], numOfProps: 0),
            rank: 5, affine: false)
        let hdf5 = try StateFile(parsing: try StateFile.serialized([module], format: .puzzleLibHDF5))
        #expect(try hdf5.modules() == [module])
        #expect(hdf5.entries.map(\.name).contains("params/0"))
        let safeTensors = try StateFile(parsing: try StateFile.serialized(try hdf5.modules(), format: .safeTensors))
        #expect(safeTensors.entries.map(\.name) == ["bn.num_batches_tracked", "bn.running_mean", "bn.running_var"])
        var affine = module
        affine.affine = true
        #expect(
            try StateFile(parsing: try StateFile.serialized([affine], format: .puzzleLibHDF5)).modules() == [affine])
    }
}
