/// How a tensor's elements are ordered in memory.
///
/// Both layouts describe the same *logical* shape `(N, C, S...)`: indexing, shapes and
/// printouts are always in logical order; only the storage order differs.
///
/// - ``channelsFirst``: `N, C, S...` row-major (NCDHW for 5-D data): PuzzleLib's and
///   PyTorch's default contiguous layout.
/// - ``channelsLast``: `N, S..., C` row-major (NDHWC for 5-D data): PyTorch's
///   `channels_last_3d` memory format.
///
/// For tensors of rank 2 or less the two layouts store the same bytes.
public enum TensorLayout: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Channels after the batch axis, spatial axes last (NCDHW, NCHW, NCL, NC).
    case channelsFirst
    /// Channels innermost (NDHWC, NHWC, NLC, NC).
    case channelsLast

    /// The conventional 5-D name of the layout: `"ncdhw"` or `"ndhwc"`.
    public var description: String {
        switch self {
        case .channelsFirst: "ncdhw"
        case .channelsLast: "ndhwc"
        }
    }

    /// Parses `"ncdhw"`/`"nchw"`/`"channelsFirst"` or `"ndhwc"`/`"nhwc"`/`"channelsLast"`
    /// (case-insensitive); `nil` for anything else.
    public init?(name: String) {
        switch name.lowercased() {
        case "ncdhw", "nchw", "ncl", "nc", "channelsfirst", "channels_first": self = .channelsFirst
        case "ndhwc", "nhwc", "nlc", "channelslast", "channels_last", "channels_last_3d": self = .channelsLast
        default: return nil
        }
    }
}
