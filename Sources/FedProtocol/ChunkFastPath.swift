import CProtobufC
import FedHashing
import FedProtoC
import FedWire

/// Recognizes the one envelope shape that carries bulk data,
/// `Envelope{call_id, tensor_chunk {offset, data}}`, in that order, exactly as this project
/// encodes it, from a frame's first bytes: FedWire then keeps (or lands) the chunk's bytes where
/// they arrived instead of having protobuf-c's unpack copy them. Any other shape (extra fields,
/// other order, another message) goes to protobuf-c, so the wire format is unchanged.
enum ChunkFastPath {
    /// The tags (field number << 3 | wire type) of the fields the fast path reads, taken from the
    /// descriptors protoc-c generated from proto/fedcoord.proto, so that they follow the schema.
    struct Tags {
        var callID, tensorChunk, offset, data: UInt64

        static let current: Tags = {
            func tag(_ message: ProtobufCMessageDescriptor, _ name: String, lengthDelimited: Bool) -> UInt64 {
                let number = withUnsafePointer(to: message) { descriptor in
                    protobuf_c_message_descriptor_get_field_by_name(descriptor, name)?.pointee.id
                }
                guard let number else { preconditionFailure("proto/fedcoord.proto has no field \(name)") }
                return UInt64(number) << 3 | (lengthDelimited ? 2 : 0)
            }
            let envelope = fedcoord__v1__envelope__descriptor, chunk = fedcoord__v1__tensor_chunk__descriptor
            return Tags(callID: tag(envelope, "call_id", lengthDelimited: false), tensorChunk: tag(envelope, "tensor_chunk", lengthDelimited: true),
                        offset: tag(chunk, "offset", lengthDelimited: false), data: tag(chunk, "data", lengthDelimited: true))
        }()
    }

    /// Where a plain tensor-chunk envelope's data starts, parsed from the first bytes of a frame
    /// of `frameLength` bytes (the data runs to the end of the frame); nil for anything else.
    static func prefix(_ head: UnsafeRawBufferPointer, frameLength: Int) -> BulkPrefix? {
        let tags = Tags.current
        var reader = Reader(bytes: head)
        guard reader.tag() == tags.callID, let callID = reader.varint(),
            reader.tag() == tags.tensorChunk, let bodyLength = reader.varint(), bodyLength == UInt64(frameLength - reader.position)
        else { return nil }
        var offset: UInt64 = 0
        if reader.peekTag() == tags.offset {
            _ = reader.tag()
            guard let value = reader.varint() else { return nil }
            offset = value
        }
        guard reader.tag() == tags.data, let dataLength = reader.varint(), dataLength == UInt64(frameLength - reader.position),
            dataLength > 0, reader.position <= head.count
        else { return nil }
        return BulkPrefix(callID: callID, offset: offset, dataStart: reader.position, dataLength: Int(dataLength))
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        var remaining: Int { bytes.count - position }

        mutating func varint() -> UInt64? {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while position < bytes.count, shift < 64 {
                let byte = bytes[position]
                position += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
            return nil
        }

        mutating func tag() -> UInt64? { varint() }

        func peekTag() -> UInt64? {
            var copy = self
            return copy.varint()
        }
    }
}
