import CKernels

/// A running CRC-32C (Castagnoli, as in iSCSI and ext4): the end-to-end check of a tensor
/// stream's reassembly. TLS's AEAD already authenticates every record; this catches a chunk
/// lost, repeated or misplaced above it, at a few percent of SHA-256's cost: AVX-512 carry-less
/// multiplication where the CPU has it (≈ 30 GB/s a core on cached data), else the crc32
/// instruction on three streams (SSE 4.2, ≈ 10 GB/s), else a table a byte at a time.
public struct CRC32C: Sendable, Equatable {
    /// The ways of computing it, fastest last.
    public enum Implementation: Int32, CaseIterable, Sendable {
        case portable = 0, sse42 = 1, vpclmulqdq = 2

        /// Whether this CPU runs it.
        public var isAvailable: Bool { fed_crc32c_available(rawValue) == 1 }
    }

    /// The implementation ``update(_:)`` uses on this CPU.
    public static var implementation: Implementation { Implementation(rawValue: fed_crc32c_best()) ?? .portable }

    /// The CRC of everything given so far (0 for nothing).
    public private(set) var value: UInt32 = 0

    public init() {}

    /// Continues with `bytes`. Cost: one pass over them, no allocation.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        value = fed_crc32c(value, base, bytes.count)
    }

    /// Continues with bytes already checksummed elsewhere: `crc` is their CRC-32C (from 0) and
    /// `length` their count. Reads no data; about a microsecond for a 1 MiB chunk.
    public mutating func append(crc: UInt32, length: Int) {
        value = fed_crc32c_combine(value, crc, UInt64(length))
    }

    /// Continues with `bytes` holding Float32 values, and returns the index among them of the
    /// first NaN or infinity (nil when all are finite): one pass where the CPU has AVX-512.
    public mutating func update(floats bytes: UnsafeRawBufferPointer) -> Int? {
        precondition(bytes.count % 4 == 0, "not a whole number of Float32 values")
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return nil }
        var first = -1
        value = fed_crc32c_f32(value, base, bytes.count / 4, &first)
        return first < 0 ? nil : first
    }

    /// Each tensor's CRC-32C over a model's flat Float32 `values` (tensor `i` at `ranges[i]`), and
    /// whether every value is finite: one pass where the CPU has AVX-512.
    public static func tensorChecksums(_ values: UnsafeBufferPointer<Float>, ranges: [Range<Int>]) -> (crcs: [UInt32], allFinite: Bool) {
        var allFinite = true
        let crcs = ranges.map { range in
            var crc = CRC32C()
            if crc.update(floats: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: values[range]))) != nil { allFinite = false }
            return crc.value
        }
        return (crcs, allFinite)
    }

    /// The CRC-32C of `bytes` with a given implementation (the portable one where the CPU lacks
    /// it): for tests that check every path on this machine.
    public static func checksum(_ bytes: UnsafeRawBufferPointer, using implementation: Implementation) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return 0 }
        return fed_crc32c_using(implementation.rawValue, 0, base, bytes.count)
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
