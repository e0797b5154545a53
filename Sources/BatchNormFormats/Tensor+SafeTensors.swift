import BatchNormCore

extension Tensor {
    /// The tensor of a safetensors entry of dtype `F32`, `F16` or `BF16`, with the entry's
    /// shape and element type (`TensorDataType/float32`, `TensorDataType/float16`,
    /// `TensorDataType/bfloat16`). The entry's bytes (C order, the logical order) are
    /// copied as they are, then stored in `layout`.
    ///
    /// - Throws: ``StateFileError`` with ``StateFileError/Problem/dataTypeMismatch(key:expected:actual:)``
    ///   (naming `key`) for any other dtype.
    public init(
        safeTensorsEntry entry: SafeTensorsFile.Entry, key: String = "",
        layout: TensorLayout = .channelsFirst
    ) throws {
        let dataType: TensorDataType
        switch entry.dataType {
        case .float32: dataType = .float32
        case .float16: dataType = .float16
        case .bfloat16: dataType = .bfloat16
        default:
            throw StateFileError(
                .dataTypeMismatch(
                    key: key, expected: "F32, F16 or BF16 data",
                    actual: entry.dataType.rawValue))
        }
        let storage = TensorStorage(byteCount: entry.bytes.count)
        entry.bytes.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { storage.rawAddress.copyMemory(from: base, byteCount: bytes.count) }
        }
        let tensor = try Tensor(shape: entry.shape, layout: .channelsFirst, dataType: dataType, sharing: storage)
        self = layout == .channelsFirst ? tensor : tensor.converted(to: layout)
    }
}

extension SafeTensorsFile.Entry {
    /// An entry holding `tensor`'s elements in logical (C) order, in its own type: `F32`,
    /// `F16` or `BF16`, as PyTorch saves `float32`, `float16` and `bfloat16` tensors.
    public init(tensor: Tensor) {
        let logical = tensor.layout == .channelsFirst ? tensor : tensor.converted(to: .channelsFirst)
        let dataType: SafeTensorsDataType =
            switch tensor.dataType {
            case .float32: .float32
            case .float16: .float16
            case .bfloat16: .bfloat16
            }
        self.init(
            unchecked: dataType, shape: tensor.shape,
            bytes: Array(UnsafeRawBufferPointer(start: logical.storage.rawAddress, count: logical.storage.byteCount)))
    }
}
