/// Deterministic sampling for participant selection: the same seed and candidates give the
/// same choice, so that a logged seed replays a round's selection.
public struct SeededSampler: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// SplitMix64.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

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
