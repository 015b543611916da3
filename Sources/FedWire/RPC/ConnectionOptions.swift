/// Limits and timers of one multiplexed connection.
public struct ConnectionOptions: Sendable {
    /// The largest envelope accepted or sent (the frame's length field). Default 8 MiB.
    public var maxFrameBytes = 8 << 20
    /// Seconds a frame, once started, may take to arrive completely. Default 30.
    public var frameTimeout: Double = 30
    /// Seconds a write may go without progress (the peer taking no bytes off a full socket)
    /// before the connection is declared dead. A slow reader that keeps reading is not cut.
    public var writeStallTimeout: Double = 120
    /// Seconds between heartbeats this side sends once the connection is established; nil for none.
    public var heartbeatInterval: Double?
    /// Seconds of silence after which the peer is declared dead; nil to never declare it.
    /// The protocol's rule is three heartbeat intervals.
    public var livenessTimeout: Double?
    /// Messages queued per call before the reader waits for that call's consumer.
    public var inboxCapacity = 2
    /// Calls the peer may have open at once; one more is answered RESOURCE_EXHAUSTED at once.
    /// Each open call holds an inbox.
    public var maxPeerCalls = 64
    /// Threads that run the handlers of the peer's calls; calls beyond wait for one of them
    /// (without a thread of their own) in the order they came.
    public var maxCallThreads = 8

    public init() {}

    /// The defaults with `configure` applied.
    public static func defaults(configure: (inout ConnectionOptions) -> Void = { _ in }) -> ConnectionOptions {
        var options = ConnectionOptions()
        configure(&options)
        return options
    }
}
