/// All randomness of a secure-aggregation participant, injectable (§5 "test hooks"):
/// production draws from OpenSSL's private DRBG; tests use the spec's deterministic derivations.
public protocol SecAggRandomness: Sendable {
    /// A fresh 32-byte secret of `kind` for the participant at `index`.
    func secret(_ kind: SecAggSecret, index: UInt32) -> [UInt8]
    /// The Shamir coefficient stream for `owner`'s secret `which` (0: `b`, 1: `s_sk`).
    func coefficients(owner: UInt32, which: UInt8) -> any Shamir.CoefficientSource
}

/// The secrets an agent draws per round.
public enum SecAggSecret: String, Sendable, CaseIterable {
    /// `c_sk`: the X25519 key that encrypts shares.
    case encryptionKey = "test c_sk"
    /// `s_sk`: the X25519 key of the pairwise masks.
    case maskingKey = "test s_sk"
    /// `b_u`: the self-mask seed.
    case selfMask = "test b"
    /// `seed_rnd`: the stochastic-rounding randomness.
    case rounding = "test rnd"
    /// The distributed-DP noise seed (spec §3.1 label `dp-noise`).
    case noise = "test noise"
}

/// Production randomness: `RAND_priv_bytes` for every secret and coefficient.
public struct SystemSecAggRandomness: SecAggRandomness {
    public init() {}
    public func secret(_ kind: SecAggSecret, index: UInt32) -> [UInt8] { SecAggCrypto.privateRandom(32) }
    public func coefficients(owner: UInt32, which: UInt8) -> any Shamir.CoefficientSource { SystemCoefficientSource() }
}

/// The spec's deterministic test inputs (§5): `c_sk_i = SHA-256("test c_sk" ‖ u32 i)` and so on;
/// Shamir coefficients from AES-128-CTR under `SHA-256(info("test-shamir", u32 i ‖ u8 which))`.
/// Never use outside tests: every secret is public.
public struct DeterministicSecAggRandomness: SecAggRandomness {
    public init() {}
    public func secret(_ kind: SecAggSecret, index: UInt32) -> [UInt8] {
        var writer = ByteWriter(Array(kind.rawValue.utf8))
        writer.u32(index)
        return SecAggCrypto.sha256(writer.bytes)
    }
    public func coefficients(owner: UInt32, which: UInt8) -> any Shamir.CoefficientSource {
        var context = ByteWriter()
        context.u32(owner)
        context.u8(which)
        return try! KeystreamCoefficientSource(seed: SecAggCrypto.sha256(SecAggCrypto.info("test-shamir", context.bytes)))
    }
}
