extension Tensor: CustomStringConvertible {
    /// A NumPy-style printout: a header with shape, layout and (unless `float32`) data type,
    /// then the values (half types widened exactly to `Float`) in nested brackets in
    /// logical order. Tensors of more than 1000 elements show the first and last three
    /// entries of each long axis with `...` between them, like `numpy.array2string`.
    public var description: String {
        let values = scalars
        let summarize = values.count > 1000
        let strides = shape.indices.map { axis in shape[(axis + 1)...].reduce(1, *) }
        let type = dataType == .float32 ? "" : ", dataType: \(dataType)"
        var text = "Tensor(shape: \(shape), layout: \(layout)\(type))\n"

        func render(axis: Int, offset: Int, indent: String) -> String {
            if axis == shape.count { return "\(values[offset])" }
            let extent = shape[axis]
            var shown = Array(0..<extent)
            if summarize && extent > 6 { shown = [0, 1, 2, -1, extent - 3, extent - 2, extent - 1] }
            let separator =
                axis == shape.count - 1
                ? ", " : "," + String(repeating: "\n", count: shape.count - axis - 1) + indent + " "
            let parts = shown.map { index in
                index < 0 ? "..." : render(axis: axis + 1, offset: offset + index * strides[axis], indent: indent + " ")
            }
            return "[" + parts.joined(separator: separator) + "]"
        }

        text += shape.isEmpty ? "\(values.first ?? 0)" : render(axis: 0, offset: 0, indent: "")
        return text
    }
}
