import BatchNormCore

/// Writes the small HDF5 files PuzzleLib reads: groups under the root, each holding
/// uncompressed contiguous datasets of `float32` arrays or `int64` scalars, in the format
/// that h5py writes with `libver="earliest"` (superblock version 0, version-1 object headers,
/// symbol-table groups), so that h5py and any HDF5 library since 1.6 open them.
///
/// Every group's members sit in one symbol-table node (the superblock's group leaf K is
/// chosen large enough), under a one-entry B-tree. Layout, in file order:
///
///     superblock (96 bytes) | per group, the root first: object header, B-tree node,
///     local heap header and data, symbol-table node | per dataset: object header, data
///
/// All values are little-endian; every block starts on an 8-byte boundary. The output is
/// deterministic (no modification times).
struct HDF5Writer {
    /// A dataset's value.
    enum Value {
        case float32([Float], shape: [Int])
        case int64(Int64)
    }

    /// A group of the root and its datasets.
    struct Group {
        var name: String
        var datasets: [(name: String, value: Value)]
    }

    /// Size of offsets and of lengths (8 bytes each, as h5py writes).
    private static let width = 8
    /// The group internal-node K of the superblock (HDF5's default): B-tree nodes have room
    /// for 2K children.
    private static let internalK = 16
    private static let undefined = UInt64.max

    /// The bytes of a file with `groups` under the root group.
    static func file(_ groups: [Group]) -> [UInt8] {
        let groups = groups.sorted { precedes($0.name, $1.name) }.map {
            Group(name: $0.name, datasets: $0.datasets.sorted { precedes($0.name, $1.name) })
        }
        let leafK = max(4, (max(groups.count, groups.map(\.datasets.count).max() ?? 0) + 1) / 2)
        var out = Output()
        // Placeholders are patched once the addresses are known: allocate first, then write.
        let superblockSize = 96
        out.bytes = [UInt8](repeating: 0, count: superblockSize)
        let rootAddresses = writeGroup(members: groups.map(\.name), leafK: leafK, out: &out)
        var memberHeaders: [Int] = []
        var groupAddresses: [GroupAddresses] = []
        for group in groups {
            let addresses = writeGroup(members: group.datasets.map(\.name), leafK: leafK, out: &out)
            groupAddresses.append(addresses)
            memberHeaders.append(addresses.header)
        }
        rootAddresses.patchMembers(headers: memberHeaders, groups: groupAddresses, out: &out)
        for (group, addresses) in zip(groups, groupAddresses) {
            let headers = group.datasets.map { writeDataset($0.value, out: &out) }
            addresses.patchMembers(headers: headers, groups: nil, out: &out)
        }
        writeSuperblock(leafK: leafK, root: rootAddresses, endOfFile: out.bytes.count, out: &out)
        return out.bytes
    }

    /// strcmp order, as HDF5 sorts the names of a group.
    private static func precedes(_ a: String, _ b: String) -> Bool {
        Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
    }

    /// The bytes under construction, with little-endian appends and patches.
    private struct Output {
        var bytes: [UInt8] = []

        mutating func append(_ value: UInt64, _ count: Int) {
            for k in 0..<count { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(k)))) }
        }
        mutating func append(_ value: Int, _ count: Int) { append(UInt64(value), count) }
        mutating func pad() { while bytes.count % 8 != 0 { bytes.append(0) } }
        mutating func patch(_ value: Int, at offset: Int, _ count: Int) {
            for k in 0..<count { bytes[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        }
    }

    /// Where a group's structures and its symbol-table entries were placed.
    private struct GroupAddresses {
        var header: Int, tree: Int, heap: Int
        /// File offset of each member's symbol-table entry (its object header address field at +8).
        var entries: [Int]

        func patchMembers(headers: [Int], groups: [GroupAddresses]?, out: inout Output) {
            for (index, entry) in entries.enumerated() {
                out.patch(headers[index], at: entry + 8, HDF5Writer.width)
                if let groups { // cache type 1: the member group's B-tree and heap addresses
                    out.patch(1, at: entry + 16, 4)
                    out.patch(groups[index].tree, at: entry + 24, HDF5Writer.width)
                    out.patch(groups[index].heap, at: entry + 32, HDF5Writer.width)
                }
            }
        }
    }

    /// Writes a group with `members` (sorted): object header with a symbol-table message,
    /// a one-child B-tree node, the local heap of names and one symbol-table node, whose
    /// entries' object header addresses are patched later.
    private static func writeGroup(members: [String], leafK: Int, out: inout Output) -> GroupAddresses {
        // Object header: prefix (16) | symbol-table message: type 17, size 16, flags 0 | B-tree, heap.
        let header = out.bytes.count
        out.append(1, 1)
        out.append(0, 1)
        out.append(1, 2)
        out.append(1, 4)
        out.append(8 + 16, 4)
        out.append(0, 4)
        out.append(0x11, 2)
        out.append(16, 2)
        out.append(0, 4)
        let tableMessage = out.bytes.count
        out.append(0, 16)
        // Heap data: "" at 0, then each name NUL-terminated and padded to 8 bytes.
        var heapData = [UInt8](repeating: 0, count: 8)
        var nameOffsets: [Int] = []
        for name in members {
            nameOffsets.append(heapData.count)
            heapData += Array(name.utf8) + [0]
            while heapData.count % 8 != 0 { heapData.append(0) }
        }
        // B-tree node of type 0, level 0, one child: the symbol-table node; room for 2K children.
        let tree = out.bytes.count
        out.bytes += Array("TREE".utf8)
        out.append(0, 1)
        out.append(0, 1)
        out.append(members.isEmpty ? 0 : 1, 2)
        out.append(undefined, width)
        out.append(undefined, width)
        let treeKeys = out.bytes.count
        out.append(0, (2 * internalK + 1) * width + 2 * internalK * width)
        // Local heap: free list "none" (1, HDF5's on-disk null), data segment right after.
        let heap = out.bytes.count
        out.bytes += Array("HEAP".utf8)
        out.append(0, 1)
        out.append(0, 3)
        out.append(heapData.count, width)
        out.append(1, width)
        out.append(heap + 32, width)
        out.bytes += heapData
        out.pad()
        // Symbol-table node with room for 2·leafK entries of 40 bytes.
        let node = out.bytes.count
        out.bytes += Array("SNOD".utf8)
        out.append(1, 1)
        out.append(0, 1)
        out.append(members.count, 2)
        var entries: [Int] = []
        for offset in nameOffsets {
            entries.append(out.bytes.count)
            out.append(offset, width)
            out.append(0, width)
            out.append(0, 4)
            out.append(0, 4)
            out.append(0, 16)
        }
        out.append(0, (2 * leafK - members.count) * (2 * width + 24))
        if !members.isEmpty {
            // key 0 = "" (offset 0), child 0 = the node, key 1 = the last name.
            out.patch(0, at: treeKeys, width)
            out.patch(node, at: treeKeys + width, width)
            out.patch(nameOffsets.last!, at: treeKeys + 2 * width, width)
        }
        out.patch(tree, at: tableMessage, width)
        out.patch(heap, at: tableMessage + width, width)
        return GroupAddresses(header: header, tree: tree, heap: heap, entries: entries)
    }

    /// Writes a dataset's object header (dataspace, datatype, fill value, contiguous layout)
    /// and its data; returns the header's address.
    private static func writeDataset(_ value: Value, out: inout Output) -> Int {
        let shape: [Int], data: [UInt8], datatype: [UInt8]
        switch value {
        case .float32(let values, let extents):
            shape = extents
            data = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
            // Class 1 version 1; little-endian, mantissa normalized (bits 4-5 = 2), sign at bit 31;
            // size 4; bit offset 0, precision 32, exponent at 23 (8 bits), mantissa at 0 (23 bits), bias 127.
            datatype = [0x11, 0x20, 31, 0, 4, 0, 0, 0, 0, 0, 32, 0, 23, 8, 0, 23, 127, 0, 0, 0]
        case .int64(let integer):
            shape = []
            data = withUnsafeBytes(of: integer.littleEndian, Array.init)
            // Class 0 version 1; little-endian, signed (bit 3); size 8; bit offset 0, precision 64.
            datatype = [0x10, 0x08, 0, 0, 8, 0, 0, 0, 0, 0, 64, 0]
        }
        var dataspace = Output()
        dataspace.append(1, 1)
        dataspace.append(shape.count, 1)
        dataspace.append(0, 6)
        for extent in shape { dataspace.append(extent, width) }
        let fillValue: [UInt8] = [2, 1, 2, 0] // version 2, allocated early, written if set, undefined
        var layout = Output()
        layout.append(3, 1)
        layout.append(1, 1)
        let layoutAddress = 2
        layout.append(0, width)
        layout.append(data.count, width)
        let messages: [(type: Int, flags: Int, data: [UInt8])] = [
            (0x01, 0, dataspace.bytes), (0x03, 1, datatype), (0x05, 1, fillValue), (0x08, 0, layout.bytes),
        ]
        let header = out.bytes.count
        let size = messages.reduce(0) { $0 + 8 + ($1.data.count + 7) / 8 * 8 }
        out.append(1, 1)
        out.append(0, 1)
        out.append(messages.count, 2)
        out.append(1, 4)
        out.append(size, 4)
        out.append(0, 4)
        var layoutField = 0
        for message in messages {
            out.append(message.type, 2)
            out.append((message.data.count + 7) / 8 * 8, 2)
            out.append(message.flags, 1)
            out.append(0, 3)
            if message.type == 0x08 { layoutField = out.bytes.count + layoutAddress }
            out.bytes += message.data
            out.pad()
        }
        out.patch(out.bytes.count, at: layoutField, width)
        out.bytes += data
        out.pad()
        return header
    }

    /// Superblock version 0 with 8-byte offsets and lengths and the root symbol-table entry
    /// (cache type 1: the root group's B-tree and heap).
    private static func writeSuperblock(leafK: Int, root: GroupAddresses, endOfFile: Int, out: inout Output) {
        var superblock = Output()
        superblock.bytes = HDF5Superblock.signature
        superblock.append(0, 4) // superblock, free space, root group, reserved
        superblock.append(0, 1)
        superblock.append(width, 1)
        superblock.append(width, 1)
        superblock.append(0, 1)
        superblock.append(leafK, 2)
        superblock.append(internalK, 2)
        superblock.append(0, 4)
        superblock.append(0, width)
        superblock.append(undefined, width)
        superblock.append(endOfFile, width)
        superblock.append(undefined, width)
        superblock.append(0, width)
        superblock.append(root.header, width)
        superblock.append(1, 4)
        superblock.append(0, 4)
        superblock.append(root.tree, width)
        superblock.append(root.heap, width)
        out.bytes.replaceSubrange(0..<superblock.bytes.count, with: superblock.bytes)
    }
}
