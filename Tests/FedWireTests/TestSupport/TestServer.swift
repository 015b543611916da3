import FedProtocol
import Foundation
import Logging
@testable import FedWire

/// Collects log records so that tests can check what the coordinator logged.
final class LogCapture: @unchecked Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }
    private let lock = NSLock()
    private var storage: [Record] = []

    var records: [Record] { lock.withLock { storage } }
    func append(_ record: Record) { lock.withLock { storage.append(record) } }

    var logger: Logger {
        Logger(label: "test") { _ in CapturingHandler(capture: self) }
    }

    struct CapturingHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            var flat: [String: String] = [:]
            for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { flat[key] = "\(value)" }
            capture.append(Record(level: event.level, message: "\(event.message)", metadata: flat))
        }
    }
}

/// A coordinator-side delegate whose behaviour each test sets.
final class TestServerDelegate: WireServerDelegate, @unchecked Sendable {
    private let lock = NSLock()
    private var refusalList: [ConnectionRefusal] = []
    private var joinedList: [RPCConnection] = []
    private var closedList: [(String, WireError?)] = []
    let onCall: @Sendable (ServerCall) throws -> Void

    init(onCall: @escaping @Sendable (ServerCall) throws -> Void = { _ in throw RPCError(.unimplemented, "no handler") }) {
        self.onCall = onCall
    }

    var refusals: [ConnectionRefusal] { lock.withLock { refusalList } }
    var joined: [RPCConnection] { lock.withLock { joinedList } }
    var closed: [(String, WireError?)] { lock.withLock { closedList } }

    func welcome(_ hello: Hello, from peer: PeerIdentity, on connection: RPCConnection) throws -> Welcome {
        lock.withLock { joinedList.append(connection) }
        return Welcome(federation: "test-federation")
    }
    func handle(_ call: ServerCall) throws { try onCall(call) }
    func connectionClosed(_ connection: RPCConnection, error: WireError?) {
        lock.withLock { closedList.append((connection.peer.commonName, error)) }
    }
    func connectionRefused(_ refusal: ConnectionRefusal) { lock.withLock { refusalList.append(refusal) } }
}

/// A running WireServer on 127.0.0.1, port 0, stopped when the value goes away.
final class TestServer: @unchecked Sendable {
    let server: WireServer
    let delegate: TestServerDelegate
    let logs = LogCapture()
    let federation: TestFederation

    init(federation: TestFederation = sharedFederation, host: String = "127.0.0.1",
         delegate: TestServerDelegate = TestServerDelegate(),
         configure: (inout WireServer.Configuration) -> Void = { _ in }) throws {
        self.federation = federation
        self.delegate = delegate
        var configuration = WireServer.Configuration(tls: federation.serverTLS)
        configuration.host = host
        configure(&configuration)
        server = try WireServer(configuration: configuration, delegate: delegate, logger: logs.logger)
        server.start()
    }

    deinit { server.stop() }

    var port: UInt16 { server.port }

    /// Connects and joins as `agent`.
    func connect(
        _ agent: String = "hospital-a", host: String = "127.0.0.1", hello: Hello = Hello(agentName: "test"),
        options: ConnectionOptions = ConnectionOptions(),
        handler: @escaping RPCConnection.CallHandler = { _ in throw RPCError(.unimplemented, "agent has no handler") }
    ) throws -> (RPCConnection, Welcome) {
        try WireClient.connect(
            host: host, port: port, context: try federation.clientContext(agent), hello: hello, options: options,
            timeout: 10, logger: Logger(label: "agent") { _ in SwiftLogNoOpLogHandler() }, handler: handler)
    }

    /// A raw TLS connection as `agent`, with the handshake done and no framing on top.
    func rawConnection(_ agent: String = "hospital-a") throws -> TLSConnection {
        let deadline = Deadline.after(seconds: 10)
        let socket = try Socket.connect(host: "127.0.0.1", port: port, deadline: deadline)
        let tls = try TLSConnection(
            socket: socket, context: try federation.clientContext(agent), remoteAddress: nil, expectedServerName: "127.0.0.1")
        try tls.handshake(deadline: deadline)
        return tls
    }

    /// Waits until `condition` holds, up to `seconds`.
    func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        FedWireTests.eventually(seconds, condition)
    }
}

/// Waits until `condition` holds, up to `seconds`.
func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Deadline.after(seconds: seconds)
    while !deadline.hasPassed {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

extension TLSConnection {
    /// Writes raw bytes (test helper).
    func writeAll(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0, stallSeconds: 10) }
    }

    /// Reads frames until an envelope with a status on call `callID` arrives, or the connection ends.
    func readStatus(callID: UInt64? = nil, seconds: Double = 10) -> RPCStatus? {
        let reader = FrameReader(connection: self, maxFrameBytes: 16 << 20, frameTimeout: seconds)
        let deadline = Deadline.after(seconds: seconds)
        while !deadline.hasPassed {
            guard let frame = try? reader.readFrame(idleDeadline: deadline),
                let envelope = try? frame.withUnsafeBytes({ try Envelope(decoding: $0) })
            else { return nil }
            if let status = envelope.status, callID == nil || envelope.callID == callID { return status }
        }
        return nil
    }
}

/// A Join request frame, encoded.
func joinFrame(callID: UInt64 = 1, hello: Hello = Hello(agentName: "raw")) throws -> [UInt8] {
    var buffer: [UInt8] = []
    let length = try Envelope(callID: callID, method: Methods.join, endOfStream: true, body: .hello(hello))
        .encodeFrame(into: &buffer, maxFrameBytes: 1 << 20)
    return Array(buffer[..<length])
}
