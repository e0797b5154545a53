#if canImport(Glibc)
import Glibc
import Synchronization
#elseif canImport(Musl)
import Musl
import Synchronization
#elseif canImport(Darwin)
import Darwin
#endif

/// The element type of a ``Tensor``.
public enum TensorDataType: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, `Float`: the type of every computation on the CPU.
    case float32
    /// IEEE 754 binary16, `Float16`: storage type for GPU data (parameters and statistics
    /// stay `Float32`); the CPU backend rejects it.
    case float16

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float32: 4
        case .float16: 2
        }
    }

    /// NumPy's name (`"float32"`, `"float16"`).
    public var description: String { rawValue }
}

/// The heap buffer behind one or more ``Tensor`` values.
///
/// A storage is a reference: every tensor created from it sees writes made through any
/// other (PuzzleLib's `gpuarray` and `torch.Tensor` semantics). Memory is 64-byte aligned
/// and zero-initialized.
///
/// On Linux, buffers of 32 KiB and more are recycled: when a storage is freed its buffer is kept
/// in a small process-wide cache (at most 16 buffers and 512 MiB, the oldest dropped first)
/// and handed to the next storage of the same size. A training loop that allocates an
/// output of the same shape every step then touches memory the operating system has
/// already mapped instead of taking a page fault on every 4 KiB of a fresh buffer (which
/// costs more than the batch normalization itself). Set the environment variable
/// `BATCHNORMKIT_STORAGE_CACHE_MIB=0` to disable the cache.
public final class TensorStorage: @unchecked Sendable {
    /// Start of the buffer; valid for ``byteCount`` bytes until the storage is freed.
    public let rawAddress: UnsafeMutableRawPointer
    /// Size of the buffer in bytes.
    public let byteCount: Int

    /// Allocates `byteCount` zeroed bytes.
    public init(byteCount: Int) {
        precondition(byteCount >= 0, "TensorStorage byteCount must be >= 0")
        rawAddress = BufferCache.allocate(byteCount: byteCount)
        rawAddress.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 64))
        self.byteCount = byteCount
    }

    /// Allocates `byteCount` bytes without initializing them, for outputs that a kernel
    /// overwrites entirely (avoids a full write pass).
    init(uninitializedByteCount byteCount: Int) {
        precondition(byteCount >= 0, "TensorStorage byteCount must be >= 0")
        rawAddress = BufferCache.allocate(byteCount: byteCount)
        self.byteCount = byteCount
    }

    deinit {
        BufferCache.release(rawAddress, byteCount: byteCount)
    }

    /// The buffer as `Float` values (meaningful for `float32` tensors).
    public var floats: UnsafeMutablePointer<Float> { rawAddress.assumingMemoryBound(to: Float.self) }
}

#if canImport(Glibc) || canImport(Musl)
/// The recycling allocator behind ``TensorStorage`` (see its documentation).
enum BufferCache {
    /// Buffers at least this large are cached; smaller ones go straight to `malloc`. (glibc
    /// returns freed memory above 128 KiB to the system and trims its heap, so even tensors
    /// of tens of KiB would otherwise page-fault on every allocation.)
    static let minimumByteCount = 32 << 10
    static let maximumEntries = 16

    struct State {
        /// Cached buffers, oldest first: address (as a bit pattern) and allocated size.
        var entries: [(address: UInt, capacity: Int)] = []
        var cachedBytes = 0
        let limit: Int = {
            if let text = getenv("BATCHNORMKIT_STORAGE_CACHE_MIB"), let mebibytes = Int(String(cString: text)) {
                return max(0, mebibytes) << 20
            }
            return 512 << 20
        }()
    }

    static let state = Mutex<State>(State())

    /// The allocated size of a request: at least 64 bytes; cached sizes rounded up to 4 KiB
    /// (64 KiB from 1 MiB on).
    static func capacity(for byteCount: Int) -> Int {
        if byteCount < minimumByteCount { return max(byteCount, 64) }
        if byteCount < 1 << 20 { return (byteCount + 0xFFF) & ~0xFFF }
        return (byteCount + 0xFFFF) & ~0xFFFF
    }

    static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        let capacity = capacity(for: byteCount)
        if capacity >= minimumByteCount {
            let reused: UInt? = state.withLock { state in
                guard let index = state.entries.lastIndex(where: { $0.capacity == capacity }) else { return nil }
                state.cachedBytes -= capacity
                return state.entries.remove(at: index).address
            }
            if let reused, let address = UnsafeMutableRawPointer(bitPattern: reused) { return address }
        }
        return UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    static func release(_ address: UnsafeMutableRawPointer, byteCount: Int) {
        let capacity = capacity(for: byteCount)
        guard capacity >= minimumByteCount else { return address.deallocate() }
        let bits = UInt(bitPattern: address)
        let evicted: [UInt] = state.withLock { state in
            guard capacity <= state.limit else { return [bits] }
            var evicted = [UInt]()
            while !state.entries.isEmpty
                && (state.cachedBytes + capacity > state.limit || state.entries.count >= maximumEntries) {
                let oldest = state.entries.removeFirst()
                state.cachedBytes -= oldest.capacity
                evicted.append(oldest.address)
            }
            state.entries.append((bits, capacity))
            state.cachedBytes += capacity
            return evicted
        }
        for buffer in evicted { UnsafeMutableRawPointer(bitPattern: buffer)?.deallocate() }
    }
}
#else
/// Elsewhere (where `Synchronization.Mutex` may need a newer OS) buffers are not recycled.
enum BufferCache {
    static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
    }

    static func release(_ address: UnsafeMutableRawPointer, byteCount: Int) {
        address.deallocate()
    }
}
#endif
