import ArgumentParser
import BatchNormCUDA
import BatchNormKit

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
/// line `bnkit: error: <message>` on stderr (with `--verbose`, detail lines follow, such as
/// the paths searched for a library) and exits with a non-zero status: 64 for a usage error,
/// 1 for a failure, 77 when `selftest` had nothing to run, 128 + the signal when interrupted by
/// SIGHUP, SIGINT, SIGQUIT or SIGTERM (129, 130, 131, 143; the temporary file of an output
/// being written is removed first).
/// `--help` of any subcommand and `--version` exit 0.
@main
struct BNKit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bnkit",
        abstract: "BatchNormKit: PuzzleLib-exact batch normalization for 3-D data.",
        version: BatchNormKitVersion.current,
        subcommands: [
            DemoCommand.self, BenchCommand.self, NormalizeCommand.self, CalibrateCommand.self, InspectCommand.self,
            ConvertCommand.self, FoldCommand.self,
            SelfTestCommand.self,
        ])

    /// Parses and runs the command, turning every error into one `bnkit: error:` line.
    static func main() {
        InterruptHandler.install()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            // A CUDA error says what is missing in one line; the paths tried are its details.
            let error = (error as? CUDAError).map { CommandFailure(cuda: $0) } ?? error
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) } // --help, --version
            if let exitCode = error as? ExitCode { exitProcess(exitCode.rawValue) } // already reported
            let message = message(for: error).split(whereSeparator: \.isNewline).joined(separator: "; ")
            let arguments = CommandLine.arguments.dropFirst()
            let names = configuration.subcommands.compactMap { $0.configuration.commandName }
            let hint = arguments.first.flatMap { names.contains($0) ? " (see 'bnkit \($0) --help')" : nil } ?? ""
            let isUsageError = !(error is CommandFailure) && code == .validationFailure
            standardError("bnkit: error: \(message)\(isUsageError ? hint : "")\n")
            if let failure = error as? CommandFailure, CommandLine.arguments.contains("--verbose") {
                for line in failure.details { standardError("  \(line)\n") }
            }
            exitProcess(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }
}

/// Removes the temporary file of an interrupted write: SIGHUP, SIGINT, SIGQUIT and SIGTERM
/// (a closed terminal, Ctrl-C, Ctrl-\, `kill`) are blocked in
/// every thread (threads inherit the mask of the main thread, which sets it before creating
/// any) and received by one thread in `sigwait`, which removes the live temporary files of
/// ``AtomicFileWriter`` and exits with `128 + signal` (129, 130, 131, 143). The output path itself is
/// never truncated: it is only ever replaced by a rename of a complete file.
enum InterruptHandler {
    static func install() {
        var set = interruptSignals()
        pthread_sigmask(SIG_BLOCK, &set, nil)
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, waitForInterrupt, nil)
        if created == 0 { pthread_detach(thread) } else { pthread_sigmask(SIG_UNBLOCK, &set, nil) }
    }

    /// The body of the thread that receives the signals; never returns.
    static let waitForInterrupt: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        removeTemporaryFilesAndExit(signal: nextInterrupt())
    }

    /// Blocks until one of ``signals`` arrives; the signal.
    static func nextInterrupt() -> Int32 {
        var set = interruptSignals()
        var received: Int32 = 0
        while sigwait(&set, &received) != 0 {}
        return received
    }

    static func removeTemporaryFilesAndExit(signal: Int32) -> Never {
        let name = signals.first { $0.number == signal }?.name ?? "signal \(signal)"
        standardError("\nbnkit: error: interrupted by \(name)\n")
        AtomicFileWriter.TemporaryFiles.removeAllAndExit(status: 128 + signal)
    }

    /// The signals that interrupt a run, with their names.
    static let signals: [(number: Int32, name: String)] = [
        (SIGHUP, "SIGHUP"), (SIGINT, "SIGINT"), (SIGQUIT, "SIGQUIT"), (SIGTERM, "SIGTERM"),
    ]

    static func interruptSignals() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal.number) }
        return set
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
