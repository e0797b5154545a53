#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

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
/// `BNKIT_STORAGE_CACHE_MIB=0` to disable the cache.
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
