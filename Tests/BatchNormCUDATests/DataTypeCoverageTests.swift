import BatchNormCUDA
import BatchNormCUDAChecks
import BatchNormCore
import BatchNormReference
import Testing

/// Every ``TensorDataType`` through every GPU entry point of the module: host tensors through
/// ``CUDABackend``, device tensors, and device tensors synchronized over a one-member
/// ``LocalProcessGroup``; training forward, backward with accumulation, evaluation forward and
/// backward, evaluation in place. A type the device supports (``CUDADevice/supportedDataTypes``)
/// gives the CPU backend's results within the type's tolerance; any other type is refused
/// with ``BatchNormError/dataTypeMismatch(argument:expected:actual:)`` before anything is
/// copied or launched, and the module is unchanged. Needs a CUDA driver or the emulated one.
@Suite(
    .enabled(if: cudaAvailable, "SKIPPED: no CUDA driver/GPU/NVRTC (use Tools/KernelEmulation/build_fake_driver.sh)"))
struct DataTypeCoverageTests {
    enum Path: String, CaseIterable, Sendable {
        case hostTensors, deviceTensors, synchronizedDeviceTensors
    }

    /// The outputs of one pass sequence, as `Float` in logical order.
    struct Outputs {
        var trainY = [Float](), trainDX = [Float](), evalY = [Float](), evalDX = [Float](), inplaceY = [Float]()
        var state = [Float]()
    }

    @Test(arguments: TensorDataType.allCases, Path.allCases)
    func everyEntryPointComputesOrRefusesTheType(dataType: TensorDataType, path: Path) throws {
        let device = try CUDADevice.shared()
        for layout in TensorLayout.allCases {
            let shape = [2, 3, 4, 5, 7]
            let count = shape.reduce(1, *)
            var generator = SeededGenerator(seed: 31)
            let x = try Tensor(
                (0..<count).map { _ in Float(Double.random(in: 8...12, using: &generator)) }, shape: shape,
                layout: layout, dataType: dataType)
            let g = try Tensor(
                (0..<count).map { _ in Float(Double.random(in: -1...1, using: &generator)) }, shape: shape,
                layout: layout, dataType: dataType)
            let expected = try run(x: x, g: g, module: makeModule(backend: CPUBackend()), device: nil)
            let gpu = try makeModule(backend: path == .hostTensors ? CUDABackend(device: device) : CPUBackend())
            if path == .synchronizedDeviceTensors { gpu.processGroup = try LocalProcessGroup.members(count: 1)[0] }
            guard device.supportedDataTypes.contains(dataType) else {
                let before = try gpu.state()
                #expect {
                    _ = try run(x: x, g: g, module: gpu, device: path == .hostTensors ? nil : device)
                } throws: { error in
                    guard case BatchNormError.dataTypeMismatch(_, _, let actual) = error else { return false }
                    return actual == dataType.rawValue
                }
                #expect(try gpu.state() == before && gpu.numOfProps == 0)
                continue
            }
            let actual = try run(x: x, g: g, module: gpu, device: path == .hostTensors ? nil : device)
            let tolerance = CUDASelfTest.tolerance(for: dataType)
            for (name, a, e) in [
                ("train.y", actual.trainY, expected.trainY), ("train.dx", actual.trainDX, expected.trainDX),
                ("eval.y", actual.evalY, expected.evalY), ("eval.dx", actual.evalDX, expected.evalDX),
                ("eval.inplace.y", actual.inplaceY, expected.inplaceY),
            ] {
                let error = CUDASelfTest.dataError(a, e.map(Double.init))
                #expect(a.count == count && error <= tolerance, "\(dataType) \(layout) \(path) \(name): \(error)")
            }
            let stateError = CUDASelfTest.relativeError(actual.state, expected.state.map(Double.init))
            #expect(stateError <= CUDASelfTest.float32Tolerance, "\(dataType) \(layout) \(path) state: \(stateError)")
        }
    }

    private func makeModule(backend: any BatchNormBackend<Tensor>) throws -> BatchNormND {
        var generator = SeededGenerator(seed: 5)
        return try BatchNorm3D(maps: 3, sscale: 0.3, backend: backend, using: &generator)
    }

    /// Two training steps (forward, backward), then evaluation forward, backward and an
    /// in-place evaluation forward; on `device` as device tensors, else as host tensors.
    private func run(x: Tensor, g: Tensor, module: BatchNormND, device: CUDADevice?) throws -> Outputs {
        var outputs = Outputs()
        func forward(_ module: BatchNormND, _ x: Tensor) throws -> Tensor {
            guard let device else { return try module(x) }
            return try module(DeviceTensor(x, on: device)).toHost()
        }
        func backward(_ module: BatchNormND, _ g: Tensor) throws -> Tensor {
            guard let device else { return try #require(try module.backward(g)) }
            return try #require(try module.backward(DeviceTensor(g, on: device))).toHost()
        }
        for _ in 0..<2 {
            outputs.trainY = try forward(module, x).scalars
            outputs.trainDX = try backward(module, g).scalars
        }
        outputs.state = try [module.mean, module.var, module.scaleGrad, module.biasGrad].flatMap(\.scalars)
        module.evalMode()
        outputs.evalY = try forward(module, x).scalars
        outputs.evalDX = try backward(module, g).scalars
        let inplace = try BatchNorm3D(maps: 3, inplace: true, backend: module.backend)
        try inplace.load(try module.state())
        inplace.evalMode()
        if let device {
            let target = try DeviceTensor(x, on: device)
            let output = try inplace(target)
            #expect(output.sharesStorage(with: target))
            outputs.inplaceY = try target.toHost().scalars
        } else {
            let target = x.copy()
            #expect(try inplace(target).sharesStorage(with: target))
            outputs.inplaceY = target.scalars
        }
        return outputs
    }
}
