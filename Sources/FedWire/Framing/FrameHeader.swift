/// The 5-byte prefix of every frame, as in gRPC: a flag byte, then the envelope's length as a
/// 4-byte big-endian integer.
public struct FrameHeader: Sendable, Equatable {
    /// Bytes in the prefix.
    public static let size = 5
    /// Flag value for an uncompressed envelope, the only kind FedCoord sends or accepts.
    public static let uncompressed: UInt8 = 0

    public var flags: UInt8
    /// Length of the envelope that follows.
    public var length: UInt32

    public init(flags: UInt8 = FrameHeader.uncompressed, length: UInt32) {
        self.flags = flags
        self.length = length
    }

    /// Parses and checks a prefix, before anything is allocated for the envelope.
    ///
    /// - Throws: ``WireError/Code/frameTooLarge`` when the length exceeds `maxLength`;
    ///   ``WireError/Code/malformedFrame`` for a flag other than 0 (compression is not supported).
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxLength: Int) throws -> FrameHeader {
        precondition(bytes.count >= size, "a frame header has \(size) bytes")
        let flags = bytes[0]
        let length = UInt32(bytes[1]) << 24 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 8 | UInt32(bytes[4])
        guard flags == uncompressed else {
            throw WireError(.malformedFrame, "frame flag \(flags) is not supported (compressed frames are not accepted)")
        }
        guard Int(length) <= maxLength else {
            throw WireError(.frameTooLarge, "a frame of \(length) bytes exceeds the limit of \(maxLength) bytes")
        }
        return FrameHeader(flags: flags, length: length)
    }

    /// Writes the prefix into the first 5 bytes of `buffer`.
    public func write(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size)
        buffer[0] = flags
        buffer[1] = UInt8(truncatingIfNeeded: length >> 24)
        buffer[2] = UInt8(truncatingIfNeeded: length >> 16)
        buffer[3] = UInt8(truncatingIfNeeded: length >> 8)
        buffer[4] = UInt8(truncatingIfNeeded: length)
    }
}
