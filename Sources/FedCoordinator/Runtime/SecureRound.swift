import FedCore
import FedSecAgg
import Foundation

/// One round attempt under secure aggregation: the FLSECAGG-v1 coordinator session, who has
/// answered the stage-0 Train call, and the masked sum `Σ y_u` (mod 2^32) of the complete masked
/// inputs. Memory: 4 bytes per parameter, whatever the number of agents.
final class SecureRound: @unchecked Sendable {
    // @unchecked: `session` and `answered` are guarded by `condition`; `sum` by the coordinator's
    // accumulator lock.
    let roundID: UInt64
    private let session: SecAggCoordinatorSession
    private let condition = NSCondition()
    private var answered: Set<String> = []
    var sum: [UInt32]
    /// With DP: invited ÷ eligible agents (the accountant's sampling rate), and the ε the
    /// federation reaches once this round commits.
    var samplingRate = 1.0
    var projectedEpsilon: Double?

    init(config: SecAggConfig, roundID: UInt64) throws {
        session = try SecAggCoordinatorSession(config: config)
        self.roundID = roundID
        sum = [UInt32](repeating: 0, count: Int(config.vectorLength))
    }

    var config: SecAggConfig { session.config }
    /// The agents invited to the attempt (its roster).
    var invited: [String] { session.config.roster }

    /// The attempt's FLSECAGG-v1 configuration for `invited` agents, from the coordinator's
    /// settings (§2.3): complete graph with `t = N − D_max` up to 200 agents (or when asked),
    /// the SecAgg+ table beyond.
    /// The secure round id of an attempt: `epoch << 44 | FL round << 16 | attempt`, where the
    /// epoch counts the coordinator's starts on its state folder (``CheckpointStore/nextEpoch()``).
    /// The epoch leads, so that ids rise across restarts whatever round a crash lost: a
    /// coordinator killed after announcing round R+1 retries round R with a larger id than any
    /// its agents saw (agents refuse an id they have seen, as the spec asks).
    static func secureRoundID(round: UInt64, epoch: UInt64, attempt: Int) -> UInt64 {
        precondition(epoch < 1 << 20 && round < 1 << 28, "secure round ids hold 2^20 starts and 2^28 rounds")
        return epoch << 44 | round << 16 | UInt64(attempt & 0xFFFF)
    }

    static func configuration(
        invited: [String], roundID: UInt64, attempt: Int, epoch: UInt64, settings: CoordinatorConfiguration.SecureAggregation,
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
            roundID: secureRoundID(round: roundID, epoch: epoch, attempt: attempt), sessionNonce: SecAggCrypto.publicRandom(32),
            roster: invited.sorted(),
            neighborDegree: UInt32(degree), threshold: UInt32(threshold), minSurvivors: UInt32(minimum),
            graphSeed: SecAggCrypto.publicRandom(32), vectorLength: UInt64(parameterCount + 2),
            scaleExponent: exponent, clip: settings.clip, maxWeight: settings.maxWeight,
            modelSHA256: modelSHA256, dp: privacy,
            stageTimeoutsMs: [ms(settings.keysTimeoutSeconds), ms(settings.keysTimeoutSeconds), ms(deadlineSeconds), ms(settings.unmaskTimeoutSeconds)])
    }

    /// Runs `body` on the session under the round's lock.
    func withSession<T>(_ body: (SecAggCoordinatorSession) throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body(session)
    }

    /// The agent's stage-0 call (SecureSetup) ended, with its keys or without.
    func keysCallEnded(_ agent: String) {
        condition.lock()
        answered.insert(agent)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until every invited agent's stage-0 call ended, or `deadline`.
    func waitForKeys(until deadline: Date) {
        condition.lock()
        defer { condition.unlock() }
        while answered.count < invited.count {
            if !condition.wait(until: deadline) { return }
        }
    }
}
