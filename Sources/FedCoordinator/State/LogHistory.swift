/// What the round log says a coordinator resumes from, gathered record by record in the one
/// streaming pass that verifies the log (``RoundLog/init(path:visit:)``).
public struct LogHistory: Sendable {
    /// The model version and hash to resume from: the last committed round, or the checkpoint
    /// a `state_repaired` record adopted after it.
    public private(set) var resumeVersion: UInt64?
    public private(set) var resumeSHA256: String?
    /// The record that froze the federation's standardization, if one did.
    public private(set) var standardization: RoundLogEvent.Standardization?
    /// Coordinator starts recorded so far.
    public private(set) var starts = 0
    /// Each committed round's privacy spend (sampling rate, noise multiplier) under distributed DP.
    public private(set) var privacySpend: [(samplingRate: Double, noiseMultiplier: Double)] = []

    public init() {}

    public mutating func take(_ record: RoundLogRecord) {
        switch record.event {
        case .round(let round):
            resumeVersion = round.round
            resumeSHA256 = round.modelSHA256
            if let z = round.dpNoiseMultiplier, let q = round.dpSamplingRate { privacySpend.append((q, z)) }
        case .stateRepaired(let repair) where repair.modelVersion != nil:
            resumeVersion = repair.modelVersion
            resumeSHA256 = repair.modelSHA256
        case .standardization(let frozen):
            standardization = frozen
        case .coordinatorStarted:
            starts += 1
        default:
            break
        }
    }
}
