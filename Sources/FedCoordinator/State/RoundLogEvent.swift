/// What one line of the round log records: one case per `type`, each with the fields that type
/// carries (``RoundLogRecord`` adds the line's `seq`, `time` and `prev_sha256`). The JSON field
/// names are stable and documented in the README; a field a payload leaves nil is omitted.
public enum RoundLogEvent: Sendable, Equatable {
    case coordinatorStarted(CoordinatorStarted)
    case agentConnected(AgentConnected)
    case agentRefused(AgentRefused)
    case agentEligible(AgentEligible)
    case agentIneligible(AgentIneligible)
    case agentDisconnected(AgentDisconnected)
    case standardization(Standardization)
    case updateRefused(UpdateRefused)
    /// A round's attempt that failed (its quorum was not met, or its close did not complete).
    case attemptFailed(RoundClosed)
    /// A committed round: the commit point of its checkpoint.
    case round(RoundClosed)
    case evaluation(Evaluation)
    case stateRepaired(StateRepaired)

    /// The record's `type`, as written in the log.
    public enum Kind: String, Sendable, CaseIterable {
        case coordinatorStarted = "coordinator_started", agentConnected = "agent_connected", agentRefused = "agent_refused"
        case agentEligible = "agent_eligible", agentIneligible = "agent_ineligible", agentDisconnected = "agent_disconnected"
        case standardization, updateRefused = "update_refused", attemptFailed = "attempt_failed", round, evaluation
        case stateRepaired = "state_repaired"
    }

    public var kind: Kind {
        switch self {
        case .coordinatorStarted: .coordinatorStarted
        case .agentConnected: .agentConnected
        case .agentRefused: .agentRefused
        case .agentEligible: .agentEligible
        case .agentIneligible: .agentIneligible
        case .agentDisconnected: .agentDisconnected
        case .standardization: .standardization
        case .updateRefused: .updateRefused
        case .attemptFailed: .attemptFailed
        case .round: .round
        case .evaluation: .evaluation
        case .stateRepaired: .stateRepaired
        }
    }

    /// The payload, for code that reads every kind alike (``RoundLogRecord``'s coding, the
    /// `events(_:)` filter).
    var payload: any RoundLogPayload {
        switch self {
        case .coordinatorStarted(let payload): payload
        case .agentConnected(let payload): payload
        case .agentRefused(let payload): payload
        case .agentEligible(let payload): payload
        case .agentIneligible(let payload): payload
        case .agentDisconnected(let payload): payload
        case .standardization(let payload): payload
        case .updateRefused(let payload): payload
        case .attemptFailed(let payload), .round(let payload): payload
        case .evaluation(let payload): payload
        case .stateRepaired(let payload): payload
        }
    }

    /// Decodes the payload of a record of `kind` from the line's fields.
    static func decode(_ kind: Kind, from decoder: any Decoder) throws -> RoundLogEvent {
        switch kind {
        case .coordinatorStarted: .coordinatorStarted(try CoordinatorStarted(from: decoder))
        case .agentConnected: .agentConnected(try AgentConnected(from: decoder))
        case .agentRefused: .agentRefused(try AgentRefused(from: decoder))
        case .agentEligible: .agentEligible(try AgentEligible(from: decoder))
        case .agentIneligible: .agentIneligible(try AgentIneligible(from: decoder))
        case .agentDisconnected: .agentDisconnected(try AgentDisconnected(from: decoder))
        case .standardization: .standardization(try Standardization(from: decoder))
        case .updateRefused: .updateRefused(try UpdateRefused(from: decoder))
        case .attemptFailed: .attemptFailed(try RoundClosed(from: decoder))
        case .round: .round(try RoundClosed(from: decoder))
        case .evaluation: .evaluation(try Evaluation(from: decoder))
        case .stateRepaired: .stateRepaired(try StateRepaired(from: decoder))
        }
    }

    /// The event with every free text a site could have written (reasons, failure messages)
    /// cleaned of control characters and capped (``SiteText/clean(_:)``).
    func cleaningSiteText() -> RoundLogEvent {
        switch self {
        case .agentRefused(var payload):
            payload.reason = SiteText.clean(payload.reason)
            return .agentRefused(payload)
        case .agentIneligible(var payload):
            payload.reason = SiteText.clean(payload.reason)
            return .agentIneligible(payload)
        case .agentDisconnected(var payload):
            payload.reason = SiteText.clean(payload.reason)
            return .agentDisconnected(payload)
        case .updateRefused(var payload):
            payload.reason = SiteText.clean(payload.reason)
            return .updateRefused(payload)
        case .attemptFailed(let payload): return .attemptFailed(payload.cleaningSiteText())
        case .round(let payload): return .round(payload.cleaningSiteText())
        case .evaluation(var payload):
            payload.failed = payload.failed?.mapValues { SiteText.clean($0) }
            return .evaluation(payload)
        case .coordinatorStarted, .agentConnected, .agentEligible, .standardization, .stateRepaired:
            return self
        }
    }
}

/// The fields one kind of ``RoundLogEvent`` carries, coded in the line's own JSON object.
public protocol RoundLogPayload: Codable, Sendable, Equatable {}
