import BatchNormKit
import BatchNormTestSupport
import Testing

/// Valid HDF5 files that h5py reads, with links, shared groups, non-UTF-8 names and external
/// storage (written by scripts/make_link_fixtures.py): the module is read wherever it is
/// readable, and what is not readable is named, never merged or called corrupt.
struct HDF5LinkTests {
    /// The module "bn" that every fixture holds.
    static let expected = BatchNormState(
        scale: [1.5, 2.5], bias: [0.25, -0.25], mean: [3, 4], var: [5, 6], numOfProps: 0)

    /// Soft links (a dangling one included) are listed and skipped; the module beside them loads.
    @Test func softLinksAreSkipped() throws {
        let file = try StateFile(contentsOfFile: StateFixtures.path("links_soft.hdf"))
        #expect(file.moduleNames == ["bn"])
        #expect(try file.module("bn", maps: 2, rank: 5).state == Self.expected)
        let hdf5 = try HDF5File(contentsOfFile: StateFixtures.path("links_soft.hdf"))
        #expect(hdf5.links == ["links/dangling": "/nowhere", "alias": "/params/0"])
        #expect(hdf5.dataset("alias") == nil)
    }

    /// A group reached by two hard links is read under both paths, not refused as a cycle.
    @Test func aSharedGroupIsReadUnderBothPaths() throws {
        let hdf5 = try HDF5File(contentsOfFile: StateFixtures.path("links_shared_group.hdf"))
        #expect(hdf5.groups.contains("params_copy"))
        let copy = try #require(hdf5.dataset("params_copy/0"))
        #expect(try hdf5.floatValues(of: copy) == [1.5, 2.5])
        let file = try StateFile(contentsOfFile: StateFixtures.path("links_shared_group.hdf"))
        #expect(try file.module("bn").state == Self.expected)
    }

    /// An external link turns the root group new-style (links in its header): read, the link skipped.
    @Test func anExternalLinkIsSkipped() throws {
        let hdf5 = try HDF5File(contentsOfFile: StateFixtures.path("links_external.hdf"))
        #expect(hdf5.links == ["outside": "other.h5:/x"])
        let file = try StateFile(contentsOfFile: StateFixtures.path("links_external.hdf"))
        #expect(try file.module("bn").state == Self.expected)
    }

    /// Names that differ only in bytes that are not UTF-8 are refused, naming the bytes,
    /// instead of being read as one module.
    @Test func nonUTF8NamesAreRefusedNotMerged() throws {
        #expect {
            _ = try StateFile(contentsOfFile: StateFixtures.path("links_non_utf8.hdf"))
        } throws: { error in
            "\(error)".contains("not UTF-8 (bytes 62 6e fe 2e")
        }
    }

    /// External storage is named as unsupported when the values are read.
    @Test func externalStorageIsNamedAsUnsupported() throws {
        let file = try StateFile(contentsOfFile: StateFixtures.path("links_external_storage.hdf"))
        #expect {
            _ = try file.module("bn")
        } throws: { error in
            error as? HDF5Error
                == .unsupported(
                    feature:
                        "external storage of dataset 'attrs/bn.var' (its values are in other files, named by an external data files message)"
                )
        }
    }
}
