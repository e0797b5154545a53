import BatchNormCore
import Testing

@testable import BatchNormCUDA

/// The `_bf16` kernels launched directly (the launch helpers, not the module): the apply's
/// bfloat16 results have the same bits as the CPU backend's rounding of the same `Float`
/// arithmetic, subnormal flushes, ties and overflow included. Needs a CUDA driver with an
/// sm_80 or later device, or Tools/KernelEmulation's stand-in, and NVRTC.
@Suite(
    .enabled(if: cudaAvailable, "SKIPPED: no CUDA driver/GPU/NVRTC (use Tools/KernelEmulation/build_fake_driver.sh)"))
struct BFloat16KernelTests {
    /// `S` = 40 takes the 16-byte packs (8 values), 13 the one-by-one path.
    @Test(arguments: [40, 13])
    func channelsFirstApplyRoundsLikeTheCPU(spatial: Int) throws {
        let device = try CUDADevice.shared()
        let kernels = try device.kernels()
        try #require(kernels.hasBFloat16Kernels, "compiled for \(kernels.architecture), below sm_80")
        let (batch, channels) = (2, 4)
        let count = batch * channels * spatial
        var generator = SeededGenerator(seed: 16)
        let x = try Tensor(
            (0..<count).map { _ in Float(Double.random(in: -3...3, using: &generator)) },
            shape: [batch, channels, spatial], dataType: .bfloat16)
        // out = b·(x − shift) + offset per channel: ordinary values, values at or near the
        // midpoint of two bfloat16 values, float32 subnormals (flushed to a signed zero), and
        // overflow to ±inf.
        let b: [Float] = [1.3, 1 + 1.0 / 256, .leastNormalMagnitude / 16, 3e38]
        let shift: [Float] = [0.25, 0, 0, 0]
        let offset: [Float] = [-0.5, 0, 0, 0]
        let coefficients = [Float](repeating: 0, count: channels) + b + shift + offset

        let inputBits = bits(of: x)
        let input = try device.upload(inputBits)
        let table = try device.upload(coefficients)
        let output = try device.allocate(byteCount: 2 * count)
        let chunks = (spatial + CUDAKernelSource.chunkLength - 1) / CUDAKernelSource.chunkLength
        try device.launch(
            kernels.function("bn_apply_cf_x_bf16"), blocks: batch * channels * chunks,
            threads: CUDAKernelSource.threadsPerBlock,
            arguments: [
                .pointer(0), .pointer(input.address), .pointer(output.address), .int32(Int32(channels)),
                .int64(Int64(spatial)), .int32(Int32(chunks)), .pointer(table.address),
            ])
        var outputBits = [UInt16](repeating: 0, count: count)
        try outputBits.withUnsafeMutableBytes {
            try device.copy(from: output.address, to: $0.baseAddress!, byteCount: 2 * count)
        }
        try device.synchronize()

        let values = x.scalars
        let results = (0..<count).map { i -> Float in
            let c = i / spatial % channels
            return b[c] * (values[i] - shift[c]) + offset[c]
        }
        let expected = bits(of: try Tensor(results, shape: [batch, channels, spatial], dataType: .bfloat16))
        let mismatches = (0..<count).filter { outputBits[$0] != expected[$0] }
        let first = mismatches.first.map { ", first \(results[$0]) → \(outputBits[$0]), CPU \(expected[$0])" }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(count) differ\(first ?? "")")
        // The cases the channels stand for occur.
        #expect(expected.contains { $0 & 0x7fff == 0 } && expected.contains { $0 & 0x7fff == 0x7f80 })
    }

    /// The raw bfloat16 bits of a channels-first tensor.
    private func bits(of tensor: Tensor) -> [UInt16] {
        Array(
            UnsafeBufferPointer(
                start: tensor.storage.rawAddress.assumingMemoryBound(to: UInt16.self), count: tensor.elementCount))
    }
}
