/// An error from the transport: sockets, TLS, framing or a tensor stream.
///
/// A struct with an extensible ``Code`` rather than an enum, so that new failure kinds can be
/// added without breaking callers that switch over the codes they know.
public struct WireError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        /// A system call failed; the message names it and carries `strerror`.
        public static let system = Code("system")
        /// Host name could not be resolved or no address was usable.
        public static let addressUnusable = Code("address-unusable")
        /// The TCP connection could not be made.
        public static let connectFailed = Code("connect-failed")
        /// The TLS handshake failed or the peer's certificate was refused (either side).
        public static let handshakeFailed = Code("handshake-failed")
        /// The TLS configuration (certificates, keys, CA, CRL) could not be loaded.
        public static let configuration = Code("configuration")
        /// The peer closed the connection.
        public static let connectionClosed = Code("connection-closed")
        /// The connection broke (reset, TLS error).
        public static let connectionBroken = Code("connection-broken")
        /// A deadline passed while waiting for the peer.
        public static let timedOut = Code("timed-out")
        /// A frame announced a length above the configured limit.
        public static let frameTooLarge = Code("frame-too-large")
        /// The connection ended in the middle of a frame.
        public static let truncatedFrame = Code("truncated-frame")
        /// A frame's flag byte or its protobuf envelope could not be decoded.
        public static let malformedFrame = Code("malformed-frame")
        /// A tensor stream broke its own announcement (size, order, hash).
        public static let tensorStream = Code("tensor-stream")
        /// A certificate could not be created or written.
        public static let certificate = Code("certificate")
    }

    public var code: Code
    /// What happened and, where possible, what to do about it.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
