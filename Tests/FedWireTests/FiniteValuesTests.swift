import FedHashing
import FedWire
import Testing

/// Finiteness, checked in the CRC-32C's pass over every chunk a coordinator receives and over
/// every update an agent sends.
@Suite("Update validation")
struct UpdateValidationTests {
    /// The first NaN or infinity among `bytes` (whole Float32 values at any alignment), or nil.
    static func firstNonFinite(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var crc = CRC32C()
        return crc.update(floats: bytes)
    }

    @Test("Non-finite values are found at any alignment")
    func nonFinite() {
        var bytes = [UInt8](repeating: 0, count: 1 + 4 * 5)
        let values: [Float] = [1, -2, .infinity, 3, .nan]
        for (index, value) in values.enumerated() {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { raw in
                for k in 0..<4 { bytes[1 + index * 4 + k] = raw[k] }
            }
        }
        bytes.withUnsafeBytes { raw in
            let unaligned = UnsafeRawBufferPointer(rebasing: raw[1...])
            #expect(Self.firstNonFinite(unaligned) == 2)
            #expect(Self.firstNonFinite(UnsafeRawBufferPointer(rebasing: unaligned[..<8])) == nil)
            #expect(Self.firstNonFinite(UnsafeRawBufferPointer(rebasing: unaligned[12...])) == 1)
        }
    }

    @Test("Non-finite values are found in the vector blocks and the tail; extreme finite values pass")
    func nonFiniteLong() {
        let finite: [Float] = (0..<1000).map { [Float.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, 0][$0 % 4] }
        for (position, bad) in [(0, Float.nan), (63, .infinity), (64, -.infinity), (500, .nan), (959, .infinity), (960, .nan), (999, -.infinity)] {
            var values = finite
            values[position] = bad
            values[min(999, position + 3)] = .nan
            var bytes = [UInt8](repeating: 0, count: 3)
            values.withUnsafeBytes { bytes += $0 }
            bytes.withUnsafeBytes { raw in
                #expect(Self.firstNonFinite(UnsafeRawBufferPointer(rebasing: raw[3...])) == position)
            }
        }
        finite.withUnsafeBytes { #expect(Self.firstNonFinite($0) == nil) }
    }
}
