// The payload of each kind of round-log record. A field that is not optional is in every record
// of its kind since the log's first version; an optional one may be absent (the code that writes
// it leaves it out when it does not apply, or older logs lack it).

extension RoundLogEvent {
    /// `coordinator_started`: the model a `serve` started from.
    public struct CoordinatorStarted: RoundLogPayload {
        public var modelVersion: UInt64
        public var modelSHA256: String
        public var optimizer: String

        enum CodingKeys: String, CodingKey {
            case modelVersion = "model_version", modelSHA256 = "model_sha256", optimizer
        }
    }

    /// `agent_connected`: a site's agent joined (a reconnect replaces its previous connection).
    public struct AgentConnected: RoundLogPayload {
        public var agent: String
        public var address: String?
    }

    /// `agent_refused`: a connection refused before or at its join. Recorded at most once per
    /// `limits.refusal_log_interval_seconds` for one address and reason; `count` is how many such
    /// refusals that record stands for (absent for one).
    public struct AgentRefused: RoundLogPayload {
        /// The certificate's common name, when the handshake got that far.
        public var agent: String?
        public var address: String?
        public var reason: String
        public var count: UInt64?
    }

    /// `agent_eligible`: a site whose data report matches the schema, with its training rows.
    public struct AgentEligible: RoundLogPayload {
        public var agent: String
        public var rows: UInt64
    }

    /// `agent_ineligible`: a site that will not be selected, and why (structural facts only).
    public struct AgentIneligible: RoundLogPayload {
        public var agent: String
        public var reason: String
    }

    /// `agent_disconnected`: a site's current connection closed.
    public struct AgentDisconnected: RoundLogPayload {
        public var agent: String
        public var reason: String
    }

    /// `standardization`: the feature means and scales frozen before round 1, merged from the
    /// `selected` sites' statistics; `rows` is the largest feature count merged.
    public struct Standardization: RoundLogPayload {
        public var selected: [String]
        public var secureAggregation: Bool?
        public var rows: UInt64
        public var featureMeans: [Double]
        public var featureScales: [Double]

        enum CodingKeys: String, CodingKey {
            case selected, secureAggregation = "secure_aggregation", rows, featureMeans = "feature_means", featureScales = "feature_scales"
        }
    }

    /// `update_refused`: a site's update for `round` that failed a check, and which.
    public struct UpdateRefused: RoundLogPayload {
        public var agent: String
        public var round: UInt64
        public var reason: String
    }

    /// `evaluation`: the global model after `round`, on the sites' holdouts, example-weighted.
    public struct Evaluation: RoundLogPayload {
        public var round: UInt64
        public var modelVersion: UInt64
        public var reported: [String]
        public var failed: [String: String]?
        public var examples: [String: UInt64]
        /// Examples the evaluation ran on, all sites together (absent when none reported).
        public var evalExamples: UInt64?
        public var evalLoss: Double?
        public var evalAccuracy: Double?
        /// The example-weighted mean of the sites' ROC AUCs (sites whose holdout has one class left out).
        public var evalAUC: Double?

        enum CodingKeys: String, CodingKey {
            case round, modelVersion = "model_version", reported, failed, examples, evalExamples = "eval_examples"
            case evalLoss = "eval_loss", evalAccuracy = "eval_accuracy", evalAUC = "eval_auc"
        }
    }

    /// `state_repaired`: what `fedcoord state repair` cut or set aside, and the checkpoint it
    /// adopted, if any.
    public struct StateRepaired: RoundLogPayload {
        public var reason: String
        public var repaired: [String]
        public var modelVersion: UInt64?
        public var modelSHA256: String?

        enum CodingKeys: String, CodingKey {
            case reason, repaired, modelVersion = "model_version", modelSHA256 = "model_sha256"
        }
    }
}
