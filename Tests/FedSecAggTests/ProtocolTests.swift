import FedCore
import Foundation
import Testing
@testable import FedSecAgg

/// Runs whole FLSECAGG-v1 attempts in memory: `n` agents, dropouts at chosen stages.
struct Simulation {
    var n: Int
    var degree: Int
    var threshold: Int
    var minSurvivors = 3
    var parameters: Int
    /// Stage (0 advertise, 1 share, 2 masked input, 3 unmask) → agents that go silent there.
    var drops: [Int: Set<UInt32>] = [:]
    var seed: UInt64 = 1

    var roster: [String] { (1...n).map { "agent-\($0)" } }

    func config() -> SecAggConfig {
        SecAggConfig(
            roundID: 11, sessionNonce: SecAggCrypto.sha256([1]), roster: roster, neighborDegree: UInt32(degree), threshold: UInt32(threshold),
            minSurvivors: UInt32(minSurvivors), graphSeed: SecAggCrypto.sha256([UInt8(truncatingIfNeeded: seed)]), vectorLength: UInt64(parameters + 2),
            scaleExponent: Quantizer.scaleExponent(agents: n, clip: 1), clip: 1, maxWeight: 1000, modelSHA256: SecAggCrypto.sha256([3]))
    }

    /// Each agent's update and example count.
    func inputs() -> [(delta: [Float], examples: UInt64)] {
        var random = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            ((0..<parameters).map { _ in Float(Double(random.next() >> 11) / Double(1 << 53) * 2.4 - 1.2) }, 1 + random.next() % 1000)
        }
    }

    /// `Σ_{u∈U3} x_u` computed directly from the quantized inputs.
    func expectedSum(survivors: Set<UInt32>) throws -> [UInt32] {
        let quantizer = Quantizer(config())
        var sum = [UInt32](repeating: 0, count: parameters + 2)
        for (i, input) in inputs().enumerated() where survivors.contains(UInt32(i + 1)) {
            var x = [UInt32](repeating: 0, count: parameters + 2)
            try input.delta.withUnsafeBufferPointer { delta in
                try x.withUnsafeMutableBufferPointer {
                    try quantizer.quantize(delta, examples: input.examples, rounding: DeterministicSecAggRandomness().secret(.rounding, index: UInt32(i + 1)), into: $0)
                }
            }
            for j in sum.indices { sum[j] &+= x[j] }
        }
        return sum
    }

    /// Agents and coordinator after stage 1: the sessions and each agent's incoming envelopes.
    func sharedKeys(_ config: SecAggConfig? = nil) throws -> (agents: [SecAggAgentSession], coordinator: SecAggCoordinatorSession,
                                                               incoming: [UInt32: [EncryptedShare]]) {
        let config = config ?? self.config()
        let randomness = DeterministicSecAggRandomness()
        let agents = try (1...n).map {
            try SecAggAgentSession(config: config, index: UInt32($0), agentID: roster[$0 - 1], receivedModelSHA256: config.modelSHA256,
                                   parameterCount: parameters, lastRoundID: nil, randomness: randomness)
        }
        let coordinator = try SecAggCoordinatorSession(config: config)
        for (i, agent) in agents.enumerated() { try coordinator.receiveKeys(agent.keys, from: roster[i]) }
        let keys = try coordinator.closeAdvertising()
        for (i, agent) in agents.enumerated() {
            let response = try agent.shareKeys(keys)
            try coordinator.receiveShares(from: roster[i], commitment: response.commitment, envelopes: response.outgoing)
        }
        return (agents, coordinator, try coordinator.closeSharing())
    }

    struct Outcome {
        var sum: [UInt32]
        var survivors: Set<UInt32>
        var dropped: Set<UInt32>
        var maskedInputs: [UInt32: [UInt32]]
    }

    /// One attempt; throws what the coordinator (or an agent) throws.
    func run() throws -> Outcome {
        let config = config()
        let randomness = DeterministicSecAggRandomness()
        let agents = try (1...n).map {
            try SecAggAgentSession(config: config, index: UInt32($0), agentID: roster[$0 - 1], receivedModelSHA256: config.modelSHA256,
                                   parameterCount: parameters, lastRoundID: nil, randomness: randomness)
        }
        let coordinator = try SecAggCoordinatorSession(config: config)
        func alive(_ stage: Int, _ u: UInt32) -> Bool { !(0...stage).contains { drops[$0]?.contains(u) ?? false } }
        for agent in agents where alive(0, agent.index) { try coordinator.receiveKeys(agent.keys, from: roster[Int(agent.index) - 1]) }
        let keys = try coordinator.closeAdvertising()
        for agent in agents where alive(1, agent.index) && coordinator.u1.contains(agent.index) {
            let response = try agent.shareKeys(keys)
            try coordinator.receiveShares(from: roster[Int(agent.index) - 1], commitment: response.commitment, envelopes: response.outgoing)
        }
        let incoming = try coordinator.closeSharing()
        var sum = [UInt32](repeating: 0, count: parameters + 2)
        var masked: [UInt32: [UInt32]] = [:]
        let updates = inputs()
        for agent in agents where coordinator.u2.contains(agent.index) {
            try agent.receiveMaskedInputRequest(survivors: coordinator.u2.sorted(), incoming: incoming[agent.index]!)
            guard alive(2, agent.index) else { continue }
            let y = try updates[Int(agent.index) - 1].delta.withUnsafeBufferPointer {
                try agent.maskedInput(delta: $0, examples: updates[Int(agent.index) - 1].examples)
            }
            masked[agent.index] = y
            for j in sum.indices { sum[j] &+= y[j] }
        }
        try coordinator.closeMaskedInput(survivors: Set(masked.keys))
        for agent in agents where coordinator.u3.contains(agent.index) && alive(3, agent.index) {
            try coordinator.receiveUnmask(
                from: roster[Int(agent.index) - 1],
                shares: agent.unmask(survivors: coordinator.u3.sorted(), dropped: coordinator.dropped.sorted()))
        }
        try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) }
        return Outcome(sum: sum, survivors: coordinator.u3, dropped: coordinator.dropped, maskedInputs: masked)
    }
}

@Suite("FLSECAGG-v1 protocol")
struct ProtocolTests {
    @Test("1. Masks cancel exactly: complete and sparse graphs, N from 3 to 40, m ∈ {1, 3, 1000}")
    func cancellation() throws {
        var random = SplitMix64(seed: 99)
        for trial in 0..<12 {
            let n = 3 + Int(random.next() % 38)
            let sparse = n >= 6 && trial % 2 == 1
            // Sparse: an even degree in 2 … N − 2; complete: N − 1. The threshold: a bare majority of the holders.
            let degree = sparse ? 2 * (1 + Int(random.next() % UInt64((n - 2) / 2))) : n - 1
            let threshold = max(2, (degree + 1) / 2 + 1)
            let m = [1, 3, 1000][trial % 3]
            var simulation = Simulation(n: n, degree: degree, threshold: threshold, parameters: m, seed: UInt64(trial))
            simulation.minSurvivors = sparse ? 3 : max(3, threshold)
            let outcome = try simulation.run()
            #expect(outcome.sum == (try simulation.expectedSum(survivors: outcome.survivors)), "N \(n) k \(degree) t \(threshold) m \(m)")
            #expect(outcome.sum[0] == UInt32(n))
        }
        // Sign antisymmetry on a sparse graph: every pair's masks are added by exactly one side.
        let config = Simulation(n: 12, degree: 4, threshold: 3, parameters: 1).config()
        let graph = try SecAggGraph(config: config, configDigest: config.configDigest())
        for u in UInt32(1)...12 {
            #expect(graph.neighbours(of: u).count == 4)
            for v in graph.neighbours(of: u) {
                #expect(graph.neighbours(of: v).contains(u))
                #expect(SecAggDerivation.addsPairwiseMask(u, over: v) != SecAggDerivation.addsPairwiseMask(v, over: u))
            }
        }
    }

    @Test("2. Dropouts at every stage: up to D_max the sum over U3 is exact; one more and the attempt aborts", arguments: 0...3)
    func dropouts(stage: Int) throws {
        let n = 8, dMax = 2
        for count in 0...(dMax + 1) {
            var simulation = Simulation(n: n, degree: n - 1, threshold: n - dMax, parameters: 50, seed: UInt64(10 * stage + count))
            simulation.minSurvivors = n - dMax
            simulation.drops[stage] = Set((0..<count).map { UInt32(8 - $0 * 3 % 8) })
            if count <= dMax {
                let outcome = try simulation.run()
                #expect(outcome.sum == (try simulation.expectedSum(survivors: outcome.survivors)), "stage \(stage), \(count) dropped")
                if stage == 2 { #expect(outcome.dropped.count == count) }
            } else {
                #expect(throws: SecAggError.self, "stage \(stage), \(count) dropped must abort") { try simulation.run() }
            }
        }
    }

    @Test("3. Reconstruction needs t shares; a corrupted revealed share is caught by the commitment or the public key")
    func corruptedShares() throws {
        var random = SystemCoefficientSource()
        let secret = SecAggCrypto.privateRandom(32)
        for t in 2...6 {
            let shares = Shamir.split(secret, threshold: t, holders: Array(1...7), coefficients: &random)
            #expect(try Shamir.combine(shares.filter { $0.key <= UInt32(t) }, threshold: t) == secret)
            #expect(try Shamir.combine(shares.filter { $0.key > UInt32(7 - t) }, threshold: t) == secret)
            #expect(throws: SecAggError.self) { try Shamir.combine(shares.filter { $0.key < UInt32(t) }, threshold: t) }
        }
        // End to end: one survivor lies about a b-share.
        let simulation = Simulation(n: 5, degree: 4, threshold: 3, parameters: 10)
        let (agents, coordinator, incoming) = try simulation.sharedKeys()
        var sum = [UInt32](repeating: 0, count: 12)
        for agent in agents {
            try agent.receiveMaskedInputRequest(survivors: [1, 2, 3, 4, 5], incoming: incoming[agent.index]!)
            let y = try [Float](repeating: 0.1, count: 10).withUnsafeBufferPointer { try agent.maskedInput(delta: $0, examples: 5) }
            for j in sum.indices { sum[j] &+= y[j] }
        }
        try coordinator.closeMaskedInput(survivors: [1, 2, 3, 4, 5])
        for (i, agent) in agents.prefix(3).enumerated() {
            var shares = try agent.unmask(survivors: [1, 2, 3, 4, 5], dropped: [])
            if i == 0 { shares[1].share[20] ^= 1 }
            try coordinator.receiveUnmask(from: simulation.roster[i], shares: shares)
        }
        #expect(throws: SecAggError.self) { try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) } }
    }

    /// An agent that has reached the unmask stage, for the refusal tests.
    func agentAtUnmask() throws -> (SecAggAgentSession, Simulation) {
        let simulation = Simulation(n: 5, degree: 4, threshold: 3, parameters: 4)
        let (agents, _, incoming) = try simulation.sharedKeys()
        try agents[0].receiveMaskedInputRequest(survivors: [1, 2, 3, 4, 5], incoming: incoming[1]!)
        _ = try [Float](repeating: 0.5, count: 4).withUnsafeBufferPointer { try agents[0].maskedInput(delta: $0, examples: 3) }
        #expect(throws: SecAggError.self) { _ = try [Float](repeating: 0.5, count: 4).withUnsafeBufferPointer { try agents[0].maskedInput(delta: $0, examples: 3) } }
        return (agents[0], simulation)
    }

    @Test("4. Inconsistent or repeated unmask requests are refused and reveal nothing", arguments: [
        ("overlap", [UInt32(1), 2, 3, 4], [UInt32(4), 5]), ("missing agent", [1, 2, 3], [4]), ("extra agent", [1, 2, 3], [4, 5, 6]),
        ("self dropped", [2, 3, 4], [1, 5]), ("too few survivors", [1, 2], [3, 4, 5]), ("duplicate", [1, 1, 2, 3], [4, 5]),
    ])
    func refusals(name: String, survivors: [UInt32], dropped: [UInt32]) throws {
        let (agent, _) = try agentAtUnmask()
        #expect(throws: SecAggError.self, "\(name)") { try agent.unmask(survivors: survivors, dropped: dropped) }
        // It still answers a consistent request once, the same request again identically, and a different one never.
        let first = try agent.unmask(survivors: [1, 2, 3], dropped: [4, 5])
        #expect(first.filter { $0.kind == .selfMask }.map(\.owner) == [1, 2, 3])
        #expect(first.filter { $0.kind == .maskingKey }.map(\.owner) == [4, 5])
        #expect(try agent.unmask(survivors: [1, 2, 3], dropped: [4, 5]) == first)
        #expect(throws: SecAggError.self) { try agent.unmask(survivors: [1, 2, 3, 4], dropped: [5]) }
        #expect(agent.erased)
    }

    @Test("5. Inconsistent views fail closed: another model hash, another key list, a tampered envelope")
    func inconsistentViews() throws {
        let simulation = Simulation(n: 4, degree: 3, threshold: 3, parameters: 2)
        let config = simulation.config()
        let randomness = DeterministicSecAggRandomness()
        #expect(throws: SecAggError.self) {
            try SecAggAgentSession(config: config, index: 1, agentID: "agent-1", receivedModelSHA256: SecAggCrypto.sha256([9]), parameterCount: 2,
                                   lastRoundID: nil, randomness: randomness)
        }
        #expect(throws: SecAggError.self) {
            try SecAggAgentSession(config: config, index: 1, agentID: "agent-2", receivedModelSHA256: config.modelSHA256, parameterCount: 2,
                                   lastRoundID: nil, randomness: randomness)
        }
        #expect(throws: SecAggError.self) {
            try SecAggAgentSession(config: config, index: 1, agentID: "agent-1", receivedModelSHA256: config.modelSHA256, parameterCount: 2,
                                   lastRoundID: 11, randomness: randomness)
        }
        let agents = try (1...4).map {
            try SecAggAgentSession(config: config, index: UInt32($0), agentID: simulation.roster[$0 - 1], receivedModelSHA256: config.modelSHA256,
                                   parameterCount: 2, lastRoundID: nil, randomness: randomness)
        }
        let keys = agents.map(\.keys)
        let responses = try agents.map { try $0.shareKeys(keys) }
        // Agent 2 was shown a different key list for agent 4 (a lying coordinator): its session id differs, so nothing decrypts.
        var other = agents[3].keys
        other.maskingKey = try SecAggCrypto.x25519PublicKey(privateKey: SecAggCrypto.sha256([7]))
        let liar = try SecAggAgentSession(config: config, index: 2, agentID: "agent-2", receivedModelSHA256: config.modelSHA256, parameterCount: 2,
                                          lastRoundID: nil, randomness: randomness)
        _ = try liar.shareKeys([keys[0], keys[1], keys[2], other])
        let toTwo = responses.enumerated().filter { $0.offset != 1 }.map { EncryptedShare(peer: UInt32($0.offset + 1), ciphertext: $0.element.outgoing.first { $0.peer == 2 }!.ciphertext) }
        #expect(throws: SecAggError.self) { try liar.receiveMaskedInputRequest(survivors: [1, 2, 3, 4], incoming: toTwo) }
        // A tampered envelope fails authentication; a missing one is refused.
        var tampered = toTwo
        tampered[0].ciphertext[10] ^= 1
        #expect(throws: SecAggError.self) { try agents[1].receiveMaskedInputRequest(survivors: [1, 2, 3, 4], incoming: tampered) }
        #expect(throws: SecAggError.self) { try agents[1].receiveMaskedInputRequest(survivors: [1, 2, 3, 4], incoming: Array(toTwo.dropFirst())) }
        try agents[1].receiveMaskedInputRequest(survivors: [1, 2, 3, 4], incoming: toTwo)
        // Duplicated public keys in the list are refused.
        let fresh = try SecAggAgentSession(config: config, index: 1, agentID: "agent-1", receivedModelSHA256: config.modelSHA256, parameterCount: 2,
                                           lastRoundID: nil, randomness: randomness)
        var duplicated = keys
        duplicated[2].encryptionKey = duplicated[3].encryptionKey
        #expect(throws: SecAggError.self) { try fresh.shareKeys(duplicated) }
        #expect(throws: SecAggError.self) { try SecAggCrypto.x25519(privateKey: SecAggCrypto.sha256([1]), peerPublicKey: [UInt8](repeating: 0, count: 32)) }
    }

    @Test("A stage's set is frozen at its deadline: keys or shares that arrive later are refused STAGE_CLOSED")
    func lateAnswersRefused() throws {
        let simulation = Simulation(n: 4, degree: 3, threshold: 3, parameters: 2)
        let config = simulation.config()
        let randomness = DeterministicSecAggRandomness()
        let agents = try (1...4).map {
            try SecAggAgentSession(config: config, index: UInt32($0), agentID: simulation.roster[$0 - 1], receivedModelSHA256: config.modelSHA256,
                                   parameterCount: 2, lastRoundID: nil, randomness: randomness)
        }
        let coordinator = try SecAggCoordinatorSession(config: config)
        for i in 0..<3 { try coordinator.receiveKeys(agents[i].keys, from: simulation.roster[i]) }
        let keys = try coordinator.closeAdvertising()
        let lateKeys = #expect(throws: SecAggError.self) { try coordinator.receiveKeys(agents[3].keys, from: simulation.roster[3]) }
        #expect(lateKeys?.reason == .stageClosed)
        #expect(coordinator.u1 == [1, 2, 3])

        let responses = try (0..<3).map { try agents[$0].shareKeys(keys) }
        for i in 0..<3 { try coordinator.receiveShares(from: simulation.roster[i], commitment: responses[i].commitment, envelopes: responses[i].outgoing) }
        _ = try coordinator.closeSharing()
        let lateShares = #expect(throws: SecAggError.self) {
            try coordinator.receiveShares(from: simulation.roster[0], commitment: responses[0].commitment, envelopes: responses[0].outgoing)
        }
        #expect(lateShares?.reason == .stageClosed)
    }

    @Test("6. Quantization: boundaries, N agents all at +c or −c without wrapping, NaN refused, unbiased rounding, deterministic")
    func quantization() throws {
        let n = 100
        let e = Quantizer.scaleExponent(agents: n, clip: 1)
        #expect(e == 24)  // the spec's example: N = 100, c = 1 → e = 24
        #expect(Quantizer.scaleExponent(agents: 1000, clip: 1) == 21 && Quantizer.scaleExponent(agents: 10, clip: 1) == 27)
        let quantizer = Quantizer(scaleExponent: e, clip: 1, maxWeight: 1)
        let rounding = SecAggCrypto.sha256([5])
        for sign in [Float(1), -1] {
            var x = [UInt32](repeating: 0, count: 6)
            try [sign * 7, sign, sign * 0.999_999, sign * 1e30].withUnsafeBufferPointer { delta in
                try x.withUnsafeMutableBufferPointer { try quantizer.quantize(delta, examples: 1, rounding: rounding, into: $0) }
            }
            var sum = [Int64](repeating: 0, count: 6)
            for _ in 0..<n { for j in 0..<6 { sum[j] += Int64(Int32(bitPattern: x[j])) } }
            let wrapped = sum.map { UInt32(truncatingIfNeeded: $0) }
            for j in 2..<6 { #expect(Int64(Int32(bitPattern: wrapped[j])) == sum[j], "no wrap at ±c with \(n) agents") }
            #expect(abs(Double(Int32(bitPattern: x[2])) - Double(sign) * Double(1 << e)) <= 1)
        }
        #expect(throws: SecAggError.self) {
            var x = [UInt32](repeating: 0, count: 3)
            try [Float.nan].withUnsafeBufferPointer { d in try x.withUnsafeMutableBufferPointer { try quantizer.quantize(d, examples: 1, rounding: rounding, into: $0) } }
        }
        // Unbiased stochastic rounding: 10^6 draws of a value a third of the way between two levels.
        let count = 1_000_000
        let value = (1.0 / 3.0) / Double(1 << e)
        var x = [UInt32](repeating: 0, count: count + 2)
        try x.withUnsafeMutableBufferPointer { try quantizer.quantize(count: count, { _ in value }, examples: 1, rounding: rounding, into: $0) }
        let mean = x[2...].reduce(0.0) { $0 + Double(Int32(bitPattern: $1)) } / Double(count)
        #expect(abs(mean - 1.0 / 3.0) < 0.002, "mean \(mean)")
        var again = [UInt32](repeating: 0, count: count + 2)
        try again.withUnsafeMutableBufferPointer { try quantizer.quantize(count: count, { _ in value }, examples: 1, rounding: rounding, into: $0) }
        #expect(again == x)
    }
}

@Suite("What the coordinator can see under secure aggregation")
struct CoordinatorViewTests {
    /// Pearson's chi-square of the byte values of `words` against the uniform distribution.
    static func chiSquare(_ words: [UInt32]) -> Double {
        var counts = [Int](repeating: 0, count: 256)
        for word in words { for shift in stride(from: 0, to: 32, by: 8) { counts[Int((word >> UInt32(shift)) & 0xFF)] += 1 } }
        let expected = Double(words.count * 4) / 256
        return counts.reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
    }

    @Test("Every masked vector looks uniform (chi-square over byte values) and none equals its quantized update")
    func uniformity() throws {
        // Updates far from uniform: small, smooth values (mostly 0x00 and 0xFF bytes once quantized).
        let simulation = Simulation(n: 6, degree: 5, threshold: 4, minSurvivors: 4, parameters: 20_000)
        let outcome = try simulation.run()
        let randomness = DeterministicSecAggRandomness()
        for (index, y) in outcome.maskedInputs {
            // 255 degrees of freedom: the 99.9th percentile is 330.5.
            #expect(Self.chiSquare(y) < 330.5, "agent \(index): chi-square \(Self.chiSquare(y))")
            let input = simulation.inputs()[Int(index) - 1]
            var x = [UInt32](repeating: 0, count: y.count)
            try input.delta.withUnsafeBufferPointer { d in
                try x.withUnsafeMutableBufferPointer {
                    try Quantizer(simulation.config()).quantize(d, examples: input.examples, rounding: randomness.secret(.rounding, index: index), into: $0)
                }
            }
            #expect(Self.chiSquare(x) > 10_000, "the quantized update itself is far from uniform")
            let equal = zip(x, y).filter { $0 == $1 }.count
            #expect(equal < y.count / 1000, "agent \(index): \(equal) elements of the masked vector equal the update's")
        }
        #expect(outcome.sum == (try simulation.expectedSum(survivors: outcome.survivors)))
    }

    @Test("With t − 1 unmask answers the coordinator cannot remove the masks")
    func belowThreshold() throws {
        let simulation = Simulation(n: 5, degree: 4, threshold: 4, minSurvivors: 4, parameters: 8)
        let (agents, coordinator, incoming) = try simulation.sharedKeys()
        var sum = [UInt32](repeating: 0, count: 10)
        for agent in agents {
            try agent.receiveMaskedInputRequest(survivors: [1, 2, 3, 4, 5], incoming: incoming[agent.index]!)
            let y = try [Float](repeating: 0.25, count: 8).withUnsafeBufferPointer { try agent.maskedInput(delta: $0, examples: 2) }
            for j in sum.indices { sum[j] &+= y[j] }
        }
        try coordinator.closeMaskedInput(survivors: [1, 2, 3, 4, 5])
        for i in 0..<3 { try coordinator.receiveUnmask(from: simulation.roster[i], shares: agents[i].unmask(survivors: [1, 2, 3, 4, 5], dropped: [])) }
        #expect(!coordinator.canUnmask)
        let before = sum
        #expect(throws: SecAggError.self) { try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) } }
        #expect(sum == before, "nothing was unmasked")
        try coordinator.receiveUnmask(from: simulation.roster[3], shares: agents[3].unmask(survivors: [1, 2, 3, 4, 5], dropped: []))
        #expect(coordinator.canUnmask)
        try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) }
        #expect(sum[0] == 5 && sum[1] == 10)
    }
}

@Suite("Distributed differential privacy")
struct DistributedPrivacyTests {
    @Test("The discrete Gaussian sampler has mean 0 and variance σ² (10^5 draws), integer support, and is deterministic for a seed")
    func sampler() throws {
        for sigma in [0.7, 3.0, 1000.0, 2e6] {
            let sampler = try DiscreteGaussianSampler(sigma: sigma, seed: SecAggCrypto.sha256([9]))
            let draws = (0..<100_000).map { _ in Double(sampler.next()) }
            let mean = draws.reduce(0, +) / Double(draws.count)
            let variance = draws.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(draws.count - 1)
            #expect(abs(mean) < 5 * sigma / Double(draws.count).squareRoot() + 0.01, "σ \(sigma): mean \(mean)")
            #expect(abs(variance / (sigma * sigma) - 1) < 0.03, "σ \(sigma): variance ratio \(variance / (sigma * sigma))")
        }
        let a = try DiscreteGaussianSampler(sigma: 50, seed: SecAggCrypto.sha256([1])), b = try DiscreteGaussianSampler(sigma: 50, seed: SecAggCrypto.sha256([1]))
        #expect((0..<100).map { _ in a.next() } == (0..<100).map { _ in b.next() })
    }

    @Test("With DP the unmasked sum is the clipped, quantized updates plus noise of the configured total σ, and still exact mod 2^32")
    func noisySum() throws {
        var simulation = Simulation(n: 6, degree: 5, threshold: 4, parameters: 20_000)
        simulation.minSurvivors = 4
        var config = simulation.config()
        let sigma = 300.0
        config.dp = .init(mode: 1, localStddev: sigma, l2Clip: 1e9)
        config.scaleExponent = 20
        let (agents, coordinator, incoming) = try simulation.sharedKeys(config)
        var sum = [UInt32](repeating: 0, count: 20_002)
        for agent in agents {
            try agent.receiveMaskedInputRequest(survivors: [1, 2, 3, 4, 5, 6], incoming: incoming[agent.index]!)
            let y = try agent.maskedInput(count: 20_000, { _ in 0 }, examples: 1)
            for j in sum.indices { sum[j] &+= y[j] }
        }
        try coordinator.closeMaskedInput(survivors: [1, 2, 3, 4, 5, 6])
        for (i, agent) in agents.enumerated() { try coordinator.receiveUnmask(from: simulation.roster[i], shares: agent.unmask(survivors: [1, 2, 3, 4, 5, 6], dropped: [])) }
        try sum.withUnsafeMutableBufferPointer { try coordinator.removeMasks(from: $0) }
        // Zero updates: what is left is the sum of six agents' noise, variance 6σ²; canary and weight untouched.
        #expect(sum[0] == 6 && sum[1] == 6)
        let noise = sum[2...].map { Double(Int32(bitPattern: $0)) }
        let variance = noise.reduce(0) { $0 + $1 * $1 } / Double(noise.count)
        #expect(abs(variance / (6 * sigma * sigma) - 1) < 0.05, "variance ratio \(variance / (6 * sigma * sigma))")
    }
}

@Suite("Quantizer fast path")
struct QuantizerFastPathTests {
    @Test("The vectorized C loop gives exactly the spec's Float64 reference, element for element, clipping included")
    func fastPathEqualsReference() throws {
        var random = SplitMix64(seed: 77)
        let count = 100_003
        let delta = (0..<count).map { _ in Float(Double(Int64(bitPattern: random.next())) / Double(Int64.max) * 3) }
        for (e, clip, examples) in [(Int32(24), 2.0, UInt64(500)), (27, 1.0, 10_000), (20, 0.5, 1)] {
            let quantizer = Quantizer(scaleExponent: e, clip: clip, maxWeight: 10_000)
            var fast = [UInt32](repeating: 0, count: count + 2), reference = fast
            let rounding = SecAggCrypto.sha256([UInt8(e)])
            try delta.withUnsafeBufferPointer { d in
                try fast.withUnsafeMutableBufferPointer { try quantizer.quantize(d, examples: examples, rounding: rounding, into: $0) }
            }
            try reference.withUnsafeMutableBufferPointer {
                try quantizer.quantize(count: count, { Double(delta[$0]) }, examples: examples, rounding: rounding, into: $0)
            }
            #expect(fast == reference, "e \(e), clip \(clip)")
        }
        var x = [UInt32](repeating: 0, count: 5)
        #expect(throws: SecAggError.self) {
            try [Float(1), .infinity, 0].withUnsafeBufferPointer { d in
                try x.withUnsafeMutableBufferPointer { try Quantizer(scaleExponent: 20, clip: 1, maxWeight: 1).quantize(d, examples: 1, rounding: SecAggCrypto.sha256([1]), into: $0) }
            }
        }
    }
}
