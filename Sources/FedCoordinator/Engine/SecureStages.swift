/// The stage clock of one FLSECAGG-v1 attempt (../shared/design/secagg.md §2.5): which stage is
/// open, whom it waits for, and until when. Pure: no I/O, no clock; the round engine holds one
/// per secure attempt and ticks it.
///
/// Stage 0 (advertise keys, answered with the Train call's SecureSetup) and stage 1 (share keys)
/// each close at their deadline, `keys_timeout_seconds` after they open, or as soon as every
/// agent they wait for has answered (its reply, or the failure of its call); a stage closes
/// once. The runtime then runs the session's close (the pruning and the checks of the table),
/// drops whom it left out, and opens the next stage with the survivors. Stage 2 (masked inputs)
/// is the round's own collection: it closes with the attempt, at its deadline (the straggler
/// cut) or with its target. Stage 3 (unmask) then waits up to `unmask_timeout_seconds` for the
/// survivors' shares, the same way as stages 0 and 1.
public struct SecureStages: Sendable, Equatable {
    public enum Stage: Sendable, Equatable {
        case advertisingKeys, sharingKeys, maskedInput, unmasking

        var next: Stage? {
            switch self {
            case .advertisingKeys: .sharingKeys
            case .sharingKeys: .maskedInput
            case .maskedInput: .unmasking
            case .unmasking: nil
            }
        }
    }

    public private(set) var stage: Stage
    /// When the open stage closes; nil in the masked-input stage (the attempt's close ends it).
    public private(set) var deadline: Double?
    /// The agents the open stage still waits for.
    public private(set) var waitingFor: Set<String>
    /// The open stage's close was handed to the runtime; it is not handed out twice.
    public private(set) var closing = false
    public let timeouts: Timeouts

    /// `secure_aggregation.keys_timeout_seconds` (stages 0 and 1) and `unmask_timeout_seconds`.
    public struct Timeouts: Sendable, Equatable {
        public var keys: Double
        public var unmask: Double
        public init(keys: Double, unmask: Double) {
            self.keys = keys
            self.unmask = unmask
        }
    }

    /// Stage 0, open from `now`, waiting for every invited agent's keys.
    public init(invited: [String], now: Double, timeouts: Timeouts) {
        stage = .advertisingKeys
        deadline = now + timeouts.keys
        waitingFor = Set(invited)
        self.timeouts = timeouts
    }

    /// `agent`'s call of `stage` ended (answered or failed). Returns the stage to close when it
    /// was the last one the open stage waited for; nil for any other stage, or a repeat.
    public mutating func answered(_ agent: String, in stage: Stage) -> Stage? {
        guard stage == self.stage, !closing, waitingFor.remove(agent) != nil else { return nil }
        return waitingFor.isEmpty ? close() : nil
    }

    /// Returns the open stage when its deadline has passed (once).
    public mutating func tick(now: Double) -> Stage? {
        guard !closing, let deadline, now >= deadline else { return nil }
        return close()
    }

    /// The attempt closed: the masked-input stage closes with it. Returns it, unless another
    /// stage is open (an attempt cannot have masked inputs before stage 2 opened).
    public mutating func closeMaskedInput() -> Stage? {
        guard stage == .maskedInput, !closing else { return nil }
        return close()
    }

    /// The runtime closed the open stage and opened the one after it, waiting for `expecting`
    /// (the survivors it sent the stage's request to). Returns that stage at once when it has
    /// nobody to wait for. Ignored unless the open stage was closing and `next` follows it.
    public mutating func opened(_ next: Stage, expecting: [String], now: Double) -> Stage? {
        guard closing, next == stage.next else { return nil }
        stage = next
        closing = false
        if next == .maskedInput {
            deadline = nil
            waitingFor = []
            return nil
        }
        deadline = now + (next == .unmasking ? timeouts.unmask : timeouts.keys)
        waitingFor = Set(expecting)
        return waitingFor.isEmpty ? close() : nil
    }

    private mutating func close() -> Stage {
        closing = true
        return stage
    }
}
