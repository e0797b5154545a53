import BatchNormTestSupport
import CBatchNormKernels
import CBenchmarkKernels
import Testing

@testable import BatchNormCore

#if canImport(Glibc)
    import Glibc
#endif

/// The bandwidth loops of the bench roofline (`bnk_bandwidth_read`, `bnk_bandwidth_read_write`)
/// on every kernel level this CPU supports, with stores streaming and not: unaligned starts
/// (4-byte steps and odd byte offsets), counts around the 16-float vector and 64-float block,
/// and byte counts that are not whole floats (the remainder stays untouched).
@Suite struct BandwidthLoopTests {
    static let levels = KernelLevel.allCases.filter(\.isSupported)

    /// Floats per case: empty, one, around a vector (16) and a block (64), and longer odd counts.
    static let counts = [0, 1, 3, 15, 16, 17, 63, 64, 65, 100, 127, 128, 129, 1000, 4099]

    /// Byte offsets of x and y from a 64-byte boundary (pairs, so that x and y differ).
    static let offsets: [(x: Int, y: Int)] = [(0, 0), (4, 0), (0, 4), (12, 52), (60, 8), (1, 3), (2, 62), (33, 17)]

    /// Multiples of 1/4 in [-1, 1]: every partial sum is exact in float and in double, so the
    /// loop's sum must equal the `Double` sum exactly whatever its order.
    static func values(_ count: Int) -> [Float] {
        (0..<count).map { Float(($0 * 5) % 9 - 4) * 0.25 }
    }

    @Test(arguments: counts)
    func readSumsEveryWholeFloat(count: Int) {
        let capacity = count * 4 + 128
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buffer.deallocate() }
        let x = Self.values(count)
        let expected = x.reduce(0.0) { $0 + Double($1) }
        for level in Self.levels {
            for offset in Self.offsets.map(\.x) {
                // A nonzero remainder past the last whole float: it must not be summed.
                memset(buffer, 0x7F, capacity)
                _ = x.withUnsafeBytes { memcpy(buffer + offset, $0.baseAddress!, $0.count) }
                for remainder in 0..<4 {
                    let sum = bnk_bandwidth_read(level.cValue, buffer + offset, count * 4 + remainder)
                    #expect(sum == expected, "\(level), offset \(offset), \(count) floats + \(remainder) bytes")
                }
            }
        }
    }

    @Test(arguments: counts)
    func readWriteStoresTwiceXPlusOne(count: Int) {
        let capacity = count * 4 + 128
        let source = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        let x = Self.values(count)
        let expected = x.map { 2 * $0 + 1 }
        for level in Self.levels {
            for streaming: Int32 in [0, 1] {
                for (xOffset, yOffset) in Self.offsets {
                    let remainder = (xOffset + yOffset) % 4
                    let label =
                        "\(level), streaming \(streaming), offsets \(xOffset)/\(yOffset), \(count) floats + \(remainder) bytes"
                    _ = x.withUnsafeBytes { memcpy(source + xOffset, $0.baseAddress!, $0.count) }
                    memset(destination, 0x5A, capacity) // a sentinel before and after y
                    bnk_bandwidth_read_write(
                        level.cValue, source + xOffset, destination + yOffset, count * 4 + remainder,
                        streaming)
                    var y = [Float](repeating: 0, count: count)
                    _ = y.withUnsafeMutableBytes { memcpy($0.baseAddress!, destination + yOffset, $0.count) }
                    #expect(y == expected, "\(label)")
                    let bytes = UnsafeRawBufferPointer(start: destination, count: capacity)
                    let outside = Array(bytes[..<yOffset]) + Array(bytes[(yOffset + count * 4)...])
                    #expect(outside.allSatisfy { $0 == 0x5A }, "\(label): wrote outside y's whole floats")
                }
            }
        }
    }

    /// The tests above run every supported level; on a CPU without AVX-512 its instance is
    /// compiled only, and this says so.
    @Test(
        .enabled(
            if: KernelLevel.avx512.isSupported,
            "SKIPPED: this CPU has no AVX-512: the AVX-512 bandwidth loops are compiled only"))
    func avx512LoopsAreChecked() {
        #expect(Self.levels.contains(.avx512))
        for count in [17, 129, 4099] {
            readSumsEveryWholeFloat(count: count)
            readWriteStoresTwiceXPlusOne(count: count)
        }
    }
}
