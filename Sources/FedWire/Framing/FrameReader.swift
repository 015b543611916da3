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

    /// Tells a bulk-data frame from the first bytes of a large frame (``WireCodec/bulkPrefix(_:frameLength:)``).
    public let bulkPrefix: (_ head: UnsafeRawBufferPointer, _ frameLength: Int) -> BulkPrefix?

    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    /// - Parameter bulkPrefix: recognizes bulk-data frames for landing and checking; the default
    ///   recognizes none.
    public init(connection: TLSConnection, maxFrameBytes: Int, frameTimeout: Double,
                bulkPrefix: @escaping (_ head: UnsafeRawBufferPointer, _ frameLength: Int) -> BulkPrefix? = { _, _ in nil }) {
        self.connection = connection
        self.maxFrameBytes = maxFrameBytes
        self.frameTimeout = frameTimeout
        self.bulkPrefix = bulkPrefix
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
        guard length > Self.keptBufferBytes else { return try readSmall(length) }
        return try readLarge(length, after: UnsafeRawBufferPointer(start: nil, count: 0), deadline: .after(seconds: frameTimeout))
    }

    /// What ``readFrameView(idleDeadline:landing:)`` read.
    public enum Frame {
        /// A whole frame, in the reader's buffer (valid until the next read); for a large tensor
        /// chunk, the check of its data computed as it arrived.
        case view(UnsafeRawBufferPointer, check: ChunkCheck?)
        /// A tensor chunk of `callID` whose bytes went straight into a landing's destination.
        case landed(callID: UInt64, offset: UInt64, bytes: UnsafeRawBufferPointer, landing: ChunkLanding, check: ChunkCheck)
    }

    /// Bytes read ahead of a large frame to tell whether it is a chunk that can land: the
    /// envelope's call id, body tag and length, the chunk's offset and the data's tag and length
    /// take at most 45 bytes.
    static let landingPrefixBytes = 48

    /// Like ``readFrameView(idleDeadline:)``, but a large tensor-chunk frame for a call that
    /// `landing` names a ``ChunkLanding`` for is read straight into its destination when it fits;
    /// and a large chunk's data is checked (``ChunkCheck``) piece by piece as it arrives.
    public func readFrameView(idleDeadline: Deadline = .distantFuture, landing: (UInt64) -> ChunkLanding?) throws -> Frame? {
        guard let length = try readHeader(idleDeadline: idleDeadline) else { return nil }
        releaseLargeBuffer()
        guard length > Self.keptBufferBytes else { return .view(try readSmall(length), check: nil) }
        let deadline = Deadline.after(seconds: frameTimeout)
        var prefix = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return try withUnsafeMutableBytes(of: &prefix) { raw in
            let head = UnsafeMutableRawBufferPointer(rebasing: raw[..<Self.landingPrefixBytes])
            try readRest(into: head, deadline: deadline)
            if let chunk = bulkPrefix(UnsafeRawBufferPointer(head), length),
               let target = landing(chunk.callID), target.fits(offset: chunk.offset, count: chunk.dataLength)
            {
                target.lock.lock()
                defer { target.lock.unlock() }
                if target.isOpen {
                    let destination = UnsafeMutableRawBufferPointer(
                        rebasing: target.destination[Int(chunk.offset)..<(Int(chunk.offset) + chunk.dataLength)])
                    let already = Self.landingPrefixBytes - chunk.dataStart
                    destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: head[chunk.dataStart...]))
                    var checker = ChunkChecker(data: destination.baseAddress!, length: destination.count)
                    try readRest(into: UnsafeMutableRawBufferPointer(rebasing: destination[already...]), deadline: deadline) {
                        checker.advance(to: already + $0)
                    }
                    return .landed(callID: chunk.callID, offset: chunk.offset, bytes: UnsafeRawBufferPointer(destination), landing: target,
                                   check: checker.finish())
                }
            }
            guard let chunk = bulkPrefix(UnsafeRawBufferPointer(head), length) else {
                return .view(try readLarge(length, after: UnsafeRawBufferPointer(head), deadline: deadline), check: nil)
            }
            var checker: ChunkChecker?
            let view = try readLarge(length, after: UnsafeRawBufferPointer(head), deadline: deadline) { frame, received in
                if checker == nil { checker = ChunkChecker(data: frame + chunk.dataStart, length: chunk.dataLength) }
                checker?.advance(to: received - chunk.dataStart)
            }
            return .view(view, check: checker?.finish())
        }
    }

    /// A small frame into the reader's own buffer.
    private func readSmall(_ length: Int) throws -> UnsafeRawBufferPointer {
        if buffer.count < length {
            buffer.deallocate()
            buffer = .allocate(byteCount: Self.keptBufferBytes, alignment: 64)
        }
        let view = UnsafeMutableRawBufferPointer(rebasing: buffer[..<length])
        try readRest(into: view, deadline: .after(seconds: frameTimeout))
        return UnsafeRawBufferPointer(view)
    }

    /// A large frame (a tensor chunk) into a block borrowed from the process-wide recycling pool,
    /// so that idle connections do not each pin a 4 MiB buffer; `head` is its first bytes, already read.
    /// `progress` gets the frame's start and how many of its bytes are in place, after each read.
    private func readLarge(
        _ length: Int, after head: UnsafeRawBufferPointer, deadline: Deadline,
        progress: (_ frame: UnsafeRawPointer, _ received: Int) -> Void = { _, _ in }
    ) throws -> UnsafeRawBufferPointer {
        guard let block = RecyclingAllocator.allocate(length) else {
            throw WireError(.frameTooLarge, "cannot allocate \(length) bytes for a frame")
        }
        largeBuffer = UnsafeMutableRawBufferPointer(start: block, count: length)
        let view = largeBuffer!
        UnsafeMutableRawBufferPointer(rebasing: view[..<head.count]).copyMemory(from: head)
        try readRest(into: UnsafeMutableRawBufferPointer(rebasing: view[head.count...]), deadline: deadline) {
            progress(UnsafeRawPointer(block), head.count + $0)
        }
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

    /// Reads until `buffer` is full; `progress` gets how many of its bytes are in place after each read.
    private func readRest(into buffer: UnsafeMutableRawBufferPointer, deadline: Deadline, progress: (Int) -> Void = { _ in }) throws {
        do {
            try connection.readExactly(into: buffer, deadline: deadline, progress: progress)
        } catch let error as WireError where error.code == .connectionClosed {
            throw WireError(.truncatedFrame, "the peer closed the connection in the middle of a frame")
        } catch let error as WireError where error.code == .timedOut {
            throw WireError(.timedOut, "the peer stopped sending in the middle of a frame for \(frameTimeout) s")
        }
    }
}
