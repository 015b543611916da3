import Testing
@testable import FedCoordinator

/// The round engine without any I/O: every transition, timeouts included.
@Suite("Round state machine")
struct RoundStateMachineTests {
    static func policy(_ configure: (inout RoundPolicy) -> Void = { _ in }) -> RoundPolicy {
        var policy = RoundPolicy()
        policy.target = 3
        policy.overselect = 1.0
        policy.minAvailable = 3
        policy.minUpdates = 2
        policy.roundDeadline = 10
        policy.selectionTimeout = 2
        policy.collectGrace = 5
        policy.maxRetries = 1
        policy.failureBackoff = 100
        policy.maxConcurrentPulls = 2
        configure(&policy)
        return policy
    }

    static let agents = ["a", "b", "c", "d", "e"]

    static func started(_ policy: RoundPolicy = policy(), agents: [String] = agents) -> (RoundStateMachine, RoundStateMachine.Attempt) {
        var machine = RoundStateMachine(policy: policy, now: 0)
        var attempt: RoundStateMachine.Attempt?
        for agent in agents {
            for action in machine.agentConnected(agent, now: 0) {
                if case .attemptStarted(let a) = action { attempt = a }
            }
        }
        return (machine, attempt!)
    }

    static func pulls(_ actions: [RoundStateMachine.Action]) -> [String] {
        actions.compactMap { if case .pull(let agent, _, _) = $0 { return agent } else { return nil } }
    }

    static func outcome(_ actions: [RoundStateMachine.Action]) -> RoundStateMachine.Outcome? {
        for action in actions { if case .aggregate(let outcome) = action { return outcome } }
        return nil
    }

    @Test("Waits for min_available, then for the selection timeout or the full invitation")
    func waitsForAgents() {
        var machine = RoundStateMachine(policy: Self.policy { $0.overselect = 1.5 }, now: 0)  // invite 5
        #expect(machine.agentConnected("a", now: 0).isEmpty)
        #expect(machine.agentConnected("b", now: 0).isEmpty)
        #expect(machine.agentConnected("c", now: 1).isEmpty, "3 of 5: waits for the selection timeout")
        let actions = machine.tick(now: 2.5)
        guard case .attemptStarted(let attempt)? = actions.first else {
            Issue.record("expected a start, got \(actions)")
            return
        }
        #expect(attempt.invited == ["a", "b", "c"])
        #expect(actions.filter { if case .sendTask = $0 { return true } else { return false } }.count == 3)
        #expect(attempt.deadline == 12.5 && attempt.collectUntil == 17.5)
        #expect(machine.phase == .collecting)
    }

    @Test("Selection invites ceil(target × overselect), seeded and reproducible")
    func seededSelection() {
        let policy = Self.policy { $0.target = 2; $0.overselect = 1.5; $0.minAvailable = 2 }
        let (_, first) = Self.started(policy)
        let (_, again) = Self.started(policy)
        #expect(first.invited.count == 3)
        #expect(first.invited == again.invited && first.seed == again.seed)
        let other = RoundStateMachineTests.started(Self.policy { $0.target = 2; $0.overselect = 1.5; $0.minAvailable = 2; $0.seed = 99 }).1
        #expect(other.seed != first.seed)
    }

    @Test("Updates are pulled two at a time; the round closes as soon as target are in and cancels the rest")
    func closesAtTarget() {
        var (machine, attempt) = Self.started(Self.policy { $0.target = 2; $0.overselect = 2.5 })
        #expect(attempt.invited.count == 5)
        var pulled: [String] = []
        for agent in attempt.invited.prefix(3) {
            let (verdict, actions) = machine.updateAnnounced(agent, roundID: 1, modelVersion: 0, examples: 10, now: 1)
            #expect(verdict == .accept)
            pulled += Self.pulls(actions)
        }
        #expect(pulled == Array(attempt.invited.prefix(2)), "bounded to 2 concurrent pulls")
        let (v1, a1) = machine.updateReceived(attempt.invited[0], roundID: 1, attempt: 0, now: 2)
        #expect(v1 == .accept)
        #expect(Self.pulls(a1) == [attempt.invited[2]], "the queued pull starts when a slot frees")
        let (v2, a2) = machine.updateReceived(attempt.invited[1], roundID: 1, attempt: 0, now: 3)
        #expect(v2 == .accept)
        let outcome = Self.outcome(a2)
        #expect(outcome?.accepted == [attempt.invited[0]: 10, attempt.invited[1]: 10])
        #expect(outcome?.cancelled.count == 3)
        #expect(a2.filter { if case .cancel = $0 { return true } else { return false } }.count == 3)
        #expect(machine.phase == .aggregating)
        // The third pull finishes after the close: refused, never added.
        let (v3, _) = machine.updateReceived(attempt.invited[2], roundID: 1, attempt: 0, now: 4)
        #expect(v3 != .accept)
        // Commit moves to the next round and model version.
        _ = machine.committed(roundID: 1, now: 5)
        #expect(machine.roundID == 2 && machine.modelVersion == 1)
    }

    @Test("At the deadline stragglers are cut; in-time announcements are still pulled; late ones get `late`")
    func deadline() {
        var (machine, attempt) = Self.started()
        let (a, b, c) = (attempt.invited[0], attempt.invited[1], attempt.invited[2])
        _ = machine.updateAnnounced(a, roundID: 1, modelVersion: 0, examples: 5, now: 9)
        _ = machine.updateAnnounced(b, roundID: 1, modelVersion: 0, examples: 7, now: 9.5)
        let atDeadline = machine.tick(now: 10)
        #expect(machine.phase == .closing)
        #expect(atDeadline.contains(.cancel(c, roundID: 1, attempt: 0, reason: "round 1 passed its deadline")))
        let (late, _) = machine.updateAnnounced(c, roundID: 1, modelVersion: 0, examples: 9, now: 11)
        #expect(late == .refuse(EngineError(.late, "round 1 passed its deadline before this update was announced")))
        _ = machine.updateReceived(a, roundID: 1, attempt: 0, now: 11)
        let (verdict, actions) = machine.updateReceived(b, roundID: 1, attempt: 0, now: 12)
        #expect(verdict == .accept)
        let outcome = Self.outcome(actions)
        #expect(outcome?.accepted == [a: 5, b: 7])
        #expect(outcome?.late == [c])
        #expect(outcome?.totalExamples == 12)
    }

    @Test("Pulls still running when the collection grace ends fail; the round closes with what it has")
    func collectGrace() {
        var (machine, attempt) = Self.started()
        for agent in attempt.invited { _ = machine.updateAnnounced(agent, roundID: 1, modelVersion: 0, examples: 1, now: 1) }
        _ = machine.updateReceived(attempt.invited[0], roundID: 1, attempt: 0, now: 2)
        _ = machine.updateReceived(attempt.invited[1], roundID: 1, attempt: 0, now: 2)
        // Target 3 not reached; the third pull hangs.
        _ = machine.tick(now: 10)
        #expect(machine.phase == .closing)
        let actions = machine.tick(now: 15)
        let outcome = Self.outcome(actions)
        #expect(outcome?.accepted.count == 2)
        #expect(outcome?.failed[attempt.invited[2]]?.contains("collection grace") == true)
    }

    @Test("Too few updates: the attempt fails, is retried with a fresh seed, then the engine cools down and waits")
    func quorumRetry() {
        var (machine, first) = Self.started()
        _ = machine.updateAnnounced(first.invited[0], roundID: 1, modelVersion: 0, examples: 1, now: 1)
        _ = machine.updateReceived(first.invited[0], roundID: 1, attempt: 0, now: 2)
        let actions = machine.tick(now: 10)
        guard let failed = actions.first(where: { if case .attemptFailed = $0 { return true } else { return false } }),
            case .attemptFailed(let outcome, let reason, let willRetry) = failed
        else {
            Issue.record("expected a failed attempt, got \(actions)")
            return
        }
        #expect(willRetry && reason.contains("min_updates"))
        #expect(outcome.accepted.count == 1)
        #expect(machine.modelVersion == 0 && machine.roundID == 1)
        // The retry starts at once (5 agents, none in back-off) with a fresh seed.
        guard case .attemptStarted(let retry)? = actions.first(where: { if case .attemptStarted = $0 { return true } else { return false } })
            ?? machine.tick(now: 13).first
        else {
            Issue.record("expected a retry")
            return
        }
        #expect(retry.attempt == 1 && retry.roundID == 1 && retry.seed != first.seed)
        // It fails too: no more retries; the engine keeps waiting (cool-down), it does not stop.
        let second = machine.tick(now: retry.deadline)
        #expect(second.contains { if case .attemptFailed(_, _, false) = $0 { return true } else { return false } })
        #expect(machine.tick(now: retry.deadline + 1).isEmpty, "cooling down")
        let later = machine.tick(now: retry.deadline + 200)
        #expect(later.contains { if case .attemptStarted(let a) = $0 { return a.attempt == 0 && a.roundID == 1 } else { return false } })
    }

    /// Regression (issue #14): a retry keeps its round id. A pull of attempt 0 that finishes (or
    /// breaks) while the retry is pulling the same agent again used to count for the retry, with
    /// bytes the retry never asked for, and to answer the retry's AnnounceUpdate call.
    @Test("A stale pull from the failed attempt is refused by the retry, which still takes its own")
    func stalePullAfterRetry() {
        let policy = Self.policy { $0.failureBackoff = 0 }
        var (machine, first) = Self.started(policy, agents: ["a", "b", "c"])
        let x = first.invited[0]
        let (_, announced) = machine.updateAnnounced(x, roundID: 1, modelVersion: 0, examples: 4, now: 1)
        #expect(announced.contains(.pull(x, roundID: 1, attempt: 0)))
        // Nobody else reports and x's pull hangs past the grace: attempt 0 fails, the retry starts.
        _ = machine.tick(now: first.deadline)
        let closed = machine.tick(now: first.collectUntil)
        #expect(closed.contains { if case .attemptFailed(_, _, true) = $0 { return true } else { return false } })
        let retry = (closed + machine.tick(now: first.collectUntil + 1)).compactMap {
            if case .attemptStarted(let attempt) = $0 { return attempt } else { return nil }
        }.first
        guard let retry, retry.invited.contains(x) else {
            Issue.record("expected a retry inviting \(x), got \(closed)")
            return
        }
        #expect(retry.roundID == 1 && retry.attempt == 1)
        let (_, again) = machine.updateAnnounced(x, roundID: 1, modelVersion: 0, examples: 4, now: first.collectUntil + 2)
        #expect(again.contains(.pull(x, roundID: 1, attempt: 1)))

        let (stale, staleActions) = machine.updateReceived(x, roundID: 1, attempt: 0, now: first.collectUntil + 3)
        guard case .refuse(let error) = stale else {
            Issue.record("the stale pull was accepted")
            return
        }
        #expect(error.code == .late && staleActions.isEmpty)
        #expect(machine.pullFailed(x, roundID: 1, attempt: 0, reason: "old upload broke", now: first.collectUntil + 3).isEmpty)
        #expect(machine.participation[x] == .pulling(examples: 4), "the retry's own pull is still running")
        #expect(machine.updateReceived(x, roundID: 1, attempt: 1, now: first.collectUntil + 4).0 == .accept)
    }

    @Test("Hostile announcements are refused with a reason; the round goes on", arguments: [
        ("outsider", UInt64(1), UInt64(0), UInt64(5), EngineError.Code.notSelected),
        ("SELECTED", 1, 0, 0, .invalidUpdate),
        ("SELECTED", 1, 3, 5, .stale),
        ("SELECTED", 7, 0, 5, .stale),
        ("SELECTED", 0, 0, 5, .late),
    ])
    func hostileAnnouncements(agent: String, round: UInt64, version: UInt64, examples: UInt64, code: EngineError.Code) {
        var (machine, attempt) = Self.started(agents: Self.agents + ["outsider"])
        let sender = agent == "SELECTED" ? attempt.invited[0] : (attempt.invited.contains(agent) ? "zzz" : agent)
        let (verdict, _) = machine.updateAnnounced(sender, roundID: round, modelVersion: version, examples: examples, now: 1)
        guard case .refuse(let error) = verdict else {
            Issue.record("\(agent) round \(round): accepted")
            return
        }
        #expect(error.code == code, "\(error.message)")
        #expect(machine.phase == .collecting)
    }

    @Test("A duplicate announcement is refused")
    func duplicate() {
        var (machine, attempt) = Self.started()
        #expect(machine.updateAnnounced(attempt.invited[0], roundID: 1, modelVersion: 0, examples: 1, now: 1).0 == .accept)
        let (again, _) = machine.updateAnnounced(attempt.invited[0], roundID: 1, modelVersion: 0, examples: 1, now: 2)
        #expect(again == .refuse(EngineError(.duplicate, "\(attempt.invited[0]) already sent its update for round 1")))
    }

    @Test("A broken upload or a disconnect fails that agent only, and it sits out a back-off")
    func failuresAndBackoff() {
        var (machine, attempt) = Self.started(Self.policy { $0.target = 2; $0.minAvailable = 2 }, agents: ["a", "b", "c"])
        let (x, y) = (attempt.invited[0], attempt.invited[1])
        _ = machine.updateAnnounced(x, roundID: 1, modelVersion: 0, examples: 3, now: 1)
        _ = machine.pullFailed(x, roundID: 1, attempt: 0, reason: "upload broke after 2 of 5 chunks", now: 2)
        let actions = machine.agentDisconnected(y, now: 3)
        // Both invited agents failed: nothing outstanding, so the attempt closes and fails at once.
        #expect(actions.contains { if case .attemptFailed(let o, _, _) = $0 {
            return o.failed[x] == "upload broke after 2 of 5 chunks" && o.failed[y] == "disconnected during the round"
        } else { return false } })
        #expect(!machine.eligibleAgents(now: 4).contains(x), "in back-off")
        #expect(machine.eligibleAgents(now: 200).contains(x), "back-off over")
    }

    @Test("A failed commit fails the attempt and retries; the model version does not move")
    func aggregationFailure() {
        var (machine, attempt) = Self.started()
        for agent in attempt.invited {
            _ = machine.updateAnnounced(agent, roundID: 1, modelVersion: 0, examples: 1, now: 1)
        }
        for agent in attempt.invited { _ = machine.updateReceived(agent, roundID: 1, attempt: 0, now: 2) }
        #expect(machine.phase == .aggregating)
        let actions = machine.aggregationFailed(roundID: 1, reason: "disk full", now: 3)
        #expect(actions.contains { if case .attemptFailed(_, let r, true) = $0 { return r.contains("disk full") } else { return false } })
        #expect(machine.modelVersion == 0)
    }

    @Test("Resuming after committed rounds continues at the next round and version")
    func resume() {
        let machine = RoundStateMachine(policy: Self.policy(), committedRounds: 7, now: 0)
        #expect(machine.roundID == 8 && machine.modelVersion == 7)
    }

    @Test("Impossible policies are refused with what to fix")
    func policyValidation() {
        #expect(throws: EngineError.self) { try Self.policy { $0.minUpdates = 4 }.validate() }
        #expect(throws: EngineError.self) { try Self.policy { $0.roundDeadline = 0 }.validate() }
        #expect(throws: EngineError.self) { try Self.policy { $0.overselect = 0.5 }.validate() }
        #expect(throws: Never.self) { try Self.policy().validate() }
    }
}
