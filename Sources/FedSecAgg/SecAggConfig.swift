/// One attempt's secure-aggregation parameters (the `SecAggConfig` of FLSECAGG-v1 §4): the roster,
/// the graph, the threshold, quantization, DP and the stage deadlines. Bound, with the global
/// model's hash, into ``configDigest()`` and from there into every key and mask.
public struct SecAggConfig: Sendable, Equatable {
    public static let protocolVersion: UInt32 = 1

    public struct DifferentialPrivacy: Sendable, Equatable {
        /// 1: discrete Gaussian; 2: Skellam.
        public var mode: UInt8
        /// Each agent's noise standard deviation, in quantized (integer) units.
        public var localStddev: Double
        /// L2 clipping norm of each agent's update, before quantization.
        public var l2Clip: Double
        public init(mode: UInt8, localStddev: Double, l2Clip: Double) {
            self.mode = mode
            self.localStddev = localStddev
            self.l2Clip = l2Clip
        }
    }

    public var roundID: UInt64
    public var sessionNonce: [UInt8]
    /// Agent ids (TLS identities); index `i` is position `i − 1`.
    public var roster: [String]
    /// Neighbours per agent, excluding itself; `N − 1` is the complete graph.
    public var neighborDegree: UInt32
    public var threshold: UInt32
    public var minSurvivors: UInt32
    public var graphSeed: [UInt8]
    /// `L = m + 2`.
    public var vectorLength: UInt64
    public var scaleExponent: Int32
    public var clip: Double
    public var maxWeight: UInt32
    public var modelSHA256: [UInt8]
    public var dp: DifferentialPrivacy?
    /// Stage deadlines in milliseconds: advertise keys, share keys, masked input, unmask.
    public var stageTimeoutsMs: [UInt32]

    public init(roundID: UInt64, sessionNonce: [UInt8], roster: [String], neighborDegree: UInt32, threshold: UInt32,
                minSurvivors: UInt32, graphSeed: [UInt8], vectorLength: UInt64, scaleExponent: Int32, clip: Double, maxWeight: UInt32,
                modelSHA256: [UInt8], dp: DifferentialPrivacy? = nil, stageTimeoutsMs: [UInt32] = [60_000, 60_000, 1_800_000, 60_000]) {
        self.roundID = roundID
        self.sessionNonce = sessionNonce
        self.roster = roster
        self.neighborDegree = neighborDegree
        self.threshold = threshold
        self.minSurvivors = minSurvivors
        self.graphSeed = graphSeed
        self.vectorLength = vectorLength
        self.scaleExponent = scaleExponent
        self.clip = clip
        self.maxWeight = maxWeight
        self.modelSHA256 = modelSHA256
        self.dp = dp
        self.stageTimeoutsMs = stageTimeoutsMs
    }

    public var agentCount: Int { roster.count }
    public var isCompleteGraph: Bool { Int(neighborDegree) >= roster.count - 1 }

    /// §3.3.
    public func configDigest() -> [UInt8] {
        var w = ByteWriter(SecAggCrypto.info("config"))
        w.u64(roundID)
        w.u32(UInt32(roster.count))
        w.u32(neighborDegree)
        w.u32(threshold)
        w.u32(minSurvivors)
        w.u64(vectorLength)
        w.i32(scaleExponent)
        w.f64(clip)
        w.u32(maxWeight)
        w.u8(dp?.mode ?? 0)
        if let dp {
            w.f64(dp.localStddev)
            w.f64(dp.l2Clip)
        }
        w.raw(graphSeed)
        w.raw(modelSHA256)
        for (position, agent) in roster.enumerated() {
            let id = Array(agent.utf8)
            w.u32(UInt32(position + 1))
            w.u16(UInt16(id.count))
            w.raw(id)
        }
        return SecAggCrypto.sha256(w.bytes)
    }

    /// The noise headroom `B_noise` of §8 (0 without DP).
    public var noiseBound: Double {
        guard let dp else { return 0 }
        return (8 * dp.localStddev * Double(roster.count).squareRoot()).rounded(.up)
    }

    /// The checks every agent runs on a round's configuration before taking part (§4 stage 0).
    public func validate(agentID: String, index: UInt32, parameterCount: Int, lastRoundID: UInt64?) throws {
        func refuse(_ message: String) -> SecAggError { SecAggError(.inconsistent, message) }
        let n = UInt32(roster.count)
        guard lastRoundID.map({ roundID > $0 }) ?? true else { throw refuse("round \(roundID) is not newer than the last one seen") }
        guard index >= 1, index <= n, roster[Int(index) - 1] == agentID else { throw refuse("this agent is not at index \(index) of the roster") }
        guard Set(roster).count == roster.count else { throw refuse("the roster names an agent twice") }
        guard sessionNonce.count == 32, graphSeed.count == 32, modelSHA256.count == 32 else { throw refuse("nonce, graph seed or model hash is not 32 bytes") }
        guard neighborDegree == n - 1 || (neighborDegree % 2 == 0 && neighborDegree >= 2 && neighborDegree < n - 1) else {
            throw refuse("neighbour degree \(neighborDegree) is neither N − 1 nor even and below N − 1")
        }
        guard threshold >= 2, threshold <= neighborDegree + 1 else { throw refuse("threshold \(threshold) is outside 2 … k + 1") }
        guard minSurvivors >= 3 else { throw refuse("min_survivors \(minSurvivors) is below the floor of 3") }
        guard !isCompleteGraph || minSurvivors >= threshold else { throw refuse("min_survivors is below the threshold") }
        guard UInt64(n) * UInt64(maxWeight) <= UInt64(UInt32.max), maxWeight >= 1 else { throw refuse("N · W_max exceeds 2^32 − 1") }
        guard clip > 0, clip.isFinite, scaleExponent >= 0, scaleExponent <= 60,
              Double(n) * (clip * Double(sign: .plus, exponent: Int(scaleExponent), significand: 1) + 1) + noiseBound <= Double(Int32.max)
        else { throw refuse("N · (c · 2^e + 1) + B_noise exceeds 2^31 − 1: the sum could wrap") }
        guard vectorLength == UInt64(parameterCount) + 2 else {
            throw refuse("vector length \(vectorLength) does not fit the model's \(parameterCount) parameters (L = m + 2)")
        }
        guard stageTimeoutsMs.count == 4 else { throw refuse("four stage timeouts expected") }
    }
}

/// One agent's advertised public keys (stage 0).
public struct AdvertisedKeys: Sendable, Equatable {
    public var index: UInt32
    public var encryptionKey: [UInt8]
    public var maskingKey: [UInt8]
    public init(index: UInt32, encryptionKey: [UInt8], maskingKey: [UInt8]) {
        self.index = index
        self.encryptionKey = encryptionKey
        self.maskingKey = maskingKey
    }
}

/// A share envelope on its way between two agents through the coordinator.
public struct EncryptedShare: Sendable, Equatable {
    /// The recipient (on upload) or the sender (on download).
    public var peer: UInt32
    public var ciphertext: [UInt8]
    public init(peer: UInt32, ciphertext: [UInt8]) {
        self.peer = peer
        self.ciphertext = ciphertext
    }
}

/// A share an agent reveals at the unmask stage: of `owner`'s `b` (owner survived) or `s_sk`
/// (owner dropped), never both.
public struct RevealedShare: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case selfMask, maskingKey }
    public var owner: UInt32
    public var kind: Kind
    public var share: [UInt8]
    public init(owner: UInt32, kind: Kind, share: [UInt8]) {
        self.owner = owner
        self.kind = kind
        self.share = share
    }
}

/// The derivations shared by both sides (§3.1, §3.4, §3.6).
public enum SecAggDerivation {
    /// §3.4.
    public static func sessionID(nonce: [UInt8], configDigest: [UInt8], keys: [AdvertisedKeys]) -> [UInt8] {
        var w = ByteWriter(SecAggCrypto.info("session"))
        w.raw(nonce)
        w.raw(configDigest)
        w.u32(UInt32(keys.count))
        for key in keys.sorted(by: { $0.index < $1.index }) {
            w.u32(key.index)
            w.raw(key.encryptionKey)
            w.raw(key.maskingKey)
        }
        return SecAggCrypto.sha256(w.bytes)
    }

    static func pair(_ a: UInt32, _ b: UInt32) -> [UInt8] {
        var w = ByteWriter()
        w.u32(a)
        w.u32(b)
        return w.bytes
    }

    /// `seed_pair(u, v)`, symmetric.
    public static func pairwiseSeed(agreement: [UInt8], sessionID: [UInt8], _ u: UInt32, _ v: UInt32) throws -> [UInt8] {
        try SecAggCrypto.hkdf(ikm: agreement, salt: sessionID, label: "pairwise-mask", context: pair(min(u, v), max(u, v)), length: 32)
    }

    /// `seed_self(b_u)`.
    public static func selfSeed(b: [UInt8], sessionID: [UInt8], index: UInt32) throws -> [UInt8] {
        var w = ByteWriter()
        w.u32(index)
        return try SecAggCrypto.hkdf(ikm: b, salt: sessionID, label: "self-mask", context: w.bytes, length: 32)
    }

    /// `b_commit_u`.
    public static func selfMaskCommitment(b: [UInt8], sessionID: [UInt8], index: UInt32) -> [UInt8] {
        var w = ByteWriter(SecAggCrypto.info("b-commit"))
        w.raw(sessionID)
        w.u32(index)
        w.raw(b)
        return SecAggCrypto.sha256(w.bytes)
    }

    /// The directional AES-256-GCM key and nonce for `sender → recipient`.
    public static func shareKey(agreement: [UInt8], sessionID: [UInt8], sender: UInt32, recipient: UInt32) throws -> (key: [UInt8], nonce: [UInt8]) {
        let material = try SecAggCrypto.hkdf(ikm: agreement, salt: sessionID, label: "share-enc", context: pair(sender, recipient), length: 44)
        return (Array(material[0..<32]), Array(material[32..<44]))
    }

    public static func shareAAD(sessionID: [UInt8], sender: UInt32, recipient: UInt32) -> [UInt8] {
        var w = ByteWriter(SecAggCrypto.info("share-aad"))
        w.raw(sessionID)
        w.u32(sender)
        w.u32(recipient)
        return w.bytes
    }

    /// The 105-byte envelope plaintext: `0x01 ‖ u32 owner ‖ u32 holder ‖ b_share ‖ s_share`.
    public static func envelopePlaintext(owner: UInt32, holder: UInt32, bShare: [UInt8], sShare: [UInt8]) -> [UInt8] {
        var w = ByteWriter([1])
        w.u32(owner)
        w.u32(holder)
        w.raw(bShare)
        w.raw(sShare)
        return w.bytes
    }

    /// `+1` when `u`'s index is above `v`'s: the higher index adds the pairwise mask.
    public static func addsPairwiseMask(_ u: UInt32, over v: UInt32) -> Bool { u > v }
}
