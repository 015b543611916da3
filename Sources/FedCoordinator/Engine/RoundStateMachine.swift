/// The coordinator's round engine as a pure state machine: select → broadcast → collect →
/// close → aggregate → commit, with failure and retry.
///
/// It does no I/O and reads no clock: every input carries `now` (monotonic seconds), and every
/// decision comes back as ``Action``s for the runtime to carry out. The runtime keeps it behind
/// a mutex and reports back what happened (task sent, update announced, update received, …).
///
/// Lifecycle of one round id: `waiting` (for enough eligible agents) → `collecting` (tasks sent,
/// updates announced and pulled until the deadline or until `target` are in) → `closing` (the
/// deadline passed; updates announced in time are still pulled until the grace ends) →
/// `aggregating` (the runtime computes and commits) → `waiting` for the next round. A closed
/// attempt with fewer than `min_updates` fails: the model is unchanged and a fresh selection
/// retries, up to `max_retries`; after that the engine waits and starts the round afresh.
///
/// Under secure aggregation each attempt also runs a ``SecureStages`` clock: its key stages
/// close on the same ticks, the agents a stage leaves out fail for the attempt they were in, and
/// a closed attempt with enough masked inputs runs the unmask stage before it aggregates.
public struct RoundStateMachine: Sendable {
    public typealias AgentID = String

    /// One attempt at one round.
    public struct Attempt: Sendable, Equatable {
        public let roundID: UInt64
        /// 0 for the first attempt, 1 for the first retry, …
        public let attempt: Int
        public let modelVersion: UInt64
        /// The seed the selection used (logged, so that it can be replayed).
        public let seed: UInt64
        public let invited: [AgentID]
        public let startedAt: Double
        /// Announcements after this are late.
        public let deadline: Double
        /// Pulls of in-time announcements must finish by this.
        public let collectUntil: Double
    }

    /// Where an invited agent stands in the current attempt.
    public enum Participation: Sendable, Equatable {
        case training
        case announced(examples: UInt64)
        case pulling(examples: UInt64)
        case accepted(examples: UInt64)
        case failed(reason: String)
        case late
        case cancelled
    }

    public enum Phase: Sendable, Equatable {
        /// No attempt running; waiting for eligible agents since the given time.
        case waiting(since: Double)
        case collecting
        case closing
        case aggregating
    }

    /// What an attempt ended with (for the round log and the aggregate).
    public struct Outcome: Sendable, Equatable {
        public var attempt: Attempt
        public var accepted: [AgentID: UInt64]
        public var late: [AgentID]
        public var failed: [AgentID: String]
        public var cancelled: [AgentID]
        public var closedAt: Double
        public var totalExamples: UInt64 { accepted.values.reduce(0, +) }
    }

    /// What the runtime must do.
    public enum Action: Sendable, Equatable {
        /// A new attempt started: log it; the accumulator must be empty.
        case attemptStarted(Attempt)
        /// Send the task and the global weights to the agent; report ``taskFailed`` if it cannot be delivered.
        case sendTask(AgentID, Attempt)
        /// Pull the agent's announced update; report ``updateReceived`` or ``pullFailed`` with the
        /// same round and attempt (a retry keeps the round id, so the attempt tells a stale pull apart).
        case pull(AgentID, roundID: UInt64, attempt: Int)
        /// Tell the agent to stop working on the round (best effort).
        case cancel(AgentID, roundID: UInt64, attempt: Int, reason: String)
        /// The attempt closed with enough updates (and, when secure, its unmask stage closed):
        /// finish the mean, apply the server optimizer, commit, then report
        /// ``committed(roundID:now:)``.
        case aggregate(Outcome)
        /// A secure attempt closed with enough masked inputs, `outcome.accepted` being `U3`:
        /// request the survivors' unmask shares, report
        /// ``secureStageOpened(_:expecting:roundID:attempt:now:)`` for ``SecureStages/Stage/unmasking``
        /// and each answer; the engine aggregates when the stage closes. Report
        /// ``aggregationFailed(roundID:reason:now:)`` if the stage cannot open.
        case unmask(Outcome)
        /// The attempt failed: discard the accumulator; the model is unchanged.
        case attemptFailed(Outcome, reason: String, willRetry: Bool)
        /// Close the secure attempt's key stage (its deadline passed, or everyone answered): run
        /// the session's close, report ``secureDropped(_:reason:roundID:attempt:now:)`` for whom it
        /// leaves out, send the next stage's requests and report
        /// ``secureStageOpened(_:expecting:roundID:attempt:now:)``.
        case closeSecureStage(SecureStages.Stage, roundID: UInt64, attempt: Int)
    }

    /// The answer to an announced or received update.
    public enum Verdict: Sendable, Equatable {
        case accept
        case refuse(EngineError)
    }

    public let policy: RoundPolicy
    /// The secure stages' timeouts when rounds are secure; nil for plaintext rounds.
    public let secureTimeouts: SecureStages.Timeouts?
    public private(set) var phase: Phase
    /// The round the engine is working on (1 + committed rounds).
    public private(set) var roundID: UInt64
    /// Committed rounds = the version of the global model.
    public private(set) var modelVersion: UInt64
    public private(set) var current: Attempt?
    public private(set) var participation: [AgentID: Participation] = [:]
    /// The current secure attempt's stage clock, until it commits or fails.
    public private(set) var secure: SecureStages?
    /// A secure attempt's outcome while its unmask stage runs.
    private var unmasking: Outcome?
    private var attemptNumber = 0
    private var connected: Set<AgentID> = []
    private var backoffUntil: [AgentID: Double] = [:]
    private var pullQueue: [AgentID] = []
    private var pulling: Set<AgentID> = []
    /// After a round has failed `max_retries + 1` times, no attempt starts before this.
    private var cooldownUntil = -Double.infinity

    /// Starts (or resumes) after `committedRounds` committed rounds.
    public init(policy: RoundPolicy, committedRounds: UInt64 = 0, secureTimeouts: SecureStages.Timeouts? = nil, now: Double) {
        self.policy = policy
        self.secureTimeouts = secureTimeouts
        modelVersion = committedRounds
        roundID = committedRounds + 1
        phase = .waiting(since: now)
    }

    // MARK: Agents

    /// Agents connected and not sitting out a back-off.
    public func eligibleAgents(now: Double) -> [AgentID] {
        connected.filter { (backoffUntil[$0] ?? -.infinity) <= now }.sorted()
    }

    public var connectedAgents: Set<AgentID> { connected }

    public mutating func agentConnected(_ agent: AgentID, now: Double) -> [Action] {
        connected.insert(agent)
        return tick(now: now)
    }

    public mutating func agentDisconnected(_ agent: AgentID, now: Double) -> [Action] {
        connected.remove(agent)
        var actions: [Action] = []
        if let state = participation[agent] {
            switch state {
            case .training, .announced, .pulling:
                actions += fail(agent, reason: "disconnected during the round", now: now)
            default: break
            }
        }
        return actions + tick(now: now)
    }

    // MARK: Time

    /// Lets time pass: starts rounds, passes deadlines (a secure attempt's key stages too), ends
    /// grace periods.
    public mutating func tick(now: Double) -> [Action] {
        let actions = secure?.tick(now: now).map { secureStageClosed($0) } ?? []
        return actions + advance(now: now)
    }

    private mutating func advance(now: Double) -> [Action] {
        switch phase {
        case .waiting(let since):
            guard now >= cooldownUntil else { return [] }
            let eligible = eligibleAgents(now: now)
            guard eligible.count >= policy.minAvailable else { return [] }
            guard eligible.count >= policy.inviteCount || now - since >= policy.selectionTimeout else { return [] }
            return startAttempt(eligible: eligible, now: now)
        case .collecting:
            guard let attempt = current, now >= attempt.deadline else { return [] }
            phase = .closing
            var actions: [Action] = []
            for (agent, state) in participation where state == .training {
                participation[agent] = .late
                actions.append(.cancel(agent, roundID: attempt.roundID, attempt: attempt.attempt, reason: "round \(attempt.roundID) passed its deadline"))
            }
            return actions + closeIfDone(now: now)
        case .closing:
            guard let attempt = current else { return [] }
            if now >= attempt.collectUntil {
                var actions: [Action] = []
                for (agent, state) in participation {
                    switch state {
                    case .announced, .pulling:
                        actions += fail(agent, reason: "its update could not be pulled before the collection grace ended", now: now)
                    default: break
                    }
                }
                return actions + finish(now: now)
            }
            return closeIfDone(now: now)
        case .aggregating:
            return []
        }
    }

    private mutating func startAttempt(eligible: [AgentID], now: Double) -> [Action] {
        let seed = SeededSampler.attemptSeed(base: policy.seed, round: roundID, attempt: attemptNumber)
        let invited = SeededSampler.sample(eligible, count: policy.inviteCount, seed: seed)
        let attempt = Attempt(
            roundID: roundID, attempt: attemptNumber, modelVersion: modelVersion, seed: seed, invited: invited,
            startedAt: now, deadline: now + policy.roundDeadline, collectUntil: now + policy.roundDeadline + policy.collectGrace)
        current = attempt
        secure = secureTimeouts.map { SecureStages(invited: invited, now: now, timeouts: $0) }
        participation = Dictionary(uniqueKeysWithValues: invited.map { ($0, .training) })
        pullQueue = []
        pulling = []
        phase = .collecting
        return [.attemptStarted(attempt)] + invited.map { .sendTask($0, attempt) }
    }

    // MARK: Tasks

    public mutating func taskFailed(_ agent: AgentID, roundID: UInt64, reason: String, now: Double) -> [Action] {
        guard roundID == current?.roundID, participation[agent] == .training else { return [] }
        return fail(agent, reason: "the task could not be delivered: \(reason)", now: now)
    }

    /// The agent says its local training failed for `roundID` (its trainer crashed, hung or
    /// returned an invalid update): it counts as failed for the round, without waiting for the deadline.
    public mutating func trainingFailed(_ agent: AgentID, roundID: UInt64, reason: String, now: Double) -> [Action] {
        guard roundID == current?.roundID, participation[agent] == .training else { return [] }
        return fail(agent, reason: reason, now: now)
    }

    // MARK: Secure stages

    /// `agent`'s call of the secure `stage` ended, answered or failed (for stage 0, its
    /// SecureSetup). Ignored for another attempt than the current one.
    public mutating func secureAnswered(_ agent: AgentID, stage: SecureStages.Stage, roundID: UInt64, attempt: Int, now: Double) -> [Action] {
        guard let current, current.roundID == roundID, current.attempt == attempt,
              let closed = secure?.answered(agent, in: stage)
        else { return [] }
        return secureStageClosed(closed)
    }

    /// The runtime closed the current secure attempt's open stage and sent `stage`'s requests
    /// to `expecting`.
    public mutating func secureStageOpened(
        _ stage: SecureStages.Stage, expecting: [AgentID], roundID: UInt64, attempt: Int, now: Double
    ) -> [Action] {
        guard let current, current.roundID == roundID, current.attempt == attempt,
              let closed = secure?.opened(stage, expecting: expecting, now: now)
        else { return [] }
        return secureStageClosed(closed)
    }

    /// What the close of the current attempt's `stage` asks of the runtime: a key stage's close,
    /// or, once the unmask stage closes, the aggregate.
    private mutating func secureStageClosed(_ stage: SecureStages.Stage) -> [Action] {
        guard let current else { return [] }
        guard stage == .unmasking else { return [.closeSecureStage(stage, roundID: current.roundID, attempt: current.attempt)] }
        guard let outcome = unmasking else { return [] }
        unmasking = nil
        return [.aggregate(outcome)]
    }

    /// A secure stage left `agents` out of the attempt (no keys or shares in time, pruned, or
    /// the whole attempt aborted): each still training fails for it and is told to stop. Ignored
    /// for another attempt than the current one: a retry keeps the round id.
    public mutating func secureDropped(_ agents: [AgentID], reason: String, roundID: UInt64, attempt: Int, now: Double) -> [Action] {
        guard let current, current.roundID == roundID, current.attempt == attempt else { return [] }
        var actions: [Action] = []
        for agent in agents where participation[agent] == .training {
            actions.append(.cancel(agent, roundID: roundID, attempt: attempt, reason: reason))
            actions += fail(agent, reason: reason, now: now)
        }
        return actions
    }

    // MARK: Updates

    /// An agent says its update for `roundID` is ready. Checks that it was selected, has not
    /// sent already, is in time, and that the round and model version match.
    public mutating func updateAnnounced(
        _ agent: AgentID, roundID announcedRound: UInt64, modelVersion announcedVersion: UInt64, examples: UInt64, now: Double
    ) -> (Verdict, [Action]) {
        if announcedRound < roundID || (announcedRound == roundID && current == nil) {
            return (.refuse(EngineError(.late, "round \(announcedRound) has closed; this update arrived too late and is not used")), [])
        }
        guard let attempt = current, announcedRound == attempt.roundID else {
            return (.refuse(EngineError(.stale, "round \(announcedRound) is not running (the current round is \(roundID))")), [])
        }
        guard let state = participation[agent] else {
            return (.refuse(EngineError(.notSelected, "\(agent) was not selected for round \(announcedRound)")), [])
        }
        switch state {
        case .training:
            break
        case .late:
            return (.refuse(EngineError(.late, "round \(announcedRound) passed its deadline before this update was announced")), [])
        case .cancelled:
            return (.refuse(EngineError(.late, "round \(announcedRound) closed with enough updates before this one")), [])
        case .failed(let reason):
            return (.refuse(EngineError(.invalidUpdate, "this agent's part in round \(announcedRound) already failed: \(reason)")), [])
        case .announced, .pulling, .accepted:
            return (.refuse(EngineError(.duplicate, "\(agent) already sent its update for round \(announcedRound)")), [])
        }
        guard announcedVersion == attempt.modelVersion else {
            return (.refuse(EngineError(.stale, "the update was computed from model version \(announcedVersion); round \(attempt.roundID) uses version \(attempt.modelVersion)")), [])
        }
        guard examples > 0 else {
            let actions = fail(agent, reason: "announced 0 training examples", now: now)
            return (.refuse(EngineError(.invalidUpdate, "example_count must be positive; the update reported 0 training examples")), actions)
        }
        guard phase == .collecting, now < attempt.deadline else {
            participation[agent] = .late
            return (.refuse(EngineError(.late, "round \(announcedRound) passed its deadline before this update was announced")), [])
        }
        participation[agent] = .announced(examples: examples)
        pullQueue.append(agent)
        return (.accept, schedulePulls())
    }

    private mutating func schedulePulls() -> [Action] {
        guard let attempt = current else { return [] }
        var actions: [Action] = []
        while pulling.count < policy.maxConcurrentPulls, !pullQueue.isEmpty {
            let agent = pullQueue.removeFirst()
            guard case .announced(let examples) = participation[agent] else { continue }
            participation[agent] = .pulling(examples: examples)
            pulling.insert(agent)
            actions.append(.pull(agent, roundID: attempt.roundID, attempt: attempt.attempt))
        }
        return actions
    }

    /// A pulled update is complete and valid. `.accept` means: add it to the accumulator now
    /// (before anything else touches the engine); `.refuse` means drop it. A pull started by an
    /// earlier attempt of the same round is refused, even if the agent is pulling again.
    public mutating func updateReceived(_ agent: AgentID, roundID: UInt64, attempt pulledAttempt: Int, now: Double) -> (Verdict, [Action]) {
        guard let attempt = current, roundID == attempt.roundID, pulledAttempt == attempt.attempt,
            case .pulling(let examples) = participation[agent]
        else {
            return (.refuse(EngineError(.late, "round \(roundID) has closed; this update is not used")), [])
        }
        pulling.remove(agent)
        guard phase == .collecting || phase == .closing, acceptedCount < policy.target else {
            participation[agent] = .cancelled
            return (.refuse(EngineError(.late, "round \(roundID) closed before this update was complete")), schedulePulls())
        }
        participation[agent] = .accepted(examples: examples)
        var actions = schedulePulls()
        if acceptedCount >= policy.target {
            actions += closeWithTarget(now: now)
        } else {
            actions += closeIfDone(now: now)
        }
        return (.accept, actions)
    }

    /// A pull failed (the upload broke, or the update was invalid: wrong names or shapes,
    /// non-finite values, a lying size, a bad hash).
    public mutating func pullFailed(_ agent: AgentID, roundID: UInt64, attempt: Int, reason: String, now: Double) -> [Action] {
        guard roundID == current?.roundID, attempt == current?.attempt else { return [] }
        switch participation[agent] {
        case .pulling?, .announced?: break
        default: return []
        }
        pulling.remove(agent)
        return fail(agent, reason: reason, now: now) + schedulePulls()
    }

    private var acceptedCount: Int {
        participation.values.filter { if case .accepted = $0 { return true } else { return false } }.count
    }

    /// The example count `agent` announced for the current round's update, while it counts.
    public func announcedExamples(of agent: AgentID) -> UInt64? {
        switch participation[agent] {
        case .announced(let examples), .pulling(let examples), .accepted(let examples): examples
        default: nil
        }
    }

    private mutating func fail(_ agent: AgentID, reason: String, now: Double) -> [Action] {
        participation[agent] = .failed(reason: reason)
        pulling.remove(agent)
        pullQueue.removeAll { $0 == agent }
        backoffUntil[agent] = now + policy.failureBackoff
        return schedulePulls() + closeIfDone(now: now)
    }

    // MARK: Closing

    /// Target reached: the others are cancelled, the attempt finishes.
    private mutating func closeWithTarget(now: Double) -> [Action] {
        guard let attempt = current else { return [] }
        var actions: [Action] = []
        for (agent, state) in participation {
            switch state {
            case .training, .announced, .pulling:
                participation[agent] = .cancelled
                pulling.remove(agent)
                actions.append(.cancel(agent, roundID: attempt.roundID, attempt: attempt.attempt, reason: "round \(attempt.roundID) closed with \(policy.target) updates"))
            default: break
            }
        }
        pullQueue = []
        return actions + finish(now: now)
    }

    /// Finishes the attempt once nobody can still contribute.
    private mutating func closeIfDone(now: Double) -> [Action] {
        guard phase == .collecting || phase == .closing else { return [] }
        let outstanding = participation.values.contains { state in
            switch state {
            case .announced, .pulling: return true
            case .training: return phase == .collecting
            default: return false
            }
        }
        return outstanding ? [] : finish(now: now)
    }

    private mutating func finish(now: Double) -> [Action] {
        guard let attempt = current else { return [] }
        var outcome = Outcome(attempt: attempt, accepted: [:], late: [], failed: [:], cancelled: [], closedAt: now)
        for (agent, state) in participation {
            switch state {
            case .accepted(let examples): outcome.accepted[agent] = examples
            case .late: outcome.late.append(agent)
            case .failed(let reason): outcome.failed[agent] = reason
            case .cancelled: outcome.cancelled.append(agent)
            case .training, .announced, .pulling: outcome.late.append(agent)
            }
        }
        outcome.late.sort()
        outcome.cancelled.sort()
        pullQueue = []
        pulling = []
        if outcome.accepted.count >= policy.minUpdates {
            phase = .aggregating
            guard secure != nil else { return [.aggregate(outcome)] }
            guard secure?.closeMaskedInput() != nil else {
                return aggregationFailed(roundID: attempt.roundID, reason: "secure aggregation: the attempt closed before its masked inputs were requested", now: now)
            }
            unmasking = outcome
            return [.unmask(outcome)]
        }
        secure = nil
        let reason = "only \(outcome.accepted.count) complete update(s) of the \(policy.minUpdates) required (min_updates)"
        let willRetry = attemptNumber < policy.maxRetries
        attemptNumber = willRetry ? attemptNumber + 1 : 0
        if !willRetry { cooldownUntil = now + max(policy.failureBackoff, policy.selectionTimeout) }
        current = nil
        participation = [:]
        phase = .waiting(since: now)
        return [.attemptFailed(outcome, reason: reason, willRetry: willRetry)]
    }

    /// The runtime committed the round: the next one can start.
    public mutating func committed(roundID committedRound: UInt64, now: Double) -> [Action] {
        guard phase == .aggregating, committedRound == roundID else { return [] }
        modelVersion += 1
        roundID += 1
        attemptNumber = 0
        current = nil
        secure = nil
        participation = [:]
        phase = .waiting(since: now)
        return tick(now: now)
    }

    /// The runtime could not aggregate or commit (for example a full disk): the attempt fails.
    public mutating func aggregationFailed(roundID failedRound: UInt64, reason: String, now: Double) -> [Action] {
        guard phase == .aggregating, let attempt = current, failedRound == roundID else { return [] }
        let outcome = Outcome(attempt: attempt, accepted: [:], late: [], failed: [:], cancelled: [], closedAt: now)
        let willRetry = attemptNumber < policy.maxRetries
        attemptNumber = willRetry ? attemptNumber + 1 : 0
        current = nil
        secure = nil
        unmasking = nil
        participation = [:]
        phase = .waiting(since: now)
        return [.attemptFailed(outcome, reason: "aggregation failed: \(reason)", willRetry: willRetry)]
    }
}
