import FedCore
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Logging

// The FLSECAGG-v1 stages around the round engine: stage 0 rides on the Train call, stages 1 and
// the stage-2 request run on a thread of their own while the agents train, masked inputs are
// announced and pulled like plaintext updates (the engine's deadline is the straggler cut) and
// added by the attempt's ``SecureRound``, and stage 3 runs at commit time: its shares are
// collected here, before the model is locked, and the round's close removes the masks.

extension Coordinator {
    /// Sets up secure aggregation for a new attempt and starts its driver; nil when it is off.
    func startSecureRound(_ attempt: RoundStateMachine.Attempt) {
        guard configuration.secureAggregation.enabled else { return }
        let (hash, count) = modelLock.withReadLock { (stateLock.withLock { globalSHA256 }, model.layout.parameterCount) }
        do {
            let config = try SecureRound.configuration(
                invited: attempt.invited, roundID: attempt.roundID, attempt: attempt.attempt, epoch: startCount,
                settings: configuration.secureAggregation,
                modelSHA256: hash, parameterCount: count, deadlineSeconds: attempt.deadline - now)
            let round = try SecureRound(config: config, roundID: attempt.roundID, spools: spools)
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
}
