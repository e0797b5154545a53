import SystemLibrary

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

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
                if let text = getenv("BNKIT_STORAGE_CACHE_MIB"), let mebibytes = Int(String(cString: text)) {
                    return max(0, mebibytes) << 20
                }
                return 512 << 20
            }()
        }

        /// The cache, guarded by ``lock`` (a pthread mutex, which ThreadSanitizer understands;
        /// it reports `Synchronization.Mutex` as a race in this toolchain).
        nonisolated(unsafe) static var state = State()
        static let lock = Lock()

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
                let reused: UInt? = lock.withLock {
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
            let evicted: [UInt] = lock.withLock {
                guard capacity <= state.limit else { return [bits] }
                var evicted = [UInt]()
                while !state.entries.isEmpty
                    && (state.cachedBytes + capacity > state.limit || state.entries.count >= maximumEntries)
                {
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
    /// Elsewhere buffers are not recycled.
    enum BufferCache {
        static func allocate(byteCount: Int) -> UnsafeMutableRawPointer {
            UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 64), alignment: 64)
        }

        static func release(_ address: UnsafeMutableRawPointer, byteCount: Int) {
            address.deallocate()
        }
    }
#endif
