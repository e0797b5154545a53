import BatchNormKit
import BatchNormReference
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// Shared helpers of the BatchNormKit test suite: the four module classes by rank, seeded
// test data, element-wise comparison against the `Double` reference, module snapshots for
// "unchanged after a throw" checks, and error assertions.

/// The four members of the `BatchNormND` family, by the rank of the data they accept.
public enum Rank: Int, CaseIterable, Sendable, CustomTestStringConvertible {
    case batchNorm = 2
    case batchNorm1D = 3
    case batchNorm2D = 4
    case batchNorm3D = 5

    public var testDescription: String {
        switch self {
        case .batchNorm: "BatchNorm (rank 2)"
        case .batchNorm1D: "BatchNorm1D (rank 3)"
        case .batchNorm2D: "BatchNorm2D (rank 4)"
        case .batchNorm3D: "BatchNorm3D (rank 5)"
        }
    }

    /// Creates the family member accepting this rank.
    public func makeModule(
        maps: Int, epsilon: Double = 1e-5, initFactor: Double = 1, minFactor: Double = 0.1,
        sscale: Double = 0.01, affine: Bool = true, name: String? = nil, empty: Bool = false,
        inplace: Bool = false, backend: any BatchNormBackend<Tensor> = CPUBackend(),
        using generator: inout SeededGenerator
    ) throws -> BatchNormND {
        try BatchNormND.familyMember(forDataRank: rawValue)!.init(
            maps: maps, epsilon: epsilon, initFactor: initFactor, minFactor: minFactor, sscale: sscale, affine: affine,
            name: name, empty: empty, inplace: inplace, backend: backend, using: &generator)
    }

}

/// Every (rank, layout) pair, for parameterized tests.
public let allRanksAndLayouts: [(Rank, TensorLayout)] = Rank.allCases.flatMap { rank in
    TensorLayout.allCases.map { (rank, $0) }
}

extension RandomNumberGenerator {
    /// A standard normal sample (Box–Muller), independent of the library's own sampler.
    public mutating func standardNormal() -> Double {
        let u1 = Double.random(in: Double.ulpOfOne...1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// Seeded test data in logical order: channel `c` of `x` is `offset + mean[c] + sd[c]·z`
/// with per-channel `mean[c] ∈ [−2, 2]` and `sd[c] ∈ [0.5, 3]` drawn first, so channels
/// differ visibly and a channel mix-up in a kernel shows.
public func randomTensor(
    shape: [Int], layout: TensorLayout, offset: Double = 0,
    using generator: inout SeededGenerator
) throws -> Tensor {
    let geometry = ChannelGeometry(shape: shape)
    let means = (0..<geometry.channels).map { _ in Double.random(in: -2...2, using: &generator) }
    let deviations = (0..<geometry.channels).map { _ in Double.random(in: 0.5...3, using: &generator) }
    var values = [Float]()
    values.reserveCapacity(geometry.elementCount)
    for logical in 0..<geometry.elementCount {
        let c = (logical / geometry.spatial) % geometry.channels
        values.append(Float(offset + means[c] + deviations[c] * generator.standardNormal()))
    }
    return try Tensor(values, shape: shape, layout: layout)
}

/// `Tensor.scalars` widened to `Double`, for the reference.
public func doubles(_ tensor: Tensor) -> [Double] { tensor.scalars.map(Double.init) }

/// The comparison floor used throughout: the root mean square of the expected values
/// (their spread, as ``ReferenceComparison/maximumRelativeError(_:_:floor:)`` suggests;
/// at least `10⁻³⁰`). An element of typical or larger size is held to the relative
/// tolerance itself; one that is near zero only through cancellation is held to the same
/// bound relative to the typical size, which is all `Float` arithmetic can promise there.
public func comparisonFloor(_ expected: [Double]) -> Double {
    rootMeanSquare(expected)
}

/// `sqrt(Σv² / n)`, at least `10⁻³⁰` (so that an all-zero expectation needs exact zeros).
public func rootMeanSquare(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 1e-30 }
    let meanSquare = values.reduce(0) { $0 + $1 * $1 } / Double(values.count)
    return max(meanSquare.squareRoot(), 1e-30)
}

/// Expects `actual` to match `expected` element by element:
/// `max |a − e| / (|e| + floor) <= tolerance`, `floor` from ``comparisonFloor(_:)``
/// (the RMS of `expected`) unless given. With `BN_TEST_VERBOSE` set in the environment,
/// every comparison prints its error (`ERRSTAT <what> <error>`), for reviewing tolerances.
public func expectClose(
    _ actual: [Float], _ expected: [Double], tolerance: Double, floor: Double? = nil,
    _ what: @autoclosure () -> String, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(
        actual.count == expected.count, "\(what()): \(actual.count) values, expected \(expected.count)",
        sourceLocation: sourceLocation)
    guard actual.count == expected.count else { return }
    let floor = floor ?? comparisonFloor(expected)
    let error = ReferenceComparison.maximumRelativeError(actual, expected, floor: floor)
    if getenv("BN_TEST_VERBOSE") != nil { print("ERRSTAT \(what()) \(error)") }
    #expect(
        error <= tolerance, "\(what()): max relative error \(error) > \(tolerance) (floor \(floor))",
        sourceLocation: sourceLocation)
}

/// Bit patterns of `Float` values, for exact comparisons that also distinguish `-0` and NaNs.
public func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Everything observable about a module, to check that a throwing call left it unchanged.
public struct ModuleSnapshot: Equatable {
    public var state: BatchNormState?
    public var numOfProps: Int
    public var isTraining: Bool
    public var scaleGrad: [UInt32]?
    public var biasGrad: [UInt32]?
    public var savemean: [UInt32]?
    public var saveinvvar: [UInt32]?
    public var inData: ObjectIdentifier?
    public var data: ObjectIdentifier?
    public var grad: ObjectIdentifier?
    public var numOfParams: Int

    public init(_ module: BatchNormND) {
        state = try? module.state()
        numOfProps = module.numOfProps
        isTraining = module.isTraining
        scaleGrad = (try? module.scaleGrad).map { bits($0.scalars) }
        biasGrad = (try? module.biasGrad).map { bits($0.scalars) }
        savemean = module.savemean.map { bits($0.scalars) }
        saveinvvar = module.saveinvvar.map { bits($0.scalars) }
        inData = module.inData.map { ObjectIdentifier($0.storage) }
        data = module.data.map { ObjectIdentifier($0.storage) }
        grad = module.grad.map { ObjectIdentifier($0.storage) }
        numOfParams = module.numOfParams
    }
}

/// Expects `body` to throw exactly `expected`, whose `description` contains every one of
/// `fragments` (the expected and actual values it must name), and `module` (when given)
/// to be unchanged afterwards.
public func expectError(
    _ expected: BatchNormError, mentioning fragments: [String], module: BatchNormND? = nil,
    sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) {
    let before = module.map(ModuleSnapshot.init)
    do {
        try body()
        Issue.record("expected \(expected) to be thrown, nothing was", sourceLocation: sourceLocation)
    } catch let error as BatchNormError {
        #expect(error == expected, sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(
                error.description.contains(fragment),
                "description \"\(error.description)\" does not mention \"\(fragment)\"",
                sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected \(expected), got \(error)", sourceLocation: sourceLocation)
    }
    if let module, let before {
        #expect(ModuleSnapshot(module) == before, "module changed by a throwing call", sourceLocation: sourceLocation)
    }
}
