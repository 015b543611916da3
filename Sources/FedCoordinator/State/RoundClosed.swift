extension RoundLogEvent {
    /// `round` (a committed round, `status` `committed`) or `attempt_failed` (`status` `failed`,
    /// with the `reason`): one attempt of a round, from its selection to its close.
    public struct RoundClosed: RoundLogPayload {
        public var round: UInt64
        public var attempt: Int
        public var status: String
        public var seed: UInt64
        public var startedAt: String
        public var endedAt: String
        public var durationSeconds: Double
        public var selected: [String]
        /// The sites whose updates the engine accepted, in name order.
        public var reported: [String]
        public var late: [String]
        public var cancelled: [String]
        /// Why each failed site failed (its own message, cleaned and capped).
        public var failed: [String: String]
        /// Each reporting site's example count; absent under secure aggregation, where the
        /// per-site weights travel masked and only their total is known.
        public var examples: [String: UInt64]?
        public var bytesSent: [String: UInt64]
        public var bytesReceived: [String: UInt64]
        public var trainSeconds: [String: Double]
        public var transferSeconds: [String: Double]
        /// The example-weighted mean of the reporting sites' training losses.
        public var trainLoss: Double?
        public var optimizer: String
        /// The committed checkpoint's version (the round's number) and the model's SHA-256 (hex);
        /// absent for a failed attempt.
        public var modelVersion: UInt64?
        public var modelSHA256: String?
        /// Why the attempt failed, and whether it is retried.
        public var reason: String?

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
        /// A robust strategy's round: which (`median`, `trimmed_mean`, `krum`), and whose updates it
        /// combined (every reporting site, but for Krum only the ones it kept).
        public var strategy: String?
        public var combined: [String]?

        /// A record of attempt `attempt` of `round` with no sites and no figures yet.
        public init(round: UInt64, attempt: Int, status: String) {
            self.round = round
            self.attempt = attempt
            self.status = status
            seed = 0
            startedAt = ""
            endedAt = ""
            durationSeconds = 0
            selected = []
            reported = []
            late = []
            cancelled = []
            failed = [:]
            bytesSent = [:]
            bytesReceived = [:]
            trainSeconds = [:]
            transferSeconds = [:]
            optimizer = ""
        }

        /// Bytes sent and received over the round, all sites together.
        public var totalBytes: UInt64 { bytesSent.values.reduce(0, +) + bytesReceived.values.reduce(0, +) }

        func cleaningSiteText() -> RoundClosed {
            var cleaned = self
            cleaned.reason = reason.map { SiteText.clean($0) }
            cleaned.failed = failed.mapValues { SiteText.clean($0) }
            return cleaned
        }

        enum CodingKeys: String, CodingKey {
            case round, attempt, status, seed, selected, reported, late, cancelled, failed, examples, optimizer, reason
            case startedAt = "started_at", endedAt = "ended_at", durationSeconds = "duration_seconds"
            case bytesSent = "bytes_sent", bytesReceived = "bytes_received", trainSeconds = "train_seconds"
            case transferSeconds = "transfer_seconds", trainLoss = "train_loss", modelVersion = "model_version", modelSHA256 = "model_sha256"
            case secureAggregation = "secure_aggregation", survivors, recoveredDropouts = "recovered_dropouts"
            case totalWeight = "total_weight", recoverySeconds = "recovery_seconds", dpEpsilon = "dp_epsilon", dpDelta = "dp_delta"
            case dpNoiseMultiplier = "dp_noise_multiplier", dpSamplingRate = "dp_sampling_rate", strategy, combined
        }
    }
}
