import CProtobufC
import FedHashing
import FedProtoC
import FedWire

/// Collects a packed envelope as segments: the bytes before a large borrowed payload, the
/// payload itself (not copied), and anything after it.
private final class FrameGatherer {
    var head: [UInt8] = []
    var tail: [UInt8] = []
    var payload: UnsafeRawBufferPointer?
    let watched: UnsafeRawPointer?
    let watchedCount: Int

    init(watching payload: UnsafeRawBufferPointer) {
        watched = payload.baseAddress
        watchedCount = payload.count
    }

    func append(_ count: Int, _ data: UnsafePointer<UInt8>?) {
        guard count > 0, let data else { return }
        if payload == nil, UnsafeRawPointer(data) == watched, count == watchedCount {
            payload = UnsafeRawBufferPointer(start: data, count: count)
        } else if payload == nil {
            head.append(contentsOf: UnsafeBufferPointer(start: data, count: count))
        } else {
            tail.append(contentsOf: UnsafeBufferPointer(start: data, count: count))
        }
    }
}

extension Envelope {
    /// Encodes a frame carrying a large tensor chunk without copying the chunk: `body` gets the
    /// frame as segments (prefix + envelope head, the chunk's own bytes, envelope tail) to write
    /// back to back. Other envelopes are encoded contiguously.
    ///
    /// - Throws: ``WireError/Code/frameTooLarge`` above `maxFrameBytes`.
    func withFrameSegments<R>(maxFrameBytes: Int, _ body: ([UnsafeRawBufferPointer]) throws -> R) throws -> R {
        guard case .tensorChunk(let chunk)? = self.body else {
            var buffer: [UInt8] = []
            let length = try encodeFrame(into: &buffer, maxFrameBytes: maxFrameBytes)
            return try buffer.withUnsafeBytes { try body([UnsafeRawBufferPointer(rebasing: $0[..<length])]) }
        }
        return try chunk.data.withUnsafeBytes { payload in
            try withCEnvelopePointer { message in
                let size = fedcoord__v1__envelope__get_packed_size(message)
                guard size <= maxFrameBytes else {
                    throw WireError(.frameTooLarge, "an envelope of \(size) bytes exceeds the frame limit of \(maxFrameBytes) bytes")
                }
                let gatherer = FrameGatherer(watching: payload)
                var header = [UInt8](repeating: 0, count: FrameHeader.size)
                header.withUnsafeMutableBytes { FrameHeader(length: UInt32(size)).write(into: $0) }
                gatherer.head = header
                var buffer = fedcoord_gather_buffer()
                buffer.context = Unmanaged.passUnretained(gatherer).toOpaque()
                buffer.base.append = { base, count, data in
                    guard let base else { return }
                    let context = UnsafeMutableRawPointer(base).assumingMemoryBound(to: fedcoord_gather_buffer.self).pointee.context
                    Unmanaged<FrameGatherer>.fromOpaque(context!).takeUnretainedValue().append(count, data)
                }
                let packed = withUnsafeMutablePointer(to: &buffer) {
                    $0.withMemoryRebound(to: ProtobufCBuffer.self, capacity: 1) { fedcoord__v1__envelope__pack_to_buffer(message, $0) }
                }
                precondition(packed == size, "protobuf-c packed \(packed) bytes, announced \(size)")
                return try withExtendedLifetime(gatherer) {
                    try gatherer.head.withUnsafeBytes { head in
                        try gatherer.tail.withUnsafeBytes { tail in
                            try body([head] + (gatherer.payload.map { [$0] } ?? []) + (tail.isEmpty ? [] : [tail]))
                        }
                    }
                }
            }
        }
    }
}
