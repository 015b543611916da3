import FedCore
@testable import FedProtocol
import Foundation
import Testing
@testable import FedWire

@Suite("Envelope codec")
struct EnvelopeCodecTests {
    static func roundTrip(_ envelope: Envelope) throws -> Envelope {
        let bytes = envelope.serializedBytes()
        return try bytes.withUnsafeBytes { try Envelope(decoding: $0) }
    }

    @Test("Routing fields and every message survive a round trip")
    func everyMessage() throws {
        var task = TrainTask()
        task.roundID = 7
        task.modelVersion = 6
        task.modelSHA256 = Array(repeating: 0xAB, count: 32)
        task.learningRate = 0.05
        task.proximalMu = 0.01
        task.deadlineUnixMs = 1_800_000_000_000
        task.seed = 42
        task.tensorCount = 3
        var ready = UpdateReady()
        ready.roundID = 7
        ready.exampleCount = 455
        ready.trainLoss = 0.25
        var request = EvaluationRequest()
        request.roundID = 9
        var result = EvaluationResult()
        result.accuracy = 0.946
        result.rocAUC = 0.992
        let schema = DataSchemaSummary(featureColumns: ["age", "bmi"], labelColumn: "outcome", rowCount: 120, schemaSHA256: [1, 2, 3])
        let messages: [Message] = [
            .hello(Hello(protocolVersion: 1, softwareVersion: "fedagent 0.1.0", agentName: "hospital-a", schema: schema)),
            .welcome(Welcome(agentID: "hospital-a", federation: "f", heartbeatIntervalMs: 5000)),
            .heartbeat(Heartbeat(sequence: 3, sentUnixMs: 123, activity: "training round 2")),
            .trainTask(task),
            .tensorHeader(TensorHeader(name: "layer0.weight", shape: [30, 64], totalBytes: 7680, chunkBytes: 4096)),
            .tensorTrailer(TensorTrailer(crc32c: 0xE306_9283)),
            .updateReady(ready),
            .fetchUpdate(FetchUpdate(roundID: 7, modelVersion: 6)),
            .cancelTask(CancelTask(roundID: 7, reason: "round closed")),
            .evaluationRequest(request),
            .evaluationResult(result),
            .empty,
        ]
        for message in messages {
            let envelope = Envelope(callID: 5, method: Methods.train, timeoutMs: 1500, metadata: ["x-round": "7", "k": "v"],
                                    endOfStream: true, cancel: false, status: RPCStatus(.deadlineExceeded, "late"), body: message)
            let decoded = try Self.roundTrip(envelope)
            #expect(decoded.callID == 5 && decoded.method == Methods.train && decoded.timeoutMs == 1500)
            #expect(decoded.metadata == ["x-round": "7", "k": "v"] && decoded.endOfStream && !decoded.cancel)
            #expect(decoded.status == RPCStatus(.deadlineExceeded, "late"))
            #expect(String(describing: try #require(decoded.body)) == String(describing: message), "\(message.name)")
        }
    }

    @Test("Tensor chunk bytes survive, and decoding does not copy them out of the frame's tree")
    func chunk() throws {
        let payload = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let decoded = try Self.roundTrip(Envelope(callID: 2, body: .tensorChunk(TensorChunk(offset: 4096, data: ByteView(payload)))))
        guard case .tensorChunk(let chunk) = decoded.body else {
            Issue.record("expected a chunk")
            return
        }
        #expect(chunk.offset == 4096)
        #expect(chunk.data.array == payload)
    }

    @Test("Unknown status codes survive; names are gRPC's")
    func statusCodes() throws {
        #expect(RPCStatus.Code.deadlineExceeded.description == "DEADLINE_EXCEEDED")
        #expect(RPCStatus.Code(rawValue: 99).description == "CODE_99")
        let decoded = try Self.roundTrip(Envelope(callID: 0, status: RPCStatus(RPCStatus.Code(rawValue: 99), "future")))
        #expect(decoded.status?.code.rawValue == 99)
    }

    @Test("Garbage is refused with malformedFrame, never a crash", arguments: 0..<200)
    func garbage(seed: Int) throws {
        var generator = SplitMix64(seed: UInt64(seed))
        let count = Int(generator.next() % 512)
        let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        do {
            _ = try bytes.withUnsafeBytes { try Envelope(decoding: $0) }
        } catch let error as WireError {
            #expect(error.code == .malformedFrame)
        }
    }

    @Test("An envelope above the frame limit is refused on the sending side")
    func sendLimit() throws {
        var buffer: [UInt8] = []
        let envelope = Envelope(callID: 2, body: .tensorChunk(TensorChunk(offset: 0, data: ByteView([UInt8](repeating: 0, count: 2000)))))
        let error = #expect(throws: WireError.self) { try envelope.encodeFrame(into: &buffer, maxFrameBytes: 1000) }
        #expect(error?.code == .frameTooLarge)
    }
}

@Suite("Chunk fast path")
struct ChunkFastPathTests {
    /// The chunk the fast path finds in `frame`, as FedWire's reader builds it (nil: protobuf-c's turn).
    static func fastChunk(_ frame: UnsafeRawBufferPointer) -> (callID: UInt64, chunk: TensorChunk)? {
        guard let prefix = FedCodec.bulkPrefix(frame, frameLength: frame.count) else { return nil }
        let data = ByteView(bytes: UnsafeRawBufferPointer(rebasing: frame[prefix.dataStart...]), owner: nil)
        return (prefix.callID, TensorChunk(offset: prefix.offset, data: data))
    }

    @Test("Plain chunk envelopes decode in place exactly as protobuf-c decodes them", arguments: [
        (UInt64(1), UInt64(0), 300_000), (2, 4096, 1 << 20), (1 << 40, 1 << 33, 262_145), (7, 0, 1),
    ])
    func matchesProtobufC(callID: UInt64, offset: UInt64, size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let bytes = Envelope(callID: callID, body: .tensorChunk(TensorChunk(offset: offset, data: ByteView(payload)))).serializedBytes()
        let reference = try bytes.withUnsafeBytes { try Envelope(decoding: $0) }
        guard case .tensorChunk(let b) = reference.body else {
            Issue.record("not a chunk")
            return
        }
        try bytes.withUnsafeBytes { frame in
            let (fastCallID, a) = try #require(Self.fastChunk(frame))
            #expect(fastCallID == reference.callID && a.offset == b.offset)
            #expect(a.data.array == b.data.array)
        }
    }

    @Test("The tags it reads come from the generated descriptors: call_id 1, tensor_chunk 15, offset 1, data 2")
    func tagsFromTheSchema() {
        let tags = ChunkFastPath.Tags.current
        #expect([tags.callID, tags.tensorChunk, tags.offset, tags.data] == [1 << 3, 15 << 3 | 2, 1 << 3, 2 << 3 | 2])
    }

    @Test("Any other envelope shape is left to protobuf-c")
    func fallsBack() {
        let chunk = TensorChunk(offset: 0, data: ByteView([1, 2, 3]))
        let others = [
            Envelope(callID: 1, endOfStream: true, body: .tensorChunk(chunk)),
            Envelope(callID: 1, status: .ok, body: .tensorChunk(chunk)),
            Envelope(callID: 1, method: "/x", body: .tensorChunk(chunk)),
            Envelope(callID: 1, body: .heartbeat(Heartbeat())),
            Envelope(callID: 0, body: .tensorChunk(TensorChunk(offset: 0, data: ByteView([])))),
        ]
        for envelope in others {
            let bytes = envelope.serializedBytes()
            #expect(bytes.withUnsafeBytes { Self.fastChunk($0) } == nil)
        }
        var truncated = Envelope(callID: 1, body: .tensorChunk(chunk)).serializedBytes()
        truncated.removeLast()
        #expect(truncated.withUnsafeBytes { Self.fastChunk($0) } == nil)
    }
}
