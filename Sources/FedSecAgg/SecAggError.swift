/// A failure of secure aggregation. `reason` is the protocol's reason code (FLSECAGG-v1 §4);
/// `message` says what happened, for the operator. Never carries a secret.
public struct SecAggError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        public let code: UInt32
        public let name: String
        public static let tooFewSurvivors = Reason(code: 1, name: "TOO_FEW_SURVIVORS")
        public static let stageClosed = Reason(code: 2, name: "STAGE_CLOSED")
        public static let inconsistent = Reason(code: 3, name: "INCONSISTENT")
        public static let unmaskMismatch = Reason(code: 4, name: "UNMASK_MISMATCH")
        public static let badInput = Reason(code: 5, name: "BAD_INPUT")
        public static let internalError = Reason(code: 6, name: "INTERNAL")
        public var description: String { name }
    }

    public let reason: Reason
    public let message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason.name): \(message)" }

    /// Not enough shares to reconstruct a secret (fewer than the threshold).
    static func insufficientShares(_ got: Int, _ needed: Int) -> SecAggError {
        SecAggError(.tooFewSurvivors, "\(got) share(s) where the threshold is \(needed)")
    }
}
