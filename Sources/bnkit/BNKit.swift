import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `bnkit`: BatchNormKit's command-line tool.
///
/// Every failure (bad arguments, unreadable or corrupted files, shape mismatches) prints one
/// line `bnkit: error: <message>` on stderr and exits with a non-zero status; `--help` of any
/// subcommand exits 0.
@main
struct BNKit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bnkit",
        abstract: "BatchNormKit: PuzzleLib-exact batch normalization for 3-D data.",
        subcommands: [DemoCommand.self, BenchCommand.self, NormalizeCommand.self, CalibrateCommand.self, InspectCommand.self, ConvertCommand.self,
                      SelfTestCommand.self])

    /// Parses and runs the command, turning every error into one `bnkit: error:` line.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }  // --help, --version
            if let exitCode = error as? ExitCode { exitProcess(exitCode.rawValue) }  // already reported
            let message = message(for: error).split(whereSeparator: \.isNewline).joined(separator: "; ")
            let arguments = CommandLine.arguments.dropFirst()
            let names = configuration.subcommands.compactMap { $0.configuration.commandName }
            let hint = arguments.first.flatMap { names.contains($0) ? " (see 'bnkit \($0) --help')" : nil } ?? ""
            let isUsageError = !(error is CommandFailure) && code == .validationFailure
            standardError("bnkit: error: \(message)\(isUsageError ? hint : "")\n")
            exitProcess(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }
}

/// Terminates the process with `status`.
func exitProcess(_ status: Int32) -> Never {
    #if canImport(Glibc)
    Glibc.exit(status)
    #elseif canImport(Musl)
    Musl.exit(status)
    #else
    Darwin.exit(status)
    #endif
}
