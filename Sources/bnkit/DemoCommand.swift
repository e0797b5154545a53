import ArgumentParser
import BatchNormKit

/// `bnkit demo`: PuzzleLib's BatchNorm3D documentation example.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run PuzzleLib's BatchNorm3D example: arange(15000) as 5x3x10x10x10.")

    @Option(help: "Seed of the initial scale ~ Normal(1, 0.01).")
    var seed: UInt64 = 1

    func run() throws {
        let batchsize = 5, maps = 3, d = 10, h = 10, w = 10
        let data = try Tensor.arange(shape: [batchsize, maps, d, h, w])
        print("data = arange(15000).reshape(5, 3, 10, 10, 10), \(data.layout)")
        printRows(of: data)

        var generator = SeededGenerator(seed: seed)
        let bn = try BatchNorm3D(maps: maps, using: &generator)
        print("\(bn), training mode: one forward pass")
        _ = try bn(data)
        print("mean  = \(try bn.mean.scalars)   (running mean, factor 1 on the first pass)")
        print("var   = \(try bn.var.scalars)   (unbiased running variance)")
        print("scale = \(try bn.scale.scalars)")
        print("bias  = \(try bn.bias.scalars)")
        print("savemean   = \(bn.savemean!.scalars)")
        print("saveinvvar = \(bn.saveinvvar!.scalars)\n")

        let evaluation = try BatchNorm3D(maps: maps, inplace: true)
        try evaluation.load(try bn.state())
        evaluation.evalMode()
        print("\(evaluation), evaluation mode, inplace: true")
        let output = try evaluation(data)
        print("output shares the input's storage: \(output.sharesStorage(with: data))")
        print("data now holds the normalized values:")
        printRows(of: data)
    }

    /// Prints `data[0, c, 0, 0, :]` for every channel: enough to see the values change.
    private func printRows(of data: Tensor) {
        for c in 0..<data.shape[1] {
            let row = (0..<data.shape[4]).map { data[0, c, 0, 0, $0] }
            print("  data[0, \(c), 0, 0, :] = \(row)")
        }
        print()
    }
}
