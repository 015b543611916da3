/// Zero-copy decoding of the one envelope shape that carries bulk data:
/// `Envelope{call_id: 1, tensor_chunk: 15 {offset: 1, data: 2}}`, exactly as this project
/// encodes it. The chunk's bytes stay in the frame's buffer instead of being copied by
/// protobuf-c's unpack; any other shape (extra fields, other order, another message) falls back
/// to protobuf-c, so the wire format is unchanged.
enum ChunkFastPath {
    /// Decodes `frame` if it is a plain tensor-chunk envelope; nil otherwise.
    ///
    /// - Parameter owner: keeps `frame`'s memory alive for as long as the chunk is used.
    static func decode(_ frame: UnsafeRawBufferPointer, owner: AnyObject) -> Envelope? {
        var reader = Reader(bytes: frame)
        guard reader.tag() == (1 << 3 | 0), let callID = reader.varint(),
            reader.tag() == (15 << 3 | 2), let bodyLength = reader.varint(), bodyLength == UInt64(reader.remaining)
        else { return nil }
        var offset: UInt64 = 0
        if reader.peekTag() == (1 << 3 | 0) {
            _ = reader.tag()
            guard let value = reader.varint() else { return nil }
            offset = value
        }
        guard reader.tag() == (2 << 3 | 2), let dataLength = reader.varint(), dataLength == UInt64(reader.remaining),
            dataLength > 0
        else { return nil }
        let data = UnsafeRawBufferPointer(rebasing: frame[reader.position...])
        let view = ByteView(bytes: data, owner: owner)
        return Envelope(callID: callID, body: .tensorChunk(TensorChunk(offset: offset, data: view)))
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
