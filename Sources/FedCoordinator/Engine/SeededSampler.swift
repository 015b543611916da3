import FedCore

/// Deterministic sampling for participant selection: the same seed and candidates give the
/// same choice, so that a logged seed replays a round's selection.
public struct SeededSampler: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64

    public init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    public mutating func next() -> UInt64 { generator.next() }

    /// The seed of one attempt of one round, derived from the base seed.
    public static func attemptSeed(base: UInt64, round: UInt64, attempt: Int) -> UInt64 {
        var sampler = SeededSampler(seed: base ^ (round &* 0x0100_0000_01B3) ^ (UInt64(attempt) << 48))
        return sampler.next()
    }

    /// `count` distinct elements of `candidates` (sorted first, so order of arrival does not matter).
    public static func sample(_ candidates: [String], count: Int, seed: UInt64) -> [String] {
        var pool = candidates.sorted()
        var sampler = SeededSampler(seed: seed)
        let take = min(count, pool.count)
        for index in 0..<take {
            let pick = index + Int(sampler.next() % UInt64(pool.count - index))
            pool.swapAt(index, pick)
        }
        return Array(pool.prefix(take)).sorted()
    }
}
