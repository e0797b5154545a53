import BatchNormCore

/// The superblock (format versions 0 and 1): the sizes of addresses and lengths, the base
/// address and the root group's object header.
///
/// Layout (version 0; version 1 adds 4 bytes after the flags):
///
///     signature \x89HDF\r\n\x1a\n (8) | versions: superblock, free space, root group,
///     reserved, shared header (5) | size of offsets O, size of lengths L, reserved (3) |
///     group leaf K, group internal K (2+2) | flags (4) | [indexed storage K, reserved (2+2)] |
///     base address, free-space address, end-of-file address, driver block (4·O) |
///     root symbol-table entry (2·O + 24)
struct HDF5Superblock {
    let offsetSize: Int
    let lengthSize: Int
    let baseAddress: Int
    /// Absolute file offset of the root group's object header.
    let rootObjectHeader: Int

    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The offset of the signature: 0, 512, 1024, ... (a user block may precede it), or `nil`.
    static func signatureOffset(in source: HDF5Source) throws -> Int? {
        var offset = 0
        while offset <= source.size - 8 {
            if try source.read(at: offset, count: 8, structure: "signature") == signature { return offset }
            offset = offset == 0 ? 512 : offset * 2
        }
        return nil
    }

    init(source: HDF5Source) throws {
        guard let start = try Self.signatureOffset(in: source) else { throw HDF5Error.notHDF5 }
        let structure = "superblock at \(start)"
        var prefix = HDF5Cursor(
            try source.read(at: start, count: min(source.size - start, 24), structure: structure),
            structure: structure)
        try prefix.skip(8, "signature")
        let version = try prefix.byte("superblock version")
        guard version <= 1 else {
            throw HDF5Error.unsupported(
                feature:
                    "superblock version \(version) (written with libver 'v108' or later; expected version 0 or 1, libver 'earliest')"
            )
        }
        try prefix.skip(4, "format versions")
        offsetSize = try prefix.byte("size of offsets")
        lengthSize = try prefix.byte("size of lengths")
        for (name, size) in [("size of offsets", offsetSize), ("size of lengths", lengthSize)]
        where ![2, 4, 8].contains(size) {
            throw HDF5Error.corrupt(structure: structure, reason: "\(name) is \(size), expected 2, 4 or 8")
        }
        let fixed = 8 + 8 + 4 + 4 + (version == 1 ? 4 : 0)
        let total = fixed + 4 * offsetSize + 2 * offsetSize + 24
        var cursor = HDF5Cursor(
            try source.read(at: start, count: total, structure: structure), structure: structure,
            offsetSize: offsetSize, lengthSize: lengthSize)
        try cursor.skip(fixed, "fixed fields")
        let base = try cursor.address("base address") ?? 0
        _ = try cursor.address("free-space address")
        let endOfFile = try cursor.address("end-of-file address")
        _ = try cursor.address("driver information address")
        guard base <= source.size else {
            throw HDF5Error.corrupt(
                structure: structure,
                reason: "base address \(base) lies past the end of the file (\(source.size) bytes)")
        }
        baseAddress = base
        // The library writes the end of file counting the user block (not relative to the base).
        if let endOfFile, endOfFile > source.size {
            throw HDF5Error.corrupt(
                structure: structure,
                reason: "end-of-file address \(endOfFile) exceeds the file size \(source.size): file truncated")
        }
        _ = try cursor.address("root entry link name offset")
        guard let root = try cursor.address("root object header address") else {
            throw HDF5Error.corrupt(structure: structure, reason: "root object header address is undefined")
        }
        let (rootOffset, overflow) = base.addingReportingOverflow(root)
        guard !overflow, rootOffset < source.size else {
            throw HDF5Error.corrupt(
                structure: structure, reason: "root object header address \(root) lies past the end of the file")
        }
        rootObjectHeader = rootOffset
    }

    /// The absolute offset of `address`, checked against the file.
    func fileOffset(_ address: Int, size: Int, _ structure: @autoclosure () -> String) throws -> Int {
        let (offset, overflow) = baseAddress.addingReportingOverflow(address)
        guard !overflow, offset < size else {
            throw HDF5Error.corrupt(
                structure: structure(), reason: "address \(address) lies past the end of the file (\(size) bytes)")
        }
        return offset
    }
}

/// One message of a version-1 object header.
struct HDF5Message {
    /// The message type (1 dataspace, 3 datatype, 8 layout, 11 filters, 17 symbol table, ...).
    let type: Int
    /// Bit 1: the message is shared (stored elsewhere).
    let flags: Int
    let data: [UInt8]
    /// Where the message data start, for errors.
    let offset: Int
}

/// Reads version-1 object headers:
///
///     version 1 (1) | reserved (1) | message count (2) | reference count (4) |
///     header size (4) | padding to 8 (4) | messages: type (2), size (2), flags (1),
///     reserved (3), data (size)
///
/// with continuation messages (type 16: address O, length L) pointing to further blocks of
/// messages. Each block is read once (a repeated block is a cycle) and the number of blocks
/// is bounded.
enum HDF5ObjectHeader {
    static let maximumBlocks = 4096

    static func messages(at offset: Int, source: HDF5Source, superblock: HDF5Superblock) throws -> [HDF5Message] {
        let structure = "object header at \(offset)"
        let prefixBytes = try source.read(at: offset, count: 16, structure: structure)
        if prefixBytes.starts(with: Array("OHDR".utf8)) {
            throw HDF5Error.unsupported(
                feature:
                    "version-2 object header at \(offset) (libver 'v108' or later; expected version 1, libver 'earliest')"
            )
        }
        var prefix = HDF5Cursor(prefixBytes, structure: structure)
        let version = try prefix.byte("version")
        guard version == 1 else {
            throw HDF5Error.corrupt(structure: structure, reason: "version is \(version), expected 1")
        }
        try prefix.skip(3, "reserved and message count")
        try prefix.skip(4, "reference count")
        let headerSize = try prefix.uint32("header size")
        var blocks = [(offset: offset + 16, count: headerSize)]
        var visited: Set<Int> = [offset + 16]
        var messages: [HDF5Message] = []
        var index = 0
        while index < blocks.count {
            let block = blocks[index]
            index += 1
            let blockStructure = index == 1 ? structure : "object header continuation block at \(block.offset)"
            var cursor = HDF5Cursor(
                try source.read(at: block.offset, count: block.count, structure: blockStructure),
                structure: blockStructure, offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
            while cursor.remaining >= 8 {
                let type = try cursor.uint16("message type")
                let size = try cursor.uint16("message size")
                let flags = try cursor.byte("message flags")
                try cursor.skip(3, "message reserved bytes")
                let dataOffset = block.offset + cursor.position
                let data = try cursor.take(size, "data of message type \(type)")
                if type == 0x10 {
                    var continuation = HDF5Cursor(
                        data, structure: "continuation message at \(dataOffset)",
                        offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
                    guard let address = try continuation.address("continuation address") else {
                        throw HDF5Error.corrupt(
                            structure: "continuation message at \(dataOffset)", reason: "address is undefined")
                    }
                    let length = try continuation.length("continuation length")
                    let start = try superblock.fileOffset(
                        address, size: source.size, "continuation message at \(dataOffset)")
                    guard visited.insert(start).inserted else {
                        throw HDF5Error.corrupt(
                            structure: "continuation message at \(dataOffset)",
                            reason: "block at \(start) is already part of this header (cycle)")
                    }
                    guard blocks.count < maximumBlocks else {
                        throw HDF5Error.corrupt(
                            structure: structure, reason: "more than \(maximumBlocks) continuation blocks")
                    }
                    blocks.append((start, length))
                } else if type != 0 {
                    messages.append(HDF5Message(type: type, flags: flags, data: data, offset: dataOffset))
                }
            }
        }
        return messages
    }
}

/// A version-1 B-tree node (groups: type 0; chunks: type 1):
///
///     "TREE" | type (1) | level (1) | entries used n (2) | left, right sibling (2·O) |
///     key 0, child 0, key 1, ..., child n−1, key n
///
/// read with its level checked against its parent's (one less), so every walk ends.
struct HDF5BTreeNode {
    let level: Int
    let entryCount: Int
    /// Over key 0, child 0, ..., key n.
    var body: HDF5Cursor

    init(
        at node: Int, type: Int, keySize: Int, expectedLevel: Int?, source: HDF5Source, superblock: HDF5Superblock,
        structure: String
    ) throws {
        let headerSize = 8 + 2 * superblock.offsetSize
        var header = HDF5Cursor(
            try source.read(at: node, count: headerSize, structure: structure), structure: structure,
            offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
        try header.expectSignature("TREE")
        let found = try header.byte("node type")
        guard found == type else {
            throw header.corrupt(
                "node type", "is \(found), expected \(type) (\(type == 0 ? "group" : "raw data chunk") nodes)")
        }
        level = try header.byte("node level")
        if let expectedLevel, level != expectedLevel {
            throw header.corrupt("node level", "is \(level), expected \(expectedLevel) (one below its parent)")
        }
        entryCount = try header.uint16("entries used")
        body = HDF5Cursor(
            try source.read(
                at: node + headerSize, count: entryCount * (keySize + superblock.offsetSize) + keySize,
                structure: structure),
            structure: structure, offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
    }
}

/// Walks the groups from the root, collecting every group, dataset and soft link.
///
/// A group's symbol-table message (type 17) names a version-1 B-tree of type 0 and a local
/// heap; the tree's leaves are symbol-table nodes (`SNOD`) whose entries give each member's
/// name (an offset into the heap) and object header, or for a soft link (cache type 2) the
/// offset of its target path in the heap:
///
///     B-tree node (``HDF5BTreeNode``), keys: L bytes (name offsets), children: O
///     SNOD: "SNOD" | version 1 | reserved | symbol count (2) | entries (2·O + 24 bytes each)
///     entry: name offset (O) | object header address (O) | cache type (4) | reserved (4) |
///            scratch pad (16)
///     HEAP: "HEAP" | version 0 | reserved (3) | data size (L) | free list (L) | data address (O)
///
/// A group that libhdf5 turned new-style (an external link added to a `libver="earliest"`
/// file does so) keeps its links in link messages (type 6) of its header when they are few
/// (compact storage, read here) or in a fractal heap (dense storage, unsupported).
///
/// Member names must be UTF-8 (two names that differ only in other bytes would otherwise
/// read as one). A group reached by two hard links is walked under both paths; a group that
/// contains itself (a cycle) is corrupt.
struct HDF5GroupWalker {
    let source: HDF5Source
    let superblock: HDF5Superblock
    private(set) var datasets: [HDF5File.Dataset] = []
    private(set) var groups: [String] = []
    /// Soft and external links by path: their target (`"/params/0"`, `"file.h5:/x"`).
    private(set) var links: [String: String] = [:]
    /// Every B-tree and symbol-table node read so far: a node met twice is a cycle.
    private var visitedNodes: Set<Int> = []
    /// The members of the groups read so far, by object header (a shared group is read once).
    private var members: [Int: [Member]] = [:]
    /// Messages of the object headers read so far (a header linked many times is read once).
    private var headers: [Int: [HDF5Message]] = [:]

    static let maximumDepth = 64
    static let maximumObjects = 1 << 20

    /// A group member: a hard link to an object header, or a soft or external link.
    enum Target {
        case object(header: Int)
        case link(String)
    }

    struct Member {
        let name: String
        let target: Target
    }

    init(source: HDF5Source, superblock: HDF5Superblock) {
        self.source = source
        self.superblock = superblock
    }

    private func cursor(_ bytes: [UInt8], _ structure: String) -> HDF5Cursor {
        HDF5Cursor(bytes, structure: structure, offsetSize: superblock.offsetSize, lengthSize: superblock.lengthSize)
    }

    private func offset(_ address: Int, _ structure: @autoclosure () -> String) throws -> Int {
        try superblock.fileOffset(address, size: source.size, structure())
    }

    mutating func walk(group header: Int, path: String, ancestors: [Int]) throws {
        guard ancestors.count < Self.maximumDepth else {
            throw HDF5Error.corrupt(
                structure: "group '\(path)'", reason: "nested more than \(Self.maximumDepth) groups deep")
        }
        guard !ancestors.contains(header) else {
            throw HDF5Error.corrupt(
                structure: "group '\(path)' (object header at \(header))",
                reason: "links back to an enclosing group (cycle)")
        }
        for member in try self.members(ofGroup: header, path: path) {
            let memberPath = path.isEmpty ? member.name : path + "/" + member.name
            guard datasets.count + groups.count + links.count < Self.maximumObjects else {
                throw HDF5Error.corrupt(
                    structure: "group '\(path)'", reason: "more than \(Self.maximumObjects) objects")
            }
            switch member.target {
            case .link(let target):
                links[memberPath] = target
            case .object(let memberHeader):
                let memberMessages = try self.messages(at: memberHeader)
                if memberMessages.contains(where: { [0x02, 0x06, 0x0A, 0x11].contains($0.type) }) {
                    groups.append(memberPath)
                    try walk(group: memberHeader, path: memberPath, ancestors: ancestors + [header])
                } else if memberMessages.contains(where: { $0.type == 0x01 }) {
                    datasets.append(
                        try HDF5DatasetMessages.dataset(
                            path: memberPath, messages: memberMessages, superblock: superblock))
                }
            // Anything else (a committed datatype) is not a dataset and is skipped.
            }
        }
    }

    /// The members of the group whose object header is at `header`, in storage order.
    private mutating func members(ofGroup header: Int, path: String) throws -> [Member] {
        if let cached = members[header] { return cached }
        let messages = try self.messages(at: header)
        let found: [Member]
        if let info = messages.first(where: { $0.type == 0x02 }) {
            found = try compactMembers(messages, info: info, path: path)
        } else if let table = messages.first(where: { $0.type == 0x11 }) {
            var message = cursor(table.data, "symbol-table message at \(table.offset)")
            guard let tree = try message.address("B-tree address"),
                let heapAddress = try message.address("local heap address")
            else {
                throw HDF5Error.corrupt(
                    structure: "symbol-table message at \(table.offset)", reason: "B-tree or heap address is undefined")
            }
            let heap = try readHeap(at: try offset(heapAddress, "symbol-table message at \(table.offset)"))
            var collected: [Member] = []
            try collect(
                node: try offset(tree, "symbol-table message at \(table.offset)"), expectedLevel: nil, heap: heap,
                group: path, into: &collected)
            found = collected
        } else {
            throw HDF5Error.corrupt(
                structure: "group '\(path)' (object header at \(header))", reason: "has no symbol-table message")
        }
        var names = Set<String>()
        for member in found where !names.insert(member.name).inserted {
            throw HDF5Error.corrupt(structure: "group '\(path)'", reason: "has two members named '\(member.name)'")
        }
        members[header] = found
        return found
    }

    /// The links of a new-style group kept in its header (compact storage):
    ///
    ///     link info (type 2): version 0 | flags | [max creation index (8)] | fractal heap (O) |
    ///                         name index B-tree (O) | [creation order index (O)]
    ///     link (type 6): version 1 | flags | [type (1)] | [creation order (8)] | [charset (1)] |
    ///                    name length (1, 2, 4 or 8, flag bits 0-1) | name | hard: address (O);
    ///                    soft: length (2), path; external: length (2), flags, file, NUL, path, NUL
    private func compactMembers(_ messages: [HDF5Message], info: HDF5Message, path: String) throws -> [Member] {
        var infoCursor = cursor(info.data, "link info message of group '\(path)' at \(info.offset)")
        let version = try infoCursor.byte("version")
        guard version == 0 else { throw infoCursor.corrupt("version", "is \(version), expected 0") }
        let flags = try infoCursor.byte("flags")
        if flags & 0x01 != 0 { try infoCursor.skip(8, "maximum creation index") }
        if try infoCursor.address("fractal heap address") != nil {
            throw HDF5Error.unsupported(
                feature:
                    "new-style group '\(path)' with dense link storage (a fractal heap; libver 'v108' or later, or many links; expected a symbol table)"
            )
        }
        return try messages.filter { $0.type == 0x06 }.map { message in
            var link = cursor(message.data, "link message of group '\(path)' at \(message.offset)")
            let version = try link.byte("version")
            guard version == 1 else { throw link.corrupt("version", "is \(version), expected 1") }
            let flags = try link.byte("flags")
            let type = flags & 0x08 != 0 ? try link.byte("link type") : 0
            if flags & 0x04 != 0 { try link.skip(8, "creation order") }
            if flags & 0x10 != 0 { _ = try link.byte("character set") }
            let nameLength = try link.size(1 << (flags & 0x03), "name length")
            let name = try Self.memberName(try link.take(nameLength, "name"), group: path, structure: link.structure)
            switch type {
            case 0:
                guard let address = try link.address("object header address") else {
                    throw link.corrupt("object header address", "is undefined")
                }
                return Member(name: name, target: .object(header: try offset(address, link.structure)))
            case 1:
                let length = try link.uint16("soft link length")
                return Member(
                    name: name, target: .link(String(decoding: try link.take(length, "soft link"), as: UTF8.self)))
            case 64:
                let length = try link.uint16("external link length")
                let value = try link.take(length, "external link").dropFirst().split(
                    separator: 0, omittingEmptySubsequences: false)
                let target = value.prefix(2).map { String(decoding: $0, as: UTF8.self) }.joined(separator: ":")
                return Member(name: name, target: .link(target))
            default:
                return Member(name: name, target: .link("a user-defined link of type \(type)"))
            }
        }
    }

    private mutating func messages(at header: Int) throws -> [HDF5Message] {
        if let cached = headers[header] { return cached }
        let messages = try HDF5ObjectHeader.messages(at: header, source: source, superblock: superblock)
        headers[header] = messages
        return messages
    }

    /// The data segment of the local heap at `offset`.
    private func readHeap(at offset: Int) throws -> [UInt8] {
        let structure = "local heap at \(offset)"
        var header = cursor(
            try source.read(
                at: offset, count: 8 + 2 * superblock.lengthSize + superblock.offsetSize,
                structure: structure), structure)
        try header.expectSignature("HEAP")
        let version = try header.byte("version")
        guard version == 0 else { throw header.corrupt("version", "is \(version), expected 0") }
        try header.skip(3, "reserved")
        let size = try header.length("data segment size")
        _ = try header.length("free list offset")
        guard let address = try header.address("data segment address") else {
            throw header.corrupt("data segment address", "is undefined")
        }
        return try source.read(
            at: try self.offset(address, structure), count: size, structure: structure + " data segment")
    }

    /// The NUL-terminated string at `offset` of a heap's data segment.
    private func string(at offset: Int, heap: [UInt8], structure: String) throws -> ArraySlice<UInt8> {
        guard offset < heap.count, let end = heap[offset...].firstIndex(of: 0) else {
            throw HDF5Error.corrupt(
                structure: structure,
                reason: "name offset \(offset) is not a NUL-terminated name in the local heap of \(heap.count) bytes")
        }
        return heap[offset..<end]
    }

    /// A member name: non-empty UTF-8 without `/`.
    static func memberName<Bytes: Collection<UInt8>>(_ bytes: Bytes, group: String, structure: String) throws
        -> String
    {
        guard let name = String(validating: bytes, as: UTF8.self) else {
            let hex = bytes.prefix(64).map { String($0, radix: 16) }.joined(separator: " ")
            throw HDF5Error.unsupported(
                feature:
                    "member name of group '\(group)' that is not UTF-8 (bytes \(hex)); names are read as UTF-8 text")
        }
        guard !name.isEmpty, !name.contains("/") else {
            throw HDF5Error.corrupt(structure: structure, reason: "member name '\(name)' is empty or contains '/'")
        }
        return name
    }

    /// Appends the members held under group B-tree node `node` (or symbol-table node).
    private mutating func collect(
        node: Int, expectedLevel: Int?, heap: [UInt8], group: String, into members: inout [Member]
    ) throws {
        guard visitedNodes.insert(node).inserted else {
            throw HDF5Error.corrupt(structure: "group B-tree node at \(node)", reason: "is reached twice (cycle)")
        }
        let structure = "group B-tree node at \(node)"
        var tree = try HDF5BTreeNode(
            at: node, type: 0, keySize: superblock.lengthSize, expectedLevel: expectedLevel,
            source: source, superblock: superblock, structure: structure)
        let level = tree.level
        for _ in 0..<tree.entryCount {
            _ = try tree.body.length("key")
            guard let child = try tree.body.address("child address") else {
                throw tree.body.corrupt("child address", "is undefined")
            }
            let childOffset = try offset(child, structure)
            if level == 0 {
                try collectSymbols(node: childOffset, heap: heap, group: group, into: &members)
            } else {
                try collect(node: childOffset, expectedLevel: level - 1, heap: heap, group: group, into: &members)
            }
        }
    }

    private mutating func collectSymbols(node: Int, heap: [UInt8], group: String, into members: inout [Member])
        throws
    {
        guard visitedNodes.insert(node).inserted else {
            throw HDF5Error.corrupt(structure: "symbol-table node at \(node)", reason: "is reached twice (cycle)")
        }
        let structure = "symbol-table node at \(node)"
        var header = cursor(try source.read(at: node, count: 8, structure: structure), structure)
        try header.expectSignature("SNOD")
        let version = try header.byte("version")
        guard version == 1 else { throw header.corrupt("version", "is \(version), expected 1") }
        try header.skip(1, "reserved")
        let count = try header.uint16("symbol count")
        let entrySize = 2 * superblock.offsetSize + 24
        var body = cursor(try source.read(at: node + 8, count: count * entrySize, structure: structure), structure)
        for _ in 0..<count {
            let nameOffset = try body.size(superblock.offsetSize, "link name offset")
            let address = try body.address("object header address")
            let cacheType = try body.uint32("cache type")
            try body.skip(4, "reserved")
            var scratch = cursor(try body.take(16, "scratch pad"), structure)
            let name = try Self.memberName(
                try string(at: nameOffset, heap: heap, structure: structure), group: group, structure: structure)
            if cacheType == 2 { // a soft link: its target path is in the heap
                let target = try string(
                    at: try scratch.size(4, "soft link value offset"), heap: heap, structure: structure)
                members.append(Member(name: name, target: .link(String(decoding: target, as: UTF8.self))))
                continue
            }
            guard let address else { throw body.corrupt("object header address", "is undefined") }
            members.append(Member(name: name, target: .object(header: try offset(address, structure))))
        }
    }
}
