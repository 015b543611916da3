/// Exact secure sums of real numbers: each value becomes a signed 64-bit fixed-point integer
/// (`round(v · 2^16)`), cut into four 16-bit limbs, one per element of `Z_{2^32}`. Summing up to
/// 32,767 sites limb by limb cannot wrap, so the coordinator recovers the exact sum of the
/// fixed-point integers. Used for federated standardization statistics, whose magnitudes are
/// not known in advance (a quantizer's public clip would not fit them).
public enum ExactSums {
    public static let fractionBits = 16
    public static let limbsPerValue = 4
    /// The largest magnitude a value may have (2^47).
    public static let maxMagnitude = Double(1 << 47)

    /// `x` for a secure session: canary 1, weight 1, then the limbs of every value.
    /// - Throws: `BAD_INPUT` for a non-finite value or one beyond ±2^47.
    public static func encode(_ values: [Double]) throws -> [UInt32] {
        var x: [UInt32] = [1, 1]
        x.reserveCapacity(2 + values.count * limbsPerValue)
        for (index, value) in values.enumerated() {
            guard value.isFinite, abs(value) < maxMagnitude else {
                throw SecAggError(.badInput, "value \(index) (\(value)) is too large to sum exactly (limit ±2^47)")
            }
            let fixed = Int64((value * Double(1 << fractionBits)).rounded())
            let bits = UInt64(bitPattern: fixed)
            for limb in 0..<3 { x.append(UInt32((bits >> (16 * UInt64(limb))) & 0xFFFF)) }
            // The top limb carries the sign (two's complement across the sum).
            x.append(UInt32(bitPattern: Int32(Int16(truncatingIfNeeded: bits >> 48))))
        }
        return x
    }

    /// The exact sums from the unmasked `z`, after the canary checks (`survivors` sites).
    public static func decode(_ z: [UInt32], survivors: Int) throws -> [Double] {
        guard z.count >= 2, (z.count - 2) % limbsPerValue == 0, Int(z[0]) == survivors, Int(z[1]) == survivors else {
            throw SecAggError(.unmaskMismatch, "the statistics canary is \(z.first ?? 0), not the \(survivors) survivors: a mask did not cancel")
        }
        return stride(from: 2, to: z.count, by: limbsPerValue).map { start in
            var total = Int128(Int32(bitPattern: z[start + 3])) << 48
            for limb in 0..<3 { total += Int128(z[start + limb]) << (16 * limb) }
            return Double(total) / Double(1 << fractionBits)
        }
    }
}
