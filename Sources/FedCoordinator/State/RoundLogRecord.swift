/// One line of the round log (JSON Lines). Field names are stable and documented in the README.
///
/// `type` is one of: `coordinator_started`, `agent_connected`, `agent_refused`, `agent_eligible`,
/// `agent_ineligible`, `agent_disconnected`, `standardization`, `update_refused`, `attempt_failed`,
/// `round`, `evaluation`. Fields that do not apply
/// to a type are omitted.
public struct RoundLogRecord: Codable, Sendable, Equatable {
    /// Position in the log, from 1.
    public var seq: UInt64 = 0
    public var type: String
    /// Wall-clock time of the record, ISO 8601 UTC.
    public var time: String = ""
    /// SHA-256 (hex) of the previous line's bytes; 64 zeros for the first record.
    public var prevSHA256: String = ""

    // Events about one agent.
    public var agent: String?
    public var address: String?
    public var reason: String?

    // Rounds and attempts.
    public var round: UInt64?
    public var attempt: Int?
    public var status: String?
    public var seed: UInt64?
    public var modelVersion: UInt64?
    public var startedAt: String?
    public var endedAt: String?
    public var durationSeconds: Double?
    public var selected: [String]?
    public var reported: [String]?
    public var late: [String]?
    public var cancelled: [String]?
    public var failed: [String: String]?
    public var examples: [String: UInt64]?
    public var bytesSent: [String: UInt64]?
    public var bytesReceived: [String: UInt64]?
    public var trainSeconds: [String: Double]?
    public var transferSeconds: [String: Double]?
    public var trainLoss: Double?
    public var evalLoss: Double?
    public var evalAccuracy: Double?
    /// The example-weighted mean of the sites' ROC AUCs (sites whose holdout has one class left out).
    public var evalAUC: Double?
    /// Examples the evaluation ran on, all sites together.
    public var evalExamples: UInt64?
    /// Standardization frozen before round 1 (record `standardization`).
    public var featureMeans: [Double]?
    public var featureScales: [Double]?
    /// Rows of training data an agent reported (record `agent_eligible`).
    public var rows: UInt64?
    /// Secure aggregation: on for the round; whose masked inputs were summed (U3); whose masks
    /// were recovered from their neighbours' shares after they dropped (D); the total weight.
    public var secureAggregation: Bool?
    public var survivors: [String]?
    public var recoveredDropouts: [String]?
    public var totalWeight: UInt64?
    /// Seconds spent removing the recovered dropouts' pairwise masks.
    public var recoverySeconds: Double?
    /// Distributed DP: the federation's ε at `dp_delta` after this round (Rényi accountant over
    /// every committed round), this round's noise multiplier and sampling rate.
    public var dpEpsilon: Double?
    public var dpDelta: Double?
    public var dpNoiseMultiplier: Double?
    public var dpSamplingRate: Double?
    public var modelSHA256: String?
    public var optimizer: String?
    /// A robust strategy's round: which (`median`, `trimmed_mean`, `krum`), and whose updates it
    /// combined (every reporting site, but for Krum only the ones it kept).
    public var strategy: String?
    public var combined: [String]?
    /// Record `agent_refused`: refusals of this address for this reason since the last such
    /// record (refusals are recorded at most once per `limits.refusal_log_interval_seconds`).
    public var count: UInt64?
    /// Record `state_repaired`: what `fedcoord state repair` cut or set aside, and where it went.
    public var repaired: [String]?

    public init(type: String) { self.type = type }

    enum CodingKeys: String, CodingKey {
        case seq, type, time, agent, address, reason, round, attempt, status, seed, selected, reported, late, cancelled, failed
        case examples, optimizer, count, repaired, strategy, combined
        case prevSHA256 = "prev_sha256", modelVersion = "model_version", startedAt = "started_at", endedAt = "ended_at"
        case durationSeconds = "duration_seconds", bytesSent = "bytes_sent", bytesReceived = "bytes_received"
        case trainSeconds = "train_seconds", transferSeconds = "transfer_seconds", trainLoss = "train_loss"
        case evalLoss = "eval_loss", evalAccuracy = "eval_accuracy", evalAUC = "eval_auc", modelSHA256 = "model_sha256"
        case evalExamples = "eval_examples", featureMeans = "feature_means", featureScales = "feature_scales", rows
        case secureAggregation = "secure_aggregation", survivors, recoveredDropouts = "recovered_dropouts", totalWeight = "total_weight"
        case recoverySeconds = "recovery_seconds", dpEpsilon = "dp_epsilon", dpDelta = "dp_delta"
        case dpNoiseMultiplier = "dp_noise_multiplier", dpSamplingRate = "dp_sampling_rate"
    }
}
