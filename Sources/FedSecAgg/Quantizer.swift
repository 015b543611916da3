import CKernels
import Foundation

/// Fixed-point quantization of a weighted update into `Z_{2^32}` (§3.9): element 0 is the count
/// canary (1), element 1 the weight `w' = min(w, W_max)`, then each parameter as
/// `ω · clamp(δ, −c, c) · 2^e` with unbiased stochastic rounding, two's complement.
public struct Quantizer: Sendable {
    public let scaleExponent: Int32
    public let clip: Double
    public let maxWeight: UInt32

    public init(scaleExponent: Int32, clip: Double, maxWeight: UInt32) {
        self.scaleExponent = scaleExponent
        self.clip = clip
        self.maxWeight = maxWeight
    }

    public init(_ config: SecAggConfig) {
        self.init(scaleExponent: config.scaleExponent, clip: config.clip, maxWeight: config.maxWeight)
    }

    var scale: Double { Double(sign: .plus, exponent: Int(scaleExponent), significand: 1) }

    /// The largest `e` with `N · (c · 2^e + 1) + B_noise ≤ 2^31 − 1`.
    public static func scaleExponent(agents: Int, clip: Double, noiseBound: Double = 0) -> Int32 {
        var e: Int32 = 0
        while e < 60 && Double(agents) * (clip * Double(sign: .plus, exponent: Int(e + 1), significand: 1) + 1) + noiseBound <= Double(Int32.max) {
            e += 1
        }
        return e
    }

    /// `x_u` for a Float32 update (each value widened to Float64), with `examples` examples;
    /// `rounding` is the 32-byte `seed_rnd`. The arithmetic runs in a vectorized C loop
    /// (`fed_quantize_f32`) with exactly the operations of ``quantize(count:_:examples:rounding:into:)``.
    /// - Throws: `BAD_INPUT` on a NaN or infinity (never sent).
    public func quantize(_ delta: UnsafeBufferPointer<Float>, examples: UInt64, rounding: [UInt8], into x: UnsafeMutableBufferPointer<UInt32>) throws {
        try forEachChunk(count: delta.count, examples: examples, rounding: rounding, into: x) { start, count, randoms, omega in
            let bad = fed_quantize_f32(delta.baseAddress! + start, randoms, x.baseAddress! + 2 + start, count, omega, clip, scale)
            if bad >= 0 { throw SecAggError(.badInput, "the update holds a NaN or infinity at element \(start + bad)") }
        }
    }

    /// `x_u` for `count` values given by `value(j)` in Float64 (§3.9's exact operation order).
    public func quantize(count parameterCount: Int, _ value: (Int) -> Double, examples: UInt64, rounding: [UInt8],
                         into x: UnsafeMutableBufferPointer<UInt32>) throws {
        let (clip, scale) = (self.clip, self.scale)
        try forEachChunk(count: parameterCount, examples: examples, rounding: rounding, into: x) { start, count, randoms, omega in
            for i in 0..<count {
                let d = value(start + i)
                guard d.isFinite else { throw SecAggError(.badInput, "the update holds a NaN or infinity at element \(start + i)") }
                let v = (omega * min(max(d, -clip), clip)) * scale
                // floor(v) by truncation (|v| ≤ c·2^e < 2^31 is exact).
                var whole = Int64(v)
                if Double(whole) > v { whole -= 1 }
                let threshold = (v - Double(whole)) * 4_294_967_296.0
                x[2 + start + i] = UInt32(truncatingIfNeeded: whole + (Double(randoms[i]) < threshold ? 1 : 0))
            }
        }
    }

    /// Writes the canary and the weight, then hands `body` the update in chunks with the rounding
    /// randomness of each (`r_j` = element `j + 2` of `PRG(seed_rnd)`) and `ω = w' / W_max`.
    private func forEachChunk(
        count parameterCount: Int, examples: UInt64, rounding: [UInt8], into x: UnsafeMutableBufferPointer<UInt32>,
        _ body: (_ start: Int, _ count: Int, _ randoms: UnsafePointer<UInt32>, _ omega: Double) throws -> Void
    ) throws {
        precondition(x.count == parameterCount + 2, "L = m + 2")
        let weight = UInt32(min(examples, UInt64(maxWeight)))
        let omega = Double(weight) / Double(maxWeight)
        x[0] = 1
        x[1] = weight
        let generator = try MaskGenerator(seed: rounding, startElement: 2)
        var randoms = [UInt32](repeating: 0, count: 1 << 14)
        var start = 0
        while start < parameterCount {
            let count = min(randoms.count, parameterCount - start)
            try randoms.withUnsafeMutableBufferPointer { r in
                generator.fill(r.baseAddress!, count: count)
                try body(start, count, r.baseAddress!, omega)
            }
            start += count
        }
    }

    /// The weighted mean update from the unmasked sum `z`, after the canary checks.
    ///
    /// - Throws: `UNMASK_MISMATCH` when the count is not the number of survivors or the total
    ///   weight is out of range: a mask did not cancel.
    public func dequantizedMean(_ z: UnsafeBufferPointer<UInt32>, survivors: Int) throws -> (mean: (Int) -> Double, totalWeight: UInt32) {
        guard z.count >= 2, Int(z[0]) == survivors else {
            throw SecAggError(.unmaskMismatch, "the count canary is \(z.first ?? 0), not the \(survivors) survivors: a mask did not cancel")
        }
        let total = z[1]
        guard total > 0, UInt64(total) <= UInt64(survivors) * UInt64(maxWeight) else {
            throw SecAggError(.unmaskMismatch, "the total weight \(total) is out of range for \(survivors) survivors")
        }
        let factor = Double(maxWeight) / Double(total) / scale
        let base = z.baseAddress!
        return ({ j in Double(Int32(bitPattern: base[2 + j])) * factor }, total)
    }
}
