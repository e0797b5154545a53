import BatchNormCUDAChecks
import BatchNormCore
import Testing

/// Checks the comparison harness of `bnkit selftest` where no GPU is needed: with the CPU
/// backend standing in for the GPU, every float32 host-backend case must pass (so a failure
/// on a GPU machine points at the GPU code, not at the harness or its tolerances).
@Suite struct HarnessTests {
    static let cases = CUDASelfTest.cases(randomCount: 2, seed: 7, small: true)
        .filter { $0.dataType == .float32 && $0.path == .hostBackend }

    @Test(arguments: cases)
    func harnessPassesWithCPUStandIn(_ testCase: CUDASelfTestCase) {
        let result = CUDASelfTest.runWithCPUStandIn(testCase)
        #expect(result.passed, "\(result.line)")
    }

    @Test func caseListCoversTheRequiredKinds() {
        let cases = CUDASelfTest.cases()
        #expect(cases.contains { $0.arange && $0.shape == [5, 3, 10, 10, 10] })
        #expect(cases.contains { $0.shape.count > 1 && $0.shape[1] == 1 }) // C = 1
        #expect(cases.contains { $0.shape.dropFirst(2).reduce(1, *) >= 500_000 }) // huge spatial
        #expect(cases.contains { $0.shape.count > 1 && $0.shape[1] >= 256 }) // many channels
        #expect(cases.contains { $0.shape.contains { $0 > 1 && $0 % 2 == 1 } }) // odd sizes
        for layout in TensorLayout.allCases { #expect(cases.contains { $0.layout == layout }) }
        for dataType in TensorDataType.allCases { #expect(cases.contains { $0.dataType == dataType }) }
        for path in CUDASelfTestCase.Path.allCases { #expect(cases.contains { $0.path == path }) }
    }

    @Test func unsupportedStandInCasesFailVisibly() {
        let testCase = CUDASelfTestCase(
            shape: [2, 3, 4], layout: .channelsFirst, dataType: .float16, path: .hostBackend)
        let result = CUDASelfTest.runWithCPUStandIn(testCase)
        #expect(!result.passed)
        #expect(result.line.hasPrefix("FAIL"))
    }
}
