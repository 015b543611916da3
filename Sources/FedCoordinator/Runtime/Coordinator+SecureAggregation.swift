import FedCore
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Logging

// The FLSECAGG-v1 stages of a round attempt, as the engine's ``SecureStages`` clock calls them:
// stage 0 rides on the Train call (SecureSetup, ahead of the model); when the engine closes it,
// the driver runs the session's close and sends ShareKeys; when it closes stage 1, the
// MaskedInput requests. Each call runs on a thread of its own and reports back to the engine,
// keyed by the attempt. Masked inputs are announced and pulled like plaintext updates (the
// engine's deadline is the straggler cut) and added by the attempt's ``SecureRound``. When the
// attempt closes, the engine asks for stage 3 (``RoundStateMachine/Action/unmask(_:)``), and
// only once its shares are in, or its deadline passed, for the commit, whose close removes the
// masks: no lock is ever held across the network.

extension Coordinator {
    /// Sets up secure aggregation for a new attempt (nothing when it is off); its stage 0
    /// goes out with the tasks. On the driver's thread.
    func startSecureRound(_ attempt: RoundStateMachine.Attempt) {
        guard configuration.secureAggregation.enabled else { return }
        let id = SecureRoundID(epoch: startCount, round: attempt.roundID, attempt: attempt.attempt)
        let (hash, count) = modelLock.withReadLock { (stateLock.withLock { globalSHA256 }, model.layout.parameterCount) }
        do {
            let config = try SecureRound.configuration(
                invited: attempt.invited, id: id, settings: configuration.secureAggregation,
                modelSHA256: hash, parameterCount: count, deadlineSeconds: attempt.deadline - now)
            let round = try SecureRound(config: config, id: id, spools: spools)
            let dp = configuration.secureAggregation.dp
            if dp.enabled {
                let eligible = driver.read { [self] in $0.eligibleAgents(now: now).count }
                round.samplingRate = min(1, Double(attempt.invited.count) / Double(max(eligible, attempt.invited.count)))
                var projected = stateLock.withLock { accountant }
                projected.compose(q: round.samplingRate, noiseMultiplier: dp.noiseMultiplier)
                round.projectedEpsilon = projected.epsilon(delta: dp.delta).epsilon
            }
            secureRound = round
            logger.info("Secure aggregation set up", metadata: [
                "round": "\(attempt.roundID)", "secagg.agents": "\(config.roster.count)", "secagg.threshold": "\(config.threshold)",
                "secagg.min_survivors": "\(config.minSurvivors)", "secagg.graph": "\(config.isCompleteGraph ? "complete" : "k=\(config.neighborDegree)")",
            ])
        } catch {
            secureRound = nil
            abortSecureRound(id, agents: attempt.invited, reason: "\(error)")
        }
    }

    /// The secure round of `roundID`'s attempt `attempt`, while it is the current one. On the
    /// driver's thread only: the workers get it with their action.
    func currentSecureRound(_ roundID: UInt64, attempt: Int) -> SecureRound? {
        secureRound.flatMap { $0.id.round == roundID && $0.id.attempt == attempt ? $0 : nil }
    }

    /// Closes the attempt's open key stage, on the engine's word (``RoundStateMachine/Action/closeSecureStage(_:roundID:attempt:)``):
    /// the session's close prunes and checks, the agents it leaves out are dropped, the next
    /// stage's requests go out, each on a thread of its own. No network on the caller's thread.
    func closeSecureStage(_ stage: SecureStages.Stage, roundID: UInt64, attempt: Int) {
        guard let round = currentSecureRound(roundID, attempt: attempt) else { return }
        do {
            switch stage {
            case .advertisingKeys:
                let keys = try round.withSession { try $0.closeAdvertising() }
                let u1 = round.withSession { session in session.u1.map { session.agent(at: $0) }.sorted() }
                dropFromSecureRound(round, round.invited.filter { !u1.contains($0) }, reason: "no keys by the key-advertising deadline")
                drive { [self] in $0.secureStageOpened(.sharingKeys, expecting: u1, roundID: roundID, attempt: attempt, now: now) }
                for agent in u1 {
                    Thread { [self] in
                        do { try requestShares(from: agent, keys: keys, round: round) } catch {
                            logger.warning("No shares from an agent", metadata: ["agent": "\(agent)", "error": "\(error)"])
                        }
                        drive { [self] in $0.secureAnswered(agent, stage: .sharingKeys, roundID: roundID, attempt: attempt, now: now) }
                    }.start()
                }
            case .sharingKeys:
                let (u1, incoming, survivors) = try round.withSession { session in
                    (session.u1, try session.closeSharing(), session.u2.sorted())
                }
                let names = round.withSession { session in (u1.subtracting(survivors).map { session.agent(at: $0) }.sorted(), survivors.map { session.agent(at: $0) }) }
                dropFromSecureRound(round, names.0, reason: "no valid shares by the key-sharing deadline")
                drive { [self] in $0.secureStageOpened(.maskedInput, expecting: names.1, roundID: roundID, attempt: attempt, now: now) }
                for agent in names.1 {
                    Thread { [self] in
                        do { _ = try requestMaskedInput(from: agent, survivors: survivors, incoming: incoming, round: round) } catch {
                            logger.warning("Masked-input request not delivered", metadata: ["agent": "\(agent)", "error": "\(error)"])
                            // Whoever did not get the request cannot mask: a dropout the unmask stage recovers.
                            dropFromSecureRound(round, [agent], reason: "the masked-input request could not be delivered")
                        }
                    }.start()
                }
            case .maskedInput, .unmasking:
                // Closed by the attempt's close (``openUnmaskStage(_:)``) and by the engine's aggregate.
                break
            }
        } catch {
            abortSecureRound(round.id, agents: round.invited, reason: "\(error)")
        }
    }

    /// Stage 1 for one agent: sends it `U1`'s keys and takes its commitment and share envelopes.
    func requestShares(from agent: String, keys: [AdvertisedKeys], round: SecureRound) throws {
        let secureID = round.config.roundID
        let connection = try registry.connected(agent)
        let reply = try connection.unary(Methods.shareKeys, .shareKeysRequest(ShareKeysRequest(roundID: secureID, keys: keys)),
                                         timeout: configuration.secureAggregation.keysTimeoutSeconds)
        guard case .shareKeysResponse(let response) = reply, response.roundID == secureID else {
            throw RPCError(.invalidArgument, "ShareKeys answered \(reply.name) for another round")
        }
        try round.withSession { try $0.receiveShares(from: agent, commitment: response.commitment, envelopes: response.outgoing) }
    }

    /// Stage 2's request for one agent: `U2` and the share envelopes addressed to it; returns
    /// its answer (for the statistics, the masked vector itself).
    func requestMaskedInput(
        from agent: String, survivors: [UInt32], incoming: [UInt32: [EncryptedShare]], round: SecureRound
    ) throws -> Message {
        let connection = try registry.connected(agent)
        let index = round.withSession { $0.index(of: agent)! }
        return try connection.unary(
            Methods.maskedInput,
            .maskedInputRequest(MaskedInputRequest(roundID: round.config.roundID, survivors: survivors, incoming: incoming[index] ?? [])),
            timeout: configuration.secureAggregation.keysTimeoutSeconds)
    }

    /// Agents a key stage left out: the attempt goes on without them.
    private func dropFromSecureRound(_ round: SecureRound, _ agents: [String], reason: String) {
        guard !agents.isEmpty else { return }
        let id = round.id
        drive { [self] in $0.secureDropped(agents, reason: "secure aggregation: \(reason)", roundID: id.round, attempt: id.attempt, now: now) }
    }

    /// Too few agents left (or set-up failed): the attempt is abandoned and retried with fresh keys.
    private func abortSecureRound(_ id: SecureRoundID, agents: [String], reason: String) {
        logger.warning("Secure aggregation aborted", metadata: ["round": "\(id.round)", "round.attempt": "\(id.attempt)", "reason": "\(reason)"])
        drive { [self] in $0.secureDropped(agents, reason: "secure aggregation aborted: \(reason)", roundID: id.round, attempt: id.attempt, now: now) }
    }

    /// Logs the agents a fan-out could not reach, with why.
    func logFailures<T>(_ outcomes: [String: Result<T, any Error>], _ message: Logger.Message) {
        for (agent, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            if case .failure(let error) = outcome { logger.warning(message, metadata: ["agent": "\(agent)", "error": "\(error)"]) }
        }
    }

    func sendCancel(_ agent: String, roundID: UInt64, reason: String) {
        Thread { [self] in
            guard let connection = registry.connection(agent) else { return }
            _ = try? connection.unary(Methods.cancel, .cancelTask(CancelTask(roundID: roundID, reason: reason)), timeout: 5)
        }.start()
    }

    /// Opens stage 3 on the engine's word (``RoundStateMachine/Action/unmask(_:)``): the
    /// masked-input stage closes with the accepted masked inputs as `U3`, and each survivor is
    /// asked for its shares on a thread of its own; the engine aggregates when the stage closes.
    func openUnmaskStage(_ outcome: RoundStateMachine.Outcome) {
        let (roundID, attempt) = (outcome.attempt.roundID, outcome.attempt.attempt)
        guard let round = currentSecureRound(roundID, attempt: attempt) else {
            drive { [self] in $0.aggregationFailed(roundID: roundID, reason: "secure aggregation: the attempt's session is gone", now: now) }
            return
        }
        do {
            let (survivors, request) = try closeMaskedInput(round, accepted: outcome.accepted.keys.sorted())
            drive { [self] in $0.secureStageOpened(.unmasking, expecting: survivors, roundID: roundID, attempt: attempt, now: now) }
            for agent in survivors {
                Thread { [self] in
                    do { try requestUnmask(from: agent, request, round: round) } catch {
                        logger.warning("No unmask answer from an agent", metadata: ["agent": "\(agent)", "error": "\(error)"])
                    }
                    drive { [self] in $0.secureAnswered(agent, stage: .unmasking, roundID: roundID, attempt: attempt, now: now) }
                }.start()
            }
        } catch {
            logger.warning("Secure aggregation aborted", metadata: ["round": "\(roundID)", "round.attempt": "\(attempt)", "reason": "\(error)"])
            drive { [self] in $0.aggregationFailed(roundID: roundID, reason: "secure aggregation aborted: \(error)", now: now) }
        }
    }

    /// Closes the masked-input stage with `accepted` as `U3` (the stage's checks); returns `U3`
    /// by name and the unmask request every survivor gets.
    func closeMaskedInput(_ round: SecureRound, accepted: [String]) throws -> (survivors: [String], request: UnmaskRequest) {
        try round.withSession { session in
            try session.closeMaskedInput(survivors: Set(accepted.compactMap { session.index(of: $0) }))
            let (u3, dropped) = (session.u3.sorted(), session.dropped.sorted())
            return (u3.map { session.agent(at: $0) }, UnmaskRequest(roundID: round.config.roundID, survivors: u3, dropped: dropped))
        }
    }

    /// Stage 3 for one agent: sends it the survivor and dropout lists and takes its shares.
    func requestUnmask(from agent: String, _ request: UnmaskRequest, round: SecureRound) throws {
        let connection = try registry.connected(agent)
        let reply = try connection.unary(Methods.unmask, .unmaskRequest(request), timeout: configuration.secureAggregation.unmaskTimeoutSeconds)
        guard case .unmaskResponse(let response) = reply, response.roundID == request.roundID else {
            throw RPCError(.invalidArgument, "Unmask answered \(reply.name) for another round")
        }
        try round.withSession { try $0.receiveUnmask(from: agent, shares: response.shares) }
    }
}
