import ArgumentParser

/// `bnkit`: BatchNormKit's command-line tool.
@main
struct BNKit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bnkit",
        abstract: "BatchNormKit: PuzzleLib-exact batch normalization for 3-D data.",
        subcommands: [DemoCommand.self, BenchCommand.self])
}
