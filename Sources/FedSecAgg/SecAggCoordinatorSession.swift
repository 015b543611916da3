import Foundation

/// The coordinator's side of one secure-aggregation attempt (FLSECAGG-v1 §2.5, §4): who
/// survived each stage, pruning, relaying share envelopes, the stage checks, and at the end the
/// reconstruction of the survivors' self-mask seeds and the dropped agents' masking keys to
/// remove every mask from the masked sum. It never sees an individual update.
///
/// Not thread-safe: the runtime serializes calls on one attempt.
public final class SecAggCoordinatorSession {
    public let config: SecAggConfig
    public let graph: SecAggGraph
    private let digest: [UInt8]
    private var advertised: [UInt32: AdvertisedKeys] = [:]
    public private(set) var u1: Set<UInt32> = []
    /// Set at `T0`: keys that come later are refused (§2.5 (a)).
    private var sessionID: [UInt8] = []
    private var commitments: [UInt32: [UInt8]] = [:]
    private var outgoing: [UInt32: [EncryptedShare]] = [:]
    /// Set at `T1`: shares that come later are refused (§2.5 (a)).
    private var sharingClosed = false
    public private(set) var u2: Set<UInt32> = []
    public private(set) var u3: Set<UInt32> = []
    public private(set) var dropped: Set<UInt32> = []
    private var revealed: [UInt32: [RevealedShare]] = [:]
    /// Seconds the last ``removeMasks(from:)`` spent recovering dropped agents' pairwise masks
    /// (reconstructing their keys and regenerating the masks their neighbours added).
    public private(set) var recoverySeconds = 0.0

    public init(config: SecAggConfig) throws {
        self.config = config
        digest = config.configDigest()
        graph = try SecAggGraph(config: config, configDigest: digest)
    }

    /// The roster index of a TLS-authenticated agent.
    public func index(of agent: String) -> UInt32? {
        config.roster.firstIndex(of: agent).map { UInt32($0 + 1) }
    }

    public func agent(at index: UInt32) -> String { config.roster[Int(index) - 1] }

    private func tooFew(_ stage: String, _ count: Int) -> SecAggError {
        SecAggError(.tooFewSurvivors, "\(count) agent(s) left after \(stage); at least \(config.minSurvivors) are needed")
    }

    /// Drops, until stable, every agent with fewer than `t` share holders left in `alive`.
    private func prune(_ alive: Set<UInt32>) -> Set<UInt32> {
        var alive = alive
        while let weak = alive.first(where: { graph.holders(of: $0).intersection(alive).count < Int(config.threshold) }) {
            alive.remove(weak)
        }
        return alive
    }

    // MARK: Stage 0

    /// An agent's keys; the index must be the sender's own (bound to its TLS identity).
    public func receiveKeys(_ keys: AdvertisedKeys, from agent: String) throws {
        guard sessionID.isEmpty else { throw SecAggError(.stageClosed, "\(agent)'s keys came after the key-advertising stage closed") }
        guard index(of: agent) == keys.index else { throw SecAggError(.inconsistent, "\(agent) sent keys for another index") }
        guard keys.encryptionKey.count == 32, keys.maskingKey.count == 32, advertised[keys.index] == nil else {
            throw SecAggError(.badInput, "\(agent)'s keys are malformed or repeated")
        }
        advertised[keys.index] = keys
    }

    /// At `T0`: `U1`, pruned; the key list every member of `U1` gets.
    public func closeAdvertising() throws -> [AdvertisedKeys] {
        u1 = prune(Set(advertised.keys))
        guard u1.count >= Int(config.minSurvivors) else { throw tooFew("advertising keys", u1.count) }
        let list = u1.sorted().map { advertised[$0]! }
        sessionID = SecAggDerivation.sessionID(nonce: config.sessionNonce, configDigest: digest, keys: list)
        return list
    }

    // MARK: Stage 1

    /// An agent's commitment and envelopes: exactly one 121-byte envelope per neighbour in `U1`.
    public func receiveShares(from agent: String, commitment: [UInt8], envelopes: [EncryptedShare]) throws {
        guard !sharingClosed else { throw SecAggError(.stageClosed, "\(agent)'s shares came after the key-sharing stage closed") }
        guard let u = index(of: agent), u1.contains(u), outgoing[u] == nil else {
            throw SecAggError(.inconsistent, "\(agent) is not expected to share keys (not in U1, or twice)")
        }
        let expected = graph.neighbours(of: u).intersection(u1)
        guard commitment.count == 32, envelopes.count == expected.count, Set(envelopes.map(\.peer)) == expected,
              envelopes.allSatisfy({ $0.ciphertext.count == 121 })
        else { throw SecAggError(.badInput, "\(agent)'s envelopes are not one 121-byte envelope per neighbour") }
        commitments[u] = commitment
        outgoing[u] = envelopes
    }

    /// At `T1`: `U2`, pruned, and for each member the envelopes addressed to it (peer = sender).
    public func closeSharing() throws -> [UInt32: [EncryptedShare]] {
        sharingClosed = true
        u2 = prune(Set(outgoing.keys))
        guard u2.count >= Int(config.minSurvivors) else { throw tooFew("sharing keys", u2.count) }
        var incoming: [UInt32: [EncryptedShare]] = [:]
        for v in u2 { incoming[v] = [] }
        for sender in u2.sorted() {
            for envelope in outgoing[sender]! where u2.contains(envelope.peer) {
                incoming[envelope.peer]!.append(EncryptedShare(peer: sender, ciphertext: envelope.ciphertext))
            }
        }
        return incoming
    }

    // MARK: Stage 2

    /// At `T2`: `U3` (complete masked inputs) and `D = U2 \ U3`, with the stage's checks.
    public func closeMaskedInput(survivors: Set<UInt32>) throws {
        guard survivors.isSubset(of: u2) else { throw SecAggError(.inconsistent, "a masked input from outside U2") }
        guard survivors.count >= Int(config.minSurvivors) else { throw tooFew("the masked-input deadline", survivors.count) }
        let dropouts = u2.subtracting(survivors)
        for u in survivors where graph.holders(of: u).intersection(survivors).count < Int(config.threshold) {
            throw SecAggError(.tooFewSurvivors, "survivor \(u) has fewer than \(config.threshold) share holders left")
        }
        for d in dropouts where graph.neighbours(of: d).intersection(survivors).count < Int(config.threshold) {
            throw SecAggError(.tooFewSurvivors, "dropped agent \(d) has fewer than \(config.threshold) neighbours left to recover its masks")
        }
        guard graph.isConnected(survivors) else { throw SecAggError(.inconsistent, "the survivors' graph is not connected") }
        u3 = survivors
        dropped = dropouts
    }

    // MARK: Stage 3

    public func receiveUnmask(from agent: String, shares: [RevealedShare]) throws {
        guard let u = index(of: agent), u3.contains(u), revealed[u] == nil else {
            throw SecAggError(.inconsistent, "\(agent) is not expected to unmask (not a survivor, or twice)")
        }
        revealed[u] = shares
    }

    /// Whether every survivor's `b` and every dropout's `s_sk` has at least `t` shares.
    public var canUnmask: Bool { (try? collectShares()) != nil }

    private func collectShares() throws -> (b: [UInt32: [UInt32: [UInt8]]], s: [UInt32: [UInt32: [UInt8]]]) {
        var b: [UInt32: [UInt32: [UInt8]]] = [:], s: [UInt32: [UInt32: [UInt8]]] = [:]
        for (holder, shares) in revealed {
            for share in shares where share.share.count == 48 {
                switch share.kind {
                case .selfMask where u3.contains(share.owner) && graph.holders(of: share.owner).contains(holder):
                    b[share.owner, default: [:]][holder] = share.share
                case .maskingKey where dropped.contains(share.owner) && graph.neighbours(of: share.owner).contains(holder):
                    s[share.owner, default: [:]][holder] = share.share
                default: continue
                }
            }
        }
        let t = Int(config.threshold)
        for u in u3 where (b[u]?.count ?? 0) < t { throw SecAggError.insufficientShares(b[u]?.count ?? 0, t) }
        for d in dropped where (s[d]?.count ?? 0) < t { throw SecAggError.insufficientShares(s[d]?.count ?? 0, t) }
        return (b, s)
    }

    /// Reconstructs and verifies the secrets, then removes every mask from `sum` (the
    /// element-wise sum mod 2^32 of the survivors' masked inputs), leaving `Σ_{u∈U3} x_u`.
    /// Cost: one PRG pass over `L` per survivor and per (dropout, surviving neighbour) pair.
    public func removeMasks(from sum: UnsafeMutableBufferPointer<UInt32>) throws {
        guard sum.count == Int(config.vectorLength) else { throw SecAggError(.internalError, "the masked sum has the wrong length") }
        let (bShares, sShares) = try collectShares()
        let t = Int(config.threshold)
        var cache = Shamir.LagrangeCache()
        var masks: [(seed: [UInt8], subtract: Bool)] = []
        defer { for index in masks.indices { SecAggCrypto.cleanse(&masks[index].seed) } }
        for u in u3.sorted() {
            var b = try Shamir.combine(bShares[u]!, threshold: t, cache: &cache)
            defer { SecAggCrypto.cleanse(&b) }
            guard SecAggDerivation.selfMaskCommitment(b: b, sessionID: sessionID, index: u) == commitments[u] else {
                throw SecAggError(.unmaskMismatch, "survivor \(u)'s reconstructed self-mask seed does not match its commitment")
            }
            masks.append((try SecAggDerivation.selfSeed(b: b, sessionID: sessionID, index: u), true))
        }
        try MaskGenerator.apply(seeds: masks, to: sum.baseAddress!, count: sum.count, threads: ProcessInfo.processInfo.activeProcessorCount)
        for index in masks.indices { SecAggCrypto.cleanse(&masks[index].seed) }
        masks = []
        let recoveryStarted = DispatchTime.now().uptimeNanoseconds
        defer { recoverySeconds = Double(DispatchTime.now().uptimeNanoseconds - recoveryStarted) / 1e9 }
        for d in dropped.sorted() {
            var key = try Shamir.combine(sShares[d]!, threshold: t, cache: &cache)
            defer { SecAggCrypto.cleanse(&key) }
            guard try SecAggCrypto.x25519PublicKey(privateKey: key) == advertised[d]!.maskingKey else {
                throw SecAggError(.unmaskMismatch, "dropped agent \(d)'s reconstructed masking key does not match its public key")
            }
            for v in graph.neighbours(of: d).intersection(u3).sorted() {
                var agreement = try SecAggCrypto.x25519(privateKey: key, peerPublicKey: advertised[v]!.maskingKey)
                // v added sign(v, d) · PRG; take exactly that back out.
                masks.append((try SecAggDerivation.pairwiseSeed(agreement: agreement, sessionID: sessionID, v, d), SecAggDerivation.addsPairwiseMask(v, over: d)))
                SecAggCrypto.cleanse(&agreement)
            }
        }
        try MaskGenerator.apply(seeds: masks, to: sum.baseAddress!, count: sum.count, threads: ProcessInfo.processInfo.activeProcessorCount)
        revealed = [:]
    }
}
