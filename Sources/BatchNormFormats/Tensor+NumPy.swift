import BatchNormCore

extension Tensor {
    /// The shape of the array stored in a `.npy` file for a tensor of logical `shape` whose
    /// file holds the elements in `fileLayout` order: the logical shape for
    /// `TensorLayout/channelsFirst`, `(N, S..., C)` for `TensorLayout/channelsLast`.
    public static func physicalShape(ofLogical shape: [Int], layout fileLayout: TensorLayout) -> [Int] {
        guard fileLayout == .channelsLast, shape.count > 2 else { return shape }
        return [shape[0]] + shape[2...] + [shape[1]]
    }

    /// The logical `(N, C, S...)` shape of a `.npy` array of `physicalShape` stored in
    /// `fileLayout` order (the inverse of ``physicalShape(ofLogical:layout:)``).
    public static func logicalShape(ofPhysical physicalShape: [Int], layout fileLayout: TensorLayout) -> [Int] {
        guard fileLayout == .channelsLast, physicalShape.count > 2 else { return physicalShape }
        return [physicalShape[0], physicalShape.last!] + physicalShape[1..<(physicalShape.count - 1)]
    }

    /// Reads a tensor from the bytes of a NumPy `.npy` file (`float16`, `float32` or
    /// `float64`, either byte order, C order).
    ///
    /// The file's array is taken as the tensor's storage in `fileLayout` order: with
    /// `TensorLayout/channelsFirst` an array of shape `(N, C, D, H, W)` gives that logical
    /// shape; with `TensorLayout/channelsLast` the array is `(N, D, H, W, C)` (as
    /// `x.permute(0, 2, 3, 4, 1)` of a PyTorch tensor, or a `channels_last_3d` tensor's
    /// memory), and the tensor has logical shape `(N, C, D, H, W)` in channels-last layout.
    /// No permutation is done. `float16` and `float32` keep their type; `float64` (NumPy's
    /// default dtype) becomes `float32`, rounded to nearest; big-endian files are byte-swapped.
    ///
    /// - Parameters:
    ///   - bytes: The whole file.
    ///   - fileLayout: How the file's axes are ordered; `TensorLayout/channelsFirst` by default.
    /// - Throws: ``NumPyArrayError`` for malformed data, another dtype
    ///   (``NumPyArrayError/unsupportedDataType(descr:)`` names it), Fortran order, a shape
    ///   that is negative or overflows, or a data section of the wrong size. Never traps.
    public init(npyBytes bytes: [UInt8], fileLayout: TensorLayout = .channelsFirst) throws {
        let header = try NumPyArrayHeader(parsing: bytes)
        try header.checkDataSize(fileSize: bytes.count)
        let storage = TensorStorage(byteCount: header.elementCount * header.dataType.byteCount)
        bytes.withUnsafeBytes { buffer in
            guard header.dataByteCount > 0 else { return }
            let source = buffer.baseAddress! + header.dataOffset
            if header.needsConversion {
                header.decode(source, count: header.elementCount, into: storage.rawAddress)
            } else {
                storage.rawAddress.copyMemory(from: source, byteCount: header.dataByteCount)
            }
        }
        try self.init(
            shape: Self.logicalShape(ofPhysical: header.shape, layout: fileLayout), layout: fileLayout,
            dataType: header.dataType, sharing: storage)
    }

    /// Reads a `.npy` file (see ``init(npyBytes:fileLayout:)``): the header first, and the
    /// data only once the header accounts for the file's size.
    /// - Throws: ``FileIOError``, ``NumPyArrayError``.
    public init(contentsOfNPYFile path: String, fileLayout: TensorLayout = .channelsFirst) throws {
        let file = try FileReader(path: path)
        let header = try NumPyArrayHeader(
            parsing: try file.read(at: 0, count: min(file.size, NumPyArrayHeader.maximumHeaderLength)))
        try header.checkDataSize(fileSize: file.size)
        let storage = TensorStorage(byteCount: header.elementCount * header.dataType.byteCount)
        try header.readElements(from: file, first: 0, count: header.elementCount, into: storage.rawAddress)
        try self.init(
            shape: Self.logicalShape(ofPhysical: header.shape, layout: fileLayout), layout: fileLayout,
            dataType: header.dataType, sharing: storage)
    }

    /// The bytes of a `.npy` file (version 1.0, C order, little-endian, `'<f4'` or `'<f2'` after the tensor's
    /// `dataType`) holding the tensor in `fileLayout` order: shape `(N, C, S...)` for
    /// `TensorLayout/channelsFirst`, `(N, S..., C)` for `TensorLayout/channelsLast`
    /// (see ``init(npyBytes:fileLayout:)``). The tensor is permuted only when its layout
    /// differs from `fileLayout`.
    /// - Throws: ``NumPyArrayError/noNumPyDataType(_:)`` for a `TensorDataType/bfloat16`
    ///   tensor (NumPy has no bfloat16 dtype).
    public func npyBytes(fileLayout: TensorLayout = .channelsFirst) throws -> [UInt8] {
        let header = try NumPyArrayHeader(
            shape: Self.physicalShape(ofLogical: shape, layout: fileLayout), dataType: dataType)
        let source = layout == fileLayout || rank <= 2 ? self : converted(to: fileLayout)
        var result = header.encoded()
        result.append(
            contentsOf: UnsafeRawBufferPointer(start: source.storage.rawAddress, count: source.storage.byteCount))
        return result
    }

    /// Writes ``npyBytes(fileLayout:)`` to `path` atomically.
    /// - Throws: ``FileIOError``, ``NumPyArrayError/noNumPyDataType(_:)``.
    public func writeNPY(toFile path: String, fileLayout: TensorLayout = .channelsFirst) throws {
        try AtomicFileWriter.write(try npyBytes(fileLayout: fileLayout), to: path)
    }
}
