import CKernels

/// A running CRC-32C (Castagnoli, as in iSCSI and ext4): the end-to-end check of a tensor
/// stream's reassembly. TLS's AEAD already authenticates every record; this catches a chunk
/// lost, repeated or misplaced above it, at a few percent of SHA-256's cost (the CPU's crc32
/// instruction on three streams when it has SSE 4.2, a table a byte at a time otherwise).
public struct CRC32C: Sendable, Equatable {
    /// The CRC of everything given so far (0 for nothing).
    public private(set) var value: UInt32 = 0

    public init() {}

    /// Continues with `bytes`. Cost: one pass over them, no allocation.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        value = fed_crc32c(value, base, bytes.count)
    }

    /// The CRC-32C of `bytes`.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    /// The same CRC computed a byte at a time without the CPU's instruction (the reference the
    /// fast path is tested against).
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return 0 }
        return fed_crc32c_portable(0, base, bytes.count)
    }
}
