/// The compute seam every backend implements (<doc:ComputeSeam>).
///
/// Training forward is *collect → merge* (``collectStatistics(of:)``), *finalize*
/// (in ``BatchNormND``, shared by all backends) and *apply* (``normalize(_:into:coefficients:)``).
/// Backward is *reduce* (``reduceGradient(_:input:mean:)``) and *apply*
/// (``applyGradient(_:input:into:coefficients:)``). Tensors handed to a backend have already
/// been validated (rank, channels, matching shapes and layouts, a data type in
/// ``supportedDataTypes``).
///
/// A backend computes on one kind of storage, its ``Operand``: ``Tensor`` (host memory) for
/// ``CPUBackend`` and for a GPU backend that copies host tensors to its device, a device
/// tensor for a GPU's own backend. The module's orchestration is the same for every operand.
public protocol BatchNormBackend<Operand>: Sendable {
    /// The tensors this backend computes on (``Tensor`` unless it says otherwise).
    associatedtype Operand: BatchNormOperand = Tensor

    /// A short name for printouts, such as `"cpu (2 threads)"`.
    var name: String { get }

    /// Whether ``normalize(_:into:coefficients:)``,
    /// ``applyGradient(_:input:into:coefficients:)`` and
    /// ``reduceGradientAndApply(_:input:mean:into:coefficients:)`` never throw for validated
    /// tensors. A
    /// module then drops its previous output just before allocating the next one, so that
    /// the buffer is recycled (a throw after that would leave the module changed, hence the
    /// promise). Default `false`.
    var applyNeverFails: Bool { get }

    /// The data types this backend computes on, in the order error messages list them: the one
    /// statement of what it supports, used by the module's validation and by the docs. A
    /// backend is never handed another type.
    var supportedDataTypes: [TensorDataType] { get }

    /// Per-channel moments of `input`, accumulated in `Double` (or an equally accurate
    /// scheme) and bitwise reproducible whatever the degree of parallelism.
    func collectStatistics(of input: Operand) throws -> [ChannelMoments]

    /// Writes `output = b·(input − shift) + offset` per channel. `output` may share
    /// `input`'s storage (in-place evaluation).
    func normalize(_ input: Operand, into output: Operand, coefficients: ChannelCoefficients) throws

    /// Per-channel `Σg` and `Σg·(x − mean)` in `Double`, bitwise reproducible.
    func reduceGradient(_ gradient: Operand, input: Operand, mean: [Double]) throws -> [GradientSums]

    /// Writes `output = a·gradient + b·(input − shift) + offset` per channel; `input` is
    /// not read when ``ChannelCoefficients/ignoresInput``.
    func applyGradient(
        _ gradient: Operand, input: Operand, into output: Operand,
        coefficients: ChannelCoefficients) throws

    /// Whether the training passes of a tensor are better run fused per channel
    /// (``collectStatisticsAndNormalize(_:into:coefficients:)`` and
    /// ``reduceGradientAndApply(_:input:mean:into:coefficients:)``) than as separate steps:
    /// typically when one channel's values stay in a core's cache between its reduction and
    /// its apply, so that they are read from memory once. Default `false`.
    ///
    /// - Parameters:
    ///   - shape: `(N, C, S...)`.
    ///   - layout: The tensor's layout.
    ///   - dataType: The tensor's data type.
    ///   - backward: The backward pass (which reads `g` and `x`) rather than the forward.
    func fusesChannels(shape: [Int], layout: TensorLayout, dataType: TensorDataType, backward: Bool) -> Bool

    /// Collect, finalize and apply of a training forward, channel by channel: computes each
    /// channel's moments (the same values as ``collectStatistics(of:)``), asks
    /// `coefficients` for that channel's apply coefficients and writes its part of
    /// `output = b·(input − shift) + offset`. `coefficients` may be called from several
    /// threads, once per channel; where it returns `nil` (the caller's finalize rejects the
    /// statistics) that channel of `output` is left unwritten.
    ///
    /// The default collects, then applies every channel in one ``normalize(_:into:coefficients:)``
    /// (nothing when any channel is rejected).
    /// - Parameters:
    ///   - input: `(N, C, S...)`, validated.
    ///   - output: Same shape, layout and type as `input`, not sharing its storage.
    ///   - coefficients: Channel `c`'s apply coefficients from its moments, or `nil`.
    /// - Returns: The `C` moments.
    /// - Throws: What ``collectStatistics(of:)`` and ``normalize(_:into:coefficients:)`` throw.
    func collectStatisticsAndNormalize(
        _ input: Operand, into output: Operand,
        coefficients: @Sendable (_ channel: Int, ChannelMoments) -> ChannelCoefficients.Channel?
    ) throws
        -> [ChannelMoments]

    /// Reduce and apply of a training backward, channel by channel: computes each channel's
    /// sums (the same values as ``reduceGradient(_:input:mean:)``), asks `coefficients` for
    /// that channel's apply coefficients and writes its part of
    /// `output = a·gradient + b·(input − shift) + offset` (`input` is read).
    ///
    /// The default reduces, then applies every channel in one
    /// ``applyGradient(_:input:into:coefficients:)``.
    /// - Parameters:
    ///   - gradient: `g`, the shape, layout and type of `input`.
    ///   - input: `x`, the forward input.
    ///   - mean: `μ` per channel, of the forward pass.
    ///   - output: `dx`, the same shape, layout and type.
    ///   - coefficients: Channel `c`'s apply coefficients from its sums.
    /// - Returns: The `C` sums.
    /// - Throws: What ``reduceGradient(_:input:mean:)`` and
    ///   ``applyGradient(_:input:into:coefficients:)`` throw.
    func reduceGradientAndApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand,
        coefficients: @Sendable (_ channel: Int, GradientSums) -> ChannelCoefficients.Channel
    )
        throws -> [GradientSums]

    /// The numbers this backend's channel fusion is decided from, for a synchronized module:
    /// rank 0's are sent to every rank in the module's first exchange, and every rank sizes
    /// the channel groups of ``collectStatisticsAndNormalize(_:into:channelsPerGroup:coefficients:)``
    /// and ``reduceGradientAndApply(_:input:mean:into:channelsPerGroup:coefficients:)`` from
    /// them and the global batch. Default ``ChannelFusionLimits/never``.
    var channelFusionLimits: ChannelFusionLimits { get }

    /// Collect and apply of a synchronized training forward, in groups of channels:
    /// channels `0 ..< C` are taken in groups of `channelsPerGroup` (the last may be
    /// shorter); as soon as a group's moments are collected (the same values as
    /// ``collectStatistics(of:)``), `coefficients` is called **on the calling thread**, in
    /// group order, with the group's channel range and moments, and returns the group's
    /// apply coefficients (`nil` leaves a channel unwritten); the group is then applied,
    /// while still in cache where the backend fuses. A synchronized module exchanges the
    /// group's moments with the other ranks inside `coefficients`.
    ///
    /// The default collects every channel, calls `coefficients` for each group in order, then
    /// applies every channel in one ``normalize(_:into:coefficients:)`` (nothing when a channel
    /// is left unwritten): the same sequence of calls, unfused.
    /// - Parameters:
    ///   - input: `(N, C, S...)`, validated; `N` may be 0.
    ///   - output: Same shape, layout and type as `input`, not sharing its storage.
    ///   - channelsPerGroup: Channels per group, 1 ... `C`.
    ///   - coefficients: A group's coefficients (one per channel of the range) from its
    ///     moments; what it throws stops the pass (no later group is collected or asked for).
    /// - Returns: The `C` moments.
    /// - Throws: What `coefficients`, ``collectStatistics(of:)`` and
    ///   ``normalize(_:into:coefficients:)`` throw.
    func collectStatisticsAndNormalize(
        _ input: Operand, into output: Operand, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ moments: [ChannelMoments]) throws -> [ChannelCoefficients.Channel?]
    ) throws -> [ChannelMoments]

    /// Reduce and apply of a synchronized training backward, in groups of channels, as
    /// ``collectStatisticsAndNormalize(_:into:channelsPerGroup:coefficients:)``: each group's
    /// sums (the same values as ``reduceGradient(_:input:mean:)``) go to `coefficients` on the
    /// calling thread, in group order, and the group is applied with what it returns.
    ///
    /// The default reduces every channel, calls `coefficients` for each group in order, then
    /// runs one ``applyGradient(_:input:into:coefficients:)``.
    /// - Parameters:
    ///   - gradient: `g`, the shape, layout and type of `input`.
    ///   - input: `x`, the forward input.
    ///   - mean: `μ` per channel, of the forward pass.
    ///   - output: `dx`, the same shape, layout and type.
    ///   - channelsPerGroup: Channels per group, 1 ... `C`.
    ///   - coefficients: A group's coefficients from its sums; what it throws stops the pass.
    /// - Returns: The `C` sums.
    /// - Throws: What `coefficients`, ``reduceGradient(_:input:mean:)`` and
    ///   ``applyGradient(_:input:into:coefficients:)`` throw.
    func reduceGradientAndApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ sums: [GradientSums]) throws -> [ChannelCoefficients.Channel]
    ) throws -> [GradientSums]
}

extension BatchNormBackend {
    /// Whether `dataType` is in ``supportedDataTypes``.
    public func supports(_ dataType: TensorDataType) -> Bool { supportedDataTypes.contains(dataType) }

    /// `false`: the apply steps may throw (they copy, allocate device memory or launch).
    public var applyNeverFails: Bool { false }

    /// `false`: the training passes run as separate steps.
    public func fusesChannels(shape: [Int], layout: TensorLayout, dataType: TensorDataType, backward: Bool) -> Bool {
        false
    }

    /// ``collectStatistics(of:)``, then one ``normalize(_:into:coefficients:)`` when every
    /// channel has coefficients.
    public func collectStatisticsAndNormalize(
        _ input: Operand, into output: Operand,
        coefficients: @Sendable (_ channel: Int, ChannelMoments) -> ChannelCoefficients.Channel?
    ) throws
        -> [ChannelMoments]
    {
        try collectThenNormalize(input, into: output, coefficients: coefficients)
    }

    /// ``reduceGradient(_:input:mean:)``, then one ``applyGradient(_:input:into:coefficients:)``.
    public func reduceGradientAndApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand,
        coefficients: @Sendable (_ channel: Int, GradientSums) -> ChannelCoefficients.Channel
    )
        throws -> [GradientSums]
    {
        try reduceThenApply(gradient, input: input, mean: mean, into: output, coefficients: coefficients)
    }

    /// ``ChannelFusionLimits/never``: the training passes run as separate steps.
    public var channelFusionLimits: ChannelFusionLimits { .never }

    /// ``collectStatistics(of:)``, `coefficients` per group, then one
    /// ``normalize(_:into:coefficients:)`` when every channel has coefficients.
    public func collectStatisticsAndNormalize(
        _ input: Operand, into output: Operand, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ moments: [ChannelMoments]) throws -> [ChannelCoefficients.Channel?]
    ) throws -> [ChannelMoments] {
        try collectThenNormalize(input, into: output, channelsPerGroup: channelsPerGroup, coefficients: coefficients)
    }

    /// ``reduceGradient(_:input:mean:)``, `coefficients` per group, then one
    /// ``applyGradient(_:input:into:coefficients:)``.
    public func reduceGradientAndApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand, channelsPerGroup: Int,
        coefficients: (_ channels: Range<Int>, _ sums: [GradientSums]) throws -> [ChannelCoefficients.Channel]
    ) throws -> [GradientSums] {
        try reduceThenApply(
            gradient, input: input, mean: mean, into: output, channelsPerGroup: channelsPerGroup,
            coefficients: coefficients)
    }

    /// The unfused form of ``collectStatisticsAndNormalize(_:into:channelsPerGroup:coefficients:)``
    /// (also what a backend that fuses some tensors runs for the others).
    func collectThenNormalize(
        _ input: Operand, into output: Operand, channelsPerGroup: Int,
        coefficients: (Range<Int>, [ChannelMoments]) throws -> [ChannelCoefficients.Channel?]
    ) throws -> [ChannelMoments] {
        let moments = try collectStatistics(of: input)
        var channels = [ChannelCoefficients.Channel?]()
        for group in ChannelGroups(channels: moments.count, perGroup: channelsPerGroup) {
            channels += try ChannelGroups.checked(try coefficients(group, Array(moments[group])), for: group)
        }
        let complete = channels.compactMap { $0 }
        if complete.count == moments.count {
            try normalize(input, into: output, coefficients: ChannelCoefficients(complete))
        }
        return moments
    }

    /// The unfused form of ``reduceGradientAndApply(_:input:mean:into:channelsPerGroup:coefficients:)``.
    func reduceThenApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand, channelsPerGroup: Int,
        coefficients: (Range<Int>, [GradientSums]) throws -> [ChannelCoefficients.Channel]
    ) throws -> [GradientSums] {
        let sums = try reduceGradient(gradient, input: input, mean: mean)
        var channels = [ChannelCoefficients.Channel]()
        for group in ChannelGroups(channels: sums.count, perGroup: channelsPerGroup) {
            channels += try ChannelGroups.checked(try coefficients(group, Array(sums[group])), for: group)
        }
        try applyGradient(gradient, input: input, into: output, coefficients: ChannelCoefficients(channels))
        return sums
    }

    /// The unfused form of ``collectStatisticsAndNormalize(_:into:coefficients:)`` (also what
    /// a backend that fuses some tensors runs for the others).
    func collectThenNormalize(
        _ input: Operand, into output: Operand,
        coefficients: (Int, ChannelMoments) -> ChannelCoefficients.Channel?
    ) throws
        -> [ChannelMoments]
    {
        let moments = try collectStatistics(of: input)
        var channels = [ChannelCoefficients.Channel]()
        for (c, moment) in moments.enumerated() {
            guard let channel = coefficients(c, moment) else { return moments }
            channels.append(channel)
        }
        try normalize(input, into: output, coefficients: ChannelCoefficients(channels))
        return moments
    }

    /// The unfused form of ``reduceGradientAndApply(_:input:mean:into:coefficients:)``.
    func reduceThenApply(
        _ gradient: Operand, input: Operand, mean: [Double], into output: Operand,
        coefficients: (Int, GradientSums) -> ChannelCoefficients.Channel
    ) throws -> [GradientSums] {
        let sums = try reduceGradient(gradient, input: input, mean: mean)
        let channels = sums.enumerated().map { coefficients($0.offset, $0.element) }
        try applyGradient(gradient, input: input, into: output, coefficients: ChannelCoefficients(channels))
        return sums
    }
}

/// The channel ranges `0 ..< C` in groups of `perGroup` (the last may be shorter), in order.
struct ChannelGroups: Sequence {
    let channels: Int
    let perGroup: Int

    init(channels: Int, perGroup: Int) {
        self.channels = channels
        self.perGroup = Swift.max(1, perGroup)
    }

    /// `coefficients` of a group's callback, checked to hold one value per channel of `group`.
    /// - Throws: ``BatchNormError/invalidArgument(name:expected:actual:)`` otherwise.
    static func checked<T>(_ coefficients: [T], for group: Range<Int>) throws -> [T] {
        guard coefficients.count == group.count else {
            throw BatchNormError.invalidArgument(
                name: "coefficients", expected: "one per channel of the group \(group) (\(group.count))",
                actual: "\(coefficients.count)")
        }
        return coefficients
    }

    /// Number of groups, `⌈C / perGroup⌉`.
    var count: Int { (channels + perGroup - 1) / perGroup }

    func makeIterator() -> some IteratorProtocol<Range<Int>> {
        let (perGroup, channels) = (perGroup, channels)
        return stride(from: 0, to: channels, by: perGroup).lazy.map { $0..<Swift.min($0 + perGroup, channels) }
            .makeIterator()
    }
}
