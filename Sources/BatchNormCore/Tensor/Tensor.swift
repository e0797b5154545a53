/// A dense tensor of `Float32`, `Float16` or bfloat16 elements with reference semantics.
///
/// A `Tensor` is a logical shape, a memory ``layout`` and a shared ``storage``. Copying a
/// `Tensor` value copies the reference, not the data: like PuzzleLib's `gpuarray` or a
/// `torch.Tensor`, a write through one tensor (an element assignment, an in-place
/// evaluation forward) is visible through every tensor that shares the storage. Use
/// ``copy()`` for an independent tensor.
///
/// Shapes are logical, `(N, C, S...)` for batch-normalization data, whatever the layout:
/// `tensor[n, c, d, h, w]` addresses the same element in both layouts.
///
/// ```swift
/// let x = try Tensor.arange(shape: [5, 3, 10, 10, 10])
/// x[0, 1, 0, 0, 0]            // 1000.0
/// let y = x                   // same storage
/// y[0, 0, 0, 0, 0] = 42
/// x[0, 0, 0, 0, 0]            // 42.0
/// ```
public struct Tensor: @unchecked Sendable {
    /// The logical shape, batch axis first, channel axis second (for rank >= 2).
    public let shape: [Int]
    /// How the elements are ordered in ``storage``.
    public let layout: TensorLayout
    /// The element type; ``TensorDataType/float32`` unless created otherwise.
    public let dataType: TensorDataType
    /// The shared buffer holding the elements in ``layout`` order.
    public let storage: TensorStorage

    /// Creates a zero-filled tensor.
    ///
    /// - Parameters:
    ///   - shape: Logical shape; every dimension must be >= 0 (0 gives an empty tensor).
    ///   - layout: Storage order; ``TensorLayout/channelsFirst`` by default.
    ///   - dataType: Element type; ``TensorDataType/float32`` by default.
    /// - Throws: ``TensorError/invalidShape(shape:)`` for a negative dimension, or when the product
    ///   of the non-zero dimensions in bytes overflows `Int` (such as `[0, 3, 1 << 32, 1 << 32]`).
    public init(zeros shape: [Int], layout: TensorLayout = .channelsFirst, dataType: TensorDataType = .float32) throws {
        let count = try Tensor.elementCount(of: shape, dataType: dataType)
        self.init(
            shape: shape, layout: layout, dataType: dataType,
            storage: TensorStorage(byteCount: count * dataType.byteCount))
    }

    /// Creates a tensor from values in logical row-major order.
    ///
    /// The values are given in the order of the logical shape (`n, c, d, h, w` varying
    /// slowest to fastest) whatever the layout; a channels-last tensor stores them permuted.
    ///
    /// - Parameters:
    ///   - values: `shape.reduce(1, *)` values.
    ///   - shape: Logical shape.
    ///   - layout: Storage order; ``TensorLayout/channelsFirst`` by default.
    ///   - dataType: Element type; values are rounded to it (to nearest even) for
    ///     ``TensorDataType/float16`` and ``TensorDataType/bfloat16``.
    /// - Throws: ``TensorError/invalidShape(shape:)`` or
    ///   ``TensorError/elementCountMismatch(expected:actual:)``.
    public init(
        _ values: [Float], shape: [Int], layout: TensorLayout = .channelsFirst,
        dataType: TensorDataType = .float32
    ) throws {
        let count = try Tensor.elementCount(of: shape, dataType: dataType)
        guard values.count == count else {
            throw TensorError.elementCountMismatch(expected: count, actual: values.count)
        }
        try self.init(uninitialized: shape, layout: layout, dataType: dataType)
        let geometry = ChannelGeometry(shape: shape)
        values.withUnsafeBytes { logical in
            guard let logical = logical.baseAddress else { return }
            if layout == .channelsFirst {
                ElementConversion.convert(logical, from: .float32, to: storage.rawAddress, dataType, count: count)
                return
            }
            let permuted = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
            defer { permuted.deallocate() }
            ElementConversion.permute(
                logical, from: .channelsFirst, to: permuted, layout, geometry: geometry, byteCount: 4)
            ElementConversion.convert(permuted, from: .float32, to: storage.rawAddress, dataType, count: count)
        }
    }

    /// Wraps an existing storage, which must hold exactly the shape's elements.
    ///
    /// - Throws: ``TensorError/invalidShape(shape:)`` or
    ///   ``TensorError/elementCountMismatch(expected:actual:)`` (counted in elements).
    public init(
        shape: [Int], layout: TensorLayout, dataType: TensorDataType = .float32,
        sharing storage: TensorStorage
    ) throws {
        let count = try Tensor.elementCount(of: shape, dataType: dataType)
        guard storage.byteCount == count * dataType.byteCount else {
            throw TensorError.elementCountMismatch(expected: count, actual: storage.byteCount / dataType.byteCount)
        }
        self.init(shape: shape, layout: layout, dataType: dataType, storage: storage)
    }

    /// A tensor whose elements are not initialized, for outputs a kernel overwrites entirely.
    init(uninitialized shape: [Int], layout: TensorLayout, dataType: TensorDataType) throws {
        let count = try Tensor.elementCount(of: shape, dataType: dataType)
        self.init(
            shape: shape, layout: layout, dataType: dataType,
            storage: TensorStorage(uninitializedByteCount: count * dataType.byteCount))
    }

    init(shape: [Int], layout: TensorLayout, dataType: TensorDataType, storage: TensorStorage) {
        self.shape = shape
        self.layout = layout
        self.dataType = dataType
        self.storage = storage
    }

    /// Number of axes.
    public var rank: Int { shape.count }

    /// Number of elements, the product of the shape.
    public var elementCount: Int { storage.byteCount / dataType.byteCount }

    /// The elements in logical row-major order, as `Float` (a copy; half types widened exactly).
    public var scalars: [Float] {
        converted(to: .channelsFirst, dataType: .float32).withUnsafeFloats { Array($0) }
    }

    /// Calls `body` with the storage of a ``TensorDataType/float32`` tensor.
    private func withUnsafeFloats<R>(_ body: (UnsafeBufferPointer<Float>) -> R) -> R {
        body(UnsafeBufferPointer(start: storage.floats, count: elementCount))
    }

    /// Whether `other` reads and writes the same buffer.
    public func sharesStorage(with other: Tensor) -> Bool {
        storage === other.storage
    }

    /// An independent copy with the same shape, layout and data type.
    public func copy() -> Tensor {
        converted(to: layout, dataType: dataType)
    }

    /// A copy stored in `layout` with elements of `dataType`; the logical shape stays the
    /// same. Widening is exact; narrowing rounds to nearest even (see ``TensorDataType``).
    /// The conversion runs on the CPU's SIMD units (F16C or AVX-512 conversions where
    /// present).
    public func converted(to layout: TensorLayout, dataType: TensorDataType? = nil) -> Tensor {
        let dataType = dataType ?? self.dataType
        let count = elementCount
        let result = Tensor(
            shape: shape, layout: layout, dataType: dataType,
            storage: TensorStorage(uninitializedByteCount: count * dataType.byteCount))
        if layout == self.layout {
            ElementConversion.convert(
                storage.rawAddress, from: self.dataType, to: result.storage.rawAddress, dataType,
                count: count)
            return result
        }
        // Convert in this layout, then permute elements of the new type.
        let converted = dataType == self.dataType ? self : self.converted(to: self.layout, dataType: dataType)
        ElementConversion.permute(
            converted.storage.rawAddress, from: self.layout, to: result.storage.rawAddress, layout,
            geometry: ChannelGeometry(shape: shape), byteCount: dataType.byteCount)
        return result
    }

    /// Reads or writes one element by logical index.
    ///
    /// Writing is visible through every tensor sharing the storage. Like `Array`'s
    /// subscript, an index of the wrong rank or out of range stops the program; use
    /// ``value(at:)`` and ``setValue(_:at:)`` to get a thrown error instead.
    public subscript(_ index: Int...) -> Float {
        get {
            do { return try value(at: index) } catch { preconditionFailure("\(error)") }
        }
        nonmutating set {
            do { try setValue(newValue, at: index) } catch { preconditionFailure("\(error)") }
        }
    }

    /// The element at a logical index.
    /// - Throws: ``TensorError/indexRankMismatch(expected:actual:)`` or
    ///   ``TensorError/indexOutOfRange(index:shape:)``.
    public func value(at index: [Int]) throws -> Float {
        loadElement(at: try storageOffset(of: index))
    }

    /// Writes the element at a logical index, visible through every tensor sharing the storage.
    /// - Throws: ``TensorError/indexRankMismatch(expected:actual:)`` or
    ///   ``TensorError/indexOutOfRange(index:shape:)``.
    public func setValue(_ value: Float, at index: [Int]) throws {
        storeElement(value, at: try storageOffset(of: index))
    }

    /// The element at a storage offset, widened to `Float`.
    func loadElement(at offset: Int) -> Float {
        ElementConversion.load(storage.rawAddress, dataType, at: offset)
    }

    /// Writes the element at a storage offset, rounding to the data type.
    func storeElement(_ value: Float, at offset: Int) {
        ElementConversion.store(value, storage.rawAddress, dataType, at: offset)
    }

    /// The offset in ``storage`` of a logical index.
    func storageOffset(of index: [Int]) throws -> Int {
        guard index.count == shape.count else {
            throw TensorError.indexRankMismatch(expected: shape.count, actual: index.count)
        }
        for (i, extent) in zip(index, shape) where i < 0 || i >= extent {
            throw TensorError.indexOutOfRange(index: index, shape: shape)
        }
        let geometry = ChannelGeometry(shape: shape)
        let n = shape.isEmpty ? 0 : index[0]
        let c = shape.count < 2 ? 0 : index[1]
        var s = 0
        for axis in 2..<max(2, shape.count) { s = s * shape[axis] + index[axis] }
        return geometry.offset(n: n, c: c, s: s, layout: layout)
    }

    /// Product of the dimensions, validated by the shape rule of ``TensorShape``: no negative
    /// extent, and the product of the non-zero extents in bytes of `dataType` fits in `Int`.
    static func elementCount(of shape: [Int], dataType: TensorDataType = .float32) throws -> Int {
        do { return try TensorShape.size(of: shape, elementByteCount: dataType.byteCount).elements } catch {
            throw TensorError.invalidShape(shape: shape)
        }
    }
}
