import FedProtocol
import Foundation
import Synchronization
import Testing
@testable import FedWire

/// The write stall bound is about progress, not duration: a peer that reads slowly but keeps
/// reading is served to the end; one that stops reading is cut once the socket stays full.
@Suite("Send stall")
struct SendStallTests {
    static let chunkBytes = 4 << 20

    /// What each PullUpdate handler's sending came to, in order.
    final class Outcomes: Sendable {
        private let list = Mutex<[Result<Int, WireError>]>([])
        func append(_ outcome: Result<Int, WireError>) { list.withLock { $0.append(outcome) } }
        var all: [Result<Int, WireError>] { list.withLock { $0 } }
    }

    /// A server whose PullUpdate handler sends `roundID` chunks of 4 MiB, with a 0.5 s stall bound.
    static func server(sent: Outcomes) throws -> TestServer {
        try TestServer(delegate: TestServerDelegate { call in
            guard case .fetchUpdate(let fetch) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "FetchUpdate expected") }
            let bytes = ByteView([UInt8](repeating: 3, count: chunkBytes))
            do {
                for index in 0..<Int(fetch.roundID) {
                    try call.send(.tensorChunk(TensorChunk(offset: UInt64(index * chunkBytes), data: bytes)))
                }
                sent.append(.success(Int(fetch.roundID)))
            } catch let error as WireError {
                sent.append(.failure(error))
                throw error
            }
        }) { $0.connection.writeStallTimeout = 0.5 }
    }

    static func pull(chunks: UInt64, callID: UInt64) throws -> [UInt8] {
        var buffer: [UInt8] = []
        let length = try Envelope(callID: callID, method: Methods.pullUpdate, endOfStream: true,
                                  body: .fetchUpdate(FetchUpdate(roundID: chunks, modelVersion: 0)))
            .encodeFrame(into: &buffer, maxFrameBytes: 1 << 20)
        return Array(buffer[..<length])
    }

    @Test("A reader taking 128 KiB every 50 ms gets 12 MiB (each 4 MiB frame takes over 1 s, the bound is 0.5 s); one that stops is cut")
    func slowButSteadyReader() throws {
        let sent = Outcomes()
        let server = try Self.server(sent: sent)
        let socket = try Socket.connect(host: "127.0.0.1", port: server.port, deadline: Deadline.after(seconds: 10))
        socket.setBufferSizes(bytes: 64 << 10)
        let tls = try TLSConnection(socket: socket, context: try server.federation.clientContext("hospital-a"),
                                    remoteAddress: nil, expectedServerName: "127.0.0.1")
        try tls.handshake(deadline: .after(seconds: 10))
        defer { tls.close() }
        try tls.writeAll(try joinFrame())
        // The Welcome first: calls come after the Join's answer, as an agent's do.
        _ = try FrameReader(connection: tls, maxFrameBytes: 1 << 20, frameTimeout: 10).readFrame(idleDeadline: .after(seconds: 10))
        try tls.writeAll(try Self.pull(chunks: 3, callID: 3))
        let started = Deadline.now
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        let expected = 3 * Self.chunkBytes
        while received < expected && -started.remainingSeconds < 30 {
            var tick = 0
            while tick < 128 << 10 && received + tick < expected {
                let n = try buffer.withUnsafeMutableBytes { try tls.read(into: $0, deadline: Deadline.after(seconds: 5)) }
                if n == 0 { break }
                tick += n
            }
            received += tick
            usleep(50_000)
        }
        let seconds = -started.remainingSeconds
        #expect(received >= expected, "read \(received) bytes in \(seconds) s")
        #expect(seconds > 1, "slow enough that a whole frame takes longer than the bound: \(seconds) s")
        #expect(server.eventually(5) { sent.all.count == 1 })
        if case .failure(let error)? = sent.all.first { Issue.record("the slow reader was cut: \(error)") }
        #expect(!server.delegate.closed.contains { $0.0 == "hospital-a" })

        // Now it stops reading: the send fails within the bound once the buffers are full.
        try tls.writeAll(try Self.pull(chunks: 8, callID: 5))
        #expect(server.eventually(15) { sent.all.count == 2 })
        guard case .failure(let error)? = sent.all.last else {
            Issue.record("the stopped reader was not cut")
            return
        }
        #expect(error.code == .timedOut)
        #expect(error.message.contains("took no bytes for 0.5 s"), "\(error.message)")
        #expect(server.eventually(5) { server.delegate.closed.contains { $0.0 == "hospital-a" } })
    }
}
