import FedProtocol
import Foundation
import Testing
@testable import FedWire

@Suite("Frame header")
struct FrameHeaderTests {
    @Test("Round trip, and the limit is checked before allocation")
    func headerLimits() throws {
        var bytes = [UInt8](repeating: 0, count: 5)
        bytes.withUnsafeMutableBytes { FrameHeader(length: 1024).write(into: $0) }
        #expect(bytes == [0, 0, 0, 4, 0])
        let atLimit = try bytes.withUnsafeBytes { try FrameHeader.parse($0, maxLength: 1024) }
        #expect(atLimit.length == 1024)
        let over = #expect(throws: WireError.self) { try bytes.withUnsafeBytes { try FrameHeader.parse($0, maxLength: 1023) } }
        #expect(over?.code == .frameTooLarge)
        let huge: [UInt8] = [0, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(throws: WireError.self) { try huge.withUnsafeBytes { try FrameHeader.parse($0, maxLength: 8 << 20) } }
        let compressed: [UInt8] = [1, 0, 0, 0, 1]
        let flagError = #expect(throws: WireError.self) { try compressed.withUnsafeBytes { try FrameHeader.parse($0, maxLength: 10) } }
        #expect(flagError?.code == .malformedFrame)
    }
}

/// Framing over real loopback TLS: drip feeding, limits, garbage, truncation and stalls. Each
/// bad frame ends only its own connection, with a status first where the stream allows it.
@Suite("Framing over TLS")
struct FramingTests {
    @Test("A Join frame fed one byte at a time (one TLS record per byte) is answered")
    func dripFeed() throws {
        let server = try TestServer()
        let tls = try server.rawConnection()
        defer { tls.close() }
        for byte in try joinFrame() { try tls.writeAll([byte]) }
        let reader = FrameReader(connection: tls, maxFrameBytes: 1 << 20, frameTimeout: 10)
        let frame = try #require(try reader.readFrame(idleDeadline: .after(seconds: 10)))
        let envelope = try frame.withUnsafeBytes { try Envelope(decoding: $0) }
        guard case .welcome(let welcome) = envelope.body else {
            Issue.record("expected Welcome, got \(String(describing: envelope.body?.name))")
            return
        }
        #expect(welcome.agentID == "hospital-a")
    }

    /// An envelope of exactly `size` bytes (a tensor chunk padded to fit).
    static func frame(ofEnvelopeSize size: Int, callID: UInt64 = 0) throws -> [UInt8] {
        for padding in stride(from: size, through: max(0, size - 32), by: -1) {
            let envelope = Envelope(callID: callID, body: .tensorChunk(TensorChunk(offset: 0, data: ByteView([UInt8](repeating: 7, count: padding)))))
            if envelope.serializedBytes().count == size {
                var buffer: [UInt8] = []
                let length = try envelope.encodeFrame(into: &buffer, maxFrameBytes: size)
                return Array(buffer[..<length])
            }
        }
        throw WireError(.malformedFrame, "no padding gives \(size) bytes")
    }

    @Test("A frame exactly at the limit is accepted; one byte over gets RESOURCE_EXHAUSTED and the connection ends")
    func exactLimit() throws {
        let limit = 64 * 1024
        let server = try TestServer { $0.connection.maxFrameBytes = limit }
        let tls = try server.rawConnection()
        defer { tls.close() }
        // At the limit: accepted (a chunk on call 0 is ignored), and the connection still answers Join.
        try tls.writeAll(try Self.frame(ofEnvelopeSize: limit))
        try tls.writeAll(try joinFrame())
        let reader = FrameReader(connection: tls, maxFrameBytes: 1 << 20, frameTimeout: 10)
        let welcome = try #require(try reader.readFrame(idleDeadline: .after(seconds: 10)))
        #expect(try welcome.withUnsafeBytes { try Envelope(decoding: $0) }.status == nil)
        // One byte over: refused before allocation, status first, then the connection closes.
        let over = try Self.frame(ofEnvelopeSize: limit + 1)
        #expect(over.count == FrameHeader.size + limit + 1)
        try? tls.writeAll(over)
        let status = tls.readStatus(callID: 0)
        #expect(status?.code == .resourceExhausted, "got \(String(describing: status))")
        #expect(status?.message.contains("limit of \(limit)") == true)
        #expect(server.logs.records.contains { $0.message == "Oversized frame; closing the connection" })
    }

    @Test("A frame announcing 4 GiB is refused without allocating it")
    func hugeAnnouncedLength() throws {
        let server = try TestServer()
        let tls = try server.rawConnection()
        defer { tls.close() }
        try tls.writeAll([0, 0xFF, 0xFF, 0xFF, 0xF0])
        #expect(tls.readStatus(callID: 0)?.code == .resourceExhausted)
    }

    @Test("Random garbage gets INVALID_ARGUMENT and ends only that connection")
    func garbage() throws {
        let server = try TestServer()
        let (good, _) = try server.connect("hospital-b")
        defer { good.close() }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5 {
            let tls = try server.rawConnection()
            // A valid prefix with a random, undecodable payload.
            var payload = (0..<300).map { _ in UInt8.random(in: 0...255, using: &generator) }
            payload[0] = 0xFF  // field 31, wire type 7: never valid protobuf
            var frame: [UInt8] = [0, 0, 0, 1, 44]
            frame += payload
            try? tls.writeAll(frame)
            #expect(tls.readStatus(callID: 0)?.code == .invalidArgument)
            tls.close()
        }
        // A compressed-flag frame is refused the same way.
        let tls = try server.rawConnection()
        try? tls.writeAll([1, 0, 0, 0, 2, 8, 1])
        #expect(tls.readStatus(callID: 0)?.code == .invalidArgument)
        tls.close()
        // The other agent's connection was never disturbed.
        #expect(!good.isClosed)
        // It still gets answers (this test server implements nothing, so: UNIMPLEMENTED).
        let answer = #expect(throws: RPCError.self) { try good.unary(Methods.announceUpdate, .updateReady(UpdateReady()), timeout: 5) }
        #expect(answer?.code == .unimplemented)
    }

    @Test("A truncated frame (peer closes mid-frame) ends that connection and the server keeps serving")
    func truncatedFrame() throws {
        let server = try TestServer()
        let tls = try server.rawConnection()
        let frame = try joinFrame()
        try tls.writeAll(Array(frame.prefix(frame.count - 3)))
        tls.close()
        usleep(100_000)
        let (again, welcome) = try server.connect("hospital-a")
        #expect(welcome.agentID == "hospital-a")
        again.close()
    }

    @Test("A peer that stops sending mid-frame is cut by the read deadline")
    func stalledPeer() throws {
        let server = try TestServer { $0.connection.frameTimeout = 0.5 }
        let tls = try server.rawConnection()
        defer { tls.close() }
        let frame = try joinFrame()
        try tls.writeAll(Array(frame.prefix(7)))
        let started = Deadline.now
        let status = tls.readStatus(callID: 0, seconds: 10)
        #expect(status?.code == .deadlineExceeded, "got \(String(describing: status))")
        #expect(status?.message.contains("middle of a frame") == true)
        #expect(-started.remainingSeconds < 5)
    }
}
