import BatchNormCUDA
import BatchNormKit

extension BenchCommand {
    /// The GPU suite with the device-tensor API: every shape and layout timed with CUDA
    /// events, beside the device-to-device copy bandwidth measured in the same run.
    func benchCUDA(shapes: [[Int]], layouts: [TensorLayout]) throws -> Report {
        let device = try CUDADevice.shared()
        let callsPerRun = 50
        var rows = [Row]()
        for shape in shapes {
            for layout in layouts {
                let elements = shape.reduce(1, *)
                var generator = SeededGenerator(seed: 42)
                let x = try DeviceTensor(
                    try Tensor.normal(
                        shape: shape, mean: 1, standardDeviation: 2, layout: layout,
                        using: &generator
                    ).converted(to: layout, dataType: dtype), on: device)
                let g = try DeviceTensor(
                    try Tensor.normal(shape: shape, layout: layout, using: &generator)
                        .converted(to: layout, dataType: dtype), on: device)
                let bn = try Self.module(for: shape, backend: CPUBackend(), using: &generator)
                // GB/s counts 3, 2 and 5 elements of traffic per element (12, 8, 20 bytes in float32).
                func row(_ op: Operation, elementsOfTraffic: Int, _ body: () throws -> Void) throws -> Row {
                    let samples = try device.time(repetitions: runs, warmUp: 1) {
                        for _ in 0..<callsPerRun { try body() }
                    }
                    let seconds = Self.median(samples) * 1e-3 / Double(callsPerRun)
                    return Row(
                        shape: shape, layout: layout, dataType: dtype, op: op, medianMicroseconds: seconds * 1e6,
                        gigabytesPerSecond: Double(elementsOfTraffic * dtype.byteCount * elements) / seconds / 1e9)
                }
                bn.trainMode()
                rows.append(try row(.train, elementsOfTraffic: 3) { _ = try bn(x) })
                _ = try bn(x)
                rows.append(try row(.backward, elementsOfTraffic: 5) { _ = try bn.backward(g) })
                bn.evalMode()
                rows.append(try row(.eval, elementsOfTraffic: 2) { _ = try bn(x) })
            }
        }
        let copy = try device.measureCopyBandwidth()
        return Report(
            deviceName: "cuda: \(device.name)", threads: 0, copyGigabytesPerSecond: copy,
            copyDescription: "device-to-device copy of 256 MiB, 2·bytes/time", rows: rows,
            notes: ["calls per timed run: \(callsPerRun); kernel launches so far: \(device.launchCount)"])
    }
}
