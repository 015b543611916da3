import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// One TLS 1.3 connection over a non-blocking ``Socket``.
///
/// Full duplex: one thread may read while others write. OpenSSL forbids concurrent calls on one
/// `SSL*`, so every call into it holds `sslLock` for the duration of that call only, and waits
/// for the socket (`poll`) happen outside the lock. Writers are serialised by `writeLock` so that
/// frames never interleave. Owns its socket and its `SSL*`.
public final class TLSConnection: @unchecked Sendable {
    // @unchecked: all access to `ssl` is serialised by `sslLock`; `socket` is thread-safe.
    private let ssl: OpaquePointer  // SSL
    private let sslLock = SpinlessLock()
    private let writeLock = SpinlessLock()
    /// Keeps the SSL_CTX alive for as long as the SSL* uses it.
    public let context: TLSContext
    public let socket: Socket
    /// The peer's address as the socket saw it.
    public let remoteAddress: SocketAddress?
    /// The verified peer, set once ``handshake(deadline:)`` succeeds.
    public private(set) var peer: PeerIdentity?
    private var isClosed = false

    /// Wraps a connected socket. For a client, `expectedServerName` is the coordinator's host
    /// name or IP address, which its certificate must name.
    public init(socket: Socket, context: TLSContext, remoteAddress: SocketAddress?, expectedServerName: String? = nil) throws {
        guard let ssl = SSL_new(context.pointer) else {
            throw WireError(.configuration, "SSL_new failed: \(OpenSSLErrorStack.describe(fallback: "out of memory"))")
        }
        self.ssl = ssl
        self.context = context
        self.socket = socket
        self.remoteAddress = remoteAddress
        SSL_set_fd(ssl, socket.descriptor)
        if let name = expectedServerName, context.configuration.role == .client {
            let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
            let param = SSL_get0_param(ssl)
            if PeerIdentity.isNumericIP(bare) {
                X509_VERIFY_PARAM_set1_ip_asc(param, bare)
            } else {
                _ = shim_SSL_set_tlsext_host_name(ssl, bare)
                X509_VERIFY_PARAM_set_hostflags(param, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                X509_VERIFY_PARAM_set1_host(param, bare, 0)
            }
        }
    }

    deinit {
        SSL_free(ssl)
        socket.close()
    }

    // MARK: Handshake

    /// Runs the TLS handshake (accept or connect, by the context's role) until `deadline`.
    ///
    /// - Throws: ``WireError/Code/handshakeFailed`` with the reason, including the certificate
    ///   verification result ("certificate revoked", "certificate has expired").
    public func handshake(deadline: Deadline) throws {
        let isServer = context.configuration.role == .server
        while true {
            let (result, error, reasons, verify) = sslLock.withLock { () -> (Int32, Int32, [String], Int) in
                ERR_clear_error()
                let r = isServer ? SSL_accept(ssl) : SSL_connect(ssl)
                let e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r)
                return (r, e, OpenSSLErrorStack.drain(), SSL_get_verify_result(ssl))
            }
            if result == 1 { break }
            switch error {
            case SSL_ERROR_WANT_READ:
                try waitDuringHandshake(.readable, deadline)
            case SSL_ERROR_WANT_WRITE:
                try waitDuringHandshake(.writable, deadline)
            default:
                throw WireError(.handshakeFailed, Self.describeFailure(error: error, reasons: reasons, verify: verify))
            }
        }
        guard let certificate = sslLock.withLock({ SSL_get0_peer_certificate(ssl) }) else {
            throw WireError(.handshakeFailed, "the peer presented no certificate")
        }
        peer = PeerIdentity(certificate: certificate)
    }

    private func waitDuringHandshake(_ readiness: Socket.Readiness, _ deadline: Deadline) throws {
        do { try socket.wait(for: readiness, until: deadline) } catch let error as WireError where error.code == .timedOut {
            throw WireError(.handshakeFailed, "the TLS handshake did not finish in time")
        }
    }

    static func describeFailure(error: Int32, reasons: [String], verify: Int) -> String {
        var text = reasons.isEmpty ? "" : reasons.joined(separator: "; ")
        if error == SSL_ERROR_SYSCALL {
            let code = errno
            let system = code == 0 ? "the peer closed the connection" : String(cString: strerror(code))
            text = text.isEmpty ? system : "\(text); \(system)"
        }
        if verify != Int(X509_V_OK), let verifyText = X509_verify_cert_error_string(verify) {
            text += " [\(String(cString: verifyText))]"
        }
        return text.isEmpty ? "TLS error \(error)" : text
    }

    // MARK: Reading and writing

    /// Reads at most `buffer.count` bytes, waiting until `deadline`.
    ///
    /// - Returns: the number of bytes read; 0 means the peer closed the connection cleanly.
    /// - Throws: ``WireError/Code/timedOut`` at the deadline, ``WireError/Code/connectionBroken``
    ///   on a TLS or socket error (the message carries the peer's alert, if any).
    public func read(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            var count = 0
            let (ok, error, reasons) = sslLock.withLock { () -> (Bool, Int32, [String]) in
                ERR_clear_error()
                let r = SSL_read_ex(ssl, base, buffer.count, &count)
                if r == 1 { return (true, SSL_ERROR_NONE, []) }
                let e = SSL_get_error(ssl, r)
                return (false, e, e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? [] : OpenSSLErrorStack.drain())
            }
            if ok { return count }
            switch error {
            case SSL_ERROR_WANT_READ: try socket.wait(for: .readable, until: deadline)
            case SSL_ERROR_WANT_WRITE: try socket.wait(for: .writable, until: deadline)
            case SSL_ERROR_ZERO_RETURN: return 0
            case SSL_ERROR_SYSCALL where errno == 0 && reasons.isEmpty: return 0
            default:
                if reasons.contains(where: { $0.contains("unexpected eof") }) { return 0 }
                throw WireError(.connectionBroken, Self.describeFailure(error: error, reasons: reasons, verify: Int(X509_V_OK)))
            }
        }
    }

    /// Reads exactly `buffer.count` bytes; `progress` gets how many are in place after each read
    /// (to work on them while they are in cache).
    ///
    /// - Throws: ``WireError/Code/connectionClosed`` if the peer closes first (after
    ///   `alreadyRead` + some bytes: the caller decides whether that is a truncated frame).
    public func readExactly(
        into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline, progress: (_ received: Int) -> Void = { _ in }
    ) throws {
        var offset = 0
        while offset < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]), deadline: deadline)
            if n == 0 {
                throw WireError(.connectionClosed, "the peer closed the connection after \(offset) of \(buffer.count) bytes")
            }
            offset += n
            progress(offset)
        }
    }

    /// Writes every byte of `bytes`, as one uninterrupted sequence with respect to other writers.
    ///
    /// - Parameter stallSeconds: how long the peer may take no bytes off a full socket before the
    ///   write fails with ``WireError/Code/timedOut``; whenever it takes some, the wait starts
    ///   again, so a slow reader that keeps reading is served at its pace.
    public func write(_ bytes: UnsafeRawBufferPointer, stallSeconds: Double) throws {
        try writeLock.withLock { try writeUnlocked(bytes, stallSeconds: stallSeconds) }
    }

    /// Writes several buffers back to back with no other writer in between (see
    /// ``write(_:stallSeconds:)``).
    public func write(segments: [UnsafeRawBufferPointer], stallSeconds: Double) throws {
        try writeLock.withLock {
            for segment in segments { try writeUnlocked(segment, stallSeconds: stallSeconds) }
        }
    }

    private func writeUnlocked(_ bytes: UnsafeRawBufferPointer, stallSeconds: Double) throws {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            var written = 0
            let (ok, error, reasons) = sslLock.withLock { () -> (Bool, Int32, [String]) in
                ERR_clear_error()
                let r = SSL_write_ex(ssl, base + offset, bytes.count - offset, &written)
                if r == 1 { return (true, SSL_ERROR_NONE, []) }
                let e = SSL_get_error(ssl, r)
                return (false, e, e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? [] : OpenSSLErrorStack.drain())
            }
            if ok { offset += written; continue }
            switch error {
            case SSL_ERROR_WANT_WRITE, SSL_ERROR_WANT_READ:
                do {
                    if error == SSL_ERROR_WANT_WRITE {
                        try socket.waitWritable(stallSeconds: stallSeconds)
                    } else {
                        try socket.wait(for: .readable, until: .after(seconds: stallSeconds))
                    }
                } catch let failure as WireError where failure.code == .timedOut {
                    throw WireError(.timedOut, "the peer took no bytes for \(stallSeconds) s while \(bytes.count - offset) were left to send")
                }
            default:
                throw WireError(.connectionBroken, Self.describeFailure(error: error, reasons: reasons, verify: Int(X509_V_OK)))
            }
        }
    }

    // MARK: Closing

    /// Sends a TLS close_notify (best effort, never blocks) and closes the socket.
    public func close() {
        let first: Bool = sslLock.withLock {
            if isClosed { return false }
            isClosed = true
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            ERR_clear_error()
            return true
        }
        if first { socket.close() }
    }

    /// Closes politely after a refusal or protocol error: stops sending, then reads and discards
    /// what the peer still sends for up to `drainSeconds` (or `maxBytes`), so that the peer reads
    /// our last frame or alert instead of a TCP reset. Then closes.
    public func closeAfterDraining(drainSeconds: Double = 0.5, maxBytes: Int = 64 << 20) {
        sslLock.withLock {
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            ERR_clear_error()
        }
        socket.shutdownWrite()
        Self.drain(socket: socket, seconds: drainSeconds, maxBytes: maxBytes)
        close()
    }

    /// Reads and discards raw bytes from `socket` until EOF, `seconds` or `maxBytes`.
    static func drain(socket: Socket, seconds: Double, maxBytes: Int) {
        let deadline = Deadline.after(seconds: seconds)
        var discarded = 0
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        while discarded < maxBytes {
            do { try socket.wait(for: .readable, until: deadline) } catch { return }
            if socket.isClosed { return }
            let fd = socket.descriptor
            let n = scratch.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 {
                if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
                return
            }
            discarded += n
        }
    }
}

extension PeerIdentity {
    static func isNumericIP(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}
