import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The agent's side of connection set-up: dial, mTLS handshake (verifying the coordinator's
/// name or IP), join. The agent never listens: the coordinator calls it back over this connection.
public enum WireClient {
    /// Connects and joins with `request` (a call to ``WireCodec/joinMethod``).
    ///
    /// - Parameters:
    ///   - host: the coordinator's host name or IP address; its certificate must name it.
    ///   - handler: handles the calls the coordinator opens (Train, PullUpdate, …).
    /// - Returns: the joined connection, and the coordinator's answer to the join (start the
    ///   heartbeats once it is accepted).
    /// - Throws: ``WireError`` (`connectFailed`, `handshakeFailed` with the coordinator's reason
    ///   when it refused this agent's certificate) or ``RPCError`` (the coordinator's refusal).
    public static func connect<Codec: WireCodec>(
        host: String, port: UInt16, context: TLSContext, request: Codec.Body, options: ConnectionOptions,
        timeout: Double = 15, logger: Logger, handler: @escaping WireConnection<Codec>.CallHandler
    ) throws -> (WireConnection<Codec>, Codec.Body) {
        precondition(context.configuration.role == .client, "WireClient needs a client TLS context")
        let deadline = Deadline.after(seconds: timeout)
        let socket = try Socket.connect(host: host, port: port, deadline: deadline)
        let tls = try TLSConnection(socket: socket, context: context, remoteAddress: nil, expectedServerName: host)
        do {
            try tls.handshake(deadline: deadline)
        } catch let error as WireError {
            tls.close()
            throw WireError(.handshakeFailed, "TLS handshake with the coordinator at \(host):\(port) failed: \(error.message); "
                + "check that the agent's CA file is the federation's CA and that the coordinator's certificate names '\(host)'")
        }
        let connection = WireConnection<Codec>(tls: tls, isDialler: true, options: options, logger: logger)
        connection.start(handler: handler)
        let response: Codec.Body
        do {
            response = try connection.unary(Codec.joinMethod, request, timeout: max(1, deadline.remainingSeconds))
        } catch let error as RPCError where error.code == .unavailable {
            connection.close()
            // In TLS 1.3 a refused client certificate shows up here, on the first read or write.
            throw refused(host, port, connection.closeReason?.message ?? error.message)
        } catch let error as WireError {
            // Our Hello could not be written: the reader thread may still read the coordinator's alert.
            let deadline = Deadline.after(seconds: 2)
            while !connection.isClosed && !deadline.hasPassed { usleep(10_000) }
            let reason = connection.closeReason?.message ?? error.message
            connection.close()
            throw refused(host, port, reason)
        } catch {
            connection.close()
            throw error
        }
        return (connection, response)
    }

    private static func refused(_ host: String, _ port: UInt16, _ reason: String) -> WireError {
        WireError(.handshakeFailed, "the coordinator at \(host):\(port) refused this agent's certificate or closed the connection "
            + "(\(reason)); check that the certificate is issued by the federation CA, is within its validity dates and has not "
            + "been revoked")
    }
}
