import FedWire
import Testing

/// CRC-32C: the published check values, and the CPU's instruction path equal to the portable one.
@Suite struct CRC32CTests {
    static func crc(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { CRC32C.checksum($0) } }

    @Test("RFC 3720 (iSCSI) B.4 vectors and the catalogue's check value")
    func knownValues() {
        #expect(Self.crc(Array("123456789".utf8)) == 0xE306_9283)
        #expect(Self.crc([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(Self.crc([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(Self.crc((0..<32).map { UInt8($0) }) == 0x46DD_794E)
        #expect(Self.crc((0..<32).reversed().map { UInt8($0) }) == 0x113F_DB5C)
        #expect(Self.crc([]) == 0)
    }

    @Test("Every length and alignment, whole or in pieces, equals the byte-at-a-time reference")
    func matchesPortable() {
        var generator = SystemRandomNumberGenerator()
        // Past 3 × 8192 bytes the three-stream path and its joins run; the odd sizes hit the tails.
        let bytes = (0..<(3 * 8192 * 2 + 777)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for (start, length) in [(0, 0), (1, 7), (3, 255), (5, 768), (7, 769), (0, 3 * 8192), (2, 3 * 8192 + 9), (1, all.count - 1), (0, all.count)] {
                let slice = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                let reference = CRC32C.portableChecksum(slice)
                #expect(CRC32C.checksum(slice) == reference, "offset \(start), \(length) bytes")
                var pieces = CRC32C()
                var offset = 0
                for size in [1, 100, 8192, 30_000, .max] where offset < length {
                    let end = min(length, offset + min(size, length))
                    pieces.update(UnsafeRawBufferPointer(rebasing: slice[offset..<end]))
                    offset = end
                }
                pieces.update(UnsafeRawBufferPointer(rebasing: slice[offset...]))
                #expect(pieces.value == reference, "in pieces: offset \(start), \(length) bytes")
            }
        }
    }

    @Test("One flipped bit anywhere changes the CRC")
    func detectsFlips() {
        var bytes = [UInt8](repeating: 0x5A, count: 40_000)
        let original = Self.crc(bytes)
        for index in [0, 8191, 8192, 24_575, 39_999] {
            bytes[index] ^= 0x10
            #expect(Self.crc(bytes) != original, "bit flip at byte \(index)")
            bytes[index] ^= 0x10
        }
    }
}
