import Foundation

/// One agent's side of one secure-aggregation attempt (FLSECAGG-v1 §4): keys, shares, the masked
/// input and the one-shot unmask, with every check the spec makes an agent run. Holds secrets
/// only in memory and cleanses them after the unmask, an abort or deinit.
///
/// Not thread-safe: the agent serializes calls on one attempt.
public final class SecAggAgentSession {
    public let config: SecAggConfig
    public let index: UInt32
    public let keys: AdvertisedKeys
    private let randomness: any SecAggRandomness
    private let digest: [UInt8]
    private let graph: SecAggGraph

    private var encryptionSecret: [UInt8]
    private var maskingSecret: [UInt8]
    private var selfMaskSeed: [UInt8] = []
    private var sessionID: [UInt8] = []
    private var u1: [UInt32: AdvertisedKeys] = [:]
    private var shareResponse: (commitment: [UInt8], outgoing: [EncryptedShare])?
    /// The shares this agent holds, by owner (its own included): (b-share, s-share).
    private var held: [UInt32: (b: [UInt8], s: [UInt8])] = [:]
    private var u2: Set<UInt32>?
    /// `A_u`: neighbours whose shares arrived.
    public private(set) var acceptedNeighbours: Set<UInt32> = []
    private var masked = false
    private var unmaskAnswer: (survivors: [UInt32], dropped: [UInt32], shares: [RevealedShare])?
    public private(set) var erased = false

    /// Stage 0: checks the configuration (and that the model received is the one it names), then
    /// draws the two key pairs.
    public init(config: SecAggConfig, index: UInt32, agentID: String, receivedModelSHA256: [UInt8], parameterCount: Int,
                lastRoundID: UInt64?, randomness: any SecAggRandomness) throws {
        try config.validate(agentID: agentID, index: index, parameterCount: parameterCount, lastRoundID: lastRoundID)
        guard receivedModelSHA256 == config.modelSHA256 else {
            throw SecAggError(.inconsistent, "the global model received is not the one the round's configuration names")
        }
        self.config = config
        self.index = index
        self.randomness = randomness
        digest = config.configDigest()
        graph = try SecAggGraph(config: config, configDigest: digest)
        encryptionSecret = randomness.secret(.encryptionKey, index: index)
        maskingSecret = randomness.secret(.maskingKey, index: index)
        keys = AdvertisedKeys(
            index: index, encryptionKey: try SecAggCrypto.x25519PublicKey(privateKey: encryptionSecret),
            maskingKey: try SecAggCrypto.x25519PublicKey(privateKey: maskingSecret))
    }

    deinit { erase() }

    private func refuse(_ message: String) -> SecAggError { SecAggError(.inconsistent, message) }

    /// Stage 1: checks the advertised keys, then Shamir-shares `b_u` and `s_sk_u` to the holders
    /// and seals one envelope per neighbour. A repeated request gets the identical response.
    public func shareKeys(_ list: [AdvertisedKeys]) throws -> (commitment: [UInt8], outgoing: [EncryptedShare]) {
        if let shareResponse { return shareResponse }
        guard !erased else { throw refuse("this attempt's secrets are erased") }
        let n = UInt32(config.roster.count)
        var byIndex: [UInt32: AdvertisedKeys] = [:]
        var allKeys = Set<[UInt8]>()
        for entry in list {
            guard entry.index >= 1, entry.index <= n, byIndex[entry.index] == nil else { throw refuse("the key list names index \(entry.index) twice or outside the roster") }
            guard entry.encryptionKey.count == 32, entry.maskingKey.count == 32 else { throw refuse("a public key is not 32 bytes") }
            guard allKeys.insert(entry.encryptionKey).inserted, allKeys.insert(entry.maskingKey).inserted else { throw refuse("a public key appears twice in the key list") }
            byIndex[entry.index] = entry
        }
        guard byIndex[index] == keys else { throw refuse("this agent's own keys are missing from the key list or altered") }
        guard byIndex.count >= Int(config.minSurvivors) else { throw SecAggError(.tooFewSurvivors, "\(byIndex.count) agents advertised keys; at least \(config.minSurvivors) are needed") }
        let holders = graph.holders(of: index).filter { byIndex[$0] != nil }
        guard holders.count >= Int(config.threshold) else { throw SecAggError(.tooFewSurvivors, "only \(holders.count) share holders, below the threshold \(config.threshold)") }
        u1 = byIndex
        sessionID = SecAggDerivation.sessionID(nonce: config.sessionNonce, configDigest: digest, keys: list)
        selfMaskSeed = randomness.secret(.selfMask, index: index)
        let sorted = holders.sorted()
        var bSource = randomness.coefficients(owner: index, which: 0)
        var bShares = Shamir.split(selfMaskSeed, threshold: Int(config.threshold), holders: sorted, coefficients: &bSource)
        var sSource = randomness.coefficients(owner: index, which: 1)
        var sShares = Shamir.split(maskingSecret, threshold: Int(config.threshold), holders: sorted, coefficients: &sSource)
        held[index] = (bShares[index]!, sShares[index]!)
        var outgoing: [EncryptedShare] = []
        for v in sorted where v != index {
            var agreement = try SecAggCrypto.x25519(privateKey: encryptionSecret, peerPublicKey: byIndex[v]!.encryptionKey)
            var (key, nonce) = try SecAggDerivation.shareKey(agreement: agreement, sessionID: sessionID, sender: index, recipient: v)
            var plaintext = SecAggDerivation.envelopePlaintext(owner: index, holder: v, bShare: bShares[v]!, sShare: sShares[v]!)
            let sealed = try SecAggCrypto.seal(
                key: key, nonce: nonce, aad: SecAggDerivation.shareAAD(sessionID: sessionID, sender: index, recipient: v), plaintext: plaintext)
            SecAggCrypto.cleanse(&agreement)
            SecAggCrypto.cleanse(&key)
            SecAggCrypto.cleanse(&nonce)
            SecAggCrypto.cleanse(&plaintext)
            outgoing.append(EncryptedShare(peer: v, ciphertext: sealed))
        }
        for key in bShares.keys { SecAggCrypto.cleanse(&bShares[key]!) }
        for key in sShares.keys { SecAggCrypto.cleanse(&sShares[key]!) }
        let response = (SecAggDerivation.selfMaskCommitment(b: selfMaskSeed, sessionID: sessionID, index: index), outgoing)
        shareResponse = response
        return response
    }

    /// Stage 2 request: the survivors of stage 1 and the envelopes from this agent's neighbours.
    /// Checks that exactly the expected senders wrote, that every envelope opens and is for this
    /// agent; keeps the shares.
    public func receiveMaskedInputRequest(survivors list: [UInt32], incoming: [EncryptedShare]) throws {
        guard shareResponse != nil, !erased else { throw refuse("a masked-input request before this agent shared its keys") }
        let survivors = Set(list)
        guard survivors.count == list.count, survivors.contains(index), survivors.isSubset(of: Set(u1.keys)) else {
            throw refuse("the stage-2 survivor list is not a duplicate-free subset of the advertised agents including this one")
        }
        if let u2 {
            guard u2 == survivors else { throw refuse("a second masked-input request with another survivor list") }
            return
        }
        let expected = graph.neighbours(of: index).intersection(survivors)
        let senders = incoming.map(\.peer)
        guard Set(senders) == expected, senders.count == expected.count else {
            throw refuse("the envelopes forwarded come from \(senders.sorted()); expected exactly \(expected.sorted())")
        }
        var received: [UInt32: (b: [UInt8], s: [UInt8])] = [:]
        for envelope in incoming {
            let sender = envelope.peer
            var agreement = try SecAggCrypto.x25519(privateKey: encryptionSecret, peerPublicKey: u1[sender]!.encryptionKey)
            var (key, nonce) = try SecAggDerivation.shareKey(agreement: agreement, sessionID: sessionID, sender: sender, recipient: index)
            defer {
                SecAggCrypto.cleanse(&agreement)
                SecAggCrypto.cleanse(&key)
                SecAggCrypto.cleanse(&nonce)
            }
            var plaintext = try SecAggCrypto.open(
                key: key, nonce: nonce, aad: SecAggDerivation.shareAAD(sessionID: sessionID, sender: sender, recipient: index),
                sealed: envelope.ciphertext)
            defer { SecAggCrypto.cleanse(&plaintext) }
            var reader = ByteWriter()
            reader.u32(sender)
            reader.u32(index)
            guard plaintext.count == 105, plaintext[0] == 1, Array(plaintext[1..<9]) == reader.bytes else {
                throw refuse("an envelope from \(sender) does not name \(sender) → \(index)")
            }
            received[sender] = (Array(plaintext[9..<57]), Array(plaintext[57..<105]))
        }
        guard received.count + 1 >= Int(config.threshold) else {
            throw SecAggError(.tooFewSurvivors, "only \(received.count) neighbours shared with this agent; the threshold is \(config.threshold)")
        }
        for (owner, shares) in received { held[owner] = shares }
        acceptedNeighbours = Set(received.keys)
        u2 = survivors
    }

    /// Whether the stage-2 request has arrived (the masked input can be computed).
    public var canMask: Bool { u2 != nil && !masked && !erased }

    /// Stage 2: `y_u = x_u + PRG(seed_self) + Σ_{v∈A_u} ±PRG(seed_pair(u, v))`, once per attempt.
    public func maskedInput(delta: UnsafeBufferPointer<Float>, examples: UInt64) throws -> [UInt32] {
        guard canMask else { throw refuse(masked ? "this agent already sent its masked input" : "no masked-input request yet") }
        return try maskedInput(encoded: encode(delta: delta, examples: examples))
    }

    /// ``maskedInput(delta:examples:)`` for Float64 values (the spec's test vectors).
    public func maskedInput(count: Int, _ value: (Int) -> Double, examples: UInt64) throws -> [UInt32] {
        guard canMask else { throw refuse(masked ? "this agent already sent its masked input" : "no masked-input request yet") }
        return try maskedInput(encoded: encode(count: count, value, examples: examples))
    }

    /// Whether the input can be encoded already (keys are shared, so the session id is known):
    /// an agent encodes as soon as it has trained and folds the masks in when the stage-2 request
    /// arrives, so that the quantization overlaps the other agents' work.
    public var canEncode: Bool { shareResponse != nil && !erased && !masked }

    /// `x_u` (§3.9) for a Float32 update: quantized, and with distributed DP clipped and noised.
    public func encode(delta: UnsafeBufferPointer<Float>, examples: UInt64) throws -> [UInt32] {
        guard config.dp == nil else { return try encode(count: delta.count, { Double(delta[$0]) }, examples: examples) }
        guard canEncode else { throw refuse("the input cannot be encoded before the keys are shared") }
        var rounding = randomness.secret(.rounding, index: index)
        defer { SecAggCrypto.cleanse(&rounding) }
        // Every element is written by the quantizer: no zero-fill first.
        return try [UInt32](unsafeUninitializedCapacity: delta.count + 2) { buffer, initialized in
            try Quantizer(config).quantize(delta, examples: examples, rounding: rounding, into: buffer)
            initialized = delta.count + 2
        }
    }

    /// `x_u` for Float64 values. With distributed DP (§8): the update is L2-clipped, quantized,
    /// and discrete Gaussian noise of the configured local σ is added to every parameter element.
    public func encode(count: Int, _ value: (Int) -> Double, examples: UInt64) throws -> [UInt32] {
        guard canEncode else { throw refuse("the input cannot be encoded before the keys are shared") }
        var y = [UInt32](repeating: 0, count: count + 2)
        var rounding = randomness.secret(.rounding, index: index)
        defer { SecAggCrypto.cleanse(&rounding) }
        var factor = 1.0
        if let dp = config.dp {
            var norm = 0.0
            for j in 0..<count { norm += value(j) * value(j) }
            norm = norm.squareRoot()
            if norm > dp.l2Clip { factor = dp.l2Clip / norm }
        }
        try y.withUnsafeMutableBufferPointer { out in
            try Quantizer(config).quantize(count: count, { value($0) * factor }, examples: examples, rounding: rounding, into: out)
        }
        if let dp = config.dp {
            var ikm = randomness.secret(.noise, index: index)
            var context = ByteWriter()
            context.u32(index)
            var seed = try SecAggCrypto.hkdf(ikm: ikm, salt: sessionID, label: "dp-noise", context: context.bytes, length: 32)
            let sampler = try DiscreteGaussianSampler(sigma: dp.localStddev, seed: seed)
            SecAggCrypto.cleanse(&ikm)
            SecAggCrypto.cleanse(&seed)
            for j in 2..<y.count { y[j] = y[j] &+ UInt32(truncatingIfNeeded: sampler.next()) }
        }
        return y
    }

    /// Masks an input already encoded in `Z_{2^32}` (canary, weight, elements), once per attempt.
    public func maskedInput(encoded x: consuming [UInt32]) throws -> [UInt32] {
        guard canMask else { throw refuse(masked ? "this agent already sent its masked input" : "no masked-input request yet") }
        guard x.count == Int(config.vectorLength) else { throw refuse("the input has \(x.count) elements; the session expects \(config.vectorLength)") }
        masked = true
        var y = consume x
        var seed = try SecAggDerivation.selfSeed(b: selfMaskSeed, sessionID: sessionID, index: index)
        var generators = [(generator: try MaskGenerator(seed: seed), subtract: false)]
        SecAggCrypto.cleanse(&seed)
        for v in acceptedNeighbours.sorted() {
            var agreement = try SecAggCrypto.x25519(privateKey: maskingSecret, peerPublicKey: u1[v]!.maskingKey)
            var pairSeed = try SecAggDerivation.pairwiseSeed(agreement: agreement, sessionID: sessionID, index, v)
            generators.append((try MaskGenerator(seed: pairSeed), !SecAggDerivation.addsPairwiseMask(index, over: v)))
            SecAggCrypto.cleanse(&agreement)
            SecAggCrypto.cleanse(&pairSeed)
        }
        y.withUnsafeMutableBufferPointer { MaskGenerator.apply(generators, to: $0.baseAddress!, count: $0.count) }
        return y
    }

    /// Stage 3: checks the survivor and dropout lists, then reveals, per neighbour, either its
    /// `b`-share (it survived) or its `s`-share (it dropped), never both; then erases every
    /// secret. A repeated identical request gets the same answer; any other is refused and
    /// reveals nothing.
    public func unmask(survivors: [UInt32], dropped: [UInt32]) throws -> [RevealedShare] {
        if let unmaskAnswer {
            guard unmaskAnswer.survivors == survivors, unmaskAnswer.dropped == dropped else {
                throw refuse("a second, different unmask request: refused, nothing revealed")
            }
            return unmaskAnswer.shares
        }
        guard let u2, !erased else { throw refuse("an unmask request before this agent's masked-input stage") }
        let u3 = Set(survivors), d = Set(dropped)
        guard u3.count == survivors.count, d.count == dropped.count else { throw refuse("the unmask lists repeat an agent") }
        guard u3.isDisjoint(with: d) else { throw refuse("an agent is listed as both alive and dropped") }
        guard u3.union(d) == u2 else { throw refuse("survivors and dropouts do not add up to the stage-2 survivors") }
        guard u3.contains(index) else { throw refuse("this agent is not listed among the survivors") }
        guard u3.count >= Int(config.minSurvivors) else { throw SecAggError(.tooFewSurvivors, "\(u3.count) survivors, below \(config.minSurvivors)") }
        guard graph.isConnected(u3) else { throw refuse("the survivors' graph is not connected") }
        var shares: [RevealedShare] = []
        for owner in acceptedNeighbours.union([index]).sorted() {
            guard let pair = held[owner] else { continue }
            if u3.contains(owner) {
                shares.append(RevealedShare(owner: owner, kind: .selfMask, share: pair.b))
            } else if d.contains(owner) && owner != index {
                shares.append(RevealedShare(owner: owner, kind: .maskingKey, share: pair.s))
            }
        }
        unmaskAnswer = (survivors, dropped, shares)
        erase()
        return shares
    }

    /// Cleanses every secret of the attempt (idempotent).
    public func erase() {
        guard !erased else { return }
        erased = true
        SecAggCrypto.cleanse(&encryptionSecret)
        SecAggCrypto.cleanse(&maskingSecret)
        SecAggCrypto.cleanse(&selfMaskSeed)
        for owner in Array(held.keys) {
            var pair = held[owner]!
            SecAggCrypto.cleanse(&pair.b)
            SecAggCrypto.cleanse(&pair.s)
        }
        held = [:]
    }
}
