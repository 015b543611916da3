/// Reads whole frames from a ``TLSConnection``.
///
/// The length is checked before the envelope's buffer is allocated. Once the first byte of a
/// frame has arrived, the rest must arrive within `frameTimeout` seconds, so a peer that stops
/// mid-frame is cut instead of holding the connection forever. Not thread-safe: one reader thread.
///
/// ``readFrameView(idleDeadline:)`` reads into one buffer reused from frame to frame (it grows
/// to the largest frame seen, at most the limit): no allocation, no fresh pages per frame.
public final class FrameReader {
    public let connection: TLSConnection
    /// The largest envelope accepted.
    public var maxFrameBytes: Int
    /// Seconds a started frame may take to arrive completely.
    public var frameTimeout: Double

    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    public init(connection: TLSConnection, maxFrameBytes: Int, frameTimeout: Double) {
        self.connection = connection
        self.maxFrameBytes = maxFrameBytes
        self.frameTimeout = frameTimeout
    }

    deinit {
        buffer.deallocate()
        releaseLargeBuffer()
    }

    /// Like ``readFrame(idleDeadline:)`` but returns a view of the reader's own buffer, valid
    /// until the next read.
    public func readFrameView(idleDeadline: Deadline = .distantFuture) throws -> UnsafeRawBufferPointer? {
        guard let length = try readHeader(idleDeadline: idleDeadline) else { return nil }
        releaseLargeBuffer()
        if length > Self.keptBufferBytes {
            // Large frames (tensor chunks) borrow a block from the process-wide recycling pool,
            // so that idle connections do not each pin a 4 MiB buffer.
            guard let block = RecyclingAllocator.allocate(length) else {
                throw WireError(.frameTooLarge, "cannot allocate \(length) bytes for a frame")
            }
            largeBuffer = UnsafeMutableRawBufferPointer(start: block, count: length)
            let view = largeBuffer!
            try readRest(into: view, deadline: .after(seconds: frameTimeout))
            return UnsafeRawBufferPointer(view)
        }
        if buffer.count < length {
            buffer.deallocate()
            buffer = .allocate(byteCount: Self.keptBufferBytes, alignment: 64)
        }
        let view = UnsafeMutableRawBufferPointer(rebasing: buffer[..<length])
        try readRest(into: view, deadline: .after(seconds: frameTimeout))
        return UnsafeRawBufferPointer(view)
    }

    /// Frames up to this size reuse the reader's own buffer.
    static let keptBufferBytes = 256 * 1024
    private var largeBuffer: UnsafeMutableRawBufferPointer?

    /// Hands the current large frame's block to the caller (who must release it with
    /// ``RecyclingAllocator/release(_:)``); the next read will not reuse it.
    func takeLargeFrameBlock() -> UnsafeMutableRawPointer? {
        defer { largeBuffer = nil }
        return largeBuffer?.baseAddress
    }

    private func releaseLargeBuffer() {
        if let large = largeBuffer {
            RecyclingAllocator.release(large.baseAddress)
            largeBuffer = nil
        }
    }

    /// Waits for the next frame until `idleDeadline`, then reads it whole.
    ///
    /// - Returns: the envelope bytes, or nil when the peer closed cleanly between frames.
    /// - Throws: ``WireError`` with code `frameTooLarge`, `malformedFrame`, `truncatedFrame`
    ///   (closed mid-frame), `timedOut` (idle deadline, or a frame not finished in time), or
    ///   `connectionBroken`.
    public func readFrame(idleDeadline: Deadline = .distantFuture) throws -> [UInt8]? {
        guard let length = try readHeader(idleDeadline: idleDeadline) else { return nil }
        let frameDeadline = Deadline.after(seconds: frameTimeout)
        return try [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            try readRest(into: UnsafeMutableRawBufferPointer(buffer), deadline: frameDeadline)
            initialized = length
        }
    }

    /// Reads and checks the 5-byte prefix; nil when the peer closed cleanly between frames.
    private func readHeader(idleDeadline: Deadline) throws -> Int? {
        var header = (UInt8(0), UInt8(0), UInt8(0), UInt8(0), UInt8(0))
        let parsed: FrameHeader? = try withUnsafeMutableBytes(of: &header) { raw in
            let first = try connection.read(into: raw, deadline: idleDeadline)
            if first == 0 { return nil }
            if first < FrameHeader.size {
                try readRest(into: UnsafeMutableRawBufferPointer(rebasing: raw[first...]), deadline: .after(seconds: frameTimeout))
            }
            return try FrameHeader.parse(UnsafeRawBufferPointer(raw), maxLength: maxFrameBytes)
        }
        return parsed.map { Int($0.length) }
    }

    private func readRest(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline) throws {
        do {
            try connection.readExactly(into: buffer, deadline: deadline)
        } catch let error as WireError where error.code == .connectionClosed {
            throw WireError(.truncatedFrame, "the peer closed the connection in the middle of a frame")
        } catch let error as WireError where error.code == .timedOut {
            throw WireError(.timedOut, "the peer stopped sending in the middle of a frame for \(frameTimeout) s")
        }
    }
}
