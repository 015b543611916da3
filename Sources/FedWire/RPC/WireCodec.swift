/// How an application's messages ride in FedWire's frames. FedWire moves envelopes (call id,
/// method, deadline, metadata, status, one body) and never looks inside a body except through
/// this codec: to send and recognize heartbeats, and to let bulk data (tensor chunks) bypass
/// copies, landing straight in a consumer's memory.
///
/// Every requirement is a static function of the codec type: FedWire's connections are generic
/// over it, so a call costs no allocation or dynamic lookup beyond the protocol witness.
public protocol WireCodec {
    associatedtype Body: Sendable

    /// The method a dialler must call first (its answer is the first frame the listener sends).
    static var joinMethod: String { get }

    /// Encodes `envelope` as a frame (4-byte length, then the envelope) at the start of
    /// `buffer`, growing it if needed; returns the frame's length.
    ///
    /// - Throws: ``WireError/Code/frameTooLarge`` above `maxFrameBytes`.
    static func encodeFrame(_ envelope: WireEnvelope<Body>, into buffer: inout [UInt8], maxFrameBytes: Int) throws -> Int

    /// Encodes a frame carrying bulk data (``bulkData(of:)``) as segments to write back to back:
    /// the bytes before the data, the data itself (not copied), and any bytes after it.
    static func withFrameSegments<R>(
        _ envelope: WireEnvelope<Body>, maxFrameBytes: Int, _ body: ([UnsafeRawBufferPointer]) throws -> R
    ) throws -> R

    /// Decodes one frame's envelope (the bytes after the length prefix), copying what it keeps.
    ///
    /// - Throws: ``WireError/Code/malformedFrame`` for bytes that are not an envelope.
    static func decodeFrame(_ frame: UnsafeRawBufferPointer) throws -> WireEnvelope<Body>

    // MARK: Bulk data

    /// Where the data of a plain bulk-data frame starts, parsed from the first
    /// ``FrameReader/landingPrefixBytes`` bytes of a frame of `frameLength` bytes whose data runs
    /// to the frame's end; nil for every other frame (which then takes the decoder's path).
    static func bulkPrefix(_ head: UnsafeRawBufferPointer, frameLength: Int) -> BulkPrefix?
    /// The body of a bulk-data frame whose data is `data`, at `offset` in its stream.
    static func bulkBody(offset: UInt64, data: ByteView) -> Body
    /// The data of a bulk body, for a send that must not copy it; nil for other bodies.
    static func bulkData(of body: Body) -> ByteView?
    /// Whether `body` starts a bulk stream (a tensor header): landings are counted by these.
    static func startsBulkStream(_ body: Body) -> Bool

    // MARK: The connection's own messages

    /// A heartbeat (call 0) numbered `sequence`, with what the sender is doing.
    static func heartbeat(sequence: UInt64, sentUnixMs: UInt64, activity: String) -> Body
    static func isHeartbeat(_ body: Body) -> Bool
    /// The body's message name, for errors ("sent an unexpected TensorChunk").
    static func name(of body: Body) -> String
}

/// Where a bulk-data frame's data lies: the frame's call, the data's offset in its stream, and
/// the data's first byte (an index into the frame) and length.
public struct BulkPrefix: Sendable, Equatable {
    public var callID: UInt64
    public var offset: UInt64
    public var dataStart: Int
    public var dataLength: Int

    public init(callID: UInt64, offset: UInt64, dataStart: Int, dataLength: Int) {
        self.callID = callID
        self.offset = offset
        self.dataStart = dataStart
        self.dataLength = dataLength
    }
}

/// One frame's content: which call, the call's opening fields (first frame only), the end of the
/// sender's stream, a cancel, the call's status (last frame from the callee), and a body.
public struct WireEnvelope<Body: Sendable>: Sendable {
    public var callID: UInt64
    public var method: String?
    /// Relative deadline in milliseconds; 0 means none.
    public var timeoutMs: UInt64 = 0
    public var metadata: [String: String] = [:]
    public var endOfStream = false
    public var cancel = false
    public var status: RPCStatus?
    public var body: Body?

    public init(callID: UInt64, method: String? = nil, timeoutMs: UInt64 = 0, metadata: [String: String] = [:],
                endOfStream: Bool = false, cancel: Bool = false, status: RPCStatus? = nil, body: Body? = nil) {
        self.callID = callID
        self.method = method
        self.timeoutMs = timeoutMs
        self.metadata = metadata
        self.endOfStream = endOfStream
        self.cancel = cancel
        self.status = status
        self.body = body
    }
}
