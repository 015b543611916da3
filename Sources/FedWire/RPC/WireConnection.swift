import Foundation
import Logging

/// One authenticated connection carrying many calls in both directions, gRPC-style.
///
/// A reader thread decodes frames and routes them to calls; incoming calls run their handlers on
/// at most ``ConnectionOptions/maxCallThreads`` threads, the rest wait their turn without one;
/// any thread may open calls and send. The side that dialled opens odd call
/// ids, the side that accepted opens even ones, and call 0 is the connection itself (heartbeats,
/// and the status sent before closing for a protocol error).
///
/// Memory: one encode buffer (grows to the largest frame sent) and, per call, at most
/// ``ConnectionOptions/inboxCapacity`` decoded messages.
public final class WireConnection<Codec: WireCodec>: @unchecked Sendable {
    // @unchecked: mutable state is guarded by `stateLock` (calls, ids, closing) and `sendLock`
    // (the encode buffer); the TLS connection is itself thread-safe.

    /// Handles a call the peer opened. Return normally to end it with OK; throw ``RPCError`` to end
    /// it with that status (any other error ends it with INTERNAL).
    public typealias CallHandler = @Sendable (WireServerCall<Codec>) throws -> Void
    public typealias Envelope = WireEnvelope<Codec.Body>
    typealias Inbox = CallInbox<Codec.Body>

    public let tls: TLSConnection
    /// The verified peer (from its certificate).
    public let peer: PeerIdentity
    public let options: ConnectionOptions
    /// True on the side that dialled (the agent).
    public let isDialler: Bool
    let logger: Logger

    private let stateLock = SpinlessLock()
    private var nextCallID: UInt64
    private var calls: [UInt64: Inbox] = [:]
    /// Calls the peer opened that have not ended (bounded by ``ConnectionOptions/maxPeerCalls``).
    private var peerCallsOpen = 0
    /// Threads running this connection's handlers (at most ``ConnectionOptions/maxCallThreads``).
    private var handlerThreads = 0
    /// Calls the peer opened that wait for a handler thread, oldest first.
    private var waitingCalls: [WireServerCall<Codec>] = []
    /// Destinations tensor chunks of these calls are read straight into.
    private var landings: [UInt64: ChunkLanding] = [:]
    /// Tensor headers the reader has routed to each call with a landing (or that may get one).
    private var tensorHeadersRouted: [UInt64: Int] = [:]
    private var closed = false
    private var closeError: WireError?
    private var lastHeard = Deadline.now
    private var heartbeatSequence: UInt64 = 0
    private var receivedHeartbeats: UInt64 = 0
    private var onClose: [@Sendable (WireError?) -> Void] = []
    private var handler: CallHandler?

    private let sendLock = SpinlessLock()
    private var sendBuffer: [UInt8] = []

    /// Wraps a connection whose handshake has completed.
    public init(tls: TLSConnection, isDialler: Bool, options: ConnectionOptions, logger: Logger) {
        guard let peer = tls.peer else { preconditionFailure("WireConnection needs a completed TLS handshake") }
        self.tls = tls
        self.peer = peer
        self.isDialler = isDialler
        self.options = options
        self.logger = logger
        nextCallID = isDialler ? 1 : 2
    }

    // MARK: Lifecycle

    /// Starts the reader thread. Incoming calls go to `handler`.
    public func start(handler: @escaping CallHandler) {
        stateLock.withLock {
            self.handler = handler
            lastHeard = .now
        }
        WorkerThread.start(name: "fedwire-reader") { [self] in readLoop() }
    }

    /// Starts sending heartbeats every ``ConnectionOptions/heartbeatInterval`` seconds.
    public func startHeartbeats(activity: @escaping @Sendable () -> String = { "" }) {
        guard let interval = options.heartbeatInterval, interval > 0 else { return }
        WorkerThread.start(name: "fedwire-heartbeat", stackSize: 256 << 10) { [self] in
            while !isClosed {
                let next = Deadline.after(seconds: interval)
                while !isClosed && !next.hasPassed { usleep(20_000) }
                if isClosed { return }
                let sequence = stateLock.withLock { () -> UInt64 in
                    heartbeatSequence += 1
                    return heartbeatSequence
                }
                let beat = Codec.heartbeat(sequence: sequence, sentUnixMs: UInt64(Date().timeIntervalSince1970 * 1000), activity: activity())
                try? send(Envelope(callID: 0, body: beat))
            }
        }
    }

    /// Runs `body` once when the connection closes (immediately if it already has).
    public func whenClosed(_ body: @escaping @Sendable (WireError?) -> Void) {
        let (already, error): (Bool, WireError?) = stateLock.withLock {
            if closed { return (true, closeError) }
            onClose.append(body)
            return (false, nil)
        }
        if already { body(error) }
    }

    public var isClosed: Bool { stateLock.withLock { closed } }
    /// Why the connection closed (nil while open, or after a clean close).
    public var closeReason: WireError? { stateLock.withLock { closeError } }
    /// Heartbeats received from the peer so far.
    public var heartbeatsReceived: UInt64 { stateLock.withLock { receivedHeartbeats } }
    /// Seconds since the peer last sent anything.
    public var secondsSinceHeard: Double { -stateLock.withLock { lastHeard }.remainingSeconds }

    /// Closes the connection; every call still running fails with `error` (or "closed").
    public func close(error: WireError? = nil) {
        let taken: ([Inbox], [@Sendable (WireError?) -> Void])? = stateLock.withLock {
            if closed { return nil }
            closed = true
            closeError = error
            let inboxes = Array(calls.values)
            calls.removeAll()
            peerCallsOpen = 0
            waitingCalls.removeAll()
            landings.removeAll()
            tensorHeadersRouted.removeAll()
            // The handler usually captures this connection: released here, or the two keep each
            // other (and the socket's descriptor) alive after the close.
            handler = nil
            let callbacks = onClose
            onClose.removeAll()
            return (inboxes, callbacks)
        }
        guard let (inboxes, callbacks) = taken else { return }
        let failure = error ?? WireError(.connectionClosed, "the connection was closed")
        for inbox in inboxes { inbox.fail(.failure(failure)) }
        tls.close()
        for callback in callbacks { callback(error) }
    }

    /// Sends a status on call 0 (best effort), then closes politely so that the peer can read it.
    func closeWithStatus(_ status: RPCStatus, error: WireError) {
        try? send(Envelope(callID: 0, status: status))
        let inboxes: [Inbox] = stateLock.withLock {
            let list = Array(calls.values)
            return list
        }
        for inbox in inboxes { inbox.fail(.failure(error)) }
        tls.closeAfterDraining()
        close(error: error)
    }

    // MARK: Sending

    /// Encodes and writes one envelope; safe from any thread, frames never interleave.
    public func send(_ envelope: Envelope) throws {
        if isClosed { throw closeReason ?? WireError(.connectionClosed, "the connection is closed") }
        do {
            if let body = envelope.body, let data = Codec.bulkData(of: body), data.count >= 64 * 1024 {
                // Large chunks go out without being copied: prefix and envelope head, then the
                // chunk's own bytes, in one uninterrupted write.
                try Codec.withFrameSegments(envelope, maxFrameBytes: options.maxFrameBytes) { segments in
                    try tls.write(segments: segments, stallSeconds: options.writeStallTimeout)
                }
                return
            }
            try sendLock.withLock {
                let length = try Codec.encodeFrame(envelope, into: &sendBuffer, maxFrameBytes: options.maxFrameBytes)
                try sendBuffer.withUnsafeBytes { raw in
                    try tls.write(UnsafeRawBufferPointer(rebasing: raw[..<length]), stallSeconds: options.writeStallTimeout)
                }
                // Small frames reuse the buffer; a large one (rare outside chunks) does not pin memory.
                if sendBuffer.count > 256 * 1024 { sendBuffer = [] }
            }
        } catch let error as WireError where error.code == .frameTooLarge {
            throw error
        } catch let error as WireError {
            writeFailed(error)
            throw error
        }
    }

    /// After a failed write, stop writing but let the reader thread read what the peer said last
    /// (in TLS 1.3 a refused certificate's alert arrives after our first write has failed); the
    /// reader closes the connection with that reason, or a timer closes it a second later.
    private func writeFailed(_ error: WireError) {
        tls.socket.shutdownWrite()
        WorkerThread.start(name: "fedwire-close", stackSize: 256 << 10) { [self] in
            let deadline = Deadline.after(seconds: 1)
            while !isClosed && !deadline.hasPassed { usleep(10_000) }
            close(error: error)
        }
    }

    // MARK: Calls

    /// Opens a call to `method` on the peer. Nothing is sent until the first ``WireClientCall/send(_:endOfStream:)``.
    ///
    /// - Parameters:
    ///   - timeout: seconds until the call's deadline (sent to the peer); nil for none.
    public func makeCall(method: String, timeout: Double? = nil, metadata: [String: String] = [:]) throws -> WireClientCall<Codec> {
        let inbox = Inbox(capacity: options.inboxCapacity)
        let id: UInt64 = try stateLock.withLock {
            if closed { throw closeError ?? WireError(.connectionClosed, "the connection is closed") }
            let id = nextCallID
            nextCallID += 2
            calls[id] = inbox
            return id
        }
        return WireClientCall(id: id, method: method, timeout: timeout, metadata: metadata, connection: self, inbox: inbox)
    }

    /// A unary call: one request, one response.
    ///
    /// - Throws: ``RPCError`` with the peer's status, or DEADLINE_EXCEEDED / UNAVAILABLE.
    public func unary(_ method: String, _ request: Codec.Body, timeout: Double? = nil, metadata: [String: String] = [:]) throws -> Codec.Body {
        let call = try makeCall(method: method, timeout: timeout, metadata: metadata)
        defer { call.finish() }
        try call.send(request, endOfStream: true)
        guard let response = try call.receive() else {
            throw RPCError(.internalError, "\(method) ended without a response")
        }
        try call.expectEnd()
        return response
    }

    func removeCall(_ id: UInt64) {
        let inbox = stateLock.withLock {
            tensorHeadersRouted.removeValue(forKey: id)
            let removed = calls.removeValue(forKey: id)
            if removed != nil, isPeerCallID(id) { peerCallsOpen -= 1 }
            return removed
        }
        inbox?.close()
    }

    private func isPeerCallID(_ id: UInt64) -> Bool { isDialler ? id % 2 == 0 : id % 2 == 1 }

    // MARK: Landing chunks

    /// Lets the reader put the chunks of call `callID`'s tensor stream number `tensorIndex`
    /// (counted by headers, from 1) straight into `destination` (see ``ChunkLanding``). The
    /// memory must stay valid until ``endLanding(_:)`` returns.
    public func land(callID: UInt64, tensorIndex: Int, into destination: UnsafeMutableRawBufferPointer) -> ChunkLanding {
        let landing = ChunkLanding(callID: callID, tensorIndex: tensorIndex, destination: destination)
        stateLock.withLock { landings[callID] = landing }
        return landing
    }

    /// Ends a landing; waits for a chunk being read into it. Afterwards nothing writes there.
    public func endLanding(_ landing: ChunkLanding) {
        stateLock.withLock { if landings[landing.callID] === landing { landings.removeValue(forKey: landing.callID) } }
        landing.lock.withLock { landing.isOpen = false }
    }

    // MARK: Reading

    private func readLoop() {
        let reader = FrameReader(connection: tls, maxFrameBytes: options.maxFrameBytes, frameTimeout: options.frameTimeout, bulkPrefix: Codec.bulkPrefix)
        while !isClosed {
            let idleDeadline: Deadline = options.livenessTimeout.map { timeout in
                Deadline(uptimeNanoseconds: stateLock.withLock { lastHeard }.uptimeNanoseconds + UInt64(timeout * 1e9))
            } ?? .distantFuture
            let read: FrameReader.Frame?
            do {
                read = try reader.readFrameView(idleDeadline: idleDeadline) { [self] id in
                    stateLock.withLock { landings[id].flatMap { $0.tensorIndex == tensorHeadersRouted[id] ? $0 : nil } }
                }
            } catch let error as WireError {
                handleReadError(error, idle: idleDeadline)
                return
            } catch {
                close(error: WireError(.connectionBroken, "\(error)"))
                return
            }
            guard let read else {
                close(error: WireError(.connectionClosed, "the peer closed the connection"))
                return
            }
            stateLock.withLock { lastHeard = .now }
            let frame: UnsafeRawBufferPointer
            var chunkCheck: ChunkCheck?
            switch read {
            case .landed(let callID, let offset, let bytes, let landing, let check):
                // Already in place: the chunk still goes to its call, to be checked like any other.
                let data = ByteView(bytes: bytes, owner: landing, check: check)
                route(Envelope(callID: callID, body: Codec.bulkBody(offset: offset, data: data)))
                continue
            case .view(let view, let check):
                frame = view
                chunkCheck = check
            }
            let envelope: Envelope
            do {
                if frame.count > FrameReader.keptBufferBytes, let block = reader.takeLargeFrameBlock() {
                    // A large frame: decode a tensor chunk in place; the block goes with the chunk.
                    let owner = BlockOwner(block)
                    if let chunk = Codec.bulkPrefix(frame, frameLength: frame.count) {
                        let data = ByteView(bytes: UnsafeRawBufferPointer(rebasing: frame[chunk.dataStart...]), owner: owner, check: chunkCheck)
                        route(Envelope(callID: chunk.callID, body: Codec.bulkBody(offset: chunk.offset, data: data)))
                        continue
                    }
                    envelope = try Codec.decodeFrame(frame)
                } else {
                    envelope = try Codec.decodeFrame(frame)
                }
            } catch let error as WireError {
                logger.warning("Undecodable frame; closing the connection", metadata: ["peer": "\(peer.commonName)", "error": "\(error.message)"])
                closeWithStatus(RPCStatus(.invalidArgument, error.message), error: error)
                return
            } catch {
                return
            }
            route(envelope)
        }
    }

    private func handleReadError(_ error: WireError, idle: Deadline) {
        if isClosed { return }
        switch error.code {
        case .frameTooLarge:
            logger.warning("Oversized frame; closing the connection", metadata: ["peer": "\(peer.commonName)", "error": "\(error.message)"])
            closeWithStatus(RPCStatus(.resourceExhausted, error.message), error: error)
        case .malformedFrame:
            closeWithStatus(RPCStatus(.invalidArgument, error.message), error: error)
        case .truncatedFrame:
            close(error: error)
        case .timedOut where !idle.isDistantFuture && idle.hasPassed && !error.message.contains("middle of a frame"):
            let dead = WireError(.timedOut, "the peer sent nothing for \(options.livenessTimeout ?? 0) s (heartbeats stopped); declared dead")
            logger.warning("Peer silent; closing the connection", metadata: ["peer": "\(peer.commonName)"])
            closeWithStatus(RPCStatus(.unavailable, dead.message), error: dead)
        case .timedOut:
            logger.warning("Peer stalled mid-frame; closing the connection", metadata: ["peer": "\(peer.commonName)", "error": "\(error.message)"])
            closeWithStatus(RPCStatus(.deadlineExceeded, error.message), error: error)
        default:
            close(error: error)
        }
    }

    private func route(_ envelope: Envelope) {
        let id = envelope.callID
        if id == 0 {
            if let body = envelope.body, Codec.isHeartbeat(body) { stateLock.withLock { receivedHeartbeats += 1 } }
            if let status = envelope.status, !status.isOK {
                logger.warning("Peer reported a connection error", metadata: ["peer": "\(peer.commonName)", "status": "\(status)"])
                stateLock.withLock { if closeError == nil { closeError = WireError(.connectionBroken, "the peer reported \(status)") } }
            }
            return
        }
        let (existing, waiting): (Inbox?, Bool) = stateLock.withLock {
            let inbox = calls[id]
            if inbox != nil, let body = envelope.body, Codec.startsBulkStream(body) { tensorHeadersRouted[id, default: 0] += 1 }
            return (inbox, inbox != nil && waitingCalls.contains { $0.id == id })
        }
        if let inbox = existing {
            if !waiting {
                deliver(envelope, to: inbox)
            } else if !deliverIfRoom(envelope, to: inbox) {
                // Nobody consumes a waiting call's inbox: the reader must not wait for it.
                guard refuseWaiting(id) else {
                    deliver(envelope, to: inbox)  // it has started meanwhile
                    return
                }
                inbox.close()
                try? send(Envelope(callID: id, status: RPCStatus(.resourceExhausted,
                    "the call sent more than \(options.inboxCapacity) messages while it waited for a handler thread; "
                        + "send less before its answer")))
                return
            }
            if envelope.status != nil && !isPeerCallID(id) {
                stateLock.withLock {
                    calls.removeValue(forKey: id)
                    tensorHeadersRouted.removeValue(forKey: id)
                }
            }
            return
        }
        guard isPeerCallID(id), let method = envelope.method else {
            // A frame for a call that has already ended (for example after a cancel): drop it.
            return
        }
        let inbox = Inbox(capacity: options.inboxCapacity)
        let deadline: Deadline = envelope.timeoutMs > 0 ? .after(seconds: Double(envelope.timeoutMs) / 1000) : .distantFuture
        let call = WireServerCall(id: id, method: method, metadata: envelope.metadata, deadline: deadline, connection: self, inbox: inbox)
        let admission: CallAdmission<CallHandler> = stateLock.withLock {
            guard !closed, let handler else { return .closed }
            if peerCallsOpen >= options.maxPeerCalls { return .full }
            calls[id] = inbox
            peerCallsOpen += 1
            if handlerThreads >= options.maxCallThreads {
                waitingCalls.append(call)
                return .waits
            }
            handlerThreads += 1
            return .runs(handler)
        }
        switch admission {
        case .closed: return
        case .full:
            try? send(Envelope(callID: id, status: RPCStatus(.resourceExhausted,
                "\(options.maxPeerCalls) calls are already open on this connection; wait for one to end")))
        case .waits:
            // An empty inbox always has room for one envelope's items.
            _ = deliverIfRoom(envelope, to: inbox)
        case .runs(let handler):
            WorkerThread.start(name: "fedwire-call") { [self] in serveCalls(from: call, handler: handler) }
            deliver(envelope, to: inbox)  // after the handler starts: a full inbox must have a consumer
        }
    }

    /// Runs `first`, then the calls that waited for a thread, until none waits.
    private func serveCalls(from first: WireServerCall<Codec>, handler: CallHandler) {
        var next: WireServerCall<Codec>? = first
        while let call = next {
            Self.run(call, handler)
            next = stateLock.withLock {
                if closed || waitingCalls.isEmpty {
                    handlerThreads -= 1
                    return nil
                }
                return waitingCalls.removeFirst()
            }
        }
    }

    private static func run(_ call: WireServerCall<Codec>, _ handler: CallHandler) {
        let status: RPCStatus
        do {
            try handler(call)
            status = .ok
        } catch let error as RPCError {
            status = error.status
        } catch let error as WireError {
            status = RPCStatus(error.code == .tensorStream ? .invalidArgument : .unavailable, error.message)
        } catch {
            status = RPCStatus(.internalError, "\(error)")
        }
        call.finish(status: status)
    }

    /// Takes a waiting call off the queue and out of the open calls; false if it has started
    /// meanwhile.
    private func refuseWaiting(_ id: UInt64) -> Bool {
        stateLock.withLock {
            guard let index = waitingCalls.firstIndex(where: { $0.id == id }) else { return false }
            waitingCalls.remove(at: index)
            calls.removeValue(forKey: id)
            tensorHeadersRouted.removeValue(forKey: id)
            peerCallsOpen -= 1
            return true
        }
    }

    private func deliver(_ envelope: Envelope, to inbox: Inbox) {
        if let body = envelope.body { inbox.push(.message(body)) }
        if envelope.endOfStream { inbox.push(.endOfStream) }
        if envelope.cancel { inbox.fail(.cancelled) }
        if let status = envelope.status { inbox.push(.status(status)) }
    }

    /// ``deliver(_:to:)`` without waiting: false, and nothing delivered, if the inbox is too full.
    private func deliverIfRoom(_ envelope: Envelope, to inbox: Inbox) -> Bool {
        var items: [Inbox.Item] = []
        if let body = envelope.body { items.append(.message(body)) }
        if envelope.endOfStream { items.append(.endOfStream) }
        if let status = envelope.status { items.append(.status(status)) }
        guard inbox.pushIfRoom(items) else { return false }
        if envelope.cancel { inbox.fail(.cancelled) }
        return true
    }
}

/// What becomes of a call the peer opens.
private enum CallAdmission<Handler> {
    case closed, full, waits
    case runs(Handler)
}

/// Owns a recycling-pool block and gives it back when the last user lets go.
final class BlockOwner: @unchecked Sendable {
    // @unchecked: the block is only read after the frame was filled.
    private let block: UnsafeMutableRawPointer
    init(_ block: UnsafeMutableRawPointer) { self.block = block }
    deinit { RecyclingAllocator.release(block) }
}
