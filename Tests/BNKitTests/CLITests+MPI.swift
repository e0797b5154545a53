import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// Whether an MPI library opens (the process becomes a singleton MPI process).
private let mpiAvailable = (try? MPIProcessGroup.world()) != nil

/// `bnkit selftest --mpi` and `calibrate --mpi` in a singleton MPI process (no `mpirun`:
/// a group of size 1); the multi-rank runs are `.ci/run`'s mpirun stages.
extension CLITests {
    @Test(.enabled(if: mpiAvailable, "SKIPPED: no MPI library (install openmpi-bin)"))
    func selftestMPIPassesAsASingleton() throws {
        let run = try Self.bnkit(["selftest", "--mpi"])
        Self.succeeds(run)
        #expect(run.standardOutput.contains("7 passed, 0 failed (1 rank)"), "\(run.standardOutput)")
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
