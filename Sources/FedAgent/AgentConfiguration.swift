import FedCore
import FedWire
import Foundation

/// An agent's configuration file (`agent.json`). Every field is documented in the README;
/// unknown fields are refused; `--set a.b=value` overrides any field.
public struct AgentConfiguration: Codable, Sendable {
    public struct Coordinator: Codable, Sendable {
        /// The coordinator's host name or IP address; its certificate must name it.
        public var host: String
        public var port: UInt16
        public init(host: String, port: UInt16) {
            self.host = host
            self.port = port
        }
    }

    public struct TLSFiles: Codable, Sendable {
        public var certificate: String
        public var privateKey: String
        public var ca: String
        enum CodingKeys: String, CodingKey {
            case certificate, ca
            case privateKey = "private_key"
        }
        public init(certificate: String, privateKey: String, ca: String) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.ca = ca
        }
    }

    /// `trainer.kind`: what trains on this site.
    public enum TrainerKind: String, ConfigurationChoice {
        /// The federation's model, trained on `data.csv`.
        case local
        /// The site's own training program (`trainer.command`).
        case command
        /// A deterministic stand-in without data, for benchmarks.
        case benchmark
    }

    public struct Trainer: Codable, Sendable {
        public var kind = TrainerKind.local
        public var examples: UInt64 = 100
        public var step: Float = 0.001
        /// Extra seconds every task takes (to play a slow site in demos and straggler drills).
        public var delaySeconds = 0.0
        /// Extra random delay per task, uniform in [0, delay_jitter_seconds).
        public var delayJitterSeconds = 0.0
        /// The site's training program and its arguments (kind "command").
        public var command: [String] = []
        /// Seconds the command may run before it is stopped.
        public var timeoutSeconds = 600.0
        /// Folder for the hand-off files (kind "command"); a private temporary folder by default.
        public var workDir: String?
        enum CodingKeys: String, CodingKey {
            case kind, examples, step, command
            case delaySeconds = "delay_seconds", delayJitterSeconds = "delay_jitter_seconds", timeoutSeconds = "timeout_seconds"
            case workDir = "work_dir"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            kind = try c.decodeIfPresent(TrainerKind.self, forKey: .kind) ?? .local
            examples = try c.decodeIfPresent(UInt64.self, forKey: .examples) ?? 100
            step = try c.decodeIfPresent(Float.self, forKey: .step) ?? 0.001
            delaySeconds = try c.decodeIfPresent(Double.self, forKey: .delaySeconds) ?? 0
            delayJitterSeconds = try c.decodeIfPresent(Double.self, forKey: .delayJitterSeconds) ?? 0
            command = try c.decodeIfPresent([String].self, forKey: .command) ?? []
            timeoutSeconds = try c.decodeIfPresent(Double.self, forKey: .timeoutSeconds) ?? 600
            workDir = try c.decodeIfPresent(String.self, forKey: .workDir)
        }
    }

    /// The site's data (never sent anywhere).
    public struct DataFiles: Codable, Sendable {
        /// CSV with a header row; the model schema names the columns used.
        public var csv: String
        /// Fraction of the rows held out for federated evaluation (when `holdout_csv` is not set).
        public var holdoutFraction = 0.2
        /// A separate CSV to evaluate on instead.
        public var holdoutCSV: String?
        /// Seeds the holdout split.
        public var seed: UInt64 = 1
        enum CodingKeys: String, CodingKey {
            case csv, seed
            case holdoutFraction = "holdout_fraction", holdoutCSV = "holdout_csv"
        }
        public init(csv: String, holdoutFraction: Double = 0.2, holdoutCSV: String? = nil) {
            self.csv = csv
            self.holdoutFraction = holdoutFraction
            self.holdoutCSV = holdoutCSV
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            csv = try c.decode(String.self, forKey: .csv)
            holdoutFraction = try c.decodeIfPresent(Double.self, forKey: .holdoutFraction) ?? 0.2
            holdoutCSV = try c.decodeIfPresent(String.self, forKey: .holdoutCSV)
            seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? 1
        }
        /// The same, as the site trainer takes it.
        public var files: SiteTrainer.DataFiles {
            SiteTrainer.DataFiles(csv: csv, holdoutFraction: holdoutFraction, holdoutCSV: holdoutCSV, seed: seed)
        }
    }

    /// What this site accepts, whatever the coordinator asks.
    public struct Policy: Codable, Sendable {
        /// Refuse (PERMISSION_DENIED) any round that does not run under secure aggregation.
        public var requireSecureAggregation = false
        /// Refuse (PERMISSION_DENIED) a round after which the federation's ε would exceed this
        /// (as the coordinator's accountant reports it with the round's DP parameters).
        public var maxEpsilon: Double?
        enum CodingKeys: String, CodingKey {
            case requireSecureAggregation = "require_secure_aggregation", maxEpsilon = "max_epsilon"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            requireSecureAggregation = try c.decodeIfPresent(Bool.self, forKey: .requireSecureAggregation) ?? false
            maxEpsilon = try c.decodeIfPresent(Double.self, forKey: .maxEpsilon)
        }
    }

    /// Drills: behaviour that tests the federation's resilience; off by default.
    public struct Drill: Codable, Sendable {
        /// Drop the connection at this secure-aggregation stage in every secure round
        /// ("advertise_keys", "share_keys", "masked_input", "unmask"), then reconnect.
        public var secureDropoutStage: String?
        enum CodingKeys: String, CodingKey { case secureDropoutStage = "secure_dropout_stage" }
        public init() {}
    }

    public var coordinator: Coordinator
    public var tls: TLSFiles
    public var policy = Policy()
    public var drill = Drill()
    public var trainer = Trainer()
    public var data: DataFiles?
    public var heartbeatIntervalSeconds = 5.0
    /// First wait before reconnecting; doubles up to `reconnect_max_seconds`, with jitter.
    public var reconnectInitialSeconds = 0.5
    public var reconnectMaxSeconds = 30.0
    public var maxFrameBytes = 8 << 20
    /// Where this site keeps the round-log heads the coordinator showed it (nil: none kept);
    /// `NAME.witness.jsonl` beside the configuration file `NAME.json` when loaded from one.
    public var witnessFile: String?

    enum CodingKeys: String, CodingKey {
        case coordinator, tls, trainer, data, policy, drill
        case witnessFile = "witness_file"
        case heartbeatIntervalSeconds = "heartbeat_interval_seconds", reconnectInitialSeconds = "reconnect_initial_seconds"
        case reconnectMaxSeconds = "reconnect_max_seconds", maxFrameBytes = "max_frame_bytes"
    }

    public init(coordinator: Coordinator, tls: TLSFiles) {
        self.coordinator = coordinator
        self.tls = tls
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        coordinator = try c.decode(Coordinator.self, forKey: .coordinator)
        tls = try c.decode(TLSFiles.self, forKey: .tls)
        trainer = try c.decodeIfPresent(Trainer.self, forKey: .trainer) ?? Trainer()
        data = try c.decodeIfPresent(DataFiles.self, forKey: .data)
        policy = try c.decodeIfPresent(Policy.self, forKey: .policy) ?? Policy()
        drill = try c.decodeIfPresent(Drill.self, forKey: .drill) ?? Drill()
        heartbeatIntervalSeconds = try c.decodeIfPresent(Double.self, forKey: .heartbeatIntervalSeconds) ?? 5
        reconnectInitialSeconds = try c.decodeIfPresent(Double.self, forKey: .reconnectInitialSeconds) ?? 0.5
        reconnectMaxSeconds = try c.decodeIfPresent(Double.self, forKey: .reconnectMaxSeconds) ?? 30
        maxFrameBytes = try c.decodeIfPresent(Int.self, forKey: .maxFrameBytes) ?? 8 << 20
        witnessFile = try c.decodeIfPresent(String.self, forKey: .witnessFile)
    }

    public static let schema: StrictConfiguration.Schema = .object([
        "coordinator": .object(["host": .any, "port": .any]),
        "tls": .object(["certificate": .any, "private_key": .any, "ca": .any]),
        "trainer": .object([
            "kind": .any, "examples": .any, "step": .any, "delay_seconds": .any, "delay_jitter_seconds": .any, "command": .any,
            "timeout_seconds": .any, "work_dir": .any,
        ]),
        "data": .object(["csv": .any, "holdout_fraction": .any, "holdout_csv": .any, "seed": .any]),
        "policy": .object(["require_secure_aggregation": .any, "max_epsilon": .any]),
        "drill": .object(["secure_dropout_stage": .any]),
        "heartbeat_interval_seconds": .any, "reconnect_initial_seconds": .any, "reconnect_max_seconds": .any, "max_frame_bytes": .any,
        "witness_file": .any,
    ])

    public static func load(path: String, overrides: [String: String] = [:]) throws -> AgentConfiguration {
        var configuration = try StrictConfiguration.load(AgentConfiguration.self, from: path, schema: schema, overrides: overrides)
        if configuration.witnessFile == nil {
            // agent.json → agent.witness.jsonl beside it: one file per configuration, so two agents
            // configured in one folder never share one.
            let url = URL(fileURLWithPath: path)
            configuration.witnessFile = url.deletingPathExtension().path + ".witness.jsonl"
        }
        try configuration.validate()
        return configuration
    }

    public func validate() throws {
        typealias Failure = StrictConfiguration.ConfigurationError
        switch trainer.kind {
        case .benchmark:
            guard trainer.examples > 0 else { throw Failure("trainer.examples must be positive") }
        case .local, .command:
            guard let data else {
                throw Failure("trainer.kind \"\(trainer.kind.rawValue)\" trains on the site's data: set data.csv to the site's CSV file")
            }
            for path in [data.csv] + (data.holdoutCSV.map { [$0] } ?? []) where !FileManager.default.isReadableFile(atPath: path) {
                throw Failure("the data file '\(path)' cannot be read; check data.csv / data.holdout_csv")
            }
            guard data.holdoutFraction >= 0 && data.holdoutFraction < 1 else {
                throw Failure("data.holdout_fraction must be at least 0 and below 1, not \(data.holdoutFraction)")
            }
            if trainer.kind == .command {
                guard !trainer.command.isEmpty else {
                    throw Failure("trainer.kind \"command\" needs trainer.command, the program and its arguments: [\"python3\", \"train.py\"]")
                }
                guard trainer.timeoutSeconds > 0 else { throw Failure("trainer.timeout_seconds must be positive") }
            }
        }
        guard heartbeatIntervalSeconds > 0 else { throw Failure("heartbeat_interval_seconds must be positive") }
        if let stage = drill.secureDropoutStage, Agent.SecureStage(name: stage) == nil {
            throw Failure("drill.secure_dropout_stage must be advertise_keys, share_keys, masked_input or unmask, not \"\(stage)\"")
        }
        guard reconnectInitialSeconds > 0, reconnectMaxSeconds >= reconnectInitialSeconds else {
            throw Failure("reconnect_initial_seconds must be positive and at most reconnect_max_seconds")
        }
        try TLSConfiguration.makeClientConfiguration(certificateChainPath: tls.certificate, privateKeyPath: tls.privateKey, trustRootPath: tls.ca)
            .validateFiles()
    }

    /// The trainer the configuration names.
    public func makeTrainer() -> any LocalTrainer {
        let site: any LocalTrainer
        switch (trainer.kind, data) {
        case (.local, let data?):
            site = SiteTrainer(files: data.files)
        case (.command, let data?):
            let work = trainer.workDir ?? NSTemporaryDirectory() + "fedagent-\(getpid())"
            site = CommandTrainer(command: trainer.command, timeoutSeconds: trainer.timeoutSeconds, workDirectory: work, files: data.files)
        default:
            return BenchmarkTrainer(
                step: trainer.step, exampleCount: trainer.examples, delaySeconds: trainer.delaySeconds,
                delayJitterSeconds: trainer.delayJitterSeconds)
        }
        guard trainer.delaySeconds > 0 || trainer.delayJitterSeconds > 0 else { return site }
        return SlowedTrainer(site, delaySeconds: trainer.delaySeconds, delayJitterSeconds: trainer.delayJitterSeconds)
    }
}
