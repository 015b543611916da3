/// Read-only bytes with an owner: a Swift array, a decoded protobuf-c message, or memory the
/// caller lends for the duration of a send.
///
/// Lets 4 MiB tensor chunks travel from the decoder to their consumer (and from a tensor's
/// storage to the encoder) without a copy.
public final class ByteView: @unchecked Sendable {
    // @unchecked: the bytes are never mutated through this view; the owner keeps them alive.
    private let bytes: UnsafeRawBufferPointer
    private let owner: AnyObject?
    private let release: (() -> Void)?

    /// Owns a copy of `array`.
    public init(_ array: [UInt8]) {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(array.count, 1), alignment: 16)
        array.withUnsafeBytes { storage.copyMemory(from: $0) }
        bytes = UnsafeRawBufferPointer(rebasing: storage[..<array.count])
        owner = nil
        release = { storage.deallocate() }
        check = nil
    }

    /// Borrows `bytes` without copying. The caller guarantees they stay valid and unchanged for
    /// as long as this view is used (typically: until the send that takes it returns).
    public init(borrowing bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        owner = nil
        release = nil
        check = nil
    }

    /// Views `bytes` owned by `owner`, optionally running `release` when the view goes away;
    /// `check` is what the connection's reader computed over exactly these bytes.
    public init(bytes: UnsafeRawBufferPointer, owner: AnyObject?, release: (() -> Void)? = nil, check: ChunkCheck? = nil) {
        self.bytes = bytes
        self.owner = owner
        self.release = release
        self.check = check
    }

    /// The reader's check of these bytes when they arrived as a large tensor chunk (their CRC-32C
    /// and finiteness), so that their consumer need not read them again; nil otherwise.
    public let check: ChunkCheck?

    deinit { release?() }

    public var count: Int { bytes.count }

    /// Runs `body` with the bytes; they must not escape it.
    public func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try withExtendedLifetime(owner) { try body(bytes) }
    }

    /// A copy of the bytes.
    public var array: [UInt8] { withUnsafeBytes { Array($0) } }
}
