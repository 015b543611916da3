import FedHashing
import Testing
@testable import FedWire

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

    @Test("Every implementation this CPU has, at every length and alignment, equals the byte-at-a-time reference",
          arguments: CRC32C.Implementation.allCases.filter(\.isAvailable))
    func implementationsMatchPortable(_ implementation: CRC32C.Implementation) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<(3 * 8192 * 2 + 777)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            // Every length to 2 KiB (the folding path starts at 512 bytes and has 256-, 64- and
            // 16-byte stages and byte tails), at three alignments, then a few long ones.
            let lengths = Array(0...2048) + [3 * 8192 - 1, 3 * 8192 + 9, all.count - 3]
            for length in lengths {
                for start in 0..<3 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                    let reference = CRC32C.portableChecksum(slice)
                    if CRC32C.checksum(slice, using: implementation) != reference {
                        Issue.record("\(implementation): offset \(start), \(length) bytes")
                        return
                    }
                }
            }
        }
    }

    @Test("Float32 values: the CRC equals the bytes' CRC and the first NaN or infinity is found wherever it is")
    func floatsWithFiniteness() {
        let count = 5_000
        var values = (0..<count).map { Float($0) * 0.5 - 7 }
        func check(_ values: [Float], start: Int) -> (UInt32, Int?) {
            values.withUnsafeBytes { raw in
                var crc = CRC32C()
                let bad = crc.update(floats: UnsafeRawBufferPointer(rebasing: raw[(4 * start)...]))
                return (crc.value, bad)
            }
        }
        for start in [0, 1, 3] {
            let (crc, bad) = check(values, start: start)
            #expect(bad == nil)
            #expect(crc == values.withUnsafeBytes { CRC32C.portableChecksum(UnsafeRawBufferPointer(rebasing: $0[(4 * start)...])) })
        }
        // In the first 256 bytes, the 256-byte loop, the 64- and 16-byte stages and the last values.
        for index in [0, 63, 64, 70, 1000, 4_930, 4_990, 4_996, count - 1] {
            for bad: Float in [.nan, .infinity, -.infinity] {
                let saved = values[index]
                values[index] = bad
                #expect(check(values, start: 0).1 == index, "\(bad) at \(index)")
                #expect(check(values, start: 1).1 == (index == 0 ? nil : index - 1), "\(bad) at \(index), from value 1")
                values[index] = saved
            }
        }
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

    @Test("Two CRCs combine into the CRC of the two strings one after the other, any lengths including none")
    func combine() {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        for (a, b) in [(0, 0), (0, 17), (17, 0), (1, 1), (3, 1_048_576 - 3 - 1000), (4096, 65_536), (69_999, 1), (12_345, 57_655)] {
            let first = Array(bytes[..<a]), second = Array(bytes[a..<(a + b) % (bytes.count + 1)])
            var combined = CRC32C()
            first.withUnsafeBytes { combined.update($0) }
            combined.append(crc: Self.crc(second), length: second.count)
            #expect(combined.value == Self.crc(first + second), "\(a) + \(second.count) bytes")
        }
    }

    @Test("A chunk checked piece by piece as it arrives, at any piece sizes, equals the check of the whole")
    func checkInPieces() {
        var floats = (0..<300_001).map { Float($0) * 0.5 - 1000 }
        for bad in [nil, 0, 1023, 150_000, 300_000] as [Int?] {
            if let bad { floats[bad] = bad % 2 == 0 ? .nan : -.infinity }
            defer { if let bad { floats[bad] = 0 } }
            floats.withUnsafeBytes { bytes in
                var whole = CRC32C()
                let first = whole.update(floats: bytes)
                for pieces in [[bytes.count], [1, 4096, 16_389, 3, 100_000], [16_384, 16_384, 7, 16_384]] {
                    var checker = ChunkChecker(data: bytes.baseAddress!, length: bytes.count)
                    var available = 0
                    var next = 0
                    while available < bytes.count {
                        available = min(bytes.count, available + pieces[next % pieces.count])
                        next += 1
                        checker.advance(to: available)
                    }
                    let check = checker.finish()
                    #expect(check == ChunkCheck(crc32c: whole.value, checkedFloats: true, firstNonFinite: first), "pieces \(pieces), bad \(String(describing: bad))")
                }
                // A length that is not whole floats: the CRC only.
                let odd = UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - 1)])
                var checker = ChunkChecker(data: odd.baseAddress!, length: odd.count)
                checker.advance(to: 5_000)
                #expect(checker.finish() == ChunkCheck(crc32c: CRC32C.checksum(odd), checkedFloats: false, firstNonFinite: nil))
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
