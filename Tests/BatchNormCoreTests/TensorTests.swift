import BatchNormCore
import BatchNormTestSupport
import Testing

@Suite("Tensor")
struct TensorTests {
    // MARK: Constructors

    @Test(arguments: TensorLayout.allCases)
    func zerosOnesAndFull(layout: TensorLayout) throws {
        let zeros = try Tensor(zeros: [2, 3, 4], layout: layout)
        #expect(zeros.shape == [2, 3, 4] && zeros.rank == 3 && zeros.elementCount == 24)
        #expect(zeros.layout == layout && zeros.dataType == .float32 && zeros.storage.byteCount == 96)
        #expect(zeros.scalars == Array(repeating: 0, count: 24))
        #expect(try Tensor.zeros(shape: [5, 2], layout: layout).scalars == Array(repeating: 0, count: 10))
        #expect(try Tensor.ones(shape: [2, 2, 1, 3], layout: layout).scalars == Array(repeating: 1, count: 12))
        let full = try Tensor.full(-2.5, shape: [3, 1, 2], layout: layout)
        #expect(full.scalars == Array(repeating: -2.5, count: 6) && full.layout == layout)
        let half = try Tensor(zeros: [4, 2], dataType: .float16)
        #expect(half.dataType == .float16 && half.storage.byteCount == 16 && half.elementCount == 8)
    }

    @Test func emptyAndScalarShapes() throws {
        let empty = try Tensor(zeros: [0, 3, 4], layout: .channelsLast)
        #expect(empty.elementCount == 0 && empty.scalars.isEmpty && empty.shape == [0, 3, 4])
        let scalar = try Tensor([7], shape: [])
        #expect(try scalar.rank == 0 && scalar.elementCount == 1 && scalar.value(at: []) == 7)
    }

    /// The same logical values in both layouts; only the storage order differs.
    @Test func valuesAndShapeInBothLayouts() throws {
        let values: [Float] = (0..<12).map(Float.init)
        let first = try Tensor(values, shape: [2, 3, 2], layout: .channelsFirst)
        let last = try Tensor(values, shape: [2, 3, 2], layout: .channelsLast)
        #expect(first.scalars == values && last.scalars == values)
        #expect(Array(UnsafeBufferPointer(start: first.storage.floats, count: 12)) == values)
        // (n, s, c) order: n = 0 holds c0s0 c1s0 c2s0 c0s1 c1s1 c2s1 = 0 2 4 1 3 5.
        #expect(
            Array(UnsafeBufferPointer(start: last.storage.floats, count: 12)) == [0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11])
        for n in 0..<2 {
            for c in 0..<3 {
                for s in 0..<2 {
                    #expect(first[n, c, s] == last[n, c, s] && first[n, c, s] == Float(n * 6 + c * 2 + s))
                }
            }
        }
        // Rank 2: both layouts store the same bytes.
        let nc = try Tensor(values, shape: [4, 3], layout: .channelsLast)
        #expect(Array(UnsafeBufferPointer(start: nc.storage.floats, count: 12)) == values)
    }

    @Test(arguments: TensorLayout.allCases)
    func arangeMatchesNumPy(layout: TensorLayout) throws {
        let x = try Tensor.arange(shape: [5, 3, 10, 10, 10], layout: layout)
        #expect(x.scalars == (0..<15000).map(Float.init))
        #expect(x[0, 1, 0, 0, 0] == 1000 && x[4, 2, 9, 9, 9] == 14999 && x[1, 0, 2, 3, 4] == 3234)
        #expect(try Tensor.arange(shape: [0], layout: layout).scalars.isEmpty)
    }

    @Test func seededNormalIsReproducible() throws {
        var a = SeededGenerator(seed: 99), b = SeededGenerator(seed: 99), c = SeededGenerator(seed: 100)
        let x = try Tensor.normal(shape: [4, 3, 50], mean: 5, standardDeviation: 2, using: &a)
        let y = try Tensor.normal(shape: [4, 3, 50], mean: 5, standardDeviation: 2, layout: .channelsLast, using: &b)
        let z = try Tensor.normal(shape: [4, 3, 50], mean: 5, standardDeviation: 2, using: &c)
        #expect(bits(x.scalars) == bits(y.scalars), "same seed, same logical values in either layout")
        #expect(x.scalars != z.scalars, "another seed gives other values")
        #expect(y.layout == .channelsLast)
        // 600 samples of N(5, 2): sample mean within 5 standard errors, spread within 15%.
        let values = x.scalars.map(Double.init)
        let mean = values.reduce(0, +) / 600
        let deviation = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 599).squareRoot()
        #expect(abs(mean - 5) < 5 * 2 / 600.0.squareRoot(), "mean \(mean)")
        #expect(abs(deviation - 2) < 0.3, "standard deviation \(deviation)")
        let constant = try Tensor.normal(shape: [3, 2], mean: 1.5, standardDeviation: 0, using: &a)
        #expect(constant.scalars == Array(repeating: 1.5, count: 6))
        // The generator itself: a fixed seed gives a fixed sequence.
        var g1 = SeededGenerator(seed: 7), g2 = SeededGenerator(seed: 7)
        #expect((0..<10).map { _ in g1.next() } == (0..<10).map { _ in g2.next() })
    }

    // MARK: Element access and reference semantics

    @Test(arguments: TensorLayout.allCases)
    func elementAccess(layout: TensorLayout) throws {
        let x = try Tensor.arange(shape: [2, 3, 2, 2], layout: layout)
        #expect(try x.value(at: [1, 2, 1, 0]) == 22 && x[1, 2, 1, 0] == 22)
        x[0, 1, 1, 1] = -4
        #expect(try x.value(at: [0, 1, 1, 1]) == -4)
        try x.setValue(9.5, at: [1, 0, 0, 1])
        #expect(x[1, 0, 0, 1] == 9.5)
        var expected = (0..<24).map(Float.init)
        expected[7] = -4
        expected[13] = 9.5
        #expect(x.scalars == expected)
    }

    @Test(arguments: TensorLayout.allCases)
    func copiesOfTheStructShareStorage(layout: TensorLayout) throws {
        let x = try Tensor.arange(shape: [2, 3, 4], layout: layout)
        let alias = x
        alias[1, 2, 3] = 42
        #expect(x[1, 2, 3] == 42 && x.sharesStorage(with: alias))
        let wrapped = try Tensor(shape: [2, 3, 4], layout: layout, sharing: x.storage)
        wrapped[0, 0, 0] = -1
        #expect(x[0, 0, 0] == -1 && wrapped.sharesStorage(with: x))

        let copy = x.copy()
        #expect(!copy.sharesStorage(with: x))
        #expect(copy.shape == x.shape && copy.layout == layout && copy.dataType == x.dataType)
        #expect(bits(copy.scalars) == bits(x.scalars))
        copy[0, 1, 2] = 1000
        #expect(x[0, 1, 2] == 6, "writing the copy leaves the original alone")
        x[0, 1, 3] = 2000
        #expect(copy[0, 1, 3] == 7, "writing the original leaves the copy alone")
    }

    @Test func convertedToOtherLayoutsAndTypes() throws {
        var generator = SeededGenerator(seed: 3)
        let x = try Tensor.normal(shape: [2, 3, 4, 5], using: &generator)
        let last = x.converted(to: .channelsLast)
        #expect(last.layout == .channelsLast && last.shape == x.shape && !last.sharesStorage(with: x))
        #expect(bits(last.scalars) == bits(x.scalars))
        #expect(last.storage.floats[1] == x[0, 1, 0, 0], "channels-last storage holds channel 1 second")
        let back = last.converted(to: .channelsFirst)
        #expect(
            bits(Array(UnsafeBufferPointer(start: back.storage.floats, count: 120)))
                == bits(Array(UnsafeBufferPointer(start: x.storage.floats, count: 120))))
        let same = x.converted(to: .channelsFirst)
        #expect(!same.sharesStorage(with: x) && bits(same.scalars) == bits(x.scalars))

        let values: [Float] = [0.1, 1, -2.5, 65504, 70000, 1e-8]
        let wide = try Tensor(values, shape: [2, 3], layout: .channelsLast)
        let half = wide.converted(to: .channelsFirst, dataType: .float16)
        #expect(half.dataType == .float16 && half.storage.byteCount == 12 && half.elementCount == 6)
        #expect(half.scalars == values.map { Float(Float16($0)) })
        #expect(half.scalars[0] != 0.1 && half.scalars[1] == 1 && half.scalars[4] == .infinity)
        let widened = half.converted(to: .channelsLast, dataType: .float32)
        #expect(widened.dataType == .float32 && widened.scalars == half.scalars)
        let direct = try Tensor(values, shape: [2, 3], dataType: .float16)
        #expect(direct.scalars == half.scalars)
        direct[1, 0] = 3.14159
        #expect(direct[1, 0] == Float(Float16(3.14159)))
    }

    // MARK: Printout

    @Test func descriptionOfSmallTensors() throws {
        let x = try Tensor.arange(shape: [2, 3])
        #expect(x.description == "Tensor(shape: [2, 3], layout: ncdhw)\n[[0.0, 1.0, 2.0],\n [3.0, 4.0, 5.0]]")
        let y = try Tensor.arange(shape: [2, 2, 2], layout: .channelsLast)
        #expect(
            y.description == """
                Tensor(shape: [2, 2, 2], layout: ndhwc)
                [[[0.0, 1.0],
                  [2.0, 3.0]],

                 [[4.0, 5.0],
                  [6.0, 7.0]]]
                """)
        #expect(try Tensor([-1.5], shape: [1]).description == "Tensor(shape: [1], layout: ncdhw)\n[-1.5]")
    }

    @Test func descriptionOfLargeTensorsIsSummarized() throws {
        let x = try Tensor.arange(shape: [2, 1000])
        let text = x.description
        #expect(text.hasPrefix("Tensor(shape: [2, 1000], layout: ncdhw)\n"))
        #expect(text.contains("[0.0, 1.0, 2.0, ..., 997.0, 998.0, 999.0]"))
        #expect(text.contains("[1000.0, 1001.0, 1002.0, ..., 1997.0, 1998.0, 1999.0]"))
        #expect(!text.contains("500.0"))
    }

    // MARK: Errors

    @Test func elementCountMismatch() throws {
        let error = TensorError.elementCountMismatch(expected: 6, actual: 5)
        #expect(throws: error) { _ = try Tensor([1, 2, 3, 4, 5], shape: [2, 3]) }
        #expect(error.description.contains("6") && error.description.contains("5"))
        #expect(throws: TensorError.elementCountMismatch(expected: 6, actual: 7)) {
            _ = try Tensor([1, 2, 3, 4, 5, 6, 7], shape: [2, 3], layout: .channelsLast)
        }
        let storage = TensorStorage(byteCount: 20)
        #expect(throws: TensorError.elementCountMismatch(expected: 6, actual: 5)) {
            _ = try Tensor(shape: [2, 3], layout: .channelsFirst, sharing: storage)
        }
        #expect(throws: TensorError.elementCountMismatch(expected: 6, actual: 10)) {
            _ = try Tensor(shape: [2, 3], layout: .channelsFirst, dataType: .float16, sharing: storage)
        }
    }

    @Test func negativeDimension() throws {
        let error = TensorError.invalidShape(shape: [2, -1, 3])
        #expect(throws: error) { _ = try Tensor(zeros: [2, -1, 3]) }
        #expect(throws: error) { _ = try Tensor.full(1, shape: [2, -1, 3]) }
        #expect(throws: error) { _ = try Tensor.ones(shape: [2, -1, 3], layout: .channelsLast) }
        #expect(throws: error) { _ = try Tensor.arange(shape: [2, -1, 3]) }
        #expect(throws: error) { _ = try Tensor([], shape: [2, -1, 3]) }
        var generator = SeededGenerator(seed: 1)
        #expect(throws: error) { _ = try Tensor.normal(shape: [2, -1, 3], using: &generator) }
        #expect(error.description.contains("[2, -1, 3]") && error.description.contains(">= 0"))
        #expect(throws: TensorError.invalidShape(shape: [Int.max, 3])) { _ = try Tensor(zeros: [Int.max, 3]) }
    }

    @Test(arguments: TensorLayout.allCases)
    func indexOutOfRange(layout: TensorLayout) throws {
        let x = try Tensor.arange(shape: [2, 3], layout: layout)
        for index in [[2, 0], [0, 3], [-1, 0], [0, -1]] {
            let error = TensorError.indexOutOfRange(index: index, shape: [2, 3])
            #expect(throws: error) { _ = try x.value(at: index) }
            #expect(throws: error) { try x.setValue(1, at: index) }
            #expect(error.description.contains("\(index)") && error.description.contains("[2, 3]"))
        }
        let rankError = TensorError.indexRankMismatch(expected: 2, actual: 3)
        #expect(throws: rankError) { _ = try x.value(at: [0, 0, 0]) }
        #expect(throws: TensorError.indexRankMismatch(expected: 2, actual: 1)) { try x.setValue(1, at: [0]) }
        #expect(rankError.description.contains("2") && rankError.description.contains("3"))
        #expect(x.scalars == (0..<6).map(Float.init), "failed writes change nothing")
    }

    // MARK: Layout names and geometry

    @Test func layoutNames() {
        #expect(TensorLayout.channelsFirst.description == "ncdhw" && TensorLayout.channelsLast.description == "ndhwc")
        for name in ["ncdhw", "NCHW", "ncl", "nc", "channelsFirst", "channels_first"] {
            #expect(TensorLayout(name: name) == .channelsFirst, "\(name)")
        }
        for name in ["ndhwc", "NHWC", "nlc", "channelsLast", "channels_last", "channels_last_3d"] {
            #expect(TensorLayout(name: name) == .channelsLast, "\(name)")
        }
        #expect(TensorLayout(name: "nchwd") == nil && TensorLayout(name: "") == nil)
        #expect(TensorDataType.float32.byteCount == 4 && TensorDataType.float16.byteCount == 2)
        #expect(TensorDataType.float16.description == "float16")
    }

    @Test func channelGeometryOffsets() {
        let geometry = ChannelGeometry(shape: [2, 3, 4, 5])
        #expect(geometry.batch == 2 && geometry.channels == 3 && geometry.spatial == 20)
        #expect(geometry.valuesPerChannel == 40 && geometry.elementCount == 120)
        #expect(geometry.offset(n: 1, c: 2, s: 7, layout: .channelsFirst) == (1 * 3 + 2) * 20 + 7)
        #expect(geometry.offset(n: 1, c: 2, s: 7, layout: .channelsLast) == (1 * 20 + 7) * 3 + 2)
        for logical in [0, 1, 19, 20, 59, 60, 119] {
            let (n, c, s) = (logical / 60, (logical / 20) % 3, logical % 20)
            #expect(
                geometry.storageOffset(ofLogical: logical, layout: .channelsLast)
                    == geometry.offset(n: n, c: c, s: s, layout: .channelsLast))
            #expect(geometry.storageOffset(ofLogical: logical, layout: .channelsFirst) == logical)
        }
        let plain = ChannelGeometry(shape: [7, 4])
        #expect(plain.spatial == 1 && plain.valuesPerChannel == 7)
    }
}
