import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// Whether an MPI library opens (the process becomes a singleton MPI process).
private let mpiWorld = try? MPIProcessGroup.world()
private let mpiAvailable = mpiWorld != nil

/// `bnkit selftest --mpi` and `calibrate --mpi` in a singleton MPI process (no `mpirun`:
/// a group of size 1); the multi-rank runs are `.ci/run`'s mpirun stages.
extension CLITests {
    @Test(.enabled(if: mpiAvailable, "SKIPPED: no MPI library (install openmpi-bin)"))
    func selftestMPIPassesAsASingleton() throws {
        let run = try Self.bnkit(["selftest", "--mpi"])
        Self.succeeds(run)
        #expect(run.standardOutput.contains("11 passed, 0 failed (1 rank)"), "\(run.standardOutput)")
    }

    /// A launcher of 2 ranks (faked: Hydra's `MPI_LOCALNRANKS`) whose library sees a world of
    /// one must not pass as a 1-rank run: the selftest fails, naming the size, the library and
    /// `BNKIT_MPI_LIBRARY`.
    @Test(.enabled(if: mpiAvailable, "SKIPPED: no MPI library (install openmpi-bin)"))
    func selftestMPIRefusesALauncherOfAnotherImplementation() throws {
        let library = try #require(mpiWorld).libraryPath
        let run = try Self.bnkit(
            ["selftest", "--mpi"], environment: ["MPI_LOCALNRANKS": "2", "BNKIT_MPI_LIBRARY": library])
        #expect(run.status == 1, "\(run.standardOutput)")
        #expect(!run.standardOutput.contains("passed, 0 failed (1 rank)"), "\(run.standardOutput)")
        let message = run.standardOutput
        #expect(["2 ranks", library, "BNKIT_MPI_LIBRARY"].allSatisfy(message.contains), "\(message)")
    }

    @Test(.enabled(if: mpiAvailable, "SKIPPED: no MPI library (install openmpi-bin)"))
    func calibrateMPIAsASingletonEqualsCalibrate() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let batches = (0..<3).map { StateFixtures.path("state_calibrate_batch\($0).npy") }
        let common = batches + ["--maps", "3", "--state", StateFixtures.path(StateFixtures.torchStateName)]
        Self.succeeds(try Self.bnkit(["calibrate"] + common + ["-o", directory + "/single.safetensors"]))
        let run = try Self.bnkit(["calibrate", "--mpi"] + common + ["-o", directory + "/mpi.safetensors"])
        Self.succeeds(run)
        #expect(run.standardOutput.contains("on 1 rank (3 synchronized steps"), "\(run.standardOutput)")
        let single = try BatchNormState(safeTensors: SafeTensorsFile(contentsOfFile: directory + "/single.safetensors"))
        let synchronized = try BatchNormState(
            safeTensors: SafeTensorsFile(contentsOfFile: directory + "/mpi.safetensors"))
        #expect(synchronized == single)
    }
}
