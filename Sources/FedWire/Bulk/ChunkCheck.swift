import FedHashing

/// What a connection's reader computed over a tensor chunk's data while it arrived, piece by
/// piece straight after each TLS read (in the first-level cache), so that the chunk's consumer
/// does not read a megabyte again, from further away, to check it: the data's CRC-32C and, when
/// it holds whole Float32 values, where the first NaN or infinity among them is.
///
/// Never on the wire. It travels with the chunk's ``ByteView`` and covers exactly its bytes.
public struct ChunkCheck: Sendable, Equatable {
    /// CRC-32C of the data, from 0.
    public var crc32c: UInt32
    /// Whether the data was read as Float32 values (its length is a multiple of 4) and checked.
    public var checkedFloats: Bool
    /// Index of the first NaN or infinity among the values, when checked; nil when all are finite.
    public var firstNonFinite: Int?
}

/// Computes a ``ChunkCheck`` over data that arrives in pieces into one contiguous buffer.
struct ChunkChecker {
    private let data: UnsafeRawPointer
    private let length: Int
    private let floats: Bool
    private var checked = 0
    private var crc = CRC32C()
    private var firstNonFinite: Int?
    /// Fewer new bytes than this wait for the next piece (one call per TLS record, about 16 KiB).
    private static let minimumStep = 4096

    /// Checks the `length` bytes at `data` as they arrive.
    init(data: UnsafeRawPointer, length: Int) {
        self.data = data
        self.length = length
        floats = length % 4 == 0
    }

    /// The first `available` bytes of the data are in place.
    mutating func advance(to available: Int) {
        let upTo = floats ? min(available, length) & ~3 : min(available, length)
        guard upTo - checked >= Self.minimumStep || (upTo == length && upTo > checked) else { return }
        let piece = UnsafeRawBufferPointer(start: data + checked, count: upTo - checked)
        if floats {
            if let bad = crc.update(floats: piece), firstNonFinite == nil { firstNonFinite = checked / 4 + bad }
        } else {
            crc.update(piece)
        }
        checked = upTo
    }

    /// The check, once every byte is in place.
    mutating func finish() -> ChunkCheck {
        advance(to: length)
        precondition(checked == length, "a chunk check finished before its data arrived")
        return ChunkCheck(crc32c: crc.value, checkedFloats: floats, firstNonFinite: firstNonFinite)
    }
}
