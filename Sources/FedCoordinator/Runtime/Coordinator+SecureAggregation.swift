import FedCore
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Logging

// The FLSECAGG-v1 stages around the round engine: stage 0 rides on the Train call, stages 1 and
// the stage-2 request run on a driver thread while the agents train, masked inputs are announced
// and pulled like plaintext updates (the engine's deadline is the straggler cut), and stage 3
// runs at commit time, before the optimizer step.

extension Coordinator {
    /// Sets up secure aggregation for a new attempt and starts its driver; nil when it is off.
    func startSecureRound(_ attempt: RoundStateMachine.Attempt) {
        guard configuration.secureAggregation.enabled else { return }
        let (hash, count) = modelLock.withReadLock { (stateLock.withLock { globalSHA256 }, global.layout.parameterCount) }
        do {
            let config = try SecureRound.configuration(
                invited: attempt.invited, roundID: attempt.roundID, attempt: attempt.attempt, epoch: startCount,
                settings: configuration.secureAggregation,
                modelSHA256: hash, parameterCount: count, deadlineSeconds: attempt.deadline - now)
            let round = try SecureRound(config: config, roundID: attempt.roundID)
            let dp = configuration.secureAggregation.dp
            if dp.enabled {
                let eligible = engineLock.withLock { engine.eligibleAgents(now: now).count }
                round.samplingRate = min(1, Double(attempt.invited.count) / Double(max(eligible, attempt.invited.count)))
                var projected = stateLock.withLock { accountant }
                projected.compose(q: round.samplingRate, noiseMultiplier: dp.noiseMultiplier)
                round.projectedEpsilon = projected.epsilon(delta: dp.delta).epsilon
            }
            stateLock.withLock { secureRound = round }
            logger.info("Secure aggregation set up", metadata: [
                "round": "\(attempt.roundID)", "secagg.agents": "\(config.roster.count)", "secagg.threshold": "\(config.threshold)",
                "secagg.min_survivors": "\(config.minSurvivors)", "secagg.graph": "\(config.isCompleteGraph ? "complete" : "k=\(config.neighborDegree)")",
            ])
            Thread { [self] in runKeyStages(round) }.start()
        } catch {
            stateLock.withLock { secureRound = nil }
            abortSecureRound(agents: attempt.invited, roundID: attempt.roundID, reason: "\(error)")
        }
    }

    /// The secure round of `roundID`'s current attempt, if any.
    func currentSecureRound(_ roundID: UInt64) -> SecureRound? {
        stateLock.withLock { secureRound?.roundID == roundID ? secureRound : nil }
    }

    /// Stages 0–2 (keys, shares, the masked-input request), while the agents train.
    private func runKeyStages(_ round: SecureRound) {
        round.waitForKeys(until: Date(timeIntervalSinceNow: configuration.secureAggregation.keysTimeoutSeconds))
        guard currentSecureRound(round.roundID) === round, !isStopped else { return }
        do {
            let requested = try shareKeysAndRequestMasking(round) { [self] agents, reason in dropFromSecureRound(agents, round: round, reason: reason) }
            // Whoever did not get the request cannot mask: a dropout the unmask stage recovers.
            let unreachable = requested.filter { if case .failure = $0.value { return true } else { return false } }.keys.sorted()
            dropFromSecureRound(unreachable, round: round, reason: "the masked-input request could not be delivered")
        } catch {
            abortSecureRound(agents: round.invited, roundID: round.roundID, reason: "\(error)")
        }
    }

    /// Closes stage 0, runs stage 1 and sends the stage-2 requests; `dropped` hears of the agents
    /// each stage leaves behind. Returns the MaskedInput answers by agent.
    func shareKeysAndRequestMasking(_ round: SecureRound, dropped: ([String], String) -> Void) throws -> [String: Result<Message, any Error>] {
        let settings = configuration.secureAggregation
        let secureID = round.config.roundID
        let keys = try round.withSession { try $0.closeAdvertising() }
        let u1 = round.withSession { session in Set(session.u1.map { session.agent(at: $0) }) }
        dropped(round.invited.filter { !u1.contains($0) }, "no keys by the key-advertising deadline")
        let shared = fanOut(to: u1.sorted()) { [self] agent in
            guard let connection = stateLock.withLock({ connections[agent] }) else { throw WireError(.connectionClosed, "not connected") }
            let reply = try connection.unary(Methods.shareKeys, .shareKeysRequest(ShareKeysRequest(roundID: secureID, keys: keys)),
                                             timeout: settings.keysTimeoutSeconds)
            guard case .shareKeysResponse(let response) = reply, response.roundID == secureID else {
                throw RPCError(.invalidArgument, "ShareKeys answered \(reply.name) for another round")
            }
            try round.withSession { try $0.receiveShares(from: agent, commitment: response.commitment, envelopes: response.outgoing) }
        }
        logFailures(shared, "No shares from an agent")
        let incoming = try round.withSession { try $0.closeSharing() }
        let (survivors, u2) = round.withSession { session in (session.u2.sorted(), Set(session.u2.map { session.agent(at: $0) })) }
        dropped(u1.filter { !u2.contains($0) }.sorted(), "no valid shares by the key-sharing deadline")
        return fanOut(to: u2.sorted()) { [self] agent in
            guard let connection = stateLock.withLock({ connections[agent] }) else { throw WireError(.connectionClosed, "not connected") }
            let index = round.withSession { $0.index(of: agent)! }
            return try connection.unary(
                Methods.maskedInput, .maskedInputRequest(MaskedInputRequest(roundID: secureID, survivors: survivors, incoming: incoming[index] ?? [])),
                timeout: settings.keysTimeoutSeconds)
        }
    }

    /// Agents pruned from the round at a key stage: the round goes on without them.
    private func dropFromSecureRound(_ agents: [String], round: SecureRound, reason: String) {
        for agent in agents {
            drive { $0.taskFailed(agent, roundID: round.roundID, reason: "secure aggregation: \(reason)", now: now) }
            sendCancel(agent, roundID: round.roundID, reason: reason)
        }
    }

    /// Too few agents left (or set-up failed): the attempt is abandoned and retried with fresh keys.
    private func abortSecureRound(agents: [String], roundID: UInt64, reason: String) {
        logger.warning("Secure aggregation aborted", metadata: ["round": "\(roundID)", "reason": "\(reason)"])
        for agent in agents {
            drive { $0.taskFailed(agent, roundID: roundID, reason: "secure aggregation aborted: \(reason)", now: now) }
            sendCancel(agent, roundID: roundID, reason: "secure aggregation aborted: \(reason)")
        }
    }

    /// Logs the agents a fan-out could not reach, with why.
    func logFailures<T>(_ outcomes: [String: Result<T, any Error>], _ message: Logger.Message) {
        for (agent, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            if case .failure(let error) = outcome { logger.warning(message, metadata: ["agent": "\(agent)", "error": "\(error)"]) }
        }
    }

    func sendCancel(_ agent: String, roundID: UInt64, reason: String) {
        Thread { [self] in
            guard let connection = stateLock.withLock({ connections[agent] }) else { return }
            _ = try? connection.unary(Methods.cancel, .cancelTask(CancelTask(roundID: roundID, reason: reason)), timeout: 5)
        }.start()
    }

    /// What stage 3 produced, for the round record.
    struct UnmaskOutcome {
        var survivors: [String]
        var recovered: [String]
        var totalWeight: UInt32
        var recoverySeconds: Double
    }

    /// Stage 3 at commit time, once ``collectUnmaskShares(_:accepted:)`` has run: removes every
    /// mask from the sum and hands the weighted mean update to `apply`. No network.
    func unmask(_ round: SecureRound, shares: UnmaskShares, apply: ((Int) -> Double) throws -> Void) throws -> UnmaskOutcome {
        let total = try removeMasks(round, shares: shares) { z, count in
            let (mean, total) = try Quantizer(round.config).dequantizedMean(z, survivors: count)
            try apply(mean)
            return total
        }
        return UnmaskOutcome(survivors: shares.survivors, recovered: shares.recovered, totalWeight: total,
                             recoverySeconds: round.withSession { $0.recoverySeconds })
    }

    /// Stage 3: closes the masked-input stage with `accepted` as `U3`, collects the survivors'
    /// shares, removes the masks, and hands `Σ_{u∈U3} x_u` (and `|U3|`) to `body`.
    func unmaskSum<T>(_ round: SecureRound, accepted: [String], body: (UnsafeBufferPointer<UInt32>, Int) throws -> T) throws
        -> (T, survivors: [String], recovered: [String])
    {
        let shares = try collectUnmaskShares(round, accepted: accepted)
        return (try removeMasks(round, shares: shares, body: body), shares.survivors, shares.recovered)
    }

    /// Who stage 3 unmasks, once their shares are in.
    struct UnmaskShares {
        /// `U3`, by name, and how many of the accepted updates are in the sum.
        var survivors: [String]
        var summed: Int
        var recovered: [String]
    }

    /// Stage 3's network part: closes the masked-input stage with `accepted` as `U3` and collects
    /// the survivors' shares (up to `unmask_timeout_seconds`). Holds no lock across the network.
    func collectUnmaskShares(_ round: SecureRound, accepted: [String]) throws -> UnmaskShares {
        let settings = configuration.secureAggregation
        let secureID = round.config.roundID
        let survivors = try round.withSession { session -> Set<UInt32> in
            let indices = Set(accepted.compactMap { session.index(of: $0) })
            try session.closeMaskedInput(survivors: indices)
            return indices
        }
        let (u3, dropped, names) = round.withSession { session in
            let (u3, dropped) = (session.u3.sorted(), session.dropped.sorted())
            return (u3, dropped, (u3.map { session.agent(at: $0) }, dropped.map { session.agent(at: $0) }))
        }
        let answers = fanOut(to: names.0) { [self] agent in
            guard let connection = stateLock.withLock({ connections[agent] }) else { throw WireError(.connectionClosed, "not connected") }
            let reply = try connection.unary(Methods.unmask, .unmaskRequest(UnmaskRequest(roundID: secureID, survivors: u3, dropped: dropped)),
                                             timeout: settings.unmaskTimeoutSeconds)
            guard case .unmaskResponse(let response) = reply, response.roundID == secureID else {
                throw RPCError(.invalidArgument, "Unmask answered \(reply.name) for another round")
            }
            try round.withSession { try $0.receiveUnmask(from: agent, shares: response.shares) }
        }
        logFailures(answers, "No unmask answer from an agent")
        return UnmaskShares(survivors: names.0, summed: survivors.count, recovered: names.1)
    }

    /// Stage 3's local part: removes the masks from the sum with the shares collected and hands
    /// `Σ_{u∈U3} x_u` (and `|U3|`) to `body`, under `accumulatorLock`.
    func removeMasks<T>(_ round: SecureRound, shares: UnmaskShares, body: (UnsafeBufferPointer<UInt32>, Int) throws -> T) throws -> T {
        try accumulatorLock.withLock {
            try round.sum.withUnsafeMutableBufferPointer { sum in
                try round.withSession { try $0.removeMasks(from: sum) }
                return try body(UnsafeBufferPointer(sum), shares.summed)
            }
        }
    }

    /// Adds a complete masked input (read back from its spool) into the masked sum, mod 2^32.
    func addMasked(_ spool: UpdateSpool, into round: SecureRound) throws {
        try spool.forEachSlice { offset, values in
            let words = UnsafeRawPointer(values.baseAddress!).assumingMemoryBound(to: UInt32.self)
            round.sum.withUnsafeMutableBufferPointer { sum in
                for index in 0..<values.count { sum[offset + index] &+= words[index] }
            }
        }
    }
}
