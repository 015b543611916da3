import CProtobufC
import FedHashing
import FedWire

/// FedCoord's messages (proto/fedcoord.proto) as FedWire carries them: protobuf-c envelopes,
/// tensor chunks as bulk data, ``Heartbeat`` on call 0, ``Methods/join`` first.
public enum FedCodec: WireCodec {
    public typealias Body = Message

    public static var joinMethod: String { Methods.join }

    public static func encodeFrame(_ envelope: Envelope, into buffer: inout [UInt8], maxFrameBytes: Int) throws -> Int {
        try envelope.encodeFrame(into: &buffer, maxFrameBytes: maxFrameBytes)
    }

    public static func withFrameSegments<R>(
        _ envelope: Envelope, maxFrameBytes: Int, _ body: ([UnsafeRawBufferPointer]) throws -> R
    ) throws -> R {
        try envelope.withFrameSegments(maxFrameBytes: maxFrameBytes, body)
    }

    public static func decodeFrame(_ frame: UnsafeRawBufferPointer) throws -> Envelope { try Envelope(decoding: frame) }

    public static func bulkPrefix(_ head: UnsafeRawBufferPointer, frameLength: Int) -> BulkPrefix? {
        ChunkFastPath.prefix(head, frameLength: frameLength)
    }

    public static func bulkBody(offset: UInt64, data: ByteView) -> Message { .tensorChunk(TensorChunk(offset: offset, data: data)) }

    public static func bulkData(of body: Message) -> ByteView? {
        guard case .tensorChunk(let chunk) = body else { return nil }
        return chunk.data
    }

    public static func startsBulkStream(_ body: Message) -> Bool {
        guard case .tensorHeader = body else { return false }
        return true
    }

    public static func heartbeat(sequence: UInt64, sentUnixMs: UInt64, activity: String) -> Message {
        .heartbeat(Heartbeat(sequence: sequence, sentUnixMs: sentUnixMs, activity: activity))
    }

    public static func isHeartbeat(_ body: Message) -> Bool {
        guard case .heartbeat = body else { return false }
        return true
    }

    public static func name(of body: Message) -> String { body.name }
}

/// FedWire's generic connection types, carrying FedCoord's messages.
public typealias Envelope = WireEnvelope<Message>
public typealias RPCConnection = WireConnection<FedCodec>
public typealias ServerCall = WireServerCall<FedCodec>
public typealias ClientCall = WireClientCall<FedCodec>
public typealias WireServer = WireListener<FedCodec>

/// The allocator protobuf-c unpacks envelopes with: FedWire's ``RecyclingAllocator``, so that a
/// large chunk's bytes land in a recycled block whose pages are already mapped.
enum EnvelopeAllocator {
    nonisolated(unsafe) static let pointer: UnsafeMutablePointer<ProtobufCAllocator> = {
        let pointer = UnsafeMutablePointer<ProtobufCAllocator>.allocate(capacity: 1)
        pointer.initialize(to: ProtobufCAllocator(
            alloc: { _, size in RecyclingAllocator.allocate(size) },
            free: { _, pointer in RecyclingAllocator.release(pointer) },
            allocator_data: nil))
        return pointer
    }()
}
