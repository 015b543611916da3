import Testing
@testable import FedCoordinator

/// The secure stages' clock and the engine that ticks it, without any I/O: every transition of
/// the four stages (spec §2.5), dropouts at each, and answers from an attempt that has ended.
@Suite("Secure stages")
struct SecureStagesTests {
    typealias Stage = SecureStages.Stage
    static let timeouts = SecureStages.Timeouts(keys: 10, unmask: 5)

    @Test("A key stage closes once, as soon as everyone it waits for has answered; the next opens with the survivors")
    func everyoneAnswers() {
        var stages = SecureStages(invited: ["a", "b", "c"], now: 0, timeouts: Self.timeouts)
        #expect(stages.answered("a", in: .advertisingKeys) == nil)
        #expect(stages.answered("a", in: .advertisingKeys) == nil, "a repeat counts once")
        #expect(stages.answered("b", in: .sharingKeys) == nil, "an answer for another stage does not count")
        #expect(stages.answered("b", in: .advertisingKeys) == nil)
        #expect(stages.answered("c", in: .advertisingKeys) == .advertisingKeys)
        #expect(stages.closing && stages.tick(now: 10) == nil, "closed once, not again at its deadline")

        #expect(stages.opened(.sharingKeys, expecting: ["a", "c"], now: 3) == nil)
        #expect(stages.stage == .sharingKeys && stages.deadline == 13 && stages.waitingFor == ["a", "c"])
        #expect(stages.answered("b", in: .sharingKeys) == nil, "pruned at T0: not waited for")
        #expect(stages.answered("a", in: .sharingKeys) == nil)
        #expect(stages.answered("c", in: .sharingKeys) == .sharingKeys)

        #expect(stages.opened(.maskedInput, expecting: ["a", "c"], now: 4) == nil)
        #expect(stages.stage == .maskedInput && stages.deadline == nil, "the round's own deadline is the straggler cut")
        #expect(stages.tick(now: 1_000) == nil)

        #expect(stages.closeMaskedInput() == .maskedInput)
        #expect(stages.closeMaskedInput() == nil, "once")
        #expect(stages.opened(.unmasking, expecting: ["a", "c"], now: 1_000) == nil)
        #expect(stages.deadline == 1_005, "unmask_timeout_seconds, not the key timeout")
        #expect(stages.answered("a", in: .unmasking) == nil)
        #expect(stages.tick(now: 1_005) == .unmasking)
        #expect(stages.answered("c", in: .unmasking) == nil, "closed: a late answer changes nothing")
    }

    @Test("At the deadline the stage closes with whoever answered; a later answer changes nothing")
    func deadlineCloses() {
        var stages = SecureStages(invited: ["a", "b", "c"], now: 5, timeouts: Self.timeouts)
        _ = stages.answered("a", in: .advertisingKeys)
        #expect(stages.tick(now: 14.9) == nil)
        #expect(stages.tick(now: 15) == .advertisingKeys)
        #expect(stages.waitingFor == ["b", "c"])
        #expect(stages.answered("b", in: .advertisingKeys) == nil && stages.answered("c", in: .advertisingKeys) == nil)
        #expect(stages.tick(now: 20) == nil)
        #expect(stages.opened(.sharingKeys, expecting: ["a", "b", "c"], now: 16) == nil)
        _ = stages.answered("c", in: .sharingKeys)
        #expect(stages.tick(now: 25.9) == nil)
        #expect(stages.tick(now: 26) == .sharingKeys)
    }

    @Test("A stage with nobody to wait for closes at once; an open out of order is ignored")
    func emptyAndOutOfOrder() {
        var stages = SecureStages(invited: ["a", "b", "c"], now: 0, timeouts: Self.timeouts)
        #expect(stages.opened(.sharingKeys, expecting: ["a"], now: 1) == nil, "stage 0 has not closed")
        #expect(stages.closeMaskedInput() == nil, "no masked input before stage 2")
        #expect(stages.stage == .advertisingKeys && stages.waitingFor.count == 3)
        _ = stages.tick(now: 10)
        #expect(stages.opened(.maskedInput, expecting: [], now: 10) == nil, "stage 1 cannot be skipped")
        #expect(stages.opened(.sharingKeys, expecting: [], now: 10) == .sharingKeys)
    }

    static func secureEngine(agents: [String] = ["a", "b", "c", "d"]) -> (RoundStateMachine, RoundStateMachine.Attempt) {
        var policy = RoundStateMachineTests.policy { $0.failureBackoff = 0 }
        policy.target = 4
        policy.minAvailable = 4
        policy.minUpdates = 3
        policy.roundDeadline = 15
        var machine = RoundStateMachine(policy: policy, secureTimeouts: Self.timeouts, now: 0)
        var attempt: RoundStateMachine.Attempt?
        for agent in agents {
            for case .attemptStarted(let a) in machine.agentConnected(agent, now: 0) { attempt = a }
        }
        return (machine, attempt!)
    }

    static func closes(_ actions: [RoundStateMachine.Action]) -> [Stage] {
        actions.compactMap { if case .closeSecureStage(let stage, _, _) = $0 { stage } else { nil } }
    }

    @Test("The engine closes the key stages on its ticks or on the last answer, for the current attempt only")
    func engineClosesStages() {
        var (machine, attempt) = Self.secureEngine()
        #expect(machine.secure?.stage == .advertisingKeys)
        for agent in attempt.invited.dropLast() {
            #expect(machine.secureAnswered(agent, stage: .advertisingKeys, roundID: 1, attempt: 0, now: 1).isEmpty)
        }
        #expect(machine.secureAnswered(attempt.invited.last!, stage: .advertisingKeys, roundID: 1, attempt: 1, now: 1).isEmpty,
                "an answer for another attempt of the round does not count")
        #expect(Self.closes(machine.tick(now: 10.5)) == [.advertisingKeys])
        #expect(Self.closes(machine.tick(now: 11)).isEmpty)
        #expect(machine.secureStageOpened(.sharingKeys, expecting: attempt.invited, roundID: 1, attempt: 0, now: 11).isEmpty)
        for agent in attempt.invited.dropLast() { _ = machine.secureAnswered(agent, stage: .sharingKeys, roundID: 1, attempt: 0, now: 12) }
        let last = machine.secureAnswered(attempt.invited.last!, stage: .sharingKeys, roundID: 1, attempt: 0, now: 12)
        #expect(last == [.closeSecureStage(.sharingKeys, roundID: 1, attempt: 0)])

        var plaintext = RoundStateMachine(policy: RoundStateMachineTests.policy(), now: 0)
        var actions: [RoundStateMachine.Action] = []
        for agent in RoundStateMachineTests.agents { actions += plaintext.agentConnected(agent, now: 0) }
        for t in stride(from: 0.0, through: 30, by: 1) { actions += plaintext.tick(now: t) }
        #expect(plaintext.secure == nil && Self.closes(actions).isEmpty)
    }

    @Test("Agents a stage leaves out fail and are cancelled; too many, and the attempt fails and is retried with a fresh clock")
    func dropouts() throws {
        var (machine, first) = Self.secureEngine()
        let dropped = first.invited[0]
        let actions = machine.secureDropped([dropped], reason: "secure aggregation: no keys by the key-advertising deadline", roundID: 1, attempt: 0, now: 10)
        #expect(actions.contains(.cancel(dropped, roundID: 1, attempt: 0, reason: "secure aggregation: no keys by the key-advertising deadline")))
        #expect(machine.participation[dropped] == .failed(reason: "secure aggregation: no keys by the key-advertising deadline"))
        #expect(machine.current?.attempt == 0, "three can still make min_updates")

        let abort = machine.secureDropped(first.invited, reason: "secure aggregation aborted: TOO_FEW_SURVIVORS", roundID: 1, attempt: 0, now: 11)
        #expect(abort.contains { if case .attemptFailed(_, _, true) = $0 { true } else { false } })
        let retry = try #require((abort + machine.tick(now: 12)).compactMap { if case .attemptStarted(let a) = $0 { a } else { nil } }.first)
        #expect(retry.attempt == 1 && machine.secure?.stage == .advertisingKeys && machine.secure?.deadline == 22)

        // The first attempt's stage threads report late: nothing of the retry moves.
        #expect(machine.secureDropped(retry.invited, reason: "stale", roundID: 1, attempt: 0, now: 13).isEmpty)
        #expect(machine.secureAnswered(retry.invited[0], stage: .advertisingKeys, roundID: 1, attempt: 0, now: 13).isEmpty)
        #expect(machine.secureStageOpened(.sharingKeys, expecting: [], roundID: 1, attempt: 0, now: 13).isEmpty)
        #expect(retry.invited.allSatisfy { machine.participation[$0] == .training })
        #expect(machine.secure?.waitingFor == Set(retry.invited))
    }

    @Test("Once the attempt closes the clock stops: no stage closes after the round's deadline")
    func stopsAtTheClose() {
        var (machine, attempt) = Self.secureEngine()
        _ = machine.tick(now: 10)
        _ = machine.secureStageOpened(.sharingKeys, expecting: attempt.invited, roundID: 1, attempt: 0, now: 10)
        // Nobody announces; the round's deadline (15) passes before the sharing deadline (20) would.
        let closed = machine.tick(now: attempt.deadline)
        #expect(closed.contains { if case .attemptFailed = $0 { true } else { false } })
        #expect(Self.closes(closed).isEmpty && machine.current == nil && machine.secure == nil)
    }

    /// A secure engine whose attempt has passed its key stages with everyone, then had
    /// `reported` agents' masked inputs accepted.
    static func masked(reporting reported: Int) -> (RoundStateMachine, RoundStateMachine.Attempt, [RoundStateMachine.Action]) {
        var (machine, attempt) = secureEngine()
        _ = machine.tick(now: 10)
        _ = machine.secureStageOpened(.sharingKeys, expecting: attempt.invited, roundID: 1, attempt: 0, now: 10)
        _ = machine.tick(now: 10.1)
        for agent in attempt.invited { _ = machine.secureAnswered(agent, stage: .sharingKeys, roundID: 1, attempt: 0, now: 11) }
        _ = machine.secureStageOpened(.maskedInput, expecting: attempt.invited, roundID: 1, attempt: 0, now: 11)
        var actions: [RoundStateMachine.Action] = []
        for agent in attempt.invited.prefix(reported) {
            _ = machine.updateAnnounced(agent, roundID: 1, modelVersion: 0, examples: 5, now: 12)
            actions += machine.updateReceived(agent, roundID: 1, attempt: 0, now: 12).1
        }
        return (machine, attempt, actions)
    }

    @Test("A secure attempt that closes with enough masked inputs unmasks first; it aggregates when the unmask stage closes, once")
    func unmaskBeforeAggregate() throws {
        var (machine, attempt, actions) = Self.masked(reporting: 4)
        let unmask = try #require(actions.compactMap { if case .unmask(let outcome) = $0 { outcome } else { nil } }.first)
        #expect(!actions.contains { if case .aggregate = $0 { true } else { false } })
        #expect(unmask.accepted.keys.sorted() == attempt.invited.sorted() && machine.phase == .aggregating)
        #expect(machine.secure?.stage == .maskedInput && machine.secure?.closing == true)

        #expect(machine.secureStageOpened(.unmasking, expecting: attempt.invited, roundID: 1, attempt: 0, now: 13).isEmpty)
        for agent in attempt.invited.dropLast() {
            #expect(machine.secureAnswered(agent, stage: .unmasking, roundID: 1, attempt: 0, now: 14).isEmpty)
        }
        #expect(machine.secureAnswered(attempt.invited.last!, stage: .unmasking, roundID: 0, attempt: 0, now: 14).isEmpty, "another round's")
        let last = machine.secureAnswered(attempt.invited.last!, stage: .unmasking, roundID: 1, attempt: 0, now: 14)
        #expect(last == [.aggregate(unmask)])
        #expect(machine.tick(now: 100).isEmpty, "the stage's deadline does not aggregate again")
        #expect(machine.committed(roundID: 1, now: 101).allSatisfy { if case .aggregate = $0 { false } else { true } })
        #expect(machine.secure?.stage != .unmasking)
    }

    @Test("The unmask stage's deadline aggregates with the shares that came; a failed unmask fails the attempt and retries")
    func unmaskDeadlineAndFailure() throws {
        var (machine, attempt, _) = Self.masked(reporting: 3)
        // The fourth never reports: the round's deadline (15) closes the attempt with three.
        let closed = machine.tick(now: attempt.deadline)
        let unmask = try #require(closed.compactMap { if case .unmask(let outcome) = $0 { outcome } else { nil } }.first)
        #expect(unmask.accepted.count == 3 && unmask.late.count == 1)
        _ = machine.secureStageOpened(.unmasking, expecting: unmask.accepted.keys.sorted(), roundID: 1, attempt: 0, now: 15)
        #expect(machine.tick(now: 19.9).isEmpty)
        #expect(machine.tick(now: 20) == [.aggregate(unmask)])

        var (failing, _, actions) = Self.masked(reporting: 4)
        #expect(actions.contains { if case .unmask = $0 { true } else { false } })
        let failed = failing.aggregationFailed(roundID: 1, reason: "secure aggregation aborted: TOO_FEW_SURVIVORS", now: 13)
        #expect(failed.contains { if case .attemptFailed(_, _, true) = $0 { true } else { false } })
        #expect(failing.secure == nil && failing.current == nil)
        #expect(failing.secureAnswered("a", stage: .unmasking, roundID: 1, attempt: 0, now: 14).isEmpty)
    }
}
