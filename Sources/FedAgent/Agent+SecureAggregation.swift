import FedCore
import FedLearn
import FedProtocol
import FedSecAgg
import FedWire
import Foundation
import Logging

// The agent's side of secure aggregation (FLSECAGG-v1): stage 0 (SecureSetup), the key and
// unmask stages, masking the update once it is trained, secure statistics, and dropout drills.

extension Agent {
    /// One secure session at this agent: the protocol session (not thread-safe: `lock`
    /// serializes it) and the encoded input waiting for the stage-2 request. A training round's
    /// input is its update, announced and pulled once masked; a statistics session's input is
    /// known at stage 0 and its masked vector answers the stage-2 request directly.
    final class SecureState: @unchecked Sendable {
        // @unchecked: `session` calls and `encoded` are guarded by `lock`.
        let session: SecAggAgentSession
        let statistics: Bool
        let lock = NSLock()
        var encoded: [UInt32]?
        init(_ session: SecAggAgentSession, statistics: Bool = false) {
            self.session = session
            self.statistics = statistics
        }
    }

    /// The stages of a secure round, for dropout drills.
    public enum SecureStage: Int, Sendable, CaseIterable {
        case advertiseKeys, shareKeys, maskedInput, unmask

        /// From its configuration name ("masked_input").
        public init?(name: String) {
            guard let stage = ["advertise_keys": Self.advertiseKeys, "share_keys": .shareKeys, "masked_input": .maskedInput, "unmask": .unmask][name]
            else { return nil }
            self = stage
        }
    }

    /// Drills and tests: in the next secure round, drop the connection (as a crash or a network
    /// cut would) when the coordinator reaches `stage`, then reconnect as usual.
    public func planDropout(at stage: SecureStage) { lock.withLock { plannedDropout = stage } }

    /// Drops out at `stage` if planned: a planned dropout (once) drops the connection, as a crash
    /// would (`connection`, the one the stage's request came on); the configured drill (every
    /// round) answers UNAVAILABLE and stays connected, so that benchmarks measure the round, not the
    /// reconnection. Returns whether it dropped out.
    func dropIfPlanned(_ stage: SecureStage, connection: RPCConnection) -> Bool {
        if configuration.drill.secureDropoutStage.flatMap(SecureStage.init(name:)) == stage {
            logger.warning("Dropping out of the secure round (drill)", metadata: ["stage": "\(stage)"])
            return true
        }
        let planned: Bool = lock.withLock {
            guard plannedDropout == stage else { return false }
            plannedDropout = nil
            return true
        }
        guard planned else { return false }
        logger.warning("Dropping out of the secure round as planned", metadata: ["stage": "\(stage)"])
        connection.close()
        return true
    }

    /// Secure statistics: the count, sum and sum of squares per feature, as exact fixed-point sums,
    /// go through the same masking as updates; the answer is this agent's keys.
    func startSecureStatistics(_ statistics: FeatureStatistics, _ secure: SecureAggregationTask, call: ServerCall) throws {
        var values: [Double] = []
        for f in 0..<statistics.featureCount {
            let n = Double(statistics.counts[f]), mean = statistics.means[f]
            values += [n, n * mean, statistics.m2[f] + n * mean * mean]
        }
        let session: SecAggAgentSession
        let input: [UInt32]
        do {
            input = try ExactSums.encode(values)
            session = try SecAggAgentSession(
                config: secure.config, index: secure.index, agentID: identity, receivedModelSHA256: lock.withLock { schemaHash },
                parameterCount: input.count - 2, lastRoundID: lock.withLock { lastSecureRoundID }, randomness: secureRandomness)
        } catch {
            throw RPCError(.failedPrecondition, "secure statistics refused: \(error)")
        }
        let state = SecureState(session, statistics: true)
        state.encoded = input
        lock.withLock {
            lastSecureRoundID = secure.config.roundID
            secureRounds[secure.config.roundID] = state
        }
        logger.info("Feature statistics entering secure aggregation", metadata: ["features": "\(statistics.featureCount)"])
        try call.send(.advertiseKeys(AdvertiseKeysMessage(roundID: secure.config.roundID, keys: session.keys)))
    }

    /// Stage 0 of a secure round: checks the task's secure-aggregation parameters and this site's
    /// policy, draws the keys and answers them; the model follows in the Train call.
    func secureSetup(_ call: ServerCall) throws {
        guard case .trainTask(let task) = try call.receiveOnly(), let secure = task.secureAggregation else {
            throw RPCError(.invalidArgument, "SecureSetup takes a TrainTask with secure_aggregation set")
        }
        if let cap = configuration.policy.maxEpsilon {
            guard let projected = secure.projectedEpsilon, projected <= cap else {
                let what = secure.projectedEpsilon.map { String(format: "would bring the federation's ε to %.3f (δ = %g)", $0, secure.delta ?? 0) }
                    ?? "runs without differential privacy"
                logger.warning("Round refused by this site's privacy budget", metadata: ["round": "\(task.roundID)", "cap": "\(cap)"])
                throw RPCError(.permissionDenied, "round \(task.roundID) \(what), above this site's cap policy.max_epsilon = \(cap)")
            }
        }
        let session: SecAggAgentSession
        do {
            // The model hash is the one the task names; the model itself is checked against it when it arrives.
            session = try SecAggAgentSession(
                config: secure.config, index: secure.index, agentID: identity, receivedModelSHA256: task.modelSHA256,
                parameterCount: max(0, Int(secure.config.vectorLength) - 2), lastRoundID: lock.withLock { lastSecureRoundID },
                randomness: secureRandomness)
        } catch {
            logger.warning("Secure aggregation refused", metadata: ["round": "\(task.roundID)", "reason": "\(error)"])
            throw RPCError(.failedPrecondition, "secure aggregation refused: \(error)")
        }
        let stale: [SecureState] = lock.withLock {
            lastSecureRoundID = secure.config.roundID
            let old = Array(secureRounds.values)
            secureRounds = [secure.config.roundID: SecureState(session)]
            return old
        }
        for state in stale { state.lock.withLock { state.session.erase() } }
        if dropIfPlanned(.advertiseKeys, connection: call.connection) { throw RPCError(.unavailable, "dropped out") }
        try call.send(.advertiseKeys(AdvertiseKeysMessage(roundID: secure.config.roundID, keys: session.keys)))
    }

    /// Under secure aggregation the update is announced once it is trained and the masked-input
    /// request has arrived, whichever comes last; it is masked exactly once.
    func maskAndAnnounce(_ job: Job) {
        guard let state = job.secure, let update = lock.withLock({ job.cancellation.isCancelled ? nil : job.update }) else { return }
        let secure = state.session
        let masked: [UInt32]? = state.lock.withLock {
            do {
                // Encode as soon as possible (it overlaps the other agents' work), mask once the request is in.
                if state.encoded == nil && secure.canEncode {
                    state.encoded = try update.delta.withUnsafeBufferPointer { try secure.encode(delta: $0, examples: update.exampleCount) }
                }
                guard secure.canMask, let encoded = state.encoded else { return nil }
                state.encoded = nil
                return try secure.maskedInput(encoded: encoded)
            } catch {
                logger.error("Cannot mask the update", metadata: ["round": "\(job.task.roundID)", "error": "\(error)"])
                return nil
            }
        }
        guard let masked else { return }
        lock.withLock { job.masked = masked }
        announce(job)
    }

    /// ShareKeys, MaskedInput and Unmask: the stages of the secure round in flight.
    func handleSecureStage(_ call: ServerCall) throws {
        let request = try call.receiveOnly()
        let roundID: UInt64
        switch request {
        case .shareKeysRequest(let r): roundID = r.roundID
        case .maskedInputRequest(let r): roundID = r.roundID
        case .unmaskRequest(let r): roundID = r.roundID
        default: throw RPCError(.invalidArgument, "\(call.method) does not take \(request.name)")
        }
        guard let state = lock.withLock({ secureRounds[roundID] }) else {
            throw RPCError(.failedPrecondition, "no secure round \(roundID) is in progress here")
        }
        let secure = state.session
        /// The job of this round, once its Train call has arrived (the key stages may come first).
        let job: () -> Job? = { [self] in lock.withLock { self.job?.secure === state ? self.job : nil } }
        let stage: SecureStage = switch request {
        case .shareKeysRequest: .shareKeys
        case .maskedInputRequest: .maskedInput
        default: .unmask
        }
        // Dropout drills are about rounds; statistics sessions are not drilled.
        if !state.statistics && dropIfPlanned(stage, connection: call.connection) { throw RPCError(.unavailable, "dropped out") }
        do {
            switch request {
            case .shareKeysRequest(let r):
                let (commitment, outgoing) = try state.lock.withLock { try secure.shareKeys(r.keys) }
                try call.send(.shareKeysResponse(ShareKeysResponse(roundID: roundID, index: secure.index, commitment: commitment, outgoing: outgoing)))
                // If training is already done, encode now, before the stage-2 request.
                if let job = job() { Thread { [self] in maskAndAnnounce(job) }.start() }
            case .maskedInputRequest(let r) where state.statistics:
                let y: [UInt32] = try state.lock.withLock {
                    try secure.receiveMaskedInputRequest(survivors: r.survivors, incoming: r.incoming)
                    defer { state.encoded = nil }
                    return try secure.maskedInput(encoded: state.encoded ?? [])
                }
                try call.send(.maskedVector(MaskedVector(roundID: roundID, elements: y)))
            case .maskedInputRequest(let r):
                try state.lock.withLock { try secure.receiveMaskedInputRequest(survivors: r.survivors, incoming: r.incoming) }
                try call.send(.empty)
                if let job = job() { Thread { [self] in maskAndAnnounce(job) }.start() }
            case .unmaskRequest(let r):
                let shares = try state.lock.withLock { try secure.unmask(survivors: r.survivors, dropped: r.dropped) }
                logger.info("Unmask answered", metadata: ["secure.round": "\(roundID)", "survivors": "\(r.survivors.count)", "dropped": "\(r.dropped.count)"])
                try call.send(.unmaskResponse(UnmaskResponse(roundID: roundID, index: secure.index, shares: shares)))
                if state.statistics { lock.withLock { _ = secureRounds.removeValue(forKey: roundID) } }
            default: break
            }
        } catch let error as SecAggError {
            logger.warning("Secure aggregation request refused; nothing revealed", metadata: ["secure.round": "\(roundID)", "reason": "\(error)"])
            throw RPCError(.failedPrecondition, "refused: \(error)")
        }
    }
}
