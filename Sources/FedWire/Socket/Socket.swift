import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// A TCP socket file descriptor, IPv4 or IPv6, always non-blocking.
///
/// Owns its descriptor. ``close()`` shuts the socket down at once (waking every thread blocked
/// on it) but the descriptor number itself is released only in `deinit`, when no thread can
/// still be using it: closing it earlier would let the kernel hand the same number to a file
/// another thread opens, and a late read on the old socket would read that file.
/// Blocking waits happen in ``wait(for:until:)`` through `poll(2)` with a ``Deadline``, never on
/// Swift's cooperative thread pool: call these methods from dedicated threads.
public final class Socket: @unchecked Sendable {
    // @unchecked: `fd` never changes; `closed` is guarded by `lock`; the kernel makes concurrent
    // reads and writes on one socket safe.
    private let fd: Int32
    private var closed = false
    private let lock = SpinlessLock()

    /// Takes ownership of an open descriptor.
    init(takingOwnershipOf descriptor: Int32) {
        self.fd = descriptor
    }

    deinit {
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// The descriptor (valid for this object's lifetime, even after ``close()``).
    public var descriptor: Int32 { fd }

    /// True once ``close()`` has been called.
    public var isClosed: Bool { lock.withLock { closed } }

    /// Shuts the connection down in both directions (the peer sees end-of-file; threads blocked
    /// on this socket wake up). Safe to call more than once and from any thread.
    public func close() {
        let first: Bool = lock.withLock {
            defer { closed = true }
            return !closed
        }
        if first { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Half-closes the sending direction (the peer reads end-of-file after what was sent).
    public func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    // MARK: Creating sockets

    /// Opens a listening socket on `host:port` (port 0 picks a free port; see ``localAddress``).
    ///
    /// - Parameters:
    ///   - host: a numeric address or a name (`"127.0.0.1"`, `"::1"`, `"localhost"`, `"0.0.0.0"`).
    ///   - backlog: pending connections the kernel queues before `accept`.
    public static func listen(host: String, port: UInt16, backlog: Int32 = 1024) throws -> Socket {
        let addresses = try SocketAddress.resolve(host: host, port: port, passive: true)
        var lastError: WireError?
        for address in addresses {
            let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = .system("socket"); continue }
            let socket = Socket(takingOwnershipOf: fd)
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if address.family == AF_INET6 {
                // Listen on exactly the address asked for; "::" does not also take IPv4.
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
            }
            let bound = address.withSockAddr { Glibc.bind(fd, $0, $1) }
            if bound != 0 {
                lastError = switch errno {
                case EADDRINUSE:
                    WireError(.addressUnusable, "cannot listen on \(address): the port is already in use (another coordinator "
                        + "still running?); stop that process or choose another port")
                case EADDRNOTAVAIL:
                    WireError(.addressUnusable, "cannot listen on \(address): it is not an address of this machine; choose one of its "
                        + "addresses, or 0.0.0.0 (:: for IPv6) for all of them")
                case EACCES:
                    WireError(.addressUnusable, "cannot listen on \(address): ports below 1024 need privileges; choose a port of 1024 "
                        + "or above, or grant the process CAP_NET_BIND_SERVICE")
                default:
                    .system("bind \(address)")
                }
                socket.close()
                continue
            }
            if Glibc.listen(fd, backlog) != 0 { lastError = .system("listen \(address)"); socket.close(); continue }
            if fed_set_nonblocking(fd) != 0 { lastError = .system("fcntl"); socket.close(); continue }
            return socket
        }
        throw lastError ?? WireError(.addressUnusable, "no usable address for \(host):\(port)")
    }

    /// Connects to `host:port`, trying each resolved address in turn until `deadline`.
    public static func connect(host: String, port: UInt16, deadline: Deadline) throws -> Socket {
        let addresses = try SocketAddress.resolve(host: host, port: port, passive: false)
        var failures: [String] = []
        for address in addresses {
            let fd = Glibc.socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { failures.append("\(address): \(WireError.system("socket").message)"); continue }
            let socket = Socket(takingOwnershipOf: fd)
            guard fed_set_nonblocking(fd) == 0 else { socket.close(); continue }
            let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
            if result != 0 && errno != EINPROGRESS {
                failures.append("\(address): \(String(cString: strerror(errno)))")
                socket.close()
                continue
            }
            do {
                if result != 0 {
                    try socket.wait(for: .writable, until: deadline)
                    var soError: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                    if soError != 0 {
                        failures.append("\(address): \(String(cString: strerror(soError)))")
                        socket.close()
                        continue
                    }
                }
                socket.setNoDelay()
                return socket
            } catch {
                socket.close()
                throw WireError(.timedOut, "connecting to \(host):\(port) timed out; is the coordinator running and reachable?")
            }
        }
        throw WireError(
            .connectFailed,
            "could not connect to \(host):\(port) (\(failures.joined(separator: "; "))); "
                + "check that the coordinator is running and the address and port are right")
    }

    /// Accepts one pending connection, or returns nil when none is pending.
    ///
    /// The new socket is non-blocking, with `TCP_NODELAY`, and owned by the caller.
    public func accept() throws -> (Socket, SocketAddress)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(descriptor, $0, &length) }
        }
        if fd < 0 {
            switch errno {
            case EAGAIN, EWOULDBLOCK, EINTR, ECONNABORTED, EPROTO: return nil
            default: throw WireError.system("accept")
            }
        }
        let socket = Socket(takingOwnershipOf: fd)
        _ = fed_set_nonblocking(fd)
        socket.setNoDelay()
        return (socket, SocketAddress(storage: storage))
    }

    // MARK: Options and addresses

    /// Disables Nagle's algorithm: frames go out as soon as they are written.
    public func setNoDelay() {
        var one: Int32 = 1
        setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sets the kernel send and receive buffer sizes (the kernel may double or cap them).
    public func setBufferSizes(bytes: Int32) {
        var size = bytes
        setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The address this socket is bound to (for a listener on port 0, the port picked).
    public var localAddress: SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return result == 0 ? SocketAddress(storage: storage) : nil
    }

    // MARK: Waiting

    /// What to wait for in ``wait(for:until:)``.
    public enum Readiness: Sendable {
        case readable, writable
    }

    /// Blocks the calling thread until the socket is ready or `deadline` passes.
    ///
    /// - Throws: ``WireError/Code/timedOut`` at the deadline; ``WireError/Code/connectionClosed``
    ///   once the socket has been closed.
    public func wait(for readiness: Readiness, until deadline: Deadline) throws {
        while true {
            if isClosed { throw WireError(.connectionClosed, "the connection was closed") }
            var pfd = pollfd(fd: fd, events: Int16(readiness == .readable ? POLLIN : POLLOUT), revents: 0)
            // Wake at least every 250 ms so that a close() from another thread is noticed.
            let timeout = deadline.pollTimeoutMilliseconds
            let slice: Int32 = timeout < 0 ? 250 : min(timeout, 250)
            let ready = poll(&pfd, 1, slice)
            if ready > 0 { return }
            if ready < 0 && errno != EINTR { throw WireError.system("poll") }
            if ready == 0 && deadline.hasPassed { throw WireError(.timedOut, "timed out waiting for the peer") }
        }
    }

    /// Blocks until the socket is writable for as long as the peer keeps taking bytes: fails once
    /// nothing of what is queued to it has been acknowledged for `stallSeconds`.
    ///
    /// Writability alone is too coarse for a slow reader: the kernel reports it only once a third
    /// of a (possibly megabytes large) send buffer has drained.
    ///
    /// - Throws: ``WireError/Code/timedOut`` after `stallSeconds` without progress.
    public func waitWritable(stallSeconds: Double) throws {
        var stall = Deadline.after(seconds: stallSeconds)
        var queued = unacknowledgedBytes
        while true {
            do {
                try wait(for: .writable, until: stall.earlier(.after(seconds: 0.1)))
                return
            } catch let error as WireError where error.code == .timedOut {
                let now = unacknowledgedBytes
                if now < queued { stall = .after(seconds: stallSeconds) }
                queued = now
                if stall.hasPassed { throw error }
            }
        }
    }

    /// Bytes written to the socket that the peer has not acknowledged yet (`SIOCOUTQ`).
    var unacknowledgedBytes: Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(TIOCOUTQ), &count) == 0 ? Int(count) : 0
    }
}

extension WireError {
    /// The error for a failed system call, with `strerror(errno)`.
    static func system(_ call: String) -> WireError {
        let code = errno
        return WireError(.system, "\(call) failed: \(String(cString: strerror(code))) (errno \(code))")
    }
}
