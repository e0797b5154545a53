import BatchNormKit

/// libFuzzer entry point: any bytes given to the safetensors parser must either throw a
/// `SafeTensorsError` or give a file whose serialization parses back to the same file.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let file: SafeTensorsFile
    do {
        file = try SafeTensorsFile(parsing: bytes)
    } catch is SafeTensorsError {
        return 0
    } catch {
        fatalError("unexpected error type \(type(of: error)): \(error)")
    }
    let again = try! SafeTensorsFile(parsing: file.serialized())
    precondition(again == file, "serialization does not round-trip")
    for entry in file.tensors.values {
        _ = entry.floatValues()
        _ = entry.integerValues()
    }
    return 0
}
