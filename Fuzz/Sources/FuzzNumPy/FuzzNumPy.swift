import BatchNormKit

/// libFuzzer entry point: any bytes given to the `.npy` reader must either throw a
/// `NumPyArrayError` or give a tensor that writes back to a file the reader reads again to
/// the same shape, type and values (after `float64` and big-endian conversions). A trap,
/// an overflow, an out-of-bounds access (AddressSanitizer) or another error type is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNumPy(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    for layout in TensorLayout.allCases {
        let tensor: Tensor
        do {
            tensor = try Tensor(npyBytes: bytes, fileLayout: layout)
        } catch is NumPyArrayError {
            continue
        } catch {
            fatalError("unexpected error type \(type(of: error)): \(error)")
        }
        let again = try! Tensor(npyBytes: tensor.npyBytes(fileLayout: layout), fileLayout: layout)
        precondition(again.shape == tensor.shape && again.dataType == tensor.dataType)
        precondition(
            zip(again.scalars, tensor.scalars).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) })
    }
    return 0
}
