import FedHashing
import FedWire

/// Anything a tensor stream can be sent through: a ``ClientCall`` (requests) or a
/// ``ServerCall`` (responses).
public protocol MessageSink {
    func send(_ message: Message) throws
}

/// Anything a tensor stream can be read from.
public protocol MessageSource {
    /// The next message, or nil at the end of the stream.
    func receive() throws -> Message?
    /// Lets the connection read this stream's next chunks straight into `destination` (nil when
    /// the source cannot); ``RPCConnection/endLanding(_:)`` ends it.
    func landChunks(into destination: UnsafeMutableRawBufferPointer) -> (RPCConnection, ChunkLanding)?
}

extension MessageSource {
    public func landChunks(into destination: UnsafeMutableRawBufferPointer) -> (RPCConnection, ChunkLanding)? { nil }
}

/// A call on an ``RPCConnection``, either side: what a landing needs to know of it.
protocol ConnectionCall: MessageSource {
    var id: UInt64 { get }
    var connection: RPCConnection { get }
    /// Tensor streams begun in what the call has received.
    var tensorHeadersReceived: Int { get }
}

extension ConnectionCall {
    public func landChunks(into destination: UnsafeMutableRawBufferPointer) -> (RPCConnection, ChunkLanding)? {
        (connection, connection.land(callID: id, tensorIndex: tensorHeadersReceived, into: destination))
    }
}

extension ServerCall: MessageSink, MessageSource, ConnectionCall {}
extension ClientCall: MessageSink, MessageSource, ConnectionCall {
    public func send(_ message: Message) throws { try send(message, endOfStream: false) }
}

/// Moves one Float32 tensor of any size as a TensorHeader (size announced up front), chunks of
/// at most 4 MiB, and a TensorTrailer with the CRC-32C of all its bytes.
///
/// Neither side holds the tensor twice: the sender reads slices of its own storage (or fills one
/// reusable chunk buffer from a generator), the receiver hands each chunk to its consumer as it
/// arrives. Sizes above protobuf's 2 GiB message limit are fine: each chunk is its own message.
public enum TensorStream {
    /// The largest chunk allowed on the wire.
    public static let maxChunkBytes = 4 << 20
    /// The chunk size senders use unless told otherwise: large enough that per-frame costs
    /// vanish, small enough that a receiver's queued chunks stay a few MiB.
    public static let defaultChunkBytes = 1 << 20

    /// What a completed receive saw.
    public struct Summary: Sendable, Equatable {
        public var header: TensorHeader
        public var chunks: Int
        public var crc32c: UInt32
        /// The SHA-256 of the bytes, when the receiver asked for it (an agent checking the model
        /// a secure round is bound to).
        public var sha256: [UInt8]?
    }

    /// Sends a tensor whose bytes are in memory, without copying them. Returns the CRC-32C sent.
    ///
    /// - Parameters:
    ///   - knownCRC32C: the bytes' CRC-32C if the caller already has it (a coordinator
    ///     broadcasting one model to many agents computes it once per round, not once per agent).
    ///   - nonFinite: when given (and no CRC is known), every value is checked for NaN and infinity
    ///     in the CRC's pass over each chunk, just before the chunk is sent (the pass brings it into
    ///     the cache that the encryption then reads it from), and the first bad value's element
    ///     index is handed to it before its chunk goes out (it throws to stop the stream).
    @discardableResult
    public static func send(
        name: String, shape: [Int], floats: UnsafeBufferPointer<Float>, chunkBytes: Int = defaultChunkBytes, to sink: any MessageSink,
        knownCRC32C: UInt32? = nil, nonFinite: ((_ element: UInt64) throws -> Void)? = nil
    ) throws -> UInt32 {
        precondition(shape.reduce(1, *) == floats.count, "shape \(shape) does not hold \(floats.count) floats")
        precondition(nonFinite == nil || chunkBytes % 4 == 0, "a checked tensor is sent in whole floats")
        let raw = UnsafeRawBufferPointer(floats)
        return try send(
            name: name, shape: shape.map { UInt64($0) }, totalBytes: UInt64(raw.count), chunkBytes: chunkBytes, to: sink, knownCRC32C: knownCRC32C,
            nonFinite: nonFinite
        ) {
            offset, length in ByteView(borrowing: UnsafeRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset) + length]))
        }
    }

    /// Sends a tensor produced chunk by chunk: `fill` writes the bytes at `offset` into the
    /// reusable chunk buffer it is given (whose size is the chunk's length).
    @discardableResult
    public static func send(
        name: String, shape: [UInt64], chunkBytes: Int = defaultChunkBytes, to sink: any MessageSink,
        fill: (_ offset: UInt64, _ chunk: UnsafeMutableRawBufferPointer) throws -> Void
    ) throws -> UInt32 {
        let total = shape.reduce(UInt64(4)) { $0 * $1 }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: min(chunkBytes, max(Int(min(total, UInt64(Int.max))), 1)), alignment: 64)
        defer { buffer.deallocate() }
        return try send(name: name, shape: shape, totalBytes: total, chunkBytes: chunkBytes, to: sink) { offset, length in
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[..<length])
            try fill(offset, slice)
            return ByteView(borrowing: UnsafeRawBufferPointer(slice))
        }
    }

    /// Sends a vector of `Z_2^32` elements (a masked input), little-endian, without copying it.
    @discardableResult
    public static func send(name: String, words: UnsafeBufferPointer<UInt32>, chunkBytes: Int = defaultChunkBytes, to sink: any MessageSink) throws -> UInt32 {
        let raw = UnsafeRawBufferPointer(words)
        return try send(name: name, shape: [UInt64(words.count)], totalBytes: UInt64(raw.count), chunkBytes: chunkBytes, to: sink, dtype: .uint32) {
            offset, length in ByteView(borrowing: UnsafeRawBufferPointer(rebasing: raw[Int(offset)..<Int(offset) + length]))
        }
    }

    private static func send(
        name: String, shape: [UInt64], totalBytes: UInt64, chunkBytes: Int, to sink: any MessageSink, knownCRC32C: UInt32? = nil,
        nonFinite: ((_ element: UInt64) throws -> Void)? = nil, dtype: DType = .float32,
        chunk: (_ offset: UInt64, _ length: Int) throws -> ByteView
    ) throws -> UInt32 {
        precondition(chunkBytes > 0 && chunkBytes <= maxChunkBytes, "chunks are 1 byte to 4 MiB")
        try sink.send(.tensorHeader(TensorHeader(
            name: name, shape: shape, dtype: dtype, totalBytes: totalBytes, chunkBytes: UInt32(chunkBytes))))
        var crc = CRC32C()
        var offset: UInt64 = 0
        while offset < totalBytes {
            let length = Int(min(UInt64(chunkBytes), totalBytes - offset))
            let view = try chunk(offset, length)
            if knownCRC32C == nil {
                if let nonFinite {
                    if let bad = view.withUnsafeBytes({ crc.update(floats: $0) }) { try nonFinite(offset / 4 + UInt64(bad)) }
                } else {
                    view.withUnsafeBytes { crc.update($0) }
                }
            }
            try sink.send(.tensorChunk(TensorChunk(offset: offset, data: view)))
            offset += UInt64(length)
        }
        let checksum = knownCRC32C ?? crc.value
        try sink.send(.tensorTrailer(TensorTrailer(crc32c: checksum)))
        return checksum
    }

    /// Receives one tensor, checking everything the sender announced.
    ///
    /// - Parameters:
    ///   - header: the TensorHeader if the caller has already read it; otherwise it is read first.
    ///   - maxTotalBytes: the largest tensor accepted (checked against the header before any chunk).
    ///   - sha256: also hash the bytes with SHA-256 (about 0.7 ns a byte; the CRC-32C alone is
    ///     about 0.05) and return the digest in the summary.
    ///   - nonFinite: when given, every value is checked for NaN and infinity in the CRC's own
    ///     pass, chunks must hold whole Float32 values, and the first bad value's element index is
    ///     handed to it before its chunk is consumed (it throws to refuse the tensor).
    ///   - consume: gets each chunk's bytes at its offset, in order; they must not escape it.
    /// - Throws: ``RPCError`` INVALID_ARGUMENT when the stream breaks its announcement (type,
    ///   shape, size, order, chunk size), RESOURCE_EXHAUSTED above `maxTotalBytes`, DATA_LOSS on a
    ///   CRC mismatch.
    public static func receive(
        from source: any MessageSource, header: TensorHeader? = nil, maxTotalBytes: UInt64 = .max, sha256: Bool = false,
        nonFinite: ((_ element: UInt64) throws -> Void)? = nil,
        consume: (_ offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws -> Void
    ) throws -> Summary {
        let header = try header ?? readHeader(from: source)
        try validate(header, maxTotalBytes: maxTotalBytes)
        var crc = CRC32C()
        let hasher = sha256 ? SHA256Hasher() : nil
        var offset: UInt64 = 0
        var chunks = 0
        while true {
            guard let message = try source.receive() else {
                throw RPCError(.invalidArgument, "tensor '\(header.name)' ended after \(offset) of \(header.totalBytes) announced bytes")
            }
            switch message {
            case .tensorChunk(let chunk):
                let count = UInt64(chunk.data.count)
                guard chunk.offset == offset else {
                    throw RPCError(.invalidArgument, "tensor '\(header.name)': chunk at offset \(chunk.offset), expected \(offset)")
                }
                guard count > 0, count <= UInt64(header.chunkBytes) else {
                    throw RPCError(.invalidArgument, "tensor '\(header.name)': a chunk of \(count) bytes breaks the announced chunk size \(header.chunkBytes)")
                }
                guard count <= header.totalBytes - offset else {
                    throw RPCError(.invalidArgument, "tensor '\(header.name)': more bytes than the \(header.totalBytes) announced")
                }
                try chunk.data.withUnsafeBytes { bytes in
                    if nonFinite != nil, count % 4 != 0 {
                        throw RPCError(.invalidArgument, "tensor '\(header.name)' was cut inside a float (chunk of \(count) bytes)")
                    }
                    if let check = chunk.data.check {
                        // Checked by the connection's reader as the bytes arrived: not read again.
                        if let nonFinite, let bad = check.firstNonFinite { try nonFinite(offset / 4 + UInt64(bad)) }
                        crc.append(crc: check.crc32c, length: bytes.count)
                    } else if let nonFinite {
                        if let bad = crc.update(floats: bytes) { try nonFinite(offset / 4 + UInt64(bad)) }
                    } else {
                        crc.update(bytes)
                    }
                    hasher?.update(bytes)
                    try consume(offset, bytes)
                }
                offset += count
                chunks += 1
            case .tensorTrailer(let trailer):
                guard offset == header.totalBytes else {
                    throw RPCError(.invalidArgument, "tensor '\(header.name)' ended after \(offset) of \(header.totalBytes) announced bytes")
                }
                guard trailer.crc32c == crc.value else {
                    throw RPCError(.dataLoss, "tensor '\(header.name)' is corrupted: CRC-32C \(Self.hex(crc.value)) of the bytes received "
                        + "differs from the sender's \(Self.hex(trailer.crc32c))")
                }
                return Summary(header: header, chunks: chunks, crc32c: crc.value, sha256: hasher?.finalize())
            default:
                throw RPCError(.invalidArgument, "tensor '\(header.name)': unexpected \(message.name) inside the stream")
            }
        }
    }

    /// Receives one tensor into `floats`, which must have exactly the announced element count.
    public static func receive(
        from source: any MessageSource, header: TensorHeader? = nil, into floats: UnsafeMutableBufferPointer<Float>, sha256: Bool = false
    ) throws -> Summary {
        let destination = UnsafeMutableRawBufferPointer(floats)
        let header = try header ?? readHeader(from: source)
        guard header.dtype == .float32 else { throw RPCError(.invalidArgument, "tensor '\(header.name)' is not Float32") }
        guard header.totalBytes == UInt64(destination.count) else {
            throw RPCError(.invalidArgument, "tensor '\(header.name)' announces \(header.totalBytes) bytes; \(destination.count) expected")
        }
        // Chunks arriving from now on are read straight into place; earlier ones are copied.
        let landing = source.landChunks(into: destination)
        defer { if let (connection, landing) = landing { connection.endLanding(landing) } }
        return try receive(from: source, header: header, maxTotalBytes: UInt64(destination.count), sha256: sha256) { offset, bytes in
            let target = destination.baseAddress! + Int(offset)
            if bytes.baseAddress != UnsafeRawPointer(target) { UnsafeMutableRawBufferPointer(rebasing: destination[Int(offset)...]).copyMemory(from: bytes) }
        }
    }

    static func hex(_ crc: UInt32) -> String {
        let digits = String(crc, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    /// Reads the TensorHeader that starts a stream.
    public static func readHeader(from source: any MessageSource) throws -> TensorHeader {
        guard let message = try source.receive() else { throw RPCError(.invalidArgument, "a tensor stream was expected; the stream ended") }
        guard case .tensorHeader(let header) = message else {
            throw RPCError(.invalidArgument, "a tensor stream must start with TensorHeader, not \(message.name)")
        }
        return header
    }

    /// Checks a header before anything is allocated for it: a 4-byte element type, a chunk size
    /// of 1 byte to 4 MiB, a shape whose element count does not overflow and holds exactly the
    /// announced bytes, and at most `maxTotalBytes`. Throws INVALID_ARGUMENT or RESOURCE_EXHAUSTED.
    public static func validate(_ header: TensorHeader, maxTotalBytes: UInt64 = .max) throws {
        guard header.dtype.elementSize == 4 else {
            throw RPCError(.invalidArgument, "tensor '\(header.name)': element type \(header.dtype.rawValue) is not supported (Float32 or UInt32)")
        }
        guard header.chunkBytes > 0, header.chunkBytes <= UInt32(maxChunkBytes) else {
            throw RPCError(.invalidArgument, "tensor '\(header.name)': chunk size \(header.chunkBytes) is outside 1 byte to 4 MiB")
        }
        var elements: UInt64 = 1
        for dimension in header.shape {
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw RPCError(.invalidArgument, "tensor '\(header.name)': shape \(header.shape) overflows") }
            elements = product
        }
        let (bytes, overflow) = elements.multipliedReportingOverflow(by: 4)
        guard !overflow, bytes == header.totalBytes else {
            throw RPCError(.invalidArgument, "tensor '\(header.name)': shape \(header.shape) holds \(elements) floats, "
                + "but \(header.totalBytes) bytes are announced")
        }
        guard header.totalBytes <= maxTotalBytes else {
            throw RPCError(.resourceExhausted, "tensor '\(header.name)' announces \(header.totalBytes) bytes, above the limit of \(maxTotalBytes)")
        }
    }
}
