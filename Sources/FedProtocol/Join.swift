import FedWire
import Logging

/// What the coordinator's application does with agents' connections: ``WireListenerDelegate``
/// with the join spelt out as Hello → Welcome. Called on connection threads.
public protocol WireServerDelegate: WireListenerDelegate where Codec == FedCodec {
    /// Decides whether a verified agent may join, and what to tell it. The protocol version has
    /// already been checked; the protocol version, agent id (when empty), federation (when empty)
    /// and heartbeat interval are filled in afterwards. Throw ``RPCError`` to refuse.
    func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome
}

extension WireServerDelegate {
    /// Checks the Hello (a message of that type, this protocol version), then asks
    /// ``welcome(_:from:on:)`` and completes its answer.
    public func join(_ request: Message, on connection: RPCConnection, listener: WireServer.Configuration) throws -> Message {
        guard case .hello(let hello) = request else {
            throw RPCError(.invalidArgument, "\(Methods.join) takes a Hello message")
        }
        guard hello.protocolVersion == fedcoordProtocolVersion else {
            throw RPCError(.failedPrecondition, "protocol version mismatch: the agent speaks FedCoord protocol \(hello.protocolVersion), "
                + "the coordinator speaks protocol \(fedcoordProtocolVersion); upgrade the agent or the coordinator so that both match")
        }
        var welcome = try welcome(hello, from: connection.peer, on: connection)
        welcome.protocolVersion = fedcoordProtocolVersion
        if welcome.agentID.isEmpty { welcome.agentID = connection.peer.commonName }
        if welcome.federation.isEmpty { welcome.federation = listener.federation }
        if let interval = listener.connection.heartbeatInterval { welcome.heartbeatIntervalMs = UInt32(interval * 1000) }
        return .welcome(welcome)
    }
}

extension WireClient {
    /// Connects and joins with `hello`.
    ///
    /// - Parameters:
    ///   - host: the coordinator's host name or IP address; its certificate must name it.
    ///   - handler: handles the calls the coordinator opens (Train, PullUpdate, …).
    /// - Returns: the joined connection (heartbeats started) and the coordinator's Welcome.
    /// - Throws: ``WireError`` (`connectFailed`, `handshakeFailed` with the coordinator's reason
    ///   when it refused this agent's certificate) or ``RPCError`` (FAILED_PRECONDITION for a
    ///   protocol version mismatch).
    public static func connect(
        host: String, port: UInt16, context: TLSContext, hello: Hello, options: ConnectionOptions,
        timeout: Double = 15, logger: Logger, handler: @escaping RPCConnection.CallHandler
    ) throws -> (RPCConnection, Welcome) {
        let (connection, response) = try connect(
            host: host, port: port, context: context, request: Message.hello(hello), options: options, timeout: timeout,
            logger: logger, handler: handler)
        guard case .welcome(let welcome) = response else {
            connection.close()
            throw RPCError(.internalError, "the coordinator answered Join with \(response.name) instead of Welcome")
        }
        connection.startHeartbeats()
        return (connection, welcome)
    }
}
