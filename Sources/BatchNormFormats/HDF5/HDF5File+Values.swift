import BatchNormCore

/// Reads one dataset's bytes in C order from its storage.
///
/// Sizes are checked before anything is allocated: the element count and byte count must
/// not overflow, must stay under ``HDF5File/maximumDatasetByteCount``, and must be possible
/// for the file (contiguous data within the file; chunked data at most 1032 times the file
/// size, deflate's largest expansion). Chunked datasets: the chunk B-tree (type 1) is walked
/// with decreasing levels and each node once; every chunk must lie on the chunk grid inside
/// the dataspace, appear once, and inflate to exactly its chunk size; all chunks must be
/// present (PuzzleLib's files have no unwritten chunks).
///
///     chunk B-tree node (``HDF5BTreeNode``), children: chunk addresses (level 0) or nodes
///     chunk key:         stored size (4) | filter mask (4) | r+1 offsets (8 each, in elements; the last 0)
struct HDF5DataReader {
    let file: HDF5File
    let path: String
    let shape: [Int]
    let elementSize: Int

    /// Largest deflate expansion (zlib: 1032 to 1 for long runs).
    static let maximumExpansion = 1032

    private var structure: String { "dataset '\(path)'" }

    private func corrupt(_ reason: String) -> HDF5Error { .corrupt(structure: structure, reason: reason) }

    /// `values` multiplied, or `nil` on overflow.
    private static func product(_ values: [Int]) -> Int? {
        var result = 1
        for value in values {
            let (next, overflow) = result.multipliedReportingOverflow(by: value)
            if overflow { return nil }
            result = next
        }
        return result
    }

    func read(_ storage: HDF5Storage) throws -> [UInt8] {
        guard let count = Self.product(shape), let byteCount = Self.product([count, elementSize]),
            byteCount <= HDF5File.maximumDatasetByteCount
        else {
            throw corrupt(
                "shape \(shape) of \(elementSize)-byte elements exceeds \(HDF5File.maximumDatasetByteCount) bytes")
        }
        switch storage.layout {
        case .compact(let data):
            guard data.count == byteCount else {
                throw corrupt("compact data has \(data.count) bytes, expected \(byteCount) for shape \(shape)")
            }
            return data
        case .contiguous(let address, let size):
            guard byteCount > 0 else { return [] }
            guard let address else { throw corrupt("contiguous data was never written (undefined address)") }
            guard size == byteCount else {
                throw corrupt("contiguous data has \(size) bytes, expected \(byteCount) for shape \(shape)")
            }
            return try file.source.read(
                at: try file.fileOffset(address, structure), count: byteCount, structure: structure)
        case .chunked(let tree, let chunkShape):
            guard chunkShape.count == shape.count else {
                throw corrupt("chunk rank \(chunkShape.count) differs from the dataspace rank \(shape.count)")
            }
            guard byteCount > 0 else { return [] }
            let expansion = storage.filters.contains(.deflate) ? Self.maximumExpansion : 1
            guard let chunkElements = Self.product(chunkShape),
                let chunkBytes = Self.product([chunkElements, elementSize]),
                chunkBytes <= HDF5File.maximumDatasetByteCount, byteCount / expansion <= file.source.size,
                chunkBytes / expansion <= file.source.size
            else {
                throw corrupt(
                    "shape \(shape) in chunks of \(chunkShape) cannot be stored in a file of \(file.source.size) bytes")
            }
            guard let tree else { throw corrupt("chunks were never written (undefined B-tree address)") }
            // Chunks per axis; their product is at most the dataset's element count.
            let grid = zip(shape, chunkShape).map { ($0 + $1 - 1) / $1 }
            let expectedChunks = Self.product(grid) ?? Int.max
            // Each chunk takes a B-tree entry (key and child address) in the file.
            let entrySize = 8 + 8 * (shape.count + 1) + file.offsetSize
            guard expectedChunks <= file.source.size / entrySize else {
                throw corrupt(
                    "shape \(shape) in chunks of \(chunkShape) needs \(expectedChunks) chunks, more than a file of \(file.source.size) bytes can index"
                )
            }
            var output = [UInt8](repeating: 0, count: byteCount)
            var state = ChunkWalk(expectedChunks: expectedChunks)
            try walk(
                node: try file.fileOffset(tree, structure), expectedLevel: nil, chunkShape: chunkShape,
                chunkBytes: chunkBytes, filters: storage.filters, state: &state, output: &output)
            guard state.seen.count == expectedChunks else {
                throw corrupt(
                    "chunk index holds \(state.seen.count) of the \(expectedChunks) chunks of shape \(shape) in chunks of \(chunkShape)"
                )
            }
            return output
        }
    }

    /// Chunks and nodes met so far.
    private struct ChunkWalk {
        let expectedChunks: Int
        var seen: Set<[Int]> = []
        var nodes: Set<Int> = []
    }

    private func walk(
        node: Int, expectedLevel: Int?, chunkShape: [Int], chunkBytes: Int, filters: [HDF5Storage.Filter],
        state: inout ChunkWalk, output: inout [UInt8]
    ) throws {
        let nodeStructure = "chunk B-tree node of '\(path)' at \(node)"
        guard state.nodes.insert(node).inserted else {
            throw HDF5Error.corrupt(structure: nodeStructure, reason: "is reached twice (cycle)")
        }
        let rank = shape.count
        let tree = try HDF5BTreeNode(
            at: node, type: 1, keySize: 8 + 8 * (rank + 1), expectedLevel: expectedLevel,
            source: file.source, superblock: file.superblock, structure: nodeStructure)
        let level = tree.level
        guard state.seen.count + (level == 0 ? tree.entryCount : 0) <= state.expectedChunks else {
            throw HDF5Error.corrupt(
                structure: nodeStructure,
                reason: "\(tree.entryCount) chunks exceed the \(state.expectedChunks) chunks of the dataset")
        }
        var body = tree.body
        for entry in 0..<tree.entryCount {
            let storedSize = try body.uint32("chunk \(entry) size")
            let mask = try body.uint32("chunk \(entry) filter mask")
            let offsets = try (0...rank).map { try body.size(8, "chunk \(entry) offset \($0)") }
            guard let child = try body.address("child \(entry) address") else {
                throw body.corrupt("child \(entry) address", "is undefined")
            }
            let childOffset = try file.fileOffset(child, nodeStructure)
            if level > 0 {
                try walk(
                    node: childOffset, expectedLevel: level - 1, chunkShape: chunkShape, chunkBytes: chunkBytes,
                    filters: filters, state: &state, output: &output)
                continue
            }
            let origin = Array(offsets.prefix(rank))
            guard offsets[rank] == 0, zip(origin, chunkShape).allSatisfy({ $0 % $1 == 0 }),
                zip(origin, shape).allSatisfy({ $0 < $1 })
            else {
                throw body.corrupt(
                    "chunk \(entry) offsets",
                    "\(offsets) are not on the chunk grid \(chunkShape) inside the shape \(shape)")
            }
            guard state.seen.insert(origin).inserted else {
                throw body.corrupt("chunk \(entry) offsets", "\(origin) name a chunk already read")
            }
            guard
                filters.contains(.deflate)
                    ? chunkBytes / Self.maximumExpansion <= storedSize : chunkBytes == storedSize || mask != 0
            else {
                throw body.corrupt(
                    "chunk \(entry) size",
                    "\(storedSize) bytes cannot hold a chunk of \(chunkBytes) bytes with filters \(filters)")
            }
            var bytes = try file.source.read(
                at: childOffset, count: storedSize, structure: "chunk \(origin) of '\(path)'")
            // Filters are undone in reverse order; bit k of the mask skips filter k.
            for (index, filter) in filters.enumerated().reversed() where mask & (1 << index) == 0 {
                switch filter {
                case .deflate:
                    bytes = try Zlib.inflate(
                        bytes, expectedCount: chunkBytes, structure: "chunk \(origin) of '\(path)'")
                case .shuffle:
                    bytes = try unshuffle(bytes, origin: origin)
                }
            }
            guard bytes.count == chunkBytes else {
                throw HDF5Error.corrupt(
                    structure: "chunk \(origin) of '\(path)'",
                    reason: "holds \(bytes.count) bytes, expected \(chunkBytes)")
            }
            copy(chunk: bytes, origin: origin, chunkShape: chunkShape, into: &output)
        }
    }

    /// Undoes the shuffle filter: byte `b` of element `i` was stored at `b·n + i`.
    private func unshuffle(_ bytes: [UInt8], origin: [Int]) throws -> [UInt8] {
        guard elementSize > 1 else { return bytes }
        guard bytes.count % elementSize == 0 else {
            throw HDF5Error.corrupt(
                structure: "chunk \(origin) of '\(path)'",
                reason: "shuffled data of \(bytes.count) bytes is not whole \(elementSize)-byte elements")
        }
        let count = bytes.count / elementSize
        var result = [UInt8](repeating: 0, count: bytes.count)
        for b in 0..<elementSize {
            for i in 0..<count { result[i * elementSize + b] = bytes[b * count + i] }
        }
        return result
    }

    /// Copies the part of a chunk (C order, `chunkShape`) that lies inside the dataspace to
    /// its place in `output`; edge chunks are clipped.
    private func copy(chunk: [UInt8], origin: [Int], chunkShape: [Int], into output: inout [UInt8]) {
        let rank = shape.count
        guard rank > 0 else {
            output.replaceSubrange(0..<elementSize, with: chunk.prefix(elementSize))
            return
        }
        // Rows along the last axis, iterated over the other axes with an odometer.
        let rowLength = min(chunkShape[rank - 1], shape[rank - 1] - origin[rank - 1]) * elementSize
        var index = [Int](repeating: 0, count: rank - 1)
        let extents = (0..<(rank - 1)).map { min(chunkShape[$0], shape[$0] - origin[$0]) }
        while true {
            var source = 0, target = 0
            for axis in 0..<rank {
                let within = axis < rank - 1 ? index[axis] : 0
                source = source * chunkShape[axis] + within
                target = target * shape[axis] + origin[axis] + within
            }
            output.replaceSubrange(
                (target * elementSize)..<(target * elementSize + rowLength),
                with: chunk[(source * elementSize)..<(source * elementSize + rowLength)])
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < extents[axis] { break }
                index[axis] = 0
                axis -= 1
            }
            if axis < 0 { return }
        }
    }
}
