import Foundation
import Testing
@testable import FedSecAgg

/// FLSECAGG-v1's test vectors (shared/design/secagg.md §5), byte for byte.
@Suite("FLSECAGG-v1 known answers")
struct KnownAnswerTests {
    static func words(_ text: String) -> [UInt32] { text.split(separator: " ").map { UInt32($0, radix: 16)! } }
    static func bytes(_ text: String) -> [UInt8] { [UInt8](hex: text.replacingOccurrences(of: " ", with: ""))! }
    static func sha(_ text: String) -> [UInt8] { SecAggCrypto.sha256(Array(text.utf8)) }

    @Test("KAT-PRG and KAT-PRG-carry: AES-128-CTR keystream as little-endian uint32, 128-bit counter carry")
    func prg() throws {
        let seed = (0..<32).map { UInt8($0) }
        #expect(try MaskGenerator(seed: seed).next(8) == Self.words("74effe07 6e03d5e1 11ee0e90 9392948e 04c5c292 02820cd8 627d7946 08def98b"))
        let carry = (0..<16).map { UInt8($0) } + Self.bytes("000000000000000000000000fffffffe")
        let expected = Self.words("7576300b d0f71421 83825bec d1686603 f31f9457 a0815841 7a91a7b2 b833fac5 8f766c42 720b41aa 513910ab 4aa19b25 746782d4 35c518d1 1381a41a 73390c69")
        #expect(try MaskGenerator(seed: carry).next(16) == expected)
        // Seeking: element 5 of the stream equals the fifth element after a start at 5 (mid-block), and block-aligned starts too.
        for start in [1, 4, 5, 7, 9] {
            #expect(try MaskGenerator(seed: carry, startElement: UInt64(start)).next(16 - start) == Array(expected[start...]))
        }
    }

    static let shamirShares: [UInt32: String] = [
        1: "776128129a23ca6e740721baa0958297 079a2ba3326467fee9fb728c1ea8bb99 534de5b817432d418ccdd079327c774b",
        2: "2f51e21501c3111f449ca20e687945c7 7149eecf84d98a1f98fa7f02cf3d5858 6d6002cb3a6e4351560b05c34ca114b5",
        3: "27d22f0939e1d91878c88a0562b7569c 3d1e599609727a7723143d7d2bd8f25c 4e3657396981422f5bb79fde4e6df65d",
        4: "60e20eef4280225a108ad99f8f4fb516 6b176bf6c02f39058848adfb347b89a3 75d0e302a47c29db9dd39eca37e31c42",
        5: "5a8181c71b9dece40be390dcee426136 7b3525f1a90fc5cac897d07ce9251e2e 642fa626eb5efa561c5f028709008665",
    ]

    @Test("KAT-SHAMIR: shares byte for byte; every 3-subset reconstructs; 2 shares fail; t − 1 shares carry no information")
    func shamir() throws {
        let secret = (0..<32).map { UInt8($0) }
        var source = DeterministicSecAggRandomness().coefficients(owner: 0, which: 0)
        let shares = Shamir.split(secret, threshold: 3, holders: [1, 2, 3, 4, 5], coefficients: &source)
        for (holder, text) in Self.shamirShares { #expect(shares[holder] == Self.bytes(text), "holder \(holder)") }
        var subsets = 0
        for a in 1...3 {
            for b in (a + 1)...4 {
                for c in (b + 1)...5 {
                    let picked = Dictionary(uniqueKeysWithValues: [a, b, c].map { (UInt32($0), shares[UInt32($0)]!) })
                    #expect(try Shamir.combine(picked, threshold: 3) == secret)
                    subsets += 1
                }
            }
        }
        #expect(subsets == 10)
        #expect(throws: SecAggError.self) { try Shamir.combine([1: shares[1]!, 3: shares[3]!], threshold: 3) }
        let raw = Shamir.interpolateAtZero(xs: [1, 3], shares: [1: shares[1]!, 3: shares[3]!])
        #expect(Shamir.bytes(raw[0], count: 16) == Self.bytes("5f28a4974a44c31971a66d953f849895"))
        // A flipped byte breaks the reconstruction (range check) or changes the secret (caught by the commitment).
        var tampered = shares
        tampered[2]![3] ^= 0x40
        let result = try? Shamir.combine([1: tampered[1]!, 2: tampered[2]!, 3: tampered[3]!], threshold: 3)
        #expect(result != secret)
    }

    static let roster = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    /// Float64, as the reference implementation took them.
    static let deltas: [[Double]] = [
        [0.5, -0.25, 1.7, 0.0, -1.0], [-0.125, 0.75, -0.3, 0.01, 0.2], [0.9, -0.9, 0.05, -2.5, 0.333], [0.1, 0.1, 0.1, 0.1, 0.1],
    ]
    static let weights: [UInt64] = [100, 250, 50, 400]

    static func e2eConfig() -> SecAggConfig {
        SecAggConfig(
            roundID: 7, sessionNonce: sha("test nonce"), roster: roster, neighborDegree: 3, threshold: 3, minSurvivors: 3,
            graphSeed: sha("test graph seed"), vectorLength: 7, scaleExponent: 28, clip: 1.0, maxWeight: 1000, modelSHA256: sha("test model"))
    }

    @Test("KAT-E2E: four hospitals, one drops before its masked input; every intermediate value and the result byte for byte")
    func endToEnd() throws {
        let config = Self.e2eConfig()
        #expect(Quantizer.scaleExponent(agents: 4, clip: 1.0) == 28)
        #expect(config.configDigest().hex == "a1c3ebed96c2be8b16ff00009ad0319094599d93a19040734ba9d6f0b53149e2")
        let graph = try SecAggGraph(config: config, configDigest: config.configDigest())
        #expect(graph.ring == [1, 2, 4, 3])
        let randomness = DeterministicSecAggRandomness()
        let agents = try (1...4).map {
            try SecAggAgentSession(config: config, index: UInt32($0), agentID: Self.roster[$0 - 1], receivedModelSHA256: Self.sha("test model"),
                                   parameterCount: 5, lastRoundID: nil, randomness: randomness)
        }
        let coordinator = try SecAggCoordinatorSession(config: config)
        for (i, agent) in agents.enumerated() { try coordinator.receiveKeys(agent.keys, from: Self.roster[i]) }
        let keyList = try coordinator.closeAdvertising()
        let responses = try agents.map { try $0.shareKeys(keyList) }
        let sid = SecAggDerivation.sessionID(nonce: config.sessionNonce, configDigest: config.configDigest(), keys: keyList)
        #expect(sid.hex == "ea75ceb4b0db872da901256483fd5e569bd0fbf25ab5e11c4387ebe8976bcfb3")

        // Pairwise and self seeds, the commitment, the 1 → 2 envelope.
        let s1 = randomness.secret(.maskingKey, index: 1), c1 = randomness.secret(.encryptionKey, index: 1)
        let pair12 = try SecAggDerivation.pairwiseSeed(agreement: SecAggCrypto.x25519(privateKey: s1, peerPublicKey: agents[1].keys.maskingKey), sessionID: sid, 1, 2)
        #expect(pair12.hex == "2183c0ac594debef77afe88e90644912d188c120954abfd6b0a04c77ed926d91")
        #expect(try MaskGenerator(seed: pair12).next(4) == Self.words("3ee7db7f 085cdacd 3608701a c2cfd4ee"))
        let b1 = randomness.secret(.selfMask, index: 1)
        #expect(try SecAggDerivation.selfSeed(b: b1, sessionID: sid, index: 1).hex == "3a4f634a40f9db746d323fc36f4bd8672be1346282136f79795e56d3291bd9ce")
        #expect(responses[0].commitment.hex == "b8a8609e08decd61b2be5f1917d8252249379c21895ccb0918e4f2d188788dd0")
        let (key, nonce) = try SecAggDerivation.shareKey(
            agreement: SecAggCrypto.x25519(privateKey: c1, peerPublicKey: agents[1].keys.encryptionKey), sessionID: sid, sender: 1, recipient: 2)
        #expect(key.hex == "267bde5c75baef50e44623673a98c73f4d8057f9204b75f788291c328311a598" && nonce.hex == "4af5e750e9bdb29b36b2fe96")
        let envelope = try #require(responses[0].outgoing.first { $0.peer == 2 })
        #expect(envelope.ciphertext.hex == "0873bc52dc04710b6bc5e8c7958e0932484a1acc5232e29f9304586e91e502ff2f5a7ab106e44349a2da4c3cd53c3faa758faaccc5d242538aa5a7685da7ef7777b85b998f3b3f4fe1a5340ccc0eef2314404dbcc659a56bf28f0ab4193b54567311033ef9a06a758b1db45ac46b568f994852e41d97cab2cd")
        let opened = try SecAggCrypto.open(key: key, nonce: nonce, aad: SecAggDerivation.shareAAD(sessionID: sid, sender: 1, recipient: 2), sealed: envelope.ciphertext)
        #expect(SecAggCrypto.sha256(opened).hex == "635f73f5c0507e06e8b6442ed6abd2193262b9e10adfa144b2d447d3e9888cda")

        // Quantized inputs.
        let expectedX = [
            "00000001 00000064 00cccccd ff99999a 0199999a 00000000 fe666667", "00000001 000000fa ff800000 03000000 fecccccd 000a3d71 00cccccd",
            "00000001 00000032 00b851eb ff47ae15 000a3d70 ff333333 004432cb", "00000001 00000190 00a3d70a 00a3d70b 00a3d70a 00a3d70a 00a3d70a",
        ]
        for i in 0..<4 {
            var x = [UInt32](repeating: 0, count: 7)
            try x.withUnsafeMutableBufferPointer {
                try Quantizer(config).quantize(count: 5, { Self.deltas[i][$0] }, examples: Self.weights[i],
                                               rounding: randomness.secret(.rounding, index: UInt32(i + 1)), into: $0)
            }
            #expect(x == Self.words(expectedX[i]), "x_\(i + 1)")
        }

        // Stage 2: all four get their shares; agent 4 drops before its masked input.
        for (i, shares) in responses.enumerated() { try coordinator.receiveShares(from: Self.roster[i], commitment: shares.commitment, envelopes: shares.outgoing) }
        let incoming = try coordinator.closeSharing()
        for (i, agent) in agents.enumerated() { try agent.receiveMaskedInputRequest(survivors: [1, 2, 3, 4], incoming: incoming[UInt32(i + 1)]!) }
        var sum = [UInt32](repeating: 0, count: 7)
        let expectedY = ["f4605ce3 948df10b 4c142289", "a9b4cc7b 038184a5 d4da9e8a", "9df0173b b9be3cd4 d1ca9b8e"]
        for i in 0..<3 {
            let y = try agents[i].maskedInput(count: 5, { Self.deltas[i][$0] }, examples: Self.weights[i])
            #expect(Array(y[0..<3]) == Self.words(expectedY[i]), "y_\(i + 1)")
            for j in 0..<7 { sum[j] &+= y[j] }
        }
        try coordinator.closeMaskedInput(survivors: [1, 2, 3])
        #expect(coordinator.dropped == [4])
        for i in 0..<3 { try coordinator.receiveUnmask(from: Self.roster[i], shares: agents[i].unmask(survivors: [1, 2, 3], dropped: [4])) }
        #expect(agents[0].erased)
        try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) }
        #expect(sum == Self.words("00000003 00000190 01051eb8 01e147af 0070a3d7 ff3d70a4 ff7765ff"))
        let (mean, total) = try sum.withUnsafeBufferPointer { try Quantizer(config).dequantizedMean($0, survivors: 3) }
        #expect(total == 400)
        let expectedMean = [0.159374997, 0.293750009, 0.068750000, -0.118749999, -0.083374986]
        let reference = [0.159375, 0.29375, 0.06875, -0.11875, -0.083375]
        for j in 0..<5 {
            #expect(abs(mean(j) - expectedMean[j]) < 1e-9, "Δ_\(j) = \(mean(j))")
            #expect(abs(mean(j) - reference[j]) < 1.5e-8)
        }
    }
}
