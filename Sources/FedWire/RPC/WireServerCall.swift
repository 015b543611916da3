/// A call the peer opened, as its handler sees it: read request messages, send response
/// messages; the handler's return (or thrown ``RPCError``) becomes the call's status.
public final class WireServerCall<Codec: WireCodec>: @unchecked Sendable {
    // @unchecked: used by the one handler thread; `finished` is only touched there.
    public let id: UInt64
    /// "/fedcoord.v1.Coordinator/Join".
    public let method: String
    public let metadata: [String: String]
    /// The caller's deadline (``Deadline/distantFuture`` if it set none).
    public let deadline: Deadline
    public let connection: WireConnection<Codec>
    private let inbox: CallInbox<Codec.Body>
    private var finished = false
    private var sawEnd = false
    /// Tensor streams begun in what this call has received (see ``ChunkLanding``).
    public private(set) var tensorHeadersReceived = 0

    init(id: UInt64, method: String, metadata: [String: String], deadline: Deadline, connection: WireConnection<Codec>, inbox: CallInbox<Codec.Body>) {
        self.id = id
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self.connection = connection
        self.inbox = inbox
    }

    /// The verified identity of the caller.
    public var peer: PeerIdentity { connection.peer }

    /// The next request message, or nil once the caller has sent its last.
    ///
    /// - Throws: CANCELLED if the caller cancelled, DEADLINE_EXCEEDED at the caller's deadline,
    ///   UNAVAILABLE if the connection failed.
    public func receive() throws -> Codec.Body? {
        if sawEnd { return nil }
        guard let item = inbox.pop(until: deadline) else {
            throw RPCError(.deadlineExceeded, "\(method): the caller's deadline passed while waiting for its next message")
        }
        switch item {
        case .message(let message):
            if Codec.startsBulkStream(message) { tensorHeadersReceived += 1 }
            return message
        case .endOfStream:
            sawEnd = true
            return nil
        case .cancelled: throw RPCError(.cancelled, "\(method) was cancelled by the caller")
        case .failure(let error): throw RPCError(.unavailable, error.message)
        case .status: return try receive()
        }
    }

    /// The single request of a unary or server-streaming call.
    public func receiveOnly() throws -> Codec.Body {
        guard let message = try receive() else {
            throw RPCError(.invalidArgument, "\(method) needs a request message; none was sent")
        }
        return message
    }

    /// Sends one response message.
    public func send(_ message: Codec.Body) throws {
        try connection.send(WireEnvelope(callID: id, body: message))
    }

    /// Ends the call with `status` (the connection does this when the handler returns).
    func finish(status: RPCStatus) {
        if finished { return }
        finished = true
        connection.removeCall(id)
        try? connection.send(WireEnvelope<Codec.Body>(callID: id, status: status))
    }
}
