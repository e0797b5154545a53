import BatchNormCUDA
import BatchNormCUDAChecks
import BatchNormCore
import BatchNormReference
import Foundation
import Testing

/// The device-tensor path with a process group (host-staged: moments and sums come to the
/// host, are all-gathered and merged, and the coefficients go back), two members on threads
/// sharing one device. Needs a CUDA driver or Tools/KernelEmulation's stand-in.
@Suite(
    .enabled(if: cudaAvailable, "SKIPPED: no CUDA driver/GPU/NVRTC (use Tools/KernelEmulation/build_fake_driver.sh)"))
struct SynchronizedDeviceTests {
    /// Per-member outcomes: the replicated state, the rank's y and dx, all-gathers made.
    struct Outcome: Sendable {
        var replicated: [Float] = []
        var y: [Float] = []
        var dx: [Float] = []
        var gathers = 0
        var error: String?
    }

    static func runMembers(_ body: @escaping @Sendable (LocalProcessGroup) throws -> Outcome) throws -> [Outcome] {
        let members = try LocalProcessGroup.members(count: 2, timeout: 300)
        let lock = NSLock()
        nonisolated(unsafe) var outcomes = [Outcome](repeating: Outcome(), count: 2)
        let done = DispatchGroup()
        for member in members {
            done.enter()
            Thread {
                let outcome = (try? body(member)) ?? Outcome(error: "threw")
                lock.withLock { outcomes[member.rank] = outcome }
                done.leave()
            }.start()
        }
        done.wait()
        return lock.withLock { outcomes }
    }

    @Test(arguments: TensorLayout.allCases)
    func devicePathMatchesOneHostModuleOnTheConcatenatedBatch(layout: TensorLayout) throws {
        let batches = [3, 1], maps = 3, spatial = [2, 3, 4]
        let row = maps * spatial.reduce(1, *), total = batches.reduce(0, +)
        var generator = SeededGenerator(seed: 9)
        let x = (0..<(total * row)).map { _ in Float(Double.random(in: -2...2, using: &generator) + 5) }
        let g = (0..<(total * row)).map { _ in Float(Double.random(in: -1...1, using: &generator)) }
        @Sendable func slice(_ values: [Float], rank: Int) -> [Float] {
            Array(values[(batches[..<rank].reduce(0, +) * row)..<(batches[...rank].reduce(0, +) * row)])
        }
        let outcomes = try Self.runMembers { member in
            let device = try CUDADevice.shared()
            let counting = CountingProcessGroup(member)
            var seed = SeededGenerator(seed: 1)
            let bn = try BatchNorm3D(maps: maps, sscale: 0.3, processGroup: counting, using: &seed)
            let shape = [batches[member.rank], maps] + spatial
            var outcome = Outcome()
            for _ in 0..<3 {
                let y = try bn(
                    DeviceTensor(
                        Tensor(slice(x, rank: member.rank), shape: shape, layout: layout),
                        on: device))
                let dx = try bn.backward(
                    DeviceTensor(
                        Tensor(slice(g, rank: member.rank), shape: shape, layout: layout),
                        on: device))
                outcome.y = try y.toHost().scalars
                outcome.dx = try dx?.toHost().scalars ?? []
            }
            outcome.gathers = counting.count
            outcome.replicated = try [bn.mean, bn.var, bn.scaleGrad, bn.biasGrad].flatMap(\.scalars)
            return outcome
        }
        var seed = SeededGenerator(seed: 1)
        let whole = try BatchNorm3D(maps: maps, sscale: 0.3, using: &seed)
        var wholeY = [Float](), wholeDx = [Float]()
        for _ in 0..<3 {
            wholeY = try whole(Tensor(x, shape: [total, maps] + spatial, layout: layout)).scalars
            wholeDx = try whole.backward(Tensor(g, shape: [total, maps] + spatial, layout: layout))?.scalars ?? []
        }
        let wholeState = try [whole.mean, whole.var, whole.scaleGrad, whole.biasGrad].flatMap(\.scalars)
        #expect(outcomes.allSatisfy { $0.error == nil && $0.gathers == 6 })
        #expect(bits(outcomes[0].replicated) == bits(outcomes[1].replicated), "ranks differ")
        for (rank, outcome) in outcomes.enumerated() {
            expectClose(outcome.y, slice(wholeY, rank: rank), 1e-5, "y rank \(rank)")
            expectClose(outcome.dx, slice(wholeDx, rank: rank), 1e-5, "dx rank \(rank)")
            expectClose(outcome.replicated, wholeState, 1e-5, "state rank \(rank)")
        }
    }

    /// What `bnkit selftest --device cuda` runs after its cases: the shared synchronized
    /// comparison, the members computing on device tensors.
    @Test(arguments: CUDASelfTest.synchronizedCases)
    func selftestSynchronizedCasesPass(_ comparison: SynchronizedComparison) throws {
        let line = CUDASelfTest.runSynchronized(comparison, on: try CUDADevice.shared())
        #expect(line.hasPrefix("PASS  "), "\(line)")
    }

    @Test func aRankWithNaNMakesBothThrowAndLeavesBothUnchanged() throws {
        let outcomes = try Self.runMembers { member in
            let device = try CUDADevice.shared()
            let bn = try BatchNorm3D(maps: 2)
            var values = (0..<48).map { Float($0 % 7) }
            if member.rank == 1 { values[5] = .nan }
            bn.processGroup = member
            let before = try bn.state()
            var outcome = Outcome()
            do {
                _ = try bn(DeviceTensor(Tensor(values, shape: [2, 2, 2, 2, 3]), on: device))
                outcome.error = "no error"
            } catch BatchNormError.peerFailed(let rank, _) where member.rank == 0 && rank == 1 {
            } catch BatchNormError.nonFiniteStatistics where member.rank == 1 {
            } catch {
                outcome.error = "\(error)"
            }
            if try bn.state() != before || bn.numOfProps != 0 { outcome.error = "module changed" }
            return outcome
        }
        #expect(outcomes.map(\.error) == [nil, nil])
    }

    private func expectClose(_ actual: [Float], _ expected: [Float], _ tolerance: Double, _ what: String) {
        let floor = max(
            (expected.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, expected.count)))
                .squareRoot(), 1e-30)
        let error = ReferenceComparison.maximumRelativeError(actual, expected.map(Double.init), floor: floor)
        #expect(actual.count == expected.count && error <= tolerance, "\(what): relative error \(error)")
    }

    private func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }
}
