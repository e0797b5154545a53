import BatchNormCore
import BatchNormTestSupport
import Testing

/// The family members by data rank, and their class-level rank.
@Suite struct BatchNormNDFamilyTests {
    @Test func familyMemberMatchesRank() throws {
        #expect(BatchNormND.familyMember(forDataRank: 2) == BatchNorm.self)
        #expect(BatchNormND.familyMember(forDataRank: 3) == BatchNorm1D.self)
        #expect(BatchNormND.familyMember(forDataRank: 4) == BatchNorm2D.self)
        #expect(BatchNormND.familyMember(forDataRank: 5) == BatchNorm3D.self)
        #expect(BatchNormND.familyMember(forDataRank: 1) == nil)
        #expect(BatchNormND.familyMember(forDataRank: 6) == nil)
        for rank in 2...5 {
            var generator = SeededGenerator(seed: UInt64(rank))
            let module = try BatchNormND.familyMember(forDataRank: rank)!.init(maps: 2, using: &generator)
            #expect(module.dataRank == rank)
            #expect(try module.mean.shape == [1, 2] + Array(repeating: 1, count: rank - 2))
        }
    }
}
