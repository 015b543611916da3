import Foundation

/// Samples the discrete Gaussian `N_Z(0, σ²)` with Canonne, Kamath & Steinke's algorithm
/// ("The Discrete Gaussian for Differential Privacy", 2020, Algorithm 3: a discrete Laplace
/// proposal with scale `t = ⌊σ⌋ + 1`, accepted with probability `exp(−(|Z| − σ²/t)² / 2σ²)`),
/// drawing every random bit from a keyed AES-128-CTR stream (the spec's `dp-noise` seed).
///
/// Deviation from FLSECAGG-v1 §8 ("exact integer arithmetic"): the Bernoulli(exp(−γ)) trials
/// compare a 53-bit uniform with `exp(−γ)` in Float64, as TensorFlow Privacy's discrete Gaussian
/// sampler does, instead of the exact rational-arithmetic Bernoulli of CKS Algorithm 1.
public final class DiscreteGaussianSampler {
    public let sigma: Double
    private let scale: UInt64
    private let generator: MaskGenerator
    private var buffer: [UInt32] = []
    private var position = 0

    public init(sigma: Double, seed: [UInt8]) throws {
        guard sigma > 0, sigma.isFinite, sigma < 1e15 else { throw SecAggError(.badInput, "noise σ must be positive and finite") }
        self.sigma = sigma
        scale = UInt64(sigma.rounded(.down)) + 1
        generator = try MaskGenerator(seed: seed)
    }

    private func word() -> UInt32 {
        if position == buffer.count {
            buffer = generator.next(4096)
            position = 0
        }
        defer { position += 1 }
        return buffer[position]
    }

    /// Uniform in (0, 1) with 53 random bits.
    private func uniform() -> Double {
        let bits = (UInt64(word()) << 21) ^ UInt64(word() >> 11)
        return (Double(bits & ((1 << 53) - 1)) + 0.5) / Double(UInt64(1) << 53)
    }

    /// Uniform integer in `0 ..< bound` (rejection sampling, exactly uniform).
    private func integer(below bound: UInt64) -> UInt64 {
        let limit = UInt64.max - (UInt64.max % bound)
        while true {
            let value = (UInt64(word()) << 32) | UInt64(word())
            if value < limit { return value % bound }
        }
    }

    private func bernoulliExp(_ gamma: Double) -> Bool { uniform() < exp(-gamma) }

    /// One sample.
    public func next() -> Int64 {
        let t = Double(scale)
        while true {
            let u = integer(below: scale)
            guard bernoulliExp(Double(u) / t) else { continue }
            var v: UInt64 = 0
            while bernoulliExp(1) { v += 1 }
            let negative = word() & 1 == 1
            if negative && u == 0 && v == 0 { continue }
            let magnitude = Double(u) + t * Double(v)
            let deviation = magnitude - sigma * sigma / t
            guard bernoulliExp(deviation * deviation / (2 * sigma * sigma)) else { continue }
            let z = Int64(u + scale * v)
            return negative ? -z : z
        }
    }
}
