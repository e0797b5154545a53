import BatchNormCUDA
import BatchNormCore
import Testing

/// The device-tensor API's contract beyond the numbers: copies, in-place sharing, errors that
/// leave the module unchanged. Needs a CUDA driver (or Tools/KernelEmulation's stand-in).
@Suite(.enabled(if: cudaAvailable, "SKIPPED: no CUDA driver/GPU/NVRTC"))
struct DeviceTensorTests {
    @Test func roundTripKeepsShapeLayoutTypeAndValues() throws {
        let device = try CUDADevice.shared()
        for dataType in TensorDataType.allCases {
            let host = try Tensor(
                (0..<60).map { Float($0) / 4 }, shape: [2, 3, 10], layout: .channelsLast,
                dataType: dataType)
            let onDevice = try DeviceTensor(host, on: device)
            let back = try onDevice.toHost()
            #expect(back.shape == host.shape && back.layout == host.layout && back.dataType == host.dataType)
            #expect(back.scalars == host.scalars)
            let copy = try onDevice.copy()
            #expect(!copy.sharesBuffer(with: onDevice))
            #expect(try copy.toHost().scalars == host.scalars)
        }
    }

    @Test func trainingErrorsLeaveTheModuleUnchanged() throws {
        let device = try CUDADevice.shared()
        let bn = try BatchNorm3D(maps: 2)
        var values = (0..<48).map { Float($0) }
        values[5] = .nan
        let bad = try DeviceTensor(Tensor(values, shape: [2, 2, 2, 2, 3]), on: device)
        let before = try bn.state()
        #expect(throws: BatchNormError.self) { try bn(bad) }
        #expect(try bn.state() == before)
        #expect(bn.numOfProps == 0)
        // Finite input whose variance overflows the Float running statistics (the host's rule).
        let huge = try DeviceTensor(
            Tensor((0..<48).map { $0 % 2 == 0 ? 1e20 : -1e20 }, shape: [2, 2, 2, 2, 3]),
            on: device)
        #expect(throws: BatchNormError.self) { try bn(huge) }
        #expect(try bn.state() == before)
        // Backward without a device forward.
        #expect(throws: BatchNormError.backwardBeforeForward(name: nil)) { try bn.backward(bad) }
        // Wrong rank and maps.
        let wrongRank = try DeviceTensor(zeros: [2, 2, 3], on: device)
        #expect(throws: BatchNormError.self) { try bn(wrongRank) }
        let wrongMaps = try DeviceTensor(zeros: [2, 3, 1, 1, 2], on: device)
        #expect(throws: BatchNormError.mapsMismatch(argument: "data", expected: 2, actual: 3)) {
            try bn(wrongMaps)
        }
        // M = 1.
        let single = try DeviceTensor(zeros: [1, 2, 1, 1, 1], on: device)
        #expect(throws: BatchNormError.self) { try bn(single) }
        #expect(try bn.state() == before)
    }

    @Test func inplaceEvaluationSharesTheBufferAndTrainingRejectsIt() throws {
        let device = try CUDADevice.shared()
        let bn = try BatchNorm3D(maps: 2, inplace: true)
        let x = try DeviceTensor(Tensor.arange(shape: [2, 2, 2, 2, 2]), on: device)
        #expect(throws: BatchNormError.inplaceInTraining(name: nil)) { try bn(x) }
        bn.evalMode()
        let y = try bn(x)
        #expect(y.sharesBuffer(with: x))
        // Running statistics are 0 and 1: y = scale·x/sqrt(1 + ε) + 0.
        let scale = try bn.scale.scalars
        let result = try x.toHost()
        let expected = try Tensor.arange(shape: [2, 2, 2, 2, 2])
        for n in 0..<2 {
            for c in 0..<2 {
                let got = result[n, c, 1, 1, 1],
                    want = scale[c] * expected[n, c, 1, 1, 1] / Float((1 + 1e-5).squareRoot())
                #expect(abs(got - want) <= 1e-5 * abs(want) + 1e-6)
            }
        }
    }

    @Test func hostForwardInvalidatesTheDeviceBackward() throws {
        let device = try CUDADevice.shared()
        let bn = try BatchNorm3D(maps: 2, backend: try CUDABackend(device: device))
        let host = try Tensor.arange(shape: [2, 2, 2, 2, 2])
        let x = try DeviceTensor(host, on: device)
        _ = try bn(x)
        #expect(bn.inData == nil && bn.numOfProps == 1)
        _ = try bn(host)
        // The last forward took a host tensor: a device gradient is refused, naming both places.
        #expect {
            try bn.backward(x)
        } throws: { error in
            guard case BatchNormError.invalidArgument("grad", let expected, let actual) = error else { return false }
            return expected.contains("Tensor on host") && actual.contains("DeviceTensor on cuda:0")
        }
        #expect(try bn.backward(host) != nil)
    }
}
