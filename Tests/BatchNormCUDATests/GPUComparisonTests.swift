import BatchNormCUDA
import BatchNormCUDAChecks
import BatchNormCore
import Testing

/// Whether a CUDA driver, a GPU and NVRTC are present (decided once).
let cudaAvailable: Bool = {
    guard case .success(let device) = CUDADevice.availability() else { return false }
    return (try? device.prepareKernels()) != nil
}()

/// The GPU against the CPU backend and the `Double` reference: the cases of
/// `bnkit selftest` (without the huge ones). Reported as skipped without a GPU.
@Suite(
    .enabled(
        if: cudaAvailable, "SKIPPED: no CUDA driver/GPU/NVRTC (run `bnkit selftest --device cuda` on a GPU machine)"))
struct GPUComparisonTests {
    @Test(arguments: CUDASelfTest.cases(randomCount: 2, seed: 7, small: true))
    func gpuMatchesReferenceAndCPU(_ testCase: CUDASelfTestCase) throws {
        let result = CUDASelfTest.run(testCase, on: try CUDADevice.shared())
        #expect(result.passed, "\(result.line)")
    }

    @Test func seedTrainingForwardTakesTwoLaunchesAndNoNewAllocations() throws {
        let device = try CUDADevice.shared()
        let bn = try BatchNorm3D(maps: 3)
        let x = try DeviceTensor(Tensor.arange(shape: [5, 3, 10, 10, 10]), on: device)
        // Warm-up: kernels compiled, buffers cached. Two passes: the module holds the last
        // output until the next forward commits, so the first output's block is free only
        // after the second pass.
        _ = try bn(x)
        _ = try bn(x)
        let launches = device.launchCount, allocations = device.allocationCount
        let y = try bn(x)
        #expect(device.launchCount - launches == 2)
        #expect(device.allocationCount == allocations, "repeated calls must come from the cache")
        #expect(y.shape == [5, 3, 10, 10, 10])
        let mean = try bn.mean.scalars
        for (c, expected) in [6499.5, 7499.5, 8499.5].enumerated() {
            #expect(abs(Double(mean[c]) - expected) / expected <= 1e-6)
        }
    }

    @Test func timingAndCopyBandwidthHelpers() throws {
        let device = try CUDADevice.shared()
        let milliseconds = try device.time {
            _ = try DeviceTensor(zeros: [1 << 20], on: device)
        }
        #expect(milliseconds >= 0)
        let runs = try device.time(repetitions: 3, warmUp: 1) { _ = try DeviceTensor(zeros: [1 << 20], on: device) }
        #expect(runs.count == 3 && runs.allSatisfy { $0 >= 0 })
        let bandwidth = try device.measureCopyBandwidth(byteCount: 64 << 20, repetitions: 3)
        #expect(bandwidth > 1) // GB/s
    }
}
