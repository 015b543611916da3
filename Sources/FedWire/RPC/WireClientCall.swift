/// A call this side opened: send request messages, then read the response messages and the
/// status. Use from one thread at a time.
///
/// The call's deadline is sent to the peer and enforced here: a ``receive()`` that would wait
/// past it cancels the call on the peer and throws DEADLINE_EXCEEDED.
public final class WireClientCall<Codec: WireCodec> {
    public let id: UInt64
    public let method: String
    public let deadline: Deadline
    private let timeout: Double?
    private let metadata: [String: String]
    public let connection: WireConnection<Codec>
    private let inbox: CallInbox<Codec.Body>
    private var hasSentFirst = false
    private var hasEndedSending = false
    private var finalStatus: RPCStatus?
    /// Tensor streams begun in what this call has received (see ``ChunkLanding``).
    public private(set) var tensorHeadersReceived = 0

    init(id: UInt64, method: String, timeout: Double?, metadata: [String: String], connection: WireConnection<Codec>, inbox: CallInbox<Codec.Body>) {
        self.id = id
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.connection = connection
        self.inbox = inbox
        deadline = timeout.map { Deadline.after(seconds: $0) } ?? .distantFuture
    }

    deinit { connection.removeCall(id) }

    private func envelope(body: Codec.Body?, endOfStream: Bool) -> WireEnvelope<Codec.Body> {
        var envelope = WireEnvelope(callID: id, endOfStream: endOfStream, body: body)
        if !hasSentFirst {
            envelope.method = method
            envelope.metadata = metadata
            if let timeout { envelope.timeoutMs = UInt64(max(1, (timeout * 1000).rounded(.up))) }
            hasSentFirst = true
        }
        return envelope
    }

    /// Sends one request message; `endOfStream` marks it as the last.
    public func send(_ message: Codec.Body, endOfStream: Bool = false) throws {
        precondition(!hasEndedSending, "\(method): send after end of stream")
        if deadline.hasPassed { throw deadlineExceeded() }
        hasEndedSending = endOfStream
        try connection.send(envelope(body: message, endOfStream: endOfStream))
    }

    /// Says that no more request messages follow.
    public func finishSending() throws {
        if hasEndedSending { return }
        hasEndedSending = true
        try connection.send(envelope(body: nil, endOfStream: true))
    }

    /// The next response message, or nil once the call has ended with OK.
    ///
    /// - Throws: ``RPCError`` with the peer's status when it is not OK; DEADLINE_EXCEEDED at the
    ///   deadline; UNAVAILABLE when the connection fails.
    public func receive() throws -> Codec.Body? {
        if let finalStatus {
            if finalStatus.isOK { return nil }
            throw RPCError(status: finalStatus)
        }
        guard let item = inbox.pop(until: deadline) else {
            cancel()
            throw deadlineExceeded()
        }
        switch item {
        case .message(let message):
            if Codec.startsBulkStream(message) { tensorHeadersReceived += 1 }
            return message
        case .status(let status):
            finalStatus = status
            if status.isOK { return nil }
            throw RPCError(status: status)
        case .failure(let error):
            finalStatus = RPCStatus(.unavailable, error.message)
            throw RPCError(.unavailable, "the connection to \(connection.peer.commonName) failed during \(method): \(error.message)")
        case .endOfStream, .cancelled:
            return try receive()
        }
    }

    /// Reads the status after the last expected message; throws if more messages arrive or the
    /// status is not OK.
    public func expectEnd() throws {
        if let message = try receive() {
            throw RPCError(.internalError, "\(method) sent an unexpected \(Codec.name(of: message)) after its response")
        }
    }

    /// Tells the peer to stop working on this call. Further receives fail with CANCELLED.
    public func cancel() {
        if finalStatus == nil {
            finalStatus = RPCStatus(.cancelled, "\(method) was cancelled by this side")
            if hasSentFirst { try? connection.send(WireEnvelope<Codec.Body>(callID: id, cancel: true)) }
        }
    }

    /// Releases the call's slot on the connection (also done when the call is freed).
    public func finish() { connection.removeCall(id) }

    private func deadlineExceeded() -> RPCError {
        RPCError(.deadlineExceeded, "\(method) to \(connection.peer.commonName) did not finish within its deadline of \(timeout ?? 0) s")
    }
}
