import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// The HDF5 reader on files written by h5py (scripts/make_puzzlelib_fixtures.py).
@Suite struct HDF5FileTests {
    /// One module of a fixture's expected-values JSON.
    struct ExpectedModule {
        var name: String
        var rank: Int
        var scale: [Float], bias: [Float], mean: [Float], variance: [Float]
    }

    static func expected(_ name: String) throws -> [ExpectedModule] {
        let data = try Data(contentsOf: URL(fileURLWithPath: StateFixtures.path(name)))
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let modules = try #require(root["modules"] as? [[String: Any]])
        return try modules.map { module in
            func values(_ key: String) throws -> [Float] { try #require(module[key] as? [Double]).map { Float($0) } }
            return ExpectedModule(
                name: try #require(module["name"] as? String), rank: try #require(module["rank"] as? Int),
                scale: try values("scale"), bias: try values("bias"), mean: try values("mean"),
                variance: try values("var"))
        }
    }

    static let fixtures = [
        "puzzlelib_container", "puzzlelib_unnamed", "puzzlelib_float16", "puzzlelib_many", "puzzlelib_storage",
    ]

    @Test(arguments: fixtures) func readsEveryDatasetOfAnH5pyFile(_ fixture: String) throws {
        let file = try HDF5File(contentsOfFile: StateFixtures.path(fixture + ".hdf"))
        #expect(file.groups.contains("params") && file.groups.contains("links") && file.groups.contains("attrs"))
        for module in try Self.expected(fixture + ".json") {
            let shape = [1, module.mean.count] + Array(repeating: 1, count: module.rank - 2)
            for (field, values) in [("scale", module.scale), ("bias", module.bias)] {
                let link = try #require(file.dataset("links/\(module.name).\(field)"))
                #expect(link.shape == [])
                let index = try #require(try file.integerValues(of: link).first)
                let parameter = try #require(file.dataset("params/\(index)"))
                #expect(parameter.shape == shape)
                #expect(
                    try file.floatValues(of: parameter).map(\.bitPattern) == values.map(\.bitPattern),
                    "\(module.name).\(field)")
            }
            for (field, values) in [("mean", module.mean), ("var", module.variance)] {
                let attribute = try #require(file.dataset("attrs/\(module.name).\(field)"))
                #expect(attribute.shape == shape)
                #expect(
                    try file.floatValues(of: attribute).map(\.bitPattern) == values.map(\.bitPattern),
                    "\(module.name).\(field)")
            }
        }
    }
}
