import ArgumentParser
import BatchNormKit
import BatchNormReference

extension SelfTestCommand {
    /// `bnkit selftest --mpi`, one process per rank under `mpirun`: synchronized training
    /// forward and backward (both layouts, uneven `N` with an empty rank, `C = 1` and
    /// `C = 300`, several steps, the grouped schedule with several groups and a partial last
    /// one) against one local module fed the concatenated batch, then the error paths (a rank
    /// that throws, also in the middle group of a grouped pass). Rank 0 prints one line per check and the summary;
    /// a rank's own failure details go to its stderr. Exit status on every rank: 0 all passed,
    /// 1 a check failed or MPI did not start as launched (a launcher of another
    /// implementation), 77 no MPI library.
    func runMPI() throws {
        let group: MPIProcessGroup
        do {
            group = try MPIProcessGroup.world()
        } catch let error as ProcessGroupError {
            // No library is a skip; anything else (a launcher of another implementation, an
            // MPI error) is a failure: the job did not run as launched.
            guard case .mpiUnavailable = error else {
                print("FAIL  selftest --mpi: \(error)")
                print("0 passed, 1 failed (MPI did not start as launched)")
                throw ExitCode.failure
            }
            print("SKIPPED  selftest --mpi: \(error)")
            print("0 passed, 0 failed, 1 skipped (no MPI: nothing was compared)")
            throw ExitCode(Self.skippedExitCode)
        }
        if group.rank == 0 {
            print(
                "mpi: \(group.implementation) (\(group.libraryPath)), \(group.size) rank\(group.size == 1 ? "" : "s"); "
                    + "cpu kernel level \(CPUBackend(threadCount: 1).kernelLevel)")
        }
        let checks: [(String, () throws -> [String])] =
            SynchronizedComparison.standardCases(size: group.size, seed: seed).map { comparison in
                ("\(comparison)", { try comparison.run(group: group) })
            } + [
                (
                    "errors: NaN, wrong maps, wrong grad shape, global M < 2; evaluation silent",
                    { try SynchronizedComparison.errorChecks(group: group, seed: seed) }
                ),
                (
                    "errors in groups of 2 channels: NaN in the middle group, wrong maps, wrong grad shape, global M < 2",
                    { try SynchronizedComparison.errorChecks(group: group, seed: seed, channelsPerGroup: 2) }
                ),
            ]
        var passed = 0, failed = 0
        for (name, check) in checks {
            let failures: [String]
            do { failures = try check() } catch { failures = ["threw \(error)"] }
            for failure in failures { standardError("rank \(group.rank): \(failure)\n") }
            // Every rank learns which ranks failed (one all-gather, outside the modules).
            let verdicts = try group.allGather([failures.isEmpty ? 0 : 1])
            let failing = verdicts.indices.filter { verdicts[$0] != 0 }
            if failing.isEmpty { passed += 1 } else { failed += 1 }
            if group.rank == 0 {
                print(failing.isEmpty ? "PASS  \(name)" : "FAIL  \(name) (ranks \(failing); details on their stderr)")
            }
        }
        if group.rank == 0 {
            print("\(passed) passed, \(failed) failed (\(group.size) rank\(group.size == 1 ? "" : "s"))")
        }
        if failed > 0 { throw ExitCode.failure }
    }
}
