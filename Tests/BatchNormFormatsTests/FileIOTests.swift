import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// Atomic writes and `pread` reads.
@Suite struct FileIOTests {
    @Test func anUncommittedWriteLeavesTheDestinationUntouched() throws {
        let directory = try StateFixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/state.safetensors"
        try AtomicFileWriter.write([1, 2, 3], to: path)
        do {
            let writer = try AtomicFileWriter(path: path)
            try writer.write([9, 9, 9, 9])
            #expect(FileManager.default.fileExists(atPath: writer.temporaryPath))
            #expect(writer.temporaryPath.hasPrefix(directory + "/."))
            // discarded without commit(), as when an error interrupts a save
        }
        #expect(try FileReader.readAll(path: path) == [1, 2, 3])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["state.safetensors"])
        let writer = try AtomicFileWriter(path: path)
        try writer.write([4, 5])
        try writer.commit()
        #expect(try FileReader.readAll(path: path) == [4, 5])
    }

    @Test func errorsNameThePath() throws {
        #expect(throws: FileIOError.self) { try AtomicFileWriter.write([1], to: "/nonexistent-directory/x.npy") }
        do {
            try AtomicFileWriter.write([1], to: "/nonexistent-directory/x.npy")
        } catch let error as FileIOError {
            #expect(error.description.contains("/nonexistent-directory/x.npy"))
        }
        let reader = try FileReader(path: StateFixtures.path("state_npy_f4_v1.npy"))
        #expect(try reader.read(at: 0, count: 6) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59])
        #expect(throws: FileIOError.self) { try reader.read(at: reader.size - 2, count: 4) }
    }
}
