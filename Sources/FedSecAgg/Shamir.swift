/// Shamir secret sharing over `GF(p)`, `p = 2^127 − 1` (FLSECAGG-v1 §3.8), natively in `UInt128`
/// (the spec allows a native Mersenne implementation that reproduces its vectors).
///
/// A 32-byte secret is cut into chunks of 15, 15 and 2 bytes (big-endian integers), each shared
/// with its own random polynomial of degree `t − 1`; a holder's share is the three evaluations at
/// its index, 16 bytes each, big-endian: 48 bytes.
public enum Shamir {
    public static let prime: UInt128 = (1 << 127) - 1

    /// Where polynomial coefficients come from: 16 bytes at a time.
    public protocol CoefficientSource {
        mutating func next16() -> [UInt8]
    }

    // MARK: Field arithmetic

    @inline(__always) static func reduce(_ x: UInt128) -> UInt128 {
        var r = (x & prime) + (x >> 127)
        if r >= prime { r -= prime }
        return r
    }

    @inline(__always) static func add(_ a: UInt128, _ b: UInt128) -> UInt128 { reduce(a + b) }
    @inline(__always) static func subtract(_ a: UInt128, _ b: UInt128) -> UInt128 { a >= b ? a - b : a + prime - b }

    @inline(__always) static func multiply(_ a: UInt128, _ b: UInt128) -> UInt128 {
        let (high, low) = a.multipliedFullWidth(by: b)
        // x = high·2^128 + low ≡ 2·high + low (mod p), since 2^127 ≡ 1.
        return reduce((low & prime) + (low >> 127) + (high << 1))
    }

    static func power(_ base: UInt128, _ exponent: UInt128) -> UInt128 {
        var result: UInt128 = 1, b = base, e = exponent
        while e > 0 {
            if e & 1 == 1 { result = multiply(result, b) }
            b = multiply(b, b)
            e >>= 1
        }
        return result
    }

    static func inverse(_ a: UInt128) -> UInt128 { power(a, prime - 2) }

    static func integer(_ bytes: some Collection<UInt8>) -> UInt128 { bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) } }

    static func bytes(_ value: UInt128, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt128(count - 1 - $0))) }
    }

    /// A uniform field element: 16 bytes, big-endian, top bit cleared, `p` itself redrawn.
    static func coefficient(_ source: inout some CoefficientSource) -> UInt128 {
        while true {
            let value = integer(source.next16()) & prime
            if value != prime { return value }
        }
    }

    // MARK: Sharing

    static let chunkRanges = [0..<15, 15..<30, 30..<32]

    /// Shares a 32-byte secret among `holders` (indices ≥ 1) with threshold `t`.
    public static func split(_ secret: [UInt8], threshold t: Int, holders: [UInt32], coefficients source: inout some CoefficientSource)
        -> [UInt32: [UInt8]]
    {
        precondition(secret.count == 32 && t >= 1, "Shamir: a 32-byte secret and a threshold ≥ 1")
        var polynomials: [[UInt128]] = []
        for range in chunkRanges {
            var coefficients = [integer(secret[range])]
            for _ in 1..<max(t, 1) { coefficients.append(coefficient(&source)) }
            polynomials.append(coefficients)
        }
        var shares: [UInt32: [UInt8]] = [:]
        for holder in holders {
            let x = UInt128(holder)
            var share: [UInt8] = []
            for coefficients in polynomials {
                var value: UInt128 = 0
                for coefficient in coefficients.reversed() { value = add(multiply(value, x), coefficient) }
                share += bytes(value, count: 16)
            }
            shares[holder] = share
        }
        for index in polynomials.indices { for c in polynomials[index].indices { polynomials[index][c] = 0 } }
        return shares
    }

    /// Reconstructs the secret from at least `t` shares (holder index → 48 bytes), using the `t`
    /// smallest indices.
    ///
    /// - Throws: fewer than `t` shares; a malformed share; a result out of the chunks' ranges
    ///   (what a wrong or tampered share usually gives).
    public static func combine(_ shares: [UInt32: [UInt8]], threshold t: Int) throws -> [UInt8] {
        var cache = LagrangeCache()
        return try combine(shares, threshold: t, cache: &cache)
    }

    /// Lagrange coefficients at 0, by holder set: a round reconstructs many secrets from the same
    /// holders (with the complete graph, all of them), so each set is inverted once.
    public struct LagrangeCache {
        var coefficients: [[UInt128]: [UInt128]] = [:]
        public init() {}
        mutating func lambdas(_ xs: [UInt128]) -> [UInt128] {
            if let known = coefficients[xs] { return known }
            let lambdas = Shamir.lambdas(xs)
            coefficients[xs] = lambdas
            return lambdas
        }
    }

    /// ``combine(_:threshold:)`` reusing Lagrange coefficients across calls.
    public static func combine(_ shares: [UInt32: [UInt8]], threshold t: Int, cache: inout LagrangeCache) throws -> [UInt8] {
        guard shares.count >= t, t >= 1 else { throw SecAggError.insufficientShares(shares.count, t) }
        let xs = shares.keys.sorted().prefix(t).map { UInt128($0) }
        guard xs.allSatisfy({ $0 > 0 && $0 < prime }), shares.values.allSatisfy({ $0.count == 48 }) else {
            throw SecAggError(.inconsistent, "a share is malformed (index 0 or not 48 bytes)")
        }
        let chunks = interpolateAtZero(xs: xs, lambdas: cache.lambdas(xs), shares: shares)
        guard chunks[0] < 1 << 120, chunks[1] < 1 << 120, chunks[2] < 1 << 16 else {
            throw SecAggError(.unmaskMismatch, "the shares do not reconstruct a valid secret (a share is wrong)")
        }
        return bytes(chunks[0], count: 15) + bytes(chunks[1], count: 15) + bytes(chunks[2], count: 2)
    }

    /// Lagrange interpolation at 0 of the three chunks, without the range check (tests show what
    /// fewer than `t` shares give).
    static func interpolateAtZero(xs: [UInt128], shares: [UInt32: [UInt8]]) -> [UInt128] {
        interpolateAtZero(xs: xs, lambdas: lambdas(xs), shares: shares)
    }

    /// `λ_i = Π_{l≠i} x_l · (x_l − x_i)^{-1}`, one inversion per coefficient.
    static func lambdas(_ xs: [UInt128]) -> [UInt128] {
        xs.enumerated().map { i, xi in
            var numerator: UInt128 = 1, denominator: UInt128 = 1
            for (l, xl) in xs.enumerated() where l != i {
                numerator = multiply(numerator, xl)
                denominator = multiply(denominator, subtract(xl, xi))
            }
            return multiply(numerator, inverse(denominator))
        }
    }

    static func interpolateAtZero(xs: [UInt128], lambdas: [UInt128], shares: [UInt32: [UInt8]]) -> [UInt128] {
        var chunks: [UInt128] = [0, 0, 0]
        for (i, xi) in xs.enumerated() {
            let lambda = lambdas[i]
            let share = shares[UInt32(xi)]!
            for j in 0..<3 {
                chunks[j] = add(chunks[j], multiply(lambda, integer(share[(16 * j)..<(16 * j + 16)])))
            }
        }
        return chunks
    }
}

/// Coefficients from OpenSSL's private DRBG (production).
public struct SystemCoefficientSource: Shamir.CoefficientSource {
    public init() {}
    public mutating func next16() -> [UInt8] { SecAggCrypto.privateRandom(16) }
}

/// Coefficients from an AES-128-CTR keystream (the spec's deterministic test stream, §5).
public struct KeystreamCoefficientSource: Shamir.CoefficientSource {
    let generator: MaskGenerator
    public init(seed: [UInt8]) throws { generator = try MaskGenerator(seed: seed) }
    public mutating func next16() -> [UInt8] { generator.nextBytes(16) }
}
