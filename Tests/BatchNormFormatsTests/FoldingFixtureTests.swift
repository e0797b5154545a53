import BatchNormKit
import BatchNormReference
import BatchNormTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// `foldedConvolution` against PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_weights` (made by
/// scripts/make_fold_fixtures.py): Conv1d/2d/3d, plain and transposed, groups 1 and 2, with and
/// without a bias, float32 and float16 weights.
///
/// PyTorch computes in `Float32` (`rsqrt(var + ε)`, then two products, for the bias a difference,
/// a product and a sum) and, for `Float16` weights, rounds that `Float32` result to `Float16`;
/// BatchNormKit computes in `Double` and rounds once. So the results agree to PyTorch's own
/// rounding error: within 4 `Float32` ulps of the larger term of the formula (`|w·k|` for a
/// weight, `max(|k·(b − mean)|, |bias|)` for a bias, since the sum may cancel) for `Float32`,
/// and within 1 `Float16` ulp of it for `Float16` (the `Float32` result can sit on the other
/// side of a `Float16` midpoint). The library against the `Double` reference, bit for bit, is
/// `BatchNormNDFoldingTests` in the core tests.
@Suite struct FoldingFixtureTests {
    struct Case: Decodable {
        var name: String
        var dims: Int
        var transposed: Bool
        var groups: Int
        var bias: Bool
        var dtype: String
        var epsilon: Double
    }

    static let fixture = "fold_torch_cases.safetensors"

    /// The tolerance unit of a value of magnitude `magnitude` in `dataType`: its ulp there.
    static func ulp(at magnitude: Double, _ dataType: TensorDataType) -> Double {
        dataType == .float16 ? Double(Float16(magnitude).ulp) : Double(Float(magnitude).ulp)
    }

    @Test func matchesPyTorch() throws {
        let path = StateFixtures.path(Self.fixture)
        let file = try SafeTensorsFile(contentsOfFile: path)
        let states = try StateFile(contentsOfFile: path)
        let cases = try JSONDecoder().decode([Case].self, from: Data((file.metadata["cases"] ?? "[]").utf8))
        #expect(cases.count == 48)
        var worst: [String: Double] = [:]
        for testCase in cases {
            let tensor = { (key: String) throws -> Tensor? in
                try file.tensors["\(testCase.name).\(key)"].map { try Tensor(safeTensorsEntry: $0, key: key) }
            }
            let weight = try #require(try tensor("conv.weight"))
            let bias = try tensor("conv.bias")
            #expect((bias != nil) == testCase.bias)
            #expect(weight.dataType.rawValue == testCase.dtype)
            let state = try states.module("\(testCase.name).bn").state
            var generator = SeededGenerator(seed: 0)
            let bn = try #require(Rank(rawValue: testCase.dims + 2)).makeModule(
                maps: state.maps, epsilon: testCase.epsilon, empty: true, using: &generator)
            try bn.load(state)
            bn.evalMode()
            let folded = try bn.foldedConvolution(
                weight: weight, bias: bias, transposed: testCase.transposed, groups: testCase.groups)
            let torchWeight = try #require(try tensor("folded.weight"))
            let torchBias = try #require(try tensor("folded.bias"))
            #expect(folded.weight.shape == torchWeight.shape && folded.weight.dataType == torchWeight.dataType)
            #expect(folded.bias.shape == torchBias.shape && folded.bias.dataType == torchBias.dataType)

            // The terms of the formula, in Double, give the scale of PyTorch's rounding error.
            let reference = ReferenceBatchNorm(state: state, epsilon: testCase.epsilon)
            let unfolded = reference.foldedConvolution(
                weight: doubles(weight), shape: weight.shape, bias: bias.map(doubles),
                transposed: testCase.transposed, groups: testCase.groups)
            let biasTerms = (0..<state.maps).map { o in
                max(abs(unfolded.bias[o] - Double(state.bias[o])), abs(Double(state.bias[o])))
            }
            let allowed = testCase.dtype == "float16" ? 1.0 : 4.0
            for (what, actual, expected, magnitudes) in [
                ("weight", folded.weight.scalars, torchWeight.scalars, unfolded.weight.map(abs)),
                ("bias", folded.bias.scalars, torchBias.scalars, biasTerms),
            ] {
                var caseWorst = 0.0
                for (index, (a, e)) in zip(actual, expected).enumerated() {
                    let ulps = abs(Double(a) - Double(e)) / Self.ulp(at: magnitudes[index], folded.weight.dataType)
                    caseWorst = max(caseWorst, ulps.isNaN ? .infinity : ulps)
                }
                #expect(caseWorst <= allowed, "\(testCase.name) \(what): \(caseWorst) ulps from PyTorch")
                worst["\(testCase.dtype) \(what)", default: 0] = max(worst["\(testCase.dtype) \(what)"] ?? 0, caseWorst)
            }
        }
        if getenv("BN_TEST_VERBOSE") != nil { print("ERRSTAT folding vs PyTorch, worst ulps: \(worst)") }
    }
}
