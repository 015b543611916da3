import Foundation
import Logging

/// Why the coordinator refused a connection, for its log and the round log.
public struct ConnectionRefusal: Sendable, CustomStringConvertible {
    /// Where in the set-up the connection was refused.
    public enum Stage: String, Sendable {
        /// The TLS handshake: certificate missing, from another CA, expired, not yet valid,
        /// revoked, or of the wrong purpose.
        case handshake
        /// The Join call: incompatible protocol version, or the application refused the agent.
        case join
    }

    public var address: SocketAddress?
    public var stage: Stage
    /// The certificate's CN when the handshake got that far.
    public var commonName: String?
    public var reason: String

    public var description: String {
        "\(address?.description ?? "?") refused at \(stage.rawValue)\(commonName.map { " (CN=\($0))" } ?? ""): \(reason)"
    }
}

/// What the application behind a ``WireListener`` does with connections. Called on connection
/// threads.
public protocol WireListenerDelegate<Codec>: AnyObject, Sendable {
    associatedtype Codec: WireCodec
    /// Answers the join call (``WireCodec/joinMethod``) of a verified peer: the answer is the
    /// first frame the listener sends on the connection. Throw ``RPCError`` to refuse (the
    /// listener reports the refusal and closes the connection).
    func join(_ request: Codec.Body, on connection: WireConnection<Codec>, listener: WireListener<Codec>.Configuration) throws -> Codec.Body
    /// The join's answer has been sent: the peer is connected and may now be called.
    func connectionJoined(_ connection: WireConnection<Codec>)
    /// Handles a call the peer opened after joining (other than the join).
    func handle(_ call: WireServerCall<Codec>) throws
    /// A joined connection closed (`error` nil for a clean close).
    func connectionClosed(_ connection: WireConnection<Codec>, error: WireError?)
    /// A connection was refused; the listener has already logged it.
    func connectionRefused(_ refusal: ConnectionRefusal)
}

extension WireListenerDelegate {
    public func connectionJoined(_ connection: WireConnection<Codec>) {}
}

/// The coordinator's listener: accepts TCP connections, runs the mTLS handshake on a thread per
/// connection (one slow peer never stalls the others), has the delegate answer the join call,
/// then hands the connection to it.
///
/// The first frame the listener sends on a connection is the answer to the join, sent only after
/// the certificate (CA, validity, CRL) and the delegate's checks have passed.
public final class WireListener<Codec: WireCodec>: @unchecked Sendable {
    // @unchecked: mutable state (context, connections, stopping) is guarded by `lock`.
    public struct Configuration: Sendable {
        /// Address to listen on ("127.0.0.1", "::1", "0.0.0.0").
        public var host = "127.0.0.1"
        /// Port; 0 picks a free one (read it back from ``WireListener/port``).
        public var port: UInt16 = 0
        public var tls: TLSConfiguration
        public var connection = ConnectionOptions.defaults { $0.heartbeatInterval = 5; $0.livenessTimeout = 15 }
        /// The federation's name, for the delegate's answer to the join.
        public var federation = "fedcoord"
        /// Seconds from accept to a completed Join; a connection that has not joined by then is closed.
        public var joinTimeout: Double = 10
        /// Connections open at once (handshaking, joining or joined); more are closed at accept.
        public var maxConnections = 512

        public init(tls: TLSConfiguration) { self.tls = tls }
    }

    public let configuration: Configuration
    private let listener: Socket
    private let logger: Logger
    private weak var delegateStorage: (any WireListenerDelegate<Codec>)?
    private let lock = SpinlessLock()
    private var context: TLSContext
    private var connections: [ObjectIdentifier: WireConnection<Codec>] = [:]
    /// Connections past their handshake that have not joined yet, with their join deadline.
    private var joining: [ObjectIdentifier: (connection: WireConnection<Codec>, deadline: Deadline)] = [:]
    /// Every accepted socket not yet closed: handshaking, joining or joined.
    private var openCount = 0
    private var stopping = false

    /// Loads the TLS files and binds the listening socket (nothing is accepted before ``start()``).
    ///
    /// The delegate is held weakly: keep it alive for as long as the server runs.
    public init(configuration: Configuration, delegate: any WireListenerDelegate<Codec>, logger: Logger) throws {
        precondition(configuration.tls.role == .server, "WireListener needs a server TLS configuration")
        self.configuration = configuration
        self.logger = logger
        self.delegateStorage = delegate
        context = try TLSContext(configuration: configuration.tls)
        listener = try Socket.listen(host: configuration.host, port: configuration.port)
    }

    private var delegate: (any WireListenerDelegate<Codec>)? { delegateStorage }

    /// The port the listener is bound to.
    public var port: UInt16 { listener.localAddress?.port ?? 0 }
    public var localAddress: SocketAddress? { listener.localAddress }

    /// Connections that have joined and not yet closed.
    public var activeConnections: [WireConnection<Codec>] { lock.withLock { Array(connections.values) } }

    /// Starts accepting on a dedicated thread.
    public func start() {
        logger.info("Listening", metadata: ["address": "\(listener.localAddress?.description ?? "?")"])
        WorkerThread.start(name: "fedwire-accept") { [self] in acceptLoop() }
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        let open: [WireConnection<Codec>] = lock.withLock {
            stopping = true
            return Array(connections.values) + joining.values.map(\.connection)
        }
        listener.close()
        for connection in open { connection.close() }
    }

    /// Re-reads the certificate revocation list (and the certificate, key and CA) from the files
    /// the configuration names. New handshakes use it at once; connections already joined stay
    /// (close a revoked agent's connection with ``disconnect(commonName:reason:)``).
    ///
    /// - Throws: ``WireError`` if the files cannot be loaded; the previous context stays in use.
    public func reloadRevocationList() throws {
        let fresh = try TLSContext(configuration: configuration.tls)
        lock.withLock { context = fresh }
        logger.info("Revocation list reloaded", metadata: ["crl.revoked": "\(fresh.revokedSerialCount)"])
    }

    /// Closes the connections of an agent (for example one just revoked).
    public func disconnect(commonName: String, reason: String) {
        let matching = activeConnections.filter { $0.peer.commonName == commonName }
        for connection in matching {
            connection.closeWithStatus(RPCStatus(.permissionDenied, reason), error: WireError(.connectionClosed, reason))
        }
    }

    private func acceptLoop() {
        while !lock.withLock({ stopping }) {
            closeLateJoiners()
            do {
                try listener.wait(for: .readable, until: .after(seconds: 0.5))
            } catch let error as WireError where error.code == .timedOut {
                continue
            } catch {
                return
            }
            while let (socket, address) = (try? listener.accept()) ?? nil {
                let (context, admitted): (TLSContext, Bool) = lock.withLock {
                    guard openCount < configuration.maxConnections else { return (self.context, false) }
                    openCount += 1
                    return (self.context, true)
                }
                guard admitted else {
                    socket.close()
                    refuse(ConnectionRefusal(address: address, stage: .handshake, commonName: nil,
                        reason: "\(configuration.maxConnections) connections are open (the server's limit); closed at accept"))
                    continue
                }
                WorkerThread.start(name: "fedwire-handshake") { [self] in
                    setUp(socket: socket, address: address, context: context)
                }
            }
        }
    }

    /// Connections open now, handshaking and joining included.
    public var openConnectionCount: Int { lock.withLock { openCount } }

    private func connectionEnded() { lock.withLock { openCount -= 1 } }

    /// Closes the connections that have not joined within the join timeout (checked each time the
    /// accept loop wakes, at least every half second).
    private func closeLateJoiners() {
        let late: [WireConnection<Codec>] = lock.withLock {
            let expired = joining.filter { $0.value.deadline.hasPassed }
            for key in expired.keys { joining.removeValue(forKey: key) }
            return expired.values.map(\.connection)
        }
        for connection in late {
            let reason = "no \(Codec.joinMethod.split(separator: "/").last ?? "join") call within \(configuration.joinTimeout) s of connecting"
            refuse(ConnectionRefusal(address: connection.tls.remoteAddress, stage: .join, commonName: connection.peer.commonName, reason: reason))
            // The polite close drains the peer for a moment: off the accept loop, which must not wait.
            WorkerThread.start(name: "fedwire-close", stackSize: 256 << 10) {
                connection.closeWithStatus(RPCStatus(.deadlineExceeded, reason), error: WireError(.timedOut, reason))
            }
        }
    }

    private func refuse(_ refusal: ConnectionRefusal) {
        logger.warning("Connection refused", metadata: [
            "peer.address": "\(refusal.address?.description ?? "?")", "refusal.stage": "\(refusal.stage.rawValue)",
            "peer.cn": "\(refusal.commonName ?? "")", "refusal.reason": "\(refusal.reason)",
        ])
        delegate?.connectionRefused(refusal)
    }

    private func setUp(socket: Socket, address: SocketAddress, context: TLSContext) {
        let joinDeadline = Deadline.after(seconds: configuration.joinTimeout)
        let tls: TLSConnection
        do {
            tls = try TLSConnection(socket: socket, context: context, remoteAddress: address)
        } catch {
            socket.close()
            connectionEnded()
            return
        }
        do {
            try tls.handshake(deadline: Deadline.after(seconds: configuration.tls.handshakeTimeout).earlier(joinDeadline))
        } catch let error as WireError {
            refuse(ConnectionRefusal(address: address, stage: .handshake, commonName: nil, reason: error.message))
            // Let the peer read our alert rather than a TCP reset.
            tls.closeAfterDraining(drainSeconds: 0.3, maxBytes: 1 << 20)
            connectionEnded()
            return
        } catch {
            tls.close()
            connectionEnded()
            return
        }
        let connection = WireConnection<Codec>(tls: tls, isDialler: false, options: configuration.connection, logger: logger)
        let key = ObjectIdentifier(connection)
        lock.withLock { joining[key] = (connection, joinDeadline) }
        let joined = JoinGate()
        connection.start { [self] call in
            if call.method == Codec.joinMethod {
                try join(call, connection: connection, address: address, gate: joined)
            } else if !joined.isOpen {
                throw RPCError(.failedPrecondition, "call \(Codec.joinMethod) first; \(call.method) is refused before joining")
            } else if let delegate {
                try delegate.handle(call)
            } else {
                throw RPCError(.unavailable, "the coordinator is shutting down")
            }
        }
        connection.whenClosed { [self, weak connection] error in
            let wasJoined: Bool = lock.withLock {
                joining.removeValue(forKey: key)
                openCount -= 1
                return connections.removeValue(forKey: key) != nil
            }
            if wasJoined, let connection { delegate?.connectionClosed(connection, error: error) }
        }
    }

    private func join(_ call: WireServerCall<Codec>, connection: WireConnection<Codec>, address: SocketAddress, gate: JoinGate) throws {
        let request = try call.receiveOnly()
        if gate.isOpen { throw RPCError(.alreadyExists, "this connection has already joined") }
        guard let delegate else { throw RPCError(.unavailable, "the coordinator is shutting down") }
        let answer: Codec.Body
        do {
            answer = try delegate.join(request, on: connection, listener: configuration)
        } catch let error as RPCError {
            refuse(ConnectionRefusal(address: address, stage: .join, commonName: connection.peer.commonName, reason: error.message))
            closeSoon(connection)
            throw error
        }
        let admitted: Bool = lock.withLock {
            if stopping { return false }
            joining.removeValue(forKey: ObjectIdentifier(connection))
            connections[ObjectIdentifier(connection)] = connection
            return true
        }
        guard admitted else { throw RPCError(.unavailable, "the coordinator is shutting down") }
        gate.open()
        try call.send(answer)
        connection.startHeartbeats()
        delegate.connectionJoined(connection)
        logger.info("Agent joined", metadata: ["agent": "\(connection.peer.commonName)", "peer.address": "\(address)"])
    }

    /// Closes a refused connection shortly after its status has been sent.
    private func closeSoon(_ connection: WireConnection<Codec>) {
        WorkerThread.start(name: "fedwire-close", stackSize: 256 << 10) {
            usleep(200_000)
            connection.close(error: WireError(.connectionClosed, "refused at join"))
        }
    }
}

/// Set once a connection's Join has succeeded.
private final class JoinGate: @unchecked Sendable {
    // @unchecked: guarded by `lock`.
    private let lock = SpinlessLock()
    private var opened = false
    var isOpen: Bool { lock.withLock { opened } }
    func open() { lock.withLock { opened = true } }
}
