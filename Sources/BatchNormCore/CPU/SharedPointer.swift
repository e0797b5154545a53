/// A pointer that may cross into `parallelFor` bodies; each thread writes disjoint slots.
struct SharedPointer<Pointee>: @unchecked Sendable {
    let base: UnsafeMutablePointer<Pointee>
    init(_ base: UnsafeMutablePointer<Pointee>) { self.base = base }
    init(_ base: UnsafePointer<Pointee>) { self.base = UnsafeMutablePointer(mutating: base) }
}

/// A tensor's elements as the C kernels take them: the storage, the element size and the
/// storage-type code (`BNK_TYPE_*`). May cross into `parallelFor` bodies.
struct KernelData: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let byteCount: Int
    let type: Int32

    init(_ tensor: Tensor) {
        base = tensor.storage.rawAddress
        byteCount = tensor.dataType.byteCount
        type = tensor.dataType.kernelType
    }

    /// The address of element `index` of the storage.
    @inline(__always) subscript(index: Int) -> UnsafeMutableRawPointer { base + index * byteCount }
}
