import FedHashing
import FedProtocol
import Foundation
import Synchronization
import Testing
@testable import FedWire

/// Peak resident memory of this process (VmHWM), in bytes.
func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return 0 }
    return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) * 1024
}

/// Chunked Float32 tensors over loopback mTLS: announced size, in-order chunks, end-to-end CRC-32C.
@Suite("Tensor streams")
struct TensorStreamTests {
    /// Runs `agentHandler` as the agent's Train handler and returns the coordinator-side
    /// connection to it.
    static func agent(
        _ server: TestServer, _ agentHandler: @escaping @Sendable (ServerCall) throws -> Void
    ) throws -> (agentSide: RPCConnection, coordinatorSide: RPCConnection) {
        let (connection, _) = try server.connect("hospital-a", handler: agentHandler)
        guard server.eventually(5, { server.delegate.joined.count == 1 }), let joined = server.delegate.joined.first else {
            throw WireError(.connectionClosed, "agent did not join")
        }
        return (connection, joined)
    }

    @Test("A tensor moves into a destination buffer with its CRC-32C checked, both directions")
    func roundTrip() throws {
        let server = try TestServer()
        let received = Mutex<[Float]>([])
        let (agentSide, coordinator) = try Self.agent(server) { call in
            switch call.method {
            case Methods.train:
                guard case .trainTask(let task) = try call.receiveOnly() else { throw RPCError(.invalidArgument, "task first") }
                var floats = [Float](repeating: 0, count: 3 * 100_001)
                let summary = try floats.withUnsafeMutableBufferPointer { try TensorStream.receive(from: call, into: $0, sha256: true) }
                #expect(try call.receive() == nil)
                // Asked for, the SHA-256 of the bytes comes with the CRC.
                #expect(summary.sha256 == floats.withUnsafeBytes { SHA256Hasher.hash($0) })
                #expect(task.tensorCount == 1)
                received.withLock { $0 = floats }
            case Methods.pullUpdate:
                _ = try call.receiveOnly()
                let update = (0..<1000).map { Float($0) * 0.5 }
                _ = try update.withUnsafeBufferPointer { try TensorStream.send(name: "layer0.weight", shape: [10, 100], floats: $0, to: call) }
            default: throw RPCError(.unimplemented, call.method)
            }
        }
        defer { agentSide.close() }
        // Coordinator → agent: a 1.2 MB tensor in 64 KiB chunks (client-streaming Train).
        let weights = (0..<(3 * 100_001)).map { Float($0 % 977) - 400.25 }
        let call = try coordinator.makeCall(method: Methods.train, timeout: 30)
        var task = TrainTask()
        task.tensorCount = 1
        try call.send(.trainTask(task))
        let crc = try weights.withUnsafeBufferPointer {
            try TensorStream.send(name: "w", shape: [3, 100_001], floats: $0, chunkBytes: 64 << 10, to: call)
        }
        try call.finishSending()
        try call.expectEnd()
        #expect(received.withLock { $0 } == weights)
        #expect(crc == weights.withUnsafeBytes { CRC32C.portableChecksum($0) })
        // Agent → coordinator: PullUpdate streams the update back.
        let pull = try coordinator.makeCall(method: Methods.pullUpdate, timeout: 30)
        try pull.send(.fetchUpdate(FetchUpdate(roundID: 1, modelVersion: 0)), endOfStream: true)
        var update = [Float](repeating: 0, count: 1000)
        let summary = try update.withUnsafeMutableBufferPointer { try TensorStream.receive(from: pull, into: $0) }
        try pull.expectEnd()
        #expect(summary.header.name == "layer0.weight" && summary.header.shape == [10, 100])
        #expect(summary.sha256 == nil)
        #expect(update == (0..<1000).map { Float($0) * 0.5 })
    }

    @Test("Large chunks land straight in their tensor's memory, never in another tensor's, even behind a slow consumer")
    func landing() throws {
        let server = try TestServer()
        // Three tensors of 3 MB in 1 MiB chunks (frames above the reader's own 256 KiB buffer).
        let counts = [750_001, 750_000, 749_999]
        let received = Mutex<[[Float]]>([])
        let (agentSide, coordinator) = try Self.agent(server) { call in
            guard case .trainTask = try call.receiveOnly() else { throw RPCError(.invalidArgument, "task first") }
            var tensors: [[Float]] = []
            for (index, count) in counts.enumerated() {
                // The reader runs ahead while the consumer dawdles: chunks read before the landing
                // exists are copied, the later ones land; the next tensor's must not land here.
                usleep(index == 1 ? 300_000 : 50_000)
                let header = try TensorStream.readHeader(from: call)
                usleep(100_000)
                var floats = [Float](repeating: .nan, count: count)
                _ = try floats.withUnsafeMutableBufferPointer { try TensorStream.receive(from: call, header: header, into: $0) }
                tensors.append(floats)
            }
            #expect(try call.receive() == nil)
            received.withLock { $0 = tensors }
        }
        defer { agentSide.close() }
        let tensors = counts.enumerated().map { index, count in (0..<count).map { Float(($0 * 7 + index * 1_000_003) % 65_521) - 9.5 } }
        let call = try coordinator.makeCall(method: Methods.train, timeout: 30)
        var task = TrainTask()
        task.tensorCount = UInt32(counts.count)
        try call.send(.trainTask(task))
        for (index, tensor) in tensors.enumerated() {
            _ = try tensor.withUnsafeBufferPointer { try TensorStream.send(name: "t\(index)", shape: [$0.count], floats: $0, to: call) }
        }
        try call.finishSending()
        try call.expectEnd()
        #expect(received.withLock { $0 } == tensors)
    }

    @Test("Large chunks are checked by the reader as they arrive, landed or not; a NaN is found where it is")
    func readerChecks() throws {
        let server = try TestServer()
        // 4 MB: three chunks of 1 MiB and one of 0.85 MB, all frames above the reader's own 256 KiB
        // buffer (a smaller frame is not checked by the reader: its consumer checks it).
        let count = 1_000_000
        let bad = 600_001
        let seen = Mutex<(checked: Int, nonFinite: UInt64?, landed: [Float])>((0, nil, []))
        let (agentSide, coordinator) = try Self.agent(server) { call in
            guard case .trainTask = try call.receiveOnly() else { throw RPCError(.invalidArgument, "task first") }
            // The first tensor message by message: every chunk carries the reader's check of its bytes.
            let header = try TensorStream.readHeader(from: call)
            var checked = 0
            while case .tensorChunk(let chunk)? = try call.receive() {
                let check = try #require(chunk.data.check)
                #expect(check.crc32c == chunk.data.withUnsafeBytes { CRC32C.portableChecksum($0) })
                let base = Int(chunk.offset) / 4
                let expected = (base..<base + chunk.data.count / 4).contains(bad) ? bad - base : nil
                #expect(check.checkedFloats && check.firstNonFinite == expected)
                checked += chunk.data.count
            }
            // The second, with the NaN check: the element is reported from the reader's check.
            var nonFinite: UInt64?
            _ = try? TensorStream.receive(from: call, maxTotalBytes: header.totalBytes, nonFinite: { element in
                nonFinite = element
                throw RPCError(.invalidArgument, "non-finite at \(element)")
            }) { _, _ in }
            while let message = try call.receive() { if case .tensorTrailer = message { break } }  // the rest of it
            // The third lands in place, checked all the same (its CRC against the trailer's).
            var landed = [Float](repeating: 0, count: count)
            _ = try landed.withUnsafeMutableBufferPointer { try TensorStream.receive(from: call, into: $0) }
            seen.withLock { $0 = (checked, nonFinite, landed) }
        }
        defer { agentSide.close() }
        var values = (0..<count).map { Float($0 % 1000) * 0.125 }
        values[bad] = .nan
        let finite = (0..<count).map { Float($0) }
        let call = try coordinator.makeCall(method: Methods.train, timeout: 30)
        try call.send(.trainTask(TrainTask()))
        for tensor in [values, values, finite] {
            _ = try tensor.withUnsafeBufferPointer { try TensorStream.send(name: "w", shape: [count], floats: $0, to: call) }
        }
        try call.finishSending()
        _ = try? call.expectEnd()
        let result = seen.withLock { $0 }
        #expect(result.checked == count * 4)
        #expect(result.nonFinite == UInt64(bad))
        let landedIntact = result.landed == finite  // (a failed == on 10^6 floats would have the test library diff them)
        #expect(landedIntact)
    }

    @Test("A tensor above 2 GiB streams from a generator, CRC-32C checked, without holding it in memory")
    func beyondTwoGiB() throws {
        let elements: UInt64 = 550_000_000  // 2.2 GB: past protobuf's 2 GiB message limit
        let server = try TestServer()
        let outcome = Mutex<(bytes: UInt64, chunks: Int, mismatches: Int)>((0, 0, 0))
        let (agentSide, coordinator) = try Self.agent(server) { call in
            let summary = try TensorStream.receive(from: call, maxTotalBytes: elements * 4) { offset, bytes in
                // The generator stamps each chunk with its offset; check it arrived where it belongs.
                let stamp = bytes.loadUnaligned(as: UInt64.self)
                outcome.withLock {
                    $0.bytes += UInt64(bytes.count)
                    if stamp != offset { $0.mismatches += 1 }
                }
            }
            outcome.withLock { $0.chunks = summary.chunks }
        }
        defer { agentSide.close() }
        let before = peakResidentBytes()
        let call = try coordinator.makeCall(method: Methods.train, timeout: 300)
        var prepared = false
        _ = try TensorStream.send(name: "huge", shape: [elements], to: call) { offset, chunk in
            if !prepared {
                chunk.initializeMemory(as: UInt8.self, repeating: 0x3F)
                prepared = true
            }
            chunk.storeBytes(of: offset, as: UInt64.self)
        }
        try call.finishSending()
        try call.expectEnd()
        let result = outcome.withLock { $0 }
        #expect(result.bytes == elements * 4)
        #expect(result.bytes > UInt64(Int32.max))
        #expect(result.chunks == Int((elements * 4 + UInt64(TensorStream.defaultChunkBytes) - 1) / UInt64(TensorStream.defaultChunkBytes)))
        #expect(result.mismatches == 0)
        // Holding the tensor even once would add 2.2 GB; chunks and buffers add a few dozen MB.
        let growth = peakResidentBytes() - before
        #expect(growth < 512 << 20, "peak RSS grew by \(growth >> 20) MiB")
    }

    /// Keeps what is sent to it.
    final class RecordingSink: MessageSink {
        var messages: [Message] = []
        func send(_ message: Message) throws { messages.append(message) }
    }

    @Test("A sender checking its values stops before the chunk holding the first NaN or infinity leaves, naming its element")
    func senderStopsAtNonFinite() throws {
        for (bad, value) in [(0, Float.nan), (5_000, Float.infinity), (9_999, -Float.infinity)] {
            var floats = (0..<10_000).map { Float($0) * 0.25 }
            floats[bad] = value
            let sink = RecordingSink()
            var reported: UInt64?
            #expect(throws: RPCError.self) {
                try floats.withUnsafeBufferPointer { values in
                    try TensorStream.send(name: "w", shape: [10_000], floats: values, chunkBytes: 4_000, to: sink) { element in
                        reported = element
                        throw RPCError(.aborted, "non-finite at \(element)")
                    }
                }
            }
            #expect(reported == UInt64(bad))
            // The header and the chunks before the bad one's: 1000 floats per chunk.
            let chunks = sink.messages.filter { if case .tensorChunk = $0 { true } else { false } }
            #expect(sink.messages.count == 1 + bad / 1000 && chunks.count == bad / 1000)
        }
        // All finite: the CRC sent is the bytes' CRC, as without the check.
        let finite = (0..<10_000).map { Float($0) * 0.25 }
        let sink = RecordingSink()
        let crc = try finite.withUnsafeBufferPointer { values in
            try TensorStream.send(name: "w", shape: [10_000], floats: values, chunkBytes: 4_000, to: sink) { _ in Issue.record("all values are finite") }
        }
        #expect(crc == finite.withUnsafeBytes { CRC32C.portableChecksum($0) })
        #expect(sink.messages.count == 12)
    }

    @Test("A corrupted chunk is detected by the end-to-end CRC-32C (DATA_LOSS)")
    func corruptedChunk() throws {
        let server = try TestServer()
        let (agentSide, coordinator) = try Self.agent(server) { call in
            _ = try TensorStream.receive(from: call) { _, _ in }
        }
        defer { agentSide.close() }
        let original = [UInt8](repeating: 1, count: 4000)
        let crc = original.withUnsafeBytes { CRC32C.checksum($0) }
        var corrupted = original
        corrupted[1234] ^= 0x01
        let call = try coordinator.makeCall(method: Methods.train, timeout: 10)
        try call.send(.tensorHeader(TensorHeader(name: "w", shape: [1000], totalBytes: 4000, chunkBytes: 4000)))
        try call.send(.tensorChunk(TensorChunk(offset: 0, data: ByteView(corrupted))))
        try call.send(.tensorTrailer(TensorTrailer(crc32c: crc)), endOfStream: true)
        let error = #expect(throws: RPCError.self) { try call.expectEnd() }
        #expect(error?.code == .dataLoss)
        #expect(error?.message.contains("corrupted") == true)
    }

    struct LyingStream: Sendable, CustomStringConvertible {
        var description: String
        var header: TensorHeader
        var chunks: [(UInt64, Int)]
        var code: RPCStatus.Code
    }

    @Test("A stream that breaks its announcement is refused", arguments: [
        LyingStream(description: "more bytes than announced", header: TensorHeader(name: "w", shape: [100], totalBytes: 400, chunkBytes: 400),
                    chunks: [(0, 400), (400, 80)], code: .invalidArgument),
        LyingStream(description: "fewer bytes than announced", header: TensorHeader(name: "w", shape: [100], totalBytes: 400, chunkBytes: 400),
                    chunks: [(0, 200)], code: .invalidArgument),
        LyingStream(description: "shape and size disagree", header: TensorHeader(name: "w", shape: [10, 10], totalBytes: 404, chunkBytes: 404),
                    chunks: [], code: .invalidArgument),
        LyingStream(description: "a gap between chunks", header: TensorHeader(name: "w", shape: [100], totalBytes: 400, chunkBytes: 200),
                    chunks: [(0, 200), (204, 196)], code: .invalidArgument),
        LyingStream(description: "a chunk above its announced size", header: TensorHeader(name: "w", shape: [100], totalBytes: 400, chunkBytes: 100),
                    chunks: [(0, 400)], code: .invalidArgument),
        LyingStream(description: "above the receiver's limit", header: TensorHeader(name: "w", shape: [1 << 30], totalBytes: 4 << 30, chunkBytes: 4 << 20),
                    chunks: [], code: .resourceExhausted),
    ])
    func lyingStream(_ stream: LyingStream) throws {
        let server = try TestServer()
        let (agentSide, coordinator) = try Self.agent(server) { call in
            _ = try TensorStream.receive(from: call, maxTotalBytes: 1 << 20) { _, _ in }
        }
        defer { agentSide.close() }
        let call = try coordinator.makeCall(method: Methods.train, timeout: 10)
        try call.send(.tensorHeader(stream.header))
        for (offset, count) in stream.chunks {
            try? call.send(.tensorChunk(TensorChunk(offset: offset, data: ByteView([UInt8](repeating: 0, count: count)))))
        }
        try? call.send(.tensorTrailer(TensorTrailer(crc32c: 0)), endOfStream: true)
        let error = #expect(throws: RPCError.self) { try call.expectEnd() }
        #expect(error?.code == stream.code, "\(stream): \(String(describing: error))")
        #expect(!agentSide.isClosed, "a refused stream ends the call, not the connection")
    }
}
