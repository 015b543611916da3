import FedCore

/// How the coordinator runs rounds: who is invited, how long it waits, what counts as enough.
public struct RoundPolicy: ConfigurationSection, Sendable, Equatable {
    /// Complete updates wanted per round; the round closes as soon as this many are in.
    public var target = 5
    /// Invite `ceil(target × overselect)` agents, so that stragglers do not hold the round.
    public var overselect = 1.0
    /// Eligible agents needed before a round starts. 3 by default: secure aggregation, on by
    /// default, needs at least 3 survivors (with 2, each would learn the other's update).
    public var minAvailable = 3
    /// Complete updates needed for the round to commit; fewer and it fails and is retried.
    public var minUpdates = 3
    /// Seconds from sending the task to the round's deadline.
    public var roundDeadline = 30.0
    /// Seconds to wait for more than `min_available` agents before starting with what is there.
    public var selectionTimeout = 2.0
    /// Seconds after the deadline for pulling updates that were announced in time.
    public var collectGrace = 30.0
    /// Attempts after the first for a failed round, each with a fresh selection.
    public var maxRetries = 2
    /// Seconds an agent that failed sits out of selection.
    public var failureBackoff = 10.0
    /// Updates pulled at the same time (bounds the coordinator's memory and bandwidth).
    public var maxConcurrentPulls = 2
    /// Base seed of the seeded selection (each attempt's seed is derived and logged).
    public var seed: UInt64 = 1

    public init() {}

    public static var fields: [ConfigurationField<RoundPolicy>] {
        [
            .field("target", \.target), .field("overselect", \.overselect), .field("min_available", \.minAvailable),
            .field("min_updates", \.minUpdates), .field("round_deadline_seconds", \.roundDeadline),
            .field("selection_timeout_seconds", \.selectionTimeout), .field("collect_grace_seconds", \.collectGrace),
            .field("max_retries", \.maxRetries), .field("failure_backoff_seconds", \.failureBackoff),
            .field("max_concurrent_pulls", \.maxConcurrentPulls), .field("seed", \.seed),
        ]
    }

    /// Agents invited per round.
    public var inviteCount: Int { Int((Double(target) * overselect).rounded(.up)) }

    /// Refuses impossible values with a message that says what to fix.
    public func validate() throws {
        func fail(_ message: String) -> EngineError { EngineError(.invalidConfiguration, message) }
        guard target >= 1 else { throw fail("target must be at least 1 (it is \(target))") }
        guard overselect >= 1, overselect.isFinite else { throw fail("overselect must be at least 1.0 (it is \(overselect))") }
        guard minUpdates >= 1 else { throw fail("min_updates must be at least 1 (it is \(minUpdates))") }
        guard minUpdates <= target else { throw fail("min_updates (\(minUpdates)) must not exceed target (\(target))") }
        guard minAvailable >= minUpdates else {
            throw fail("min_available (\(minAvailable)) must be at least min_updates (\(minUpdates)), or no round could ever commit")
        }
        guard roundDeadline > 0, roundDeadline.isFinite else { throw fail("round_deadline_seconds must be positive (it is \(roundDeadline))") }
        guard selectionTimeout >= 0, collectGrace > 0 else { throw fail("selection_timeout_seconds must be ≥ 0 and collect_grace_seconds > 0") }
        guard maxRetries >= 0 else { throw fail("max_retries must be ≥ 0 (it is \(maxRetries))") }
        guard failureBackoff >= 0 else { throw fail("failure_backoff_seconds must be ≥ 0") }
        guard maxConcurrentPulls >= 1 else { throw fail("max_concurrent_pulls must be at least 1") }
    }
}

/// An error of the round engine, with a code the coordinator maps to a wire status.
public struct EngineError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: Hashable, Sendable {
        public let name: String
        public init(_ name: String) { self.name = name }
        public static let invalidConfiguration = Code("invalid-configuration")
        public static let notSelected = Code("not-selected")
        public static let duplicate = Code("duplicate")
        public static let late = Code("late")
        public static let stale = Code("stale")
        public static let invalidUpdate = Code("invalid-update")
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}
