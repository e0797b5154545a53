import BatchNormKit
import BatchNormTestSupport
import Foundation
import Testing

/// What one fuzz input did.
enum FuzzOutcome: Equatable {
    /// A format or state error was thrown.
    case rejected
    /// The file parsed and every module loaded.
    case loaded
    /// An invariant broke (an unexpected error type, a state a module refuses).
    case failed(String)
}

/// The body of a state-file fuzz target (HDF5 and safetensors): parses `bytes` as a state
/// file, reads every BatchNorm module and loads each into its family member. Never traps.
///
/// A libFuzzer target calls it from `LLVMFuzzerTestOneInput` and traps on ``FuzzOutcome/failed(_:)``.
func fuzzStateFile(_ bytes: UnsafeRawBufferPointer) -> FuzzOutcome {
    do {
        let file = try StateFile(parsing: Array(bytes))
        for module in try file.modules() {
            guard let family = BatchNormND.familyMember(forDataRank: module.rank ?? 5) else {
                return .failed("module '\(module.name)' has rank \(module.rank ?? 5)")
            }
            var generator = SeededGenerator(seed: 0)
            let bn = try family.init(maps: module.state.maps, affine: module.affine, empty: true, using: &generator)
            do { try bn.load(module.state) } catch {
                return .failed("module '\(module.name)' read from the file is refused: \(error)")
            }
        }
        return .loaded
    } catch is HDF5Error, is StateFileError, is SafeTensorsError {
        return .rejected
    } catch {
        return .failed("unexpected error type \(type(of: error)): \(error)")
    }
}

/// Mutated PuzzleLib HDF5 files, parsed from memory: every one must either throw
/// ``HDF5Error`` or ``StateFileError`` or load correctly, within a time bound per file.
/// Deterministic (seeded); BNKIT_FUZZ_ITERATIONS overrides the count (12,000).
@Suite struct HDF5CorruptionFuzzTests {
    static let seeds = [
        "puzzlelib_container.hdf", "puzzlelib_unnamed.hdf", "puzzlelib_float16.hdf",
        "puzzlelib_storage.hdf", "puzzlelib_swift_written.hdf",
    ]

    /// Longest time one file may take (debug build, shared 2-core machine); parses take milliseconds.
    static let timeBound = Duration.seconds(2)

    /// A seed file and the places of its structures, found once.
    struct Seed {
        let bytes: [UInt8]
        /// Offsets of the 4-byte signatures of B-tree nodes, symbol-table nodes and heaps.
        let structures: [Int]
        /// Offsets of the extents of version-1 dataspace messages (type 1).
        let dataspaceExtents: [Int]
        /// Offsets of zlib stream headers.
        let streams: [Int]

        init(_ bytes: [UInt8]) {
            self.bytes = bytes
            let patterns = ["TREE", "SNOD", "HEAP"].map { Array($0.utf8) }
            var structures: [Int] = [], extents: [Int] = [], streams: [Int] = []
            bytes.withUnsafeBufferPointer { b in
                for i in 0..<(b.count - 24) {
                    if patterns.contains(where: {
                        $0[0] == b[i] && $0[1] == b[i + 1] && $0[2] == b[i + 2] && $0[3] == b[i + 3]
                    }) {
                        structures.append(i)
                    }
                    // Message header: type 1 (2), size < 256 (2), flags, 3 reserved; data: version 1, rank 1-5, flags, 5 reserved.
                    if b[i] == 1 && b[i + 1] == 0 && b[i + 3] == 0 && b[i + 8] == 1 && (1...5).contains(b[i + 9])
                        && b[i + 12] == 0 && b[i + 13] == 0
                    {
                        extents.append(i + 16)
                    }
                    if b[i] == 0x78 && [0x01, 0x5E, 0x9C, 0xDA].contains(b[i + 1]) { streams.append(i) }
                }
            }
            self.structures = structures
            dataspaceExtents = extents
            self.streams = streams
        }
    }

    static func write(_ value: UInt64, count: Int, at offset: Int, in bytes: inout [UInt8]) {
        for k in 0..<count where offset + k < bytes.count {
            bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k)))
        }
    }

    static func read64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    static func mutate(_ file: Seed, kind: Int, using generator: inout SeededGenerator) -> [UInt8] {
        let seed = file.bytes
        var bytes = seed
        let structures = file.structures
        let near = { (generator: inout SeededGenerator) -> Int in
            let base = structures.randomElement(using: &generator) ?? 0
            return min(seed.count - 1, base + Int.random(in: 0..<96, using: &generator))
        }
        switch kind {
        case 0: // truncation
            return Array(seed.prefix(Int.random(in: 0..<seed.count, using: &generator)))
        case 1: // bit flips anywhere
            for _ in 0..<Int.random(in: 1...8, using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] ^=
                    1 << UInt8.random(in: 0..<8, using: &generator)
            }
        case 2: // bit flips in the superblock, object headers and B-tree, symbol-table and heap structures
            for _ in 0..<Int.random(in: 1...3, using: &generator) {
                let at =
                    Bool.random(using: &generator)
                    ? Int.random(in: 0..<min(seed.count, 1024), using: &generator) : near(&generator)
                bytes[at] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
            }
        case 3: // bogus addresses at 8-byte fields of structures
            let hostile: [UInt64] = [
                0, 1, 8, 96, UInt64(seed.count - 1), UInt64(seed.count), UInt64(seed.count + 1), 1 << 32,
                1 << 62, 1 << 63, .max, .max - 1, .random(in: 0...UInt64(2 * seed.count), using: &generator),
            ]
            write(hostile.randomElement(using: &generator)!, count: 8, at: near(&generator), in: &bytes)
        case 4: // bogus sizes and counts (2- and 4-byte fields)
            let hostile: [UInt64] = [
                0, 1, 7, 0xFF, 0xFFFF, 0xFFFF_FFFF, 0x7FFF_FFFF, .random(in: 0...0xFFFF, using: &generator),
            ]
            let at =
                Bool.random(using: &generator) ? near(&generator) : Int.random(in: 0..<bytes.count, using: &generator)
            write(
                hostile.randomElement(using: &generator)!, count: Bool.random(using: &generator) ? 2 : 4, at: at,
                in: &bytes)
        case 5: // B-tree cycles: a child or sibling address of a node pointed at another structure or itself
            let trees = structures.filter { seed[$0] == UInt8(ascii: "T") }
            guard let tree = trees.randomElement(using: &generator) else { return bytes }
            let targets = structures.map(UInt64.init)
            let fields = stride(from: tree + 8, to: min(seed.count - 8, tree + 700), by: 8).filter {
                targets.contains(read64(seed, at: $0))
            }
            guard let field = fields.randomElement(using: &generator) else { return bytes }
            write(
                Bool.random(using: &generator) ? UInt64(tree) : targets.randomElement(using: &generator)!, count: 8,
                at: field, in: &bytes)
        case 6: // oversized dimensions: an extent of a dataspace message (type 1, version 1)
            guard let extents = file.dataspaceExtents.randomElement(using: &generator) else { return bytes }
            let hostile: [UInt64] = [0, 2, 1 << 20, 1 << 32, 1 << 40, 1 << 62, UInt64(Int64.max), .max]
            let axis = Int.random(in: 0..<Int(seed[extents - 7]), using: &generator)
            write(hostile.randomElement(using: &generator)!, count: 8, at: extents + 8 * axis, in: &bytes)
        case 7: // bad deflate streams: bytes of a zlib stream changed
            guard let stream = file.streams.randomElement(using: &generator) else { return bytes }
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                let at = min(seed.count - 1, stream + Int.random(in: 0..<24, using: &generator))
                bytes[at] =
                    Bool.random(using: &generator) ? UInt8.random(in: 0...255, using: &generator) : bytes[at] ^ 0x10
            }
        case 8: // bytes inserted or deleted (every later address shifts)
            let at = Int.random(in: 0..<bytes.count, using: &generator),
                count = Int.random(in: 1...16, using: &generator)
            if Bool.random(using: &generator) {
                bytes.removeSubrange(at..<min(bytes.count, at + count))
            } else {
                bytes.insert(contentsOf: (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }, at: at)
            }
        default: // a structure copied over another
            guard let from = structures.randomElement(using: &generator),
                let to = structures.randomElement(using: &generator)
            else { return bytes }
            let length = min(Int.random(in: 8...128, using: &generator), seed.count - from, seed.count - to)
            bytes.replaceSubrange(to..<(to + length), with: seed[from..<(from + length)])
        }
        return bytes
    }

    @Test func mutatedHDF5FilesThrowOrLoadCorrectlyInBoundedTime() throws {
        let seeds = try Self.seeds.map { Seed(try StateFixtures.bytes($0)) }
        for seed in seeds { #expect(seed.bytes.withUnsafeBytes(fuzzStateFile) == .loaded) }
        var generator = SeededGenerator(seed: 20_261_201)
        var rejected = 0, loaded = 0, slowest = Duration.zero
        let clock = ContinuousClock()
        for iteration in 0..<CorruptionFuzzTests.iterations {
            let seed = seeds[iteration % seeds.count]
            let mutated = Self.mutate(seed, kind: (iteration / seeds.count) % 10, using: &generator)
            var outcome: FuzzOutcome = .rejected
            let elapsed = clock.measure { outcome = mutated.withUnsafeBytes(fuzzStateFile) }
            slowest = max(slowest, elapsed)
            switch outcome {
            case .rejected: rejected += 1
            case .loaded: loaded += 1
            case .failed(let failure): Issue.record("iteration \(iteration): \(failure)")
            }
            if elapsed > Self.timeBound {
                Issue.record("iteration \(iteration): took \(elapsed), more than \(Self.timeBound)")
            }
        }
        print(
            "HDF5 fuzz: \(CorruptionFuzzTests.iterations) files, \(rejected) rejected, \(loaded) loaded, slowest \(slowest)"
        )
        #expect(rejected + loaded == CorruptionFuzzTests.iterations)
        #expect(rejected > CorruptionFuzzTests.iterations / 4)
        // Mutations of unused bytes and of values still give valid files
        #expect(loaded > CorruptionFuzzTests.iterations / 20)
    }
}
