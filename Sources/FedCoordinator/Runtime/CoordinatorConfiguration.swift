import FedCore
import FedLearn
import FedWire
import Foundation

/// The coordinator's configuration file (`coordinator.json`). Every field is documented in the
/// README (a test checks the table against ``schema``); unknown fields are refused; `--set
/// a.b=value` overrides any field from the command line.
public struct CoordinatorConfiguration: ConfigurationSection, Sendable {
    public struct Listen: ConfigurationSection, Sendable {
        /// Address to listen on; the coordinator's certificate must name what agents dial.
        public var host = "127.0.0.1"
        public var port: UInt16 = 7443
        public init() {}
        public static var fields: [ConfigurationField<Listen>] { [.field("host", \.host), .field("port", \.port)] }
    }

    public struct TLSFiles: ConfigurationSection, Sendable {
        public var certificate = ""
        public var privateKey = ""
        public var ca = ""
        /// The revocation list; required: a revoked agent must be refused.
        public var crl = ""
        public init() {}
        public static var fields: [ConfigurationField<TLSFiles>] {
            [.required("certificate", \.certificate), .required("private_key", \.privateKey), .required("ca", \.ca), .required("crl", \.crl)]
        }
    }

    /// What the federation trains: a model over site data (kind "logistic", "softmax" or "mlp",
    /// with its feature columns and label), or raw tensors without data (kind "tensors", for
    /// benchmarks with the agents' benchmark trainer).
    public struct Model: ConfigurationSection, Sendable {
        public var kind = ModelKind.tensors
        /// Kind "tensors": the tensors of the model, in order.
        public var tensors: [TensorSpec] = []
        /// Kind "tensors": how the weights start.
        public var initialization = ModelInitialization.zeros
        /// Seeds the initial weights (an MLP's Glorot-uniform weights; seeded tensors).
        public var seed: UInt64 = 1
        public var features: [String] = []
        public var label = ""
        public var classes = 2
        public var hidden: [Int] = []
        public var standardize = true
        public var missing: [String: ModelSchema.MissingValuePolicy] = [:]
        public init() {}
        public static var fields: [ConfigurationField<Model>] {
            [
                .field("kind", \.kind), .field("features", \.features), .field("label", \.label), .field("classes", \.classes),
                .field("hidden", \.hidden), .field("standardize", \.standardize), .field("missing", \.missing),
                .field("tensors", \.tensors), .field("init", \.initialization), .field("seed", \.seed),
            ]
        }

        /// The schema agents check their data against; nil for kind "tensors".
        public var schema: ModelSchema? {
            guard let kind = kind.schemaKind else { return nil }
            return ModelSchema(kind: kind, features: features, label: label, classes: classes, hidden: hidden, standardize: standardize,
                               missing: missing)
        }

        /// The model's tensors.
        public func layout() throws -> ModelLayout {
            if let schema { return schema.layout }
            return try ModelLayout(tensors)
        }
    }

    /// Secure aggregation (FLSECAGG-v1): the coordinator learns only the sum of the survivors'
    /// updates. On by default.
    public struct SecureAggregation: ConfigurationSection, Sendable {
        public var enabled = true
        /// Dropouts tolerated over the four stages, as a fraction of the invited agents:
        /// `D_max = floor(N × fraction)`, threshold `t = N − D_max` (complete graph).
        public var maxDropoutFraction = 0.3
        /// Agents assumed to collude with a curious coordinator; the threshold stays above it.
        public var collusion = 0
        /// Per-coordinate clip of the update before quantization.
        public var clip = 2.0
        /// Example counts above this weigh as this much (`W_max`); smaller keeps more precision.
        public var maxWeight: UInt32 = 10_000
        public var graph = SecureGraph.auto
        /// Deadlines of the key stages and of the unmask stage (the masked-input deadline is the round's).
        public var keysTimeoutSeconds = 10.0
        public var unmaskTimeoutSeconds = 10.0
        /// Distributed differential privacy (spec §8).
        public var dp = DifferentialPrivacy()
        public init() {}
        public static var fields: [ConfigurationField<SecureAggregation>] {
            [
                .field("enabled", \.enabled), .field("max_dropout_fraction", \.maxDropoutFraction), .field("collusion", \.collusion),
                .field("clip", \.clip), .field("max_weight", \.maxWeight), .field("graph", \.graph),
                .field("keys_timeout_seconds", \.keysTimeoutSeconds), .field("unmask_timeout_seconds", \.unmaskTimeoutSeconds),
                .field("dp", \.dp),
            ]
        }
    }

    /// Distributed DP: each agent clips its update to L2 norm `l2_clip` and adds discrete
    /// Gaussian noise so that `min_survivors` agents together add `noise_multiplier × l2_clip`.
    public struct DifferentialPrivacy: ConfigurationSection, Sendable {
        public var enabled = false
        public var l2Clip = 1.0
        public var noiseMultiplier = 1.0
        /// The δ at which ε is reported.
        public var delta = 1e-5
        public init() {}
        public static var fields: [ConfigurationField<DifferentialPrivacy>] {
            [.field("enabled", \.enabled), .field("l2_clip", \.l2Clip), .field("noise_multiplier", \.noiseMultiplier), .field("delta", \.delta)]
        }
    }

    /// Federated evaluation of the global model on the sites' holdouts.
    public struct Evaluation: ConfigurationSection, Sendable {
        /// Evaluate after every `every`-th committed round (and never when 0).
        public var every = 1
        /// Seconds the agents have to answer.
        public var timeoutSeconds = 30.0
        public init() {}
        public static var fields: [ConfigurationField<Evaluation>] { [.field("every", \.every), .field("timeout_seconds", \.timeoutSeconds)] }
    }

    /// Hyper-parameters sent to the agents with each task.
    public struct Task: ConfigurationSection, Sendable {
        public var localEpochs: UInt32 = 1
        public var batchSize: UInt32 = 32
        public var learningRate = 0.1
        public var proximalMu = 0.0
        /// The agents' optimizer.
        public var localOptimizer = LocalOptimizer.Kind.sgd
        public var momentum = 0.0
        public var l2 = 0.0
        public init() {}
        public static var fields: [ConfigurationField<Task>] {
            [
                .field("local_epochs", \.localEpochs), .field("batch_size", \.batchSize), .field("learning_rate", \.learningRate),
                .field("proximal_mu", \.proximalMu), .field("local_optimizer", \.localOptimizer), .field("momentum", \.momentum),
                .field("l2", \.l2),
            ]
        }
    }

    /// `model.kind`: a model over site data, or raw tensors without data.
    public enum ModelKind: String, ConfigurationChoice {
        case tensors, logistic, softmax, mlp
        /// The kind of model the agents train on their data; nil for raw tensors.
        public var schemaKind: ModelSchema.Kind? { ModelSchema.Kind(rawValue: rawValue) }
    }

    /// `model.init`, for kind "tensors": all zeros, or uniform in [-0.05, 0.05) from `model.seed`.
    public enum ModelInitialization: String, ConfigurationChoice {
        case zeros, seeded
    }

    /// `secure_aggregation.graph`: who shares masks with whom.
    public enum SecureGraph: String, ConfigurationChoice {
        /// Complete up to 200 agents, sparse beyond.
        case auto
        /// Every agent with every other.
        case complete
        /// SecAgg+'s Harary graph, its degree from the spec's table.
        case sparse
    }

    public var listen = Listen()
    public var tls = TLSFiles()
    /// Folder for checkpoints, the round log and spooled updates.
    public var stateDir = ""
    public var federation = "fedcoord"
    public var model = Model()
    /// Stop (exit 0) once this many rounds are committed in the state folder; 0 runs until SIGTERM.
    public var rounds: UInt64 = 0
    public var selection = RoundPolicy()
    public var optimizer = ServerOptimizer.Settings()
    public var task = Task()
    public var evaluation = Evaluation()
    public var secureAggregation = SecureAggregation()
    /// How updates are combined before the server optimizer steps. The robust strategies need
    /// individual updates, so they cannot run under secure aggregation.
    public var strategy = AggregationStrategy.mean
    public var robust = RobustSettings()
    public var heartbeatIntervalSeconds = 5.0
    public var maxFrameBytes = 8 << 20
    public var keepCheckpoints = 5
    /// What a site's update may claim and hold.
    public var update = UpdateBounds()
    /// What one peer, and all together, may hold of the coordinator.
    public var limits = PeerLimits()

    /// Placeholders for the required `tls`, `state_dir` and `model`: decoding replaces them.
    public init() {}

    public static var fields: [ConfigurationField<CoordinatorConfiguration>] {
        [
            .field("listen", \.listen), .required("tls", \.tls), .required("state_dir", \.stateDir), .field("federation", \.federation),
            .required("model", \.model), .field("rounds", \.rounds), .field("selection", \.selection), .field("optimizer", \.optimizer),
            .field("task", \.task), .field("evaluation", \.evaluation), .field("strategy", \.strategy), .field("robust", \.robust),
            .field("secure_aggregation", \.secureAggregation), .field("heartbeat_interval_seconds", \.heartbeatIntervalSeconds),
            .field("max_frame_bytes", \.maxFrameBytes), .field("keep_checkpoints", \.keepCheckpoints), .field("update", \.update),
            .field("limits", \.limits),
        ]
    }

    /// Loads and validates `path`; `overrides` are `a.b=value` settings applied first.
    public static func load(path: String, overrides: [String: String] = [:]) throws -> CoordinatorConfiguration {
        let configuration = try StrictConfiguration.load(CoordinatorConfiguration.self, from: path, overrides: overrides)
        try configuration.validate()
        return configuration
    }

    /// Refuses impossible values, saying what to fix.
    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        try selection.validate()
        try optimizer.validate()
        try update.validate()
        try limits.validate()
        if let schema = model.schema {
            guard model.tensors.isEmpty else {
                throw Failure("model.tensors is for kind \"tensors\" only; a \(model.kind.rawValue) model's tensors follow from its features and layers")
            }
            do { try schema.validate() } catch { throw Failure("model: \(error)") }
        } else {
            guard !model.tensors.isEmpty else { throw Failure("model.tensors is empty: the model needs at least one tensor") }
            _ = try ModelLayout(model.tensors)
        }
        guard task.momentum >= 0 && task.momentum < 1, task.l2 >= 0, task.proximalMu >= 0 else {
            throw Failure("task.momentum must be in [0, 1); task.l2 and task.proximal_mu must not be negative")
        }
        if strategy.isRobust && secureAggregation.enabled {
            throw Failure("strategy \"\(strategy.rawValue)\" needs each site's individual update, which secure aggregation hides by design; "
                + "use strategy \"mean\", or set secure_aggregation.enabled false")
        }
        try robust.validate(for: strategy, minUpdates: selection.minUpdates)
        if secureAggregation.enabled {
            let s = secureAggregation
            guard selection.minAvailable >= 3, selection.minUpdates >= 3 else {
                throw Failure("secure aggregation needs at least 3 survivors (with 2, each would learn the other's update): "
                    + "set selection.min_available and selection.min_updates to 3 or more")
            }
            guard s.maxDropoutFraction >= 0, s.maxDropoutFraction < 1, s.collusion >= 0 else {
                throw Failure("secure_aggregation.max_dropout_fraction must be in [0, 1) and collusion ≥ 0")
            }
            guard s.clip > 0, s.clip.isFinite, s.maxWeight >= 1 else { throw Failure("secure_aggregation.clip and max_weight must be positive") }
            guard !s.dp.enabled || (s.dp.l2Clip > 0 && s.dp.noiseMultiplier > 0 && s.dp.delta > 0 && s.dp.delta < 1) else {
                throw Failure("secure_aggregation.dp needs l2_clip > 0, noise_multiplier > 0 and 0 < delta < 1")
            }
            guard s.keysTimeoutSeconds > 0, s.unmaskTimeoutSeconds > 0 else {
                throw Failure("secure_aggregation.keys_timeout_seconds and unmask_timeout_seconds must be positive")
            }
        }
        if secureAggregation.dp.enabled && !secureAggregation.enabled {
            throw Failure("secure_aggregation.dp needs secure aggregation (the noise is only private once masked); set secure_aggregation.enabled true")
        }
        guard evaluation.every >= 0, evaluation.timeoutSeconds > 0 else {
            throw Failure("evaluation.every must be ≥ 0 (0: never) and evaluation.timeout_seconds positive")
        }
        guard heartbeatIntervalSeconds > 0 else { throw Failure("heartbeat_interval_seconds must be positive") }
        guard maxFrameBytes >= 64 * 1024 && maxFrameBytes <= 64 << 20 else {
            throw Failure("max_frame_bytes must be between 65536 and 67108864 (chunks are up to 4 MiB)")
        }
        guard task.batchSize > 0, task.localEpochs > 0, task.learningRate > 0 else {
            throw Failure("task.batch_size, task.local_epochs and task.learning_rate must be positive")
        }
        try TLSConfiguration.makeServerConfiguration(
            certificateChainPath: tls.certificate, privateKeyPath: tls.privateKey, trustRootPath: tls.ca, revocationListPath: tls.crl
        ).validateFiles()
    }

    /// The initial global model.
    public func initialModel() throws -> ModelParameters {
        if let schema = model.schema { return schema.initialParameters(seed: model.seed) }
        let layout = try ModelLayout(model.tensors)
        guard model.initialization == .seeded else { return ModelParameters(zerosFor: layout) }
        var sampler = SeededSampler(seed: model.seed)
        let values = (0..<layout.parameterCount).map { _ in Float(Double(sampler.next() >> 11) / Double(1 << 53) * 0.1 - 0.05) }
        return try ModelParameters(layout: layout, values: values)
    }
}
