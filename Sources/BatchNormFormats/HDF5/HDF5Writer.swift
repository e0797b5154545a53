import BatchNormCore

/// Writes the small HDF5 files PuzzleLib reads: groups under the root, each holding
/// uncompressed contiguous datasets of `float32` arrays or `int64` scalars, in the format
/// that h5py writes with `libver="earliest"` (superblock version 0, version-1 object headers,
/// symbol-table groups), so that h5py and any HDF5 library since 1.6 open them.
///
/// A group's members sit in symbol-table nodes of 2K entries (the superblock's group leaf K
/// fits the largest group up to 128 members, and stays at 64 beyond), under a B-tree whose
/// nodes hold up to 32 children (internal K 16, HDF5's default), with as many levels as the
/// members need, as libhdf5 builds large groups. Layout, in file order:
///
///     superblock (96 bytes) | per group, the root first: object header, root B-tree node,
///     local heap header and data, symbol-table nodes, lower B-tree nodes level by level |
///     per dataset: object header, data
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
        /// Integer attributes of some of the datasets, by dataset name.
        var attributes: [String: [(name: String, value: Int64)]] = [:]
    }

    /// Size of offsets and of lengths (8 bytes each, as h5py writes).
    private static let width = 8
    /// The group internal-node K of the superblock (HDF5's default): B-tree nodes have room
    /// for 2K children.
    private static let internalK = 16
    /// The largest group leaf K: symbol-table nodes hold at most 2K entries, and a group with
    /// more members has several under a B-tree of as many levels as it needs.
    private static let maximumLeafK = 64
    private static let undefined = UInt64.max
    /// The `int64` datatype message: class 0 version 1; little-endian, signed (bit 3); size 8;
    /// bit offset 0, precision 64.
    private static let int64Datatype: [UInt8] = [0x10, 0x08, 0, 0, 8, 0, 0, 0, 0, 0, 64, 0]

    /// The bytes of a file with `groups` under the root group.
    static func file(_ groups: [Group]) -> [UInt8] {
        let groups = groups.sorted { precedes($0.name, $1.name) }.map {
            Group(name: $0.name, datasets: $0.datasets.sorted { precedes($0.name, $1.name) }, attributes: $0.attributes)
        }
        let largest = max(groups.count, groups.map(\.datasets.count).max() ?? 0)
        let leafK = min(max(4, (largest + 1) / 2), maximumLeafK)
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
            let headers = group.datasets.map {
                writeDataset($0.value, attributes: group.attributes[$0.name] ?? [], out: &out)
            }
            addresses.patchMembers(headers: headers, groups: nil, out: &out)
        }
        writeSuperblock(leafK: leafK, root: rootAddresses, endOfFile: out.bytes.count, out: &out)
        return out.bytes
    }

    /// strcmp order, as HDF5 sorts the names of a group.
    private static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
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
    /// the root B-tree node, the local heap of names, the symbol-table nodes (2·leafK entries
    /// each, the last one possibly fewer) and the B-tree nodes below the root. The entries'
    /// object header addresses are patched later.
    ///
    /// Group B-tree keys are name offsets: child `i` holds the names after key `i` up to and
    /// including key `i + 1` (key 0 of the leftmost node is the empty name at heap offset 0).
    /// Each node holds at most 2·internalK children; a level with more gets a level above it.
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
        let tree = out.bytes.count
        out.append(0, treeNodeSize)
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
        // Symbol-table nodes with room for 2·leafK entries of 40 bytes; an empty group has one, unused.
        var entries: [Int] = []
        var children: [TreeChild] = []
        for first in stride(from: 0, to: max(members.count, 1), by: 2 * leafK) {
            let count = min(2 * leafK, members.count - first)
            let node = out.bytes.count
            out.bytes += Array("SNOD".utf8)
            out.append(1, 1)
            out.append(0, 1)
            out.append(count, 2)
            for offset in nameOffsets[first..<(first + count)] {
                entries.append(out.bytes.count)
                out.append(offset, width)
                out.append(0, width)
                out.append(0, 4)
                out.append(0, 4)
                out.append(0, 16)
            }
            out.append(0, (2 * leafK - count) * (2 * width + 24))
            if count > 0 { children.append(TreeChild(address: node, lastName: nameOffsets[first + count - 1])) }
        }
        var level = 0
        while children.count > 2 * internalK {
            children = writeTreeLevel(children, level: level, out: &out)
            level += 1
        }
        writeTreeNode(
            at: tree, level: level, children: children[...], leftKey: 0, siblings: (nil, nil), out: &out)
        out.patch(tree, at: tableMessage, width)
        out.patch(heap, at: tableMessage + width, width)
        return GroupAddresses(header: header, tree: tree, heap: heap, entries: entries)
    }

    /// A child of a group B-tree node: its address and the heap offset of its last name.
    private struct TreeChild {
        var address: Int
        var lastName: Int
    }

    /// Bytes of a group B-tree node: "TREE", type, level, entries used (2), two siblings,
    /// then room for 2·internalK children and 2·internalK + 1 keys.
    private static let treeNodeSize = 8 + 2 * width + (2 * internalK + 1) * width + 2 * internalK * width

    /// Writes the nodes of `level` over `children`, 2·internalK children each (siblings
    /// linked); the nodes, as the children of the level above.
    private static func writeTreeLevel(_ children: [TreeChild], level: Int, out: inout Output) -> [TreeChild] {
        let first = out.bytes.count
        let groups = stride(from: 0, to: children.count, by: 2 * internalK).map {
            children[$0..<min($0 + 2 * internalK, children.count)]
        }
        out.append(0, groups.count * treeNodeSize)
        return groups.enumerated().map { index, group in
            let address = first + index * treeNodeSize
            writeTreeNode(
                at: address, level: level, children: group,
                leftKey: group.startIndex == 0 ? 0 : children[group.startIndex - 1].lastName,
                siblings: (
                    index == 0 ? nil : address - treeNodeSize, index == groups.count - 1 ? nil : address + treeNodeSize
                ), out: &out)
            return TreeChild(address: address, lastName: group.last!.lastName)
        }
    }

    /// Fills the group B-tree node at `address` (already allocated): key 0 is `leftKey`, then
    /// each child and its last name.
    private static func writeTreeNode(
        at address: Int, level: Int, children: ArraySlice<TreeChild>, leftKey: Int, siblings: (left: Int?, right: Int?),
        out: inout Output
    ) {
        var node = Output()
        node.bytes += Array("TREE".utf8)
        node.append(0, 1)
        node.append(level, 1)
        node.append(children.count, 2)
        node.append(siblings.left.map(UInt64.init) ?? undefined, width)
        node.append(siblings.right.map(UInt64.init) ?? undefined, width)
        if !children.isEmpty {
            node.append(leftKey, width)
            for child in children {
                node.append(child.address, width)
                node.append(child.lastName, width)
            }
        }
        out.bytes.replaceSubrange(address..<(address + node.bytes.count), with: node.bytes)
    }

    /// Writes a dataset's object header (dataspace, datatype, fill value, contiguous layout,
    /// then one attribute message per attribute) and its data; returns the header's address.
    private static func writeDataset(_ value: Value, attributes: [(name: String, value: Int64)], out: inout Output)
        -> Int
    {
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
            datatype = int64Datatype
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
        let messages: [(type: Int, flags: Int, data: [UInt8])] =
            [(0x01, 0, dataspace.bytes), (0x03, 1, datatype), (0x05, 1, fillValue), (0x08, 0, layout.bytes)]
            + attributes.map { (0x0C, 0, attributeMessage(name: $0.name, value: $0.value)) }
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

    /// Attribute message version 1 of a scalar `int64`: version, reserved, name size (with its
    /// NUL), datatype size, dataspace size, then the name, datatype and dataspace, each padded
    /// to 8 bytes, and the value.
    private static func attributeMessage(name: String, value: Int64) -> [UInt8] {
        let datatype = int64Datatype
        let dataspace: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0] // version 1, rank 0: a scalar
        var message = Output()
        message.append(1, 1)
        message.append(0, 1)
        message.append(name.utf8.count + 1, 2)
        message.append(datatype.count, 2)
        message.append(dataspace.count, 2)
        message.bytes += Array(name.utf8) + [0]
        message.pad()
        message.bytes += datatype
        message.pad()
        message.bytes += dataspace
        message.append(UInt64(bitPattern: value), 8)
        return message.bytes
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
