import FedCore
import FedSecAgg
import Foundation

/// One round attempt under secure aggregation: the FLSECAGG-v1 coordinator session and the
/// masked sum `Σ y_u` (mod 2^32) of the complete masked inputs. As the attempt's ``RoundAggregator`` it adds each masked input into the sum as it
/// arrives and, at the close, removes the masks with the shares stage 3 collected and steps the
/// model by the dequantized mean.
///
/// Memory: 4 bytes per parameter, whatever the number of agents.
final class SecureRound: RoundAggregator, @unchecked Sendable {
    // @unchecked: `session` is guarded by `sessionLock`; `sum` by the coordinator's aggregator
    // lock.
    let id: SecureRoundID
    private let session: SecAggCoordinatorSession
    private let sessionLock = NSLock()
    private var sum: [UInt32]
    private let spools: SpoolPool
    /// With DP: invited ÷ eligible agents (the accountant's sampling rate), and the ε the
    /// federation reaches once this round commits.
    var samplingRate = 1.0
    var projectedEpsilon: Double?

    init(config: SecAggConfig, id: SecureRoundID, spools: SpoolPool) throws {
        precondition(config.roundID == id.wire, "the configuration is for another attempt")
        session = try SecAggCoordinatorSession(config: config)
        self.id = id
        self.spools = spools
        sum = [UInt32](repeating: 0, count: Int(config.vectorLength))
    }

    var config: SecAggConfig { session.config }
    /// The agents invited to the attempt (its roster).
    var invited: [String] { session.config.roster }

    /// The attempt's FLSECAGG-v1 configuration for `invited` agents, from the coordinator's
    /// settings (§2.3): complete graph with `t = N − D_max` up to 200 agents (or when asked),
    /// the SecAgg+ table beyond.
    static func configuration(
        invited: [String], id: SecureRoundID, settings: CoordinatorConfiguration.SecureAggregation,
        modelSHA256: [UInt8], parameterCount: Int, deadlineSeconds: Double
    ) throws -> SecAggConfig {
        let n = invited.count
        guard n >= 3 else {
            throw SecAggError(.tooFewSurvivors, "secure aggregation needs at least 3 agents in a round; \(n) were invited")
        }
        let dropouts = Int((Double(n) * settings.maxDropoutFraction).rounded(.down))
        let sparse = settings.graph == .sparse || (settings.graph == .auto && n > 200)
        var degree = n - 1, threshold = n - dropouts, minimum = n - dropouts
        if sparse, let (k, t) = SecAggGraph.sparseParameters(agents: max(n, 201), dropoutFraction: settings.maxDropoutFraction), k < n - 1 {
            degree = k
            threshold = t
        }
        threshold = min(degree + 1, max(threshold, 2, settings.collusion + 1))
        minimum = max(3, sparse ? minimum : max(minimum, threshold))
        guard minimum <= n else {
            throw SecAggError(.tooFewSurvivors, "\(n) agents cannot meet a threshold of \(threshold) with \(settings.collusion) colluders")
        }
        let ms = { (seconds: Double) in UInt32(min(Double(UInt32.max), max(1, seconds * 1000))) }
        var exponent = Quantizer.scaleExponent(agents: n, clip: settings.clip)
        var privacy: SecAggConfig.DifferentialPrivacy?
        if settings.dp.enabled {
            // §8: M survivors already give the total noise z·C; the ring keeps 8σ·√N of headroom:
            // N·(c·2^e + 1) + 8·σ_local·√N ≤ 2^31 − 1 with σ_local = z·C·2^e / √M.
            let perUnit = Double(n) * settings.clip + 8 * settings.dp.noiseMultiplier * settings.dp.l2Clip * Double(n).squareRoot() / Double(minimum).squareRoot()
            exponent = Int32(max(0, log2((Double(Int32.max) - Double(n) - 1) / perUnit).rounded(.down)))
            let sigma = settings.dp.noiseMultiplier * settings.dp.l2Clip * Double(sign: .plus, exponent: Int(exponent), significand: 1) / Double(minimum).squareRoot()
            privacy = .init(mode: 1, localStddev: sigma, l2Clip: settings.dp.l2Clip)
        }
        return SecAggConfig(
            roundID: id.wire, sessionNonce: SecAggCrypto.publicRandom(32),
            roster: invited.sorted(),
            neighborDegree: UInt32(degree), threshold: UInt32(threshold), minSurvivors: UInt32(minimum),
            graphSeed: SecAggCrypto.publicRandom(32), vectorLength: UInt64(parameterCount + 2),
            scaleExponent: exponent, clip: settings.clip, maxWeight: settings.maxWeight,
            modelSHA256: modelSHA256, dp: privacy,
            stageTimeoutsMs: [ms(settings.keysTimeoutSeconds), ms(settings.keysTimeoutSeconds), ms(deadlineSeconds), ms(settings.unmaskTimeoutSeconds)])
    }

    /// Runs `body` on the session under the round's lock.
    func withSession<T>(_ body: (SecAggCoordinatorSession) throws -> T) rethrows -> T {
        try sessionLock.withLock { try body(session) }
    }

    // MARK: The masked sum (under the coordinator's aggregator lock)

    /// Adds a complete masked input (read back from its spool) into the masked sum, mod 2^32.
    func add(_ update: AcceptedUpdate, closesRound: Bool) throws {
        defer { spools.give(update.spool) }
        try update.spool.forEachSlice { offset, values in
            add(UnsafeBufferPointer(start: UnsafeRawPointer(values.baseAddress!).assumingMemoryBound(to: UInt32.self), count: values.count), at: offset)
        }
    }

    /// Adds masked words into the sum from element `offset` on, mod 2^32.
    func add(_ words: UnsafeBufferPointer<UInt32>, at offset: Int) {
        sum.withUnsafeMutableBufferPointer { sum in
            for index in 0..<words.count { sum[offset + index] &+= words[index] }
        }
    }

    /// Stage 3's local part, once its shares are in: removes every mask from the sum and steps
    /// `model` by the weighted mean update, hashing it (CRCs and SHA-256) as it is written.
    func close(into model: inout GlobalModel) throws -> RoundCombination {
        let shares = try unmasked()
        let config = config
        var fingerprint: ModelFingerprinter.Fingerprint?
        let totalWeight = try unmaskedSum { z, survivors in
            let (mean, totalWeight) = try Quantizer(config).dequantizedMean(z, survivors: survivors)
            fingerprint = model.stepHashing { range, out in
                for (k, i) in range.enumerated() { out[k] = mean(i) }
            }
            return totalWeight
        }
        guard let fingerprint else { throw ModelError("the unmasked sum gave no mean") }
        return RoundCombination(fingerprint: fingerprint, unmasked: UnmaskOutcome(
            survivors: shares.survivors, recovered: shares.recovered, totalWeight: totalWeight,
            recoverySeconds: withSession { $0.recoverySeconds }))
    }

    /// Removes the masks from the sum with the shares stage 3 collected and hands `Σ_{u∈U3} x_u`
    /// (and `|U3|`) to `body`.
    func unmaskedSum<T>(_ body: (UnsafeBufferPointer<UInt32>, Int) throws -> T) throws -> T {
        let shares = try unmasked()
        return try sum.withUnsafeMutableBufferPointer { sum in
            try withSession { try $0.removeMasks(from: sum) }
            return try body(UnsafeBufferPointer(sum), shares.summed)
        }
    }

    /// Who stage 3 unmasks: `U3` and the dropouts `D` whose masks are recovered.
    /// - Throws: when the masked-input stage has not been closed.
    func unmasked() throws -> UnmaskShares {
        try withSession { session in
            guard !session.u3.isEmpty else { throw SecAggError(.internalError, "stage 3 ran before the masked-input stage closed") }
            return UnmaskShares(
                survivors: session.u3.sorted().map { session.agent(at: $0) }, summed: session.u3.count,
                recovered: session.dropped.sorted().map { session.agent(at: $0) })
        }
    }

    /// Frees the masked sum of an attempt that has ended: a thread still waiting on its key
    /// stages (an agent that never answers holds it up to the key deadline) keeps the round
    /// object, not its 4 bytes per parameter, so memory does not grow by a model per round while
    /// an agent keeps dropping.
    func reset() {
        sum = []
    }
}

/// Who stage 3 unmasks.
struct UnmaskShares {
    /// `U3`, by name, and how many of the accepted updates are in the sum.
    var survivors: [String]
    var summed: Int
    var recovered: [String]
}
